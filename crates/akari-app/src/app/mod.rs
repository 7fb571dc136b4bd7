//! The page: load panel, conversation, cache panel.
mod cache;
mod chat;
mod files;
mod load;

use std::cell::RefCell;

use leptos::prelude::*;
use leptos::task::spawn_local;
use web_sys::{AbortController, File};

use crate::api::{self, Engine};
use crate::options::{self, DEVICES, DTYPES, MODELS};
use crate::think::Reply;
use crate::types::{CachedModel, Capabilities, ModelInfo, Stage};
use cache::{refresh_cache, CachePanel};
use chat::ChatPanel;
use files::{dropped_entries, is_true, pick, pick_files, walk_entries};
use load::LoadPanel;

thread_local! {
    // JavaScript objects live on the page's one thread, outside the reactive state.
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static LOAD_ABORT: RefCell<Option<AbortController>> = const { RefCell::new(None) };
    static CHAT_ABORT: RefCell<Option<AbortController>> = const { RefCell::new(None) };
}

fn engine() -> Option<Engine> {
    ENGINE.with(|e| e.borrow().clone())
}

/// Files picked or dropped, with a line describing them.
#[derive(Clone)]
struct LocalPick {
    files: Vec<File>,
    label: String,
}

#[derive(Debug, Clone, PartialEq)]
struct FileProgress {
    file: String,
    loaded: Option<f64>,
    total: Option<f64>,
    bytes_per_second: Option<f64>,
    from_cache: bool,
}

#[derive(Clone)]
enum Turn {
    User {
        id: u64,
        text: String,
    },
    Assistant {
        id: u64,
        reply: RwSignal<Reply>,
        rate: RwSignal<Option<f64>>,
        error: RwSignal<Option<String>>,
        stopped: RwSignal<bool>,
    },
}

impl Turn {
    fn id(&self) -> u64 {
        match self {
            Turn::User { id, .. } | Turn::Assistant { id, .. } => *id,
        }
    }
}

/// Everything the page shows; signals are `Copy`, so the struct is too.
#[derive(Clone, Copy)]
struct State {
    caps: RwSignal<Option<Capabilities>>,
    model: RwSignal<String>,
    custom: RwSignal<String>,
    local: RwSignal<Option<LocalPick>, LocalStorage>,
    dtype: RwSignal<String>,
    device: RwSignal<String>,
    host: RwSignal<String>,
    loading: RwSignal<bool>,
    stage: RwSignal<Option<Stage>>,
    files: RwSignal<Vec<FileProgress>>,
    info: RwSignal<Option<ModelInfo>>,
    load_error: RwSignal<Option<String>>,
    dragging: RwSignal<bool>,
    turns: RwSignal<Vec<Turn>>,
    next_id: RwSignal<u64>,
    draft: RwSignal<String>,
    max_tokens: RwSignal<String>,
    temperature: RwSignal<String>,
    generating: RwSignal<bool>,
    cache: RwSignal<Vec<CachedModel>>,
    cache_error: RwSignal<Option<String>>,
}

impl State {
    fn new() -> Self {
        let query = Query::from_location();
        let mut model = MODELS[0].to_string();
        let mut custom = String::new();
        if let Some(m) = query.get("model") {
            if MODELS.contains(&m.as_str()) {
                model = m;
            } else {
                custom = m;
            }
        }
        let pick = |key: &str, allowed: &[&str]| {
            query
                .get(key)
                .filter(|v| allowed.contains(&v.as_str()))
                .unwrap_or_else(|| "auto".to_string())
        };
        Self {
            caps: RwSignal::new(None),
            model: RwSignal::new(model),
            custom: RwSignal::new(custom),
            local: RwSignal::new_local(None),
            dtype: RwSignal::new(pick("dtype", DTYPES)),
            device: RwSignal::new(pick("device", DEVICES)),
            host: RwSignal::new(query.get("host").unwrap_or_default()),
            loading: RwSignal::new(false),
            stage: RwSignal::new(None),
            files: RwSignal::new(Vec::new()),
            info: RwSignal::new(None),
            load_error: RwSignal::new(None),
            dragging: RwSignal::new(false),
            turns: RwSignal::new(Vec::new()),
            next_id: RwSignal::new(0),
            draft: RwSignal::new(String::new()),
            max_tokens: RwSignal::new(query.get("maxTokens").unwrap_or_default()),
            temperature: RwSignal::new(query.get("temperature").unwrap_or_default()),
            generating: RwSignal::new(false),
            cache: RwSignal::new(Vec::new()),
            cache_error: RwSignal::new(None),
        }
    }

    fn new_id(&self) -> u64 {
        let id = self.next_id.get_untracked();
        self.next_id.set(id + 1);
        id
    }
}

/// The page's query string (`?model=…&dtype=…&device=…&host=…` preset the form).
struct Query(Option<web_sys::UrlSearchParams>);

impl Query {
    fn from_location() -> Self {
        let params = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .and_then(|s| web_sys::UrlSearchParams::new_with_str(&s).ok());
        Self(params)
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.as_ref()?.get(key).filter(|v| !v.trim().is_empty())
    }
}

#[component]
pub fn App() -> impl IntoView {
    let s = State::new();
    spawn_local(async move {
        match api::capabilities().await {
            Ok(caps) => {
                // A choice from the query string that this browser cannot use falls back.
                if options::device_blocked(&s.device.get_untracked(), Some(&caps)).is_some() {
                    s.device.set("auto".to_string());
                }
                s.caps.set(Some(caps));
            }
            Err(e) => s.load_error.set(Some(e.to_string())),
        }
    });
    refresh_cache(s);
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        s.dragging.set(false);
        let Some(transfer) = ev.data_transfer() else {
            return;
        };
        // Entries must be taken while the event lasts; folders are walked afterwards.
        let entries = dropped_entries(&transfer);
        if entries.iter().any(|e| is_true(e, "isDirectory")) {
            spawn_local(async move {
                match walk_entries(entries).await {
                    Ok(files) => pick(s, files),
                    Err(e) => s.load_error.set(Some(e.to_string())),
                }
            });
        } else if let Some(files) = transfer.files() {
            pick_files(s, &files);
        }
    };
    view! {
        <header class="top">
            <h1>"akari"</h1>
            <p class="tagline">"Chat with a language model that runs entirely in this browser."</p>
        </header>
        <main
            class:dragging=move || s.dragging.get()
            on:dragover=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                s.dragging.set(true);
            }
            on:dragleave=move |_| s.dragging.set(false)
            on:drop=on_drop
        >
            <LoadPanel s=s/>
            <ChatPanel s=s/>
            <CachePanel s=s/>
            <footer class="about">
                <p>
                    "WebGPU runs the same WGSL kernels as akari's native GPU backend, in the single-thread engine (the GPU does the work). "
                </p>
                <p>
                    "WebNN (webnn, webnn-gpu, webnn-cpu, webnn-npu) runs the model as WebNN graphs in the single-thread engine. "
                    "It is checked against a spec-following stand-in for the WebNN API, not on real WebNN hardware. "
                    "As of 2026 Chrome and Edge offer WebNN only behind a flag or in an origin trial; Firefox and Safari do not ship it."
                </p>
            </footer>
        </main>
    }
}
