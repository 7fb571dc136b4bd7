//! The page: load panel, conversation, cache panel.
use std::cell::RefCell;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortController, File, FileList};

use crate::api::{self, ChatMessage, Engine, LoadRequest};
use crate::error::AppError;
use crate::format;
use crate::markdown;
use crate::options::{self, ChatSettings, DEVICES, DTYPES, MODELS};
use crate::think::{Reply, Segment};
use crate::types::{CachedModel, Capabilities, Chunk, LoadProgress, ModelInfo, Stage};

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
                    "WebNN: akari's WebNN backend is checked against a stand-in that follows the W3C WebNN specification, not on real WebNN hardware. "
                    "Chrome and Edge offer WebNN behind a flag or in an origin trial; other browsers do not ship it."
                </p>
            </footer>
        </main>
    }
}

fn pick_files(s: State, list: &FileList) {
    pick(s, (0..list.length()).filter_map(|i| list.get(i)).collect());
}

fn pick(s: State, files: Vec<File>) {
    if files.is_empty() {
        return;
    }
    let bytes: f64 = files.iter().map(|f| f.size()).sum();
    let label = if let [file] = files.as_slice() {
        format!("{} ({})", file.name(), format::bytes(bytes))
    } else {
        // A folder pick names files by their path inside it; the first part is the folder.
        let folder = files
            .first()
            .and_then(|f| js_sys::Reflect::get(f, &JsValue::from_str("webkitRelativePath")).ok())
            .and_then(|p| p.as_string())
            .and_then(|p| p.split('/').next().map(str::to_string))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "files".to_string());
        format!("{folder} ({} files, {})", files.len(), format::bytes(bytes))
    };
    s.local.set(Some(LocalPick { files, label }));
}

fn get(target: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Reflect::get(target, &JsValue::from_str(key)).ok()
}

fn is_true(target: &JsValue, key: &str) -> bool {
    get(target, key).is_some_and(|v| v.is_truthy())
}

/// The `FileSystemEntry` of each dropped item.
fn dropped_entries(transfer: &web_sys::DataTransfer) -> Vec<JsValue> {
    let Some(items) = get(transfer, "items") else {
        return Vec::new();
    };
    let length = get(&items, "length")
        .and_then(|l| l.as_f64())
        .unwrap_or(0.0) as u32;
    (0..length)
        .filter_map(|i| js_sys::Reflect::get_u32(&items, i).ok())
        .filter_map(|item| {
            let f = get(&item, "webkitGetAsEntry")?
                .dyn_into::<js_sys::Function>()
                .ok()?;
            f.call0(&item)
                .ok()
                .filter(|e| !e.is_null() && !e.is_undefined())
        })
        .collect()
}

/// Calls a callback-style entry method (`file`, `readEntries`) and awaits its result.
async fn callback_call(target: &JsValue, method: &str) -> Result<JsValue, AppError> {
    let function = get(target, method)
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| {
            AppError::Other(format!(
                "This browser cannot read dropped folders ({method} is missing)."
            ))
        })?;
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        if let Err(e) = function.call2(target, &resolve, &reject) {
            let _ = reject.call1(&JsValue::NULL, &e);
        }
    });
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(api::error_from_js)
}

/// Every file under the dropped entries, named by its path as a folder pick would name it
/// (`webkitRelativePath`), so the engine sees the same thing either way.
async fn walk_entries(mut pending: Vec<JsValue>) -> Result<Vec<File>, AppError> {
    let mut files = Vec::new();
    while let Some(entry) = pending.pop() {
        if is_true(&entry, "isDirectory") {
            let reader = get(&entry, "createReader")
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&entry).ok())
                .ok_or_else(|| {
                    AppError::Other("This browser cannot read dropped folders.".into())
                })?;
            // readEntries answers in batches until it answers with none.
            loop {
                let batch: js_sys::Array = callback_call(&reader, "readEntries")
                    .await?
                    .unchecked_into();
                if batch.length() == 0 {
                    break;
                }
                pending.extend(batch.iter());
            }
        } else if is_true(&entry, "isFile") {
            let file: File = callback_call(&entry, "file").await?.unchecked_into();
            let path = get(&entry, "fullPath")
                .and_then(|p| p.as_string())
                .map(|p| p.trim_start_matches('/').to_string())
                .unwrap_or_else(|| file.name());
            let descriptor = js_sys::Object::new();
            let _ = js_sys::Reflect::set(
                &descriptor,
                &JsValue::from_str("value"),
                &JsValue::from_str(&path),
            );
            let _ = js_sys::Object::define_property(
                &file,
                &JsValue::from_str("webkitRelativePath"),
                &descriptor,
            );
            files.push(file);
        }
    }
    files.sort_by_key(|f| get(f, "webkitRelativePath").and_then(|p| p.as_string()));
    Ok(files)
}

#[component]
fn LoadPanel(s: State) -> impl IntoView {
    let blocked = move |device: &str| s.caps.with(|c| options::device_blocked(device, c.as_ref()));
    let on_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(files) = input.files() {
            pick_files(s, &files);
        }
        // Picking the same file again should fire another change.
        input.set_value("");
    };
    view! {
        <section class="panel load">
            <div class="grid">
                <div class="field wide">
                    <label for="model">"Model"</label>
                    <select
                        id="model"
                        on:change=move |ev| s.model.set(event_target_value(&ev))
                        disabled=move || s.loading.get()
                    >
                        {MODELS
                            .iter()
                            .map(|&m| {
                                view! {
                                    <option value=m selected=move || s.model.get() == m>
                                        {m}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </div>
                <div class="field wide">
                    <label for="custom-id">"Or any id"</label>
                    <input
                        id="custom-id"
                        type="text"
                        placeholder="owner/name, used instead of the list when filled"
                        prop:value=move || s.custom.get()
                        on:input=move |ev| s.custom.set(event_target_value(&ev))
                        disabled=move || s.loading.get()
                    />
                </div>
                <div class="field">
                    <label for="dtype">"Dtype"</label>
                    <select
                        id="dtype"
                        on:change=move |ev| s.dtype.set(event_target_value(&ev))
                        disabled=move || s.loading.get()
                    >
                        {DTYPES
                            .iter()
                            .map(|&d| {
                                view! {
                                    <option value=d selected=move || s.dtype.get() == d>
                                        {d}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </div>
                <div class="field">
                    <label for="device">"Device"</label>
                    <select
                        id="device"
                        on:change=move |ev| s.device.set(event_target_value(&ev))
                        disabled=move || s.loading.get()
                    >
                        {DEVICES
                            .iter()
                            .map(|&d| {
                                view! {
                                    <option
                                        value=d
                                        selected=move || s.device.get() == d
                                        disabled=move || blocked(d).is_some()
                                    >
                                        {move || s.caps.with(|c| options::device_label(d, c.as_ref()))}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </div>
            </div>
            <div class="local">
                <label class="button secondary" for="pick-file">"Open file"</label>
                <input id="pick-file" class="hidden-input" type="file" multiple on:change=on_file/>
                <label class="button secondary" for="pick-folder">"Open ONNX folder"</label>
                <input
                    id="pick-folder"
                    class="hidden-input"
                    type="file"
                    prop:webkitdirectory=true
                    on:change=on_file
                />
                {move || match s.local.get() {
                    Some(pick) => {
                        view! {
                            <span class="picked">"Local: " {pick.label}</span>
                            <button class="link" on:click=move |_| s.local.set(None)>
                                "Clear files"
                            </button>
                        }
                            .into_any()
                    }
                    None => {
                        view! {
                            <span class="hint">
                                "…or drop a .gguf file or an ONNX model's folder on this page."
                            </span>
                        }
                            .into_any()
                    }
                }}
            </div>
            <details class="advanced">
                <summary>"Advanced"</summary>
                <div class="advanced-fields">
                    <div class="field">
                        <label for="host">"Hub address"</label>
                        <input
                            id="host"
                            type="url"
                            placeholder="https://huggingface.co"
                            prop:value=move || s.host.get()
                            on:input=move |ev| s.host.set(event_target_value(&ev))
                        />
                    </div>
                    <div class="field">
                        <label for="max-tokens">"Max new tokens"</label>
                        <input
                            id="max-tokens"
                            type="number"
                            min="1"
                            placeholder="engine default"
                            prop:value=move || s.max_tokens.get()
                            on:input=move |ev| s.max_tokens.set(event_target_value(&ev))
                        />
                    </div>
                    <div class="field">
                        <label for="temperature">"Temperature"</label>
                        <input
                            id="temperature"
                            type="number"
                            min="0"
                            step="0.1"
                            placeholder="engine default"
                            prop:value=move || s.temperature.get()
                            on:input=move |ev| s.temperature.set(event_target_value(&ev))
                        />
                    </div>
                </div>
            </details>
            <div class="actions">
                <button class="primary" on:click=move |_| start_load(s) disabled=move || s.loading.get()>
                    "Load"
                </button>
                <Show when=move || s.loading.get()>
                    <button class="secondary" on:click=move |_| cancel_load()>
                        "Cancel"
                    </button>
                </Show>
                <span class="stage" role="status">
                    {move || match s.stage.get() {
                        Some(stage) => stage_text(stage),
                        None if s.loading.get() => "Starting…",
                        None => "",
                    }}
                </span>
            </div>
            <ul class="progress">
                <For
                    each=move || s.files.get()
                    key=|f| f.file.clone()
                    children=move |f| {
                        let name = f.file.clone();
                        let entry = move || {
                            s.files.with(|all| all.iter().find(|e| e.file == name).cloned())
                        };
                        let entry2 = entry.clone();
                        let entry3 = entry.clone();
                        view! {
                            <li>
                                <span class="file">{f.file.clone()}</span>
                                {move || {
                                    let e = entry();
                                    let total = e.as_ref().and_then(|e| e.total);
                                    let loaded = e.as_ref().and_then(|e| e.loaded);
                                    match total {
                                        Some(t) if t > 0.0 => {
                                            view! { <progress max=t value=loaded.unwrap_or(0.0)></progress> }
                                                .into_any()
                                        }
                                        _ => view! { <progress></progress> }.into_any(),
                                    }
                                }}
                                <span class="numbers">
                                    {move || {
                                        entry2()
                                            .map(|e| {
                                                format::progress(e.loaded, e.total, e.bytes_per_second)
                                            })
                                    }}
                                    {move || entry3().filter(|e| e.from_cache).map(|_| " · from cache")}
                                </span>
                            </li>
                        }
                    }
                />
            </ul>
            {move || {
                s.info
                    .get()
                    .map(|info| view! { <p class="loaded">"Loaded: " {format::model_info(&info)}</p> })
            }}
            {move || s.load_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <ul class="notes">
                {move || {
                    s.caps
                        .get()
                        .map(|c| {
                            let mut lines = options::notes(&c);
                            lines.extend(options::blocked_notes(&c));
                            lines.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()
                        })
                }}
            </ul>
        </section>
    }
}

fn stage_text(stage: Stage) -> &'static str {
    match stage {
        Stage::Download => "Downloading…",
        Stage::Cache => "Reading from the cache…",
        Stage::Load => "Loading weights…",
        Stage::Compile => "Compiling shaders / warming up…",
        Stage::Ready => "Ready.",
    }
}

fn record_progress(s: State, p: LoadProgress) {
    s.stage.set(Some(p.stage));
    let Some(file) = p.file else { return };
    s.files.update(|files| {
        let entry = match files.iter_mut().position(|f| f.file == file) {
            Some(i) => &mut files[i],
            None => {
                files.push(FileProgress {
                    file: file.clone(),
                    loaded: None,
                    total: None,
                    bytes_per_second: None,
                    from_cache: false,
                });
                let last = files.len() - 1;
                &mut files[last]
            }
        };
        entry.loaded = p.loaded.or(entry.loaded);
        entry.total = p.total.or(entry.total);
        entry.bytes_per_second = p.bytes_per_second;
        entry.from_cache |= p.stage == Stage::Cache;
    });
}

fn cancel_load() {
    LOAD_ABORT.with(|c| {
        if let Some(controller) = c.borrow().as_ref() {
            controller.abort();
        }
    });
}

fn start_load(s: State) {
    if s.loading.get_untracked() {
        return;
    }
    let source: JsValue = match s.local.get_untracked() {
        Some(pick) => match pick.files.as_slice() {
            [one] => one.clone().into(),
            many => many.iter().collect::<js_sys::Array>().into(),
        },
        None => {
            let custom = s.custom.get_untracked().trim().to_string();
            if custom.is_empty() {
                JsValue::from_str(&s.model.get_untracked())
            } else {
                JsValue::from_str(&custom)
            }
        }
    };
    let controller = match AbortController::new() {
        Ok(c) => c,
        Err(e) => {
            s.load_error.set(Some(api::error_from_js(e).to_string()));
            return;
        }
    };
    LOAD_ABORT.with(|c| *c.borrow_mut() = Some(controller.clone()));
    s.loading.set(true);
    s.load_error.set(None);
    s.files.set(Vec::new());
    s.stage.set(None);
    spawn_local(async move {
        // One model at a time: the old one's memory goes before the new one's arrives.
        stop_chat(s);
        if let Some(old) = ENGINE.with(|e| e.borrow_mut().take()) {
            let _ = old.release().await;
        }
        s.info.set(None);
        s.turns.set(Vec::new());
        let dtype = s.dtype.get_untracked();
        let device = s.device.get_untracked();
        let host = s.host.get_untracked().trim().to_string();
        let request = LoadRequest {
            source,
            dtype: &dtype,
            device: &device,
            host: (!host.is_empty()).then_some(host.as_str()),
            signal: &controller.signal(),
        };
        match api::load(request, move |p| record_progress(s, p)).await {
            Ok((engine, info)) => {
                ENGINE.with(|e| *e.borrow_mut() = Some(engine));
                s.info.set(Some(info));
                s.stage.set(Some(Stage::Ready));
            }
            Err(e) => {
                s.stage.set(None);
                s.load_error.set(Some(match e {
                    AppError::Aborted => "Loading cancelled.".to_string(),
                    e => e.to_string(),
                }));
            }
        }
        LOAD_ABORT.with(|c| c.borrow_mut().take());
        s.loading.set(false);
        refresh_cache(s);
    });
}

#[component]
fn ChatPanel(s: State) -> impl IntoView {
    let ready = move || s.info.with(Option::is_some);
    let on_keydown = move |ev: web_sys::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send(s);
        }
    };
    view! {
        <section class="panel chat">
            <div id="log" class="log" role="log" aria-label="Conversation">
                <Show when=move || s.turns.with(Vec::is_empty)>
                    <p class="empty">
                        {move || {
                            if ready() {
                                "Ask something. Enter sends, Shift+Enter starts a new line."
                            } else {
                                "Load a model to start chatting."
                            }
                        }}
                    </p>
                </Show>
                <For each=move || s.turns.get() key=Turn::id children=move |turn| turn_view(s, turn)/>
            </div>
            <div class="composer">
                <label for="message" class="visually-hidden">"Message"</label>
                <textarea
                    id="message"
                    rows="3"
                    placeholder="Message (Enter sends, Shift+Enter for a new line)"
                    prop:value=move || s.draft.get()
                    on:input=move |ev| s.draft.set(event_target_value(&ev))
                    on:keydown=on_keydown
                ></textarea>
                <div class="buttons">
                    <button
                        class="primary"
                        on:click=move |_| send(s)
                        disabled=move || !ready() || s.generating.get()
                    >
                        "Send"
                    </button>
                    <button
                        class="secondary"
                        on:click=move |_| stop_chat(s)
                        disabled=move || !s.generating.get()
                    >
                        "Stop"
                    </button>
                    <button class="secondary" on:click=move |_| reset(s) disabled=move || !ready()>
                        "Reset"
                    </button>
                </div>
            </div>
        </section>
    }
}

fn turn_view(s: State, turn: Turn) -> AnyView {
    match turn {
        Turn::User { text, .. } => view! {
            <article class="turn user">
                <div class="bubble">{text}</div>
            </article>
        }
        .into_any(),
        Turn::Assistant {
            reply,
            rate,
            error,
            stopped,
            ..
        } => {
            // Segments are keyed by position and kind, so an open reasoning block stays open
            // while text streams into it.
            let keys = move || {
                reply.with(|r| {
                    r.segments
                        .iter()
                        .enumerate()
                        .map(|(i, seg)| (i, matches!(seg, Segment::Think { .. })))
                        .collect::<Vec<_>>()
                })
            };
            let stats = move || {
                reply.with(|r| {
                    if let Some(stats) = &r.stats {
                        Some(format::stats(stats))
                    } else if r.done {
                        stopped.get().then(|| "Stopped.".to_string())
                    } else {
                        rate.get().map(format::tokens_per_second)
                    }
                })
            };
            let waiting = move || reply.with(|r| !r.done && r.segments.is_empty());
            view! {
                <article class="turn assistant" aria-busy=move || (!reply.with(|r| r.done)).to_string()>
                    <Show when=waiting>
                        <p class="waiting">"…"</p>
                    </Show>
                    <For
                        each=keys
                        key=|k| *k
                        children=move |(i, think)| segment_view(s, reply, i, think)
                    />
                    {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                    <p class="stats">{stats}</p>
                </article>
            }
            .into_any()
        }
    }
}

fn segment_view(_s: State, reply: RwSignal<Reply>, index: usize, think: bool) -> AnyView {
    let text = move || {
        reply.with(|r| match r.segments.get(index) {
            Some(Segment::Think { text, .. }) | Some(Segment::Answer { text }) => {
                markdown::render(text)
            }
            None => String::new(),
        })
    };
    if think {
        let title = move || {
            reply.with(|r| match r.segments.get(index) {
                Some(Segment::Think {
                    duration_ms: Some(ms),
                    ..
                }) => format::thought_for(*ms),
                _ => "Thinking…".to_string(),
            })
        };
        view! {
            <details class="think">
                <summary>{title}</summary>
                <div class="md" inner_html=text></div>
            </details>
        }
        .into_any()
    } else {
        view! { <div class="md answer" inner_html=text></div> }.into_any()
    }
}

/// The conversation as the engine takes it: user turns and the answers, without reasoning.
fn history(turns: &[Turn]) -> Vec<ChatMessage> {
    turns
        .iter()
        .filter_map(|turn| match turn {
            Turn::User { text, .. } => Some(ChatMessage {
                role: "user",
                content: text.clone(),
            }),
            Turn::Assistant { reply, .. } => {
                let answer = reply.with_untracked(Reply::answer);
                (!answer.trim().is_empty()).then_some(ChatMessage {
                    role: "assistant",
                    content: answer,
                })
            }
        })
        .collect()
}

fn send(s: State) {
    if s.generating.get_untracked() {
        return;
    }
    let Some(engine) = engine() else { return };
    let text = s.draft.get_untracked().trim().to_string();
    if text.is_empty() {
        return;
    }
    s.draft.set(String::new());
    let reply = RwSignal::new(Reply::default());
    let rate = RwSignal::new(None);
    let error = RwSignal::new(None);
    let stopped = RwSignal::new(false);
    let user = Turn::User {
        id: s.new_id(),
        text,
    };
    let assistant = Turn::Assistant {
        id: s.new_id(),
        reply,
        rate,
        error,
        stopped,
    };
    s.turns.update(|t| t.push(user));
    let messages = s.turns.with_untracked(|t| history(t));
    let settings = ChatSettings::parse(
        &s.max_tokens.get_untracked(),
        &s.temperature.get_untracked(),
    );
    s.turns.update(|t| t.push(assistant));
    s.generating.set(true);
    scroll_log(true);
    spawn_local(async move {
        let result = stream_reply(&engine, &messages, &settings, reply, rate).await;
        let now = api::now_ms();
        reply.update(|r| {
            if !r.done {
                r.finish(now);
            }
        });
        match result {
            Ok(()) => {}
            Err(AppError::Aborted) => stopped.set(true),
            Err(e) => error.set(Some(e.to_string())),
        }
        if CHAT_ABORT.with(|c| c.borrow().as_ref().is_some_and(|c| c.signal().aborted())) {
            stopped.set(true);
        }
        CHAT_ABORT.with(|c| c.borrow_mut().take());
        s.generating.set(false);
        scroll_log(false);
    });
}

async fn stream_reply(
    engine: &Engine,
    messages: &[ChatMessage],
    settings: &ChatSettings,
    reply: RwSignal<Reply>,
    rate: RwSignal<Option<f64>>,
) -> Result<(), AppError> {
    let controller = AbortController::new().map_err(api::error_from_js)?;
    CHAT_ABORT.with(|c| *c.borrow_mut() = Some(controller.clone()));
    let stream = engine.start_chat(messages, settings, &controller.signal())?;
    while let Some(chunk) = stream.next().await? {
        let now = api::now_ms();
        let done = matches!(chunk, Chunk::Done { .. });
        reply.update(|r| r.push(chunk, now));
        rate.set(reply.with_untracked(|r| r.live_rate(now)));
        scroll_log(false);
        if done {
            stream.close();
            break;
        }
    }
    Ok(())
}

fn stop_chat(s: State) {
    if !s.generating.get_untracked() {
        return;
    }
    if let Some(engine) = engine() {
        engine.stop();
    }
    CHAT_ABORT.with(|c| {
        if let Some(controller) = c.borrow().as_ref() {
            controller.abort();
        }
    });
}

fn reset(s: State) {
    stop_chat(s);
    s.turns.set(Vec::new());
    if let Some(engine) = engine() {
        spawn_local(async move {
            if let Err(e) = engine.clear().await {
                s.load_error.set(Some(e.to_string()));
            }
        });
    }
}

/// Keeps the newest text in view, unless the reader has scrolled up (or `force`).
fn scroll_log(force: bool) {
    let Some(log) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("log"))
    else {
        return;
    };
    let near_bottom = log.scroll_height() - log.scroll_top() - log.client_height() < 80;
    if force || near_bottom {
        log.set_scroll_top(log.scroll_height());
    }
}

fn refresh_cache(s: State) {
    spawn_local(async move {
        match api::list_cached().await {
            Ok(list) => {
                s.cache.set(list);
                s.cache_error.set(None);
            }
            Err(e) => s.cache_error.set(Some(e.to_string())),
        }
    });
}

#[component]
fn CachePanel(s: State) -> impl IntoView {
    let delete = move |model: String| {
        spawn_local(async move {
            if let Err(e) = api::delete_cached(&model).await {
                s.cache_error.set(Some(e.to_string()));
            }
            refresh_cache(s);
        });
    };
    let total = move || s.cache.with(|c| c.iter().map(|m| m.bytes).sum::<f64>());
    view! {
        <section class="panel cache">
            <div class="cache-head">
                <h2>"Cache"</h2>
                <span class="numbers">{move || format::bytes(total())}</span>
                <button class="link" on:click=move |_| refresh_cache(s)>
                    "Refresh"
                </button>
            </div>
            <Show when=move || s.cache.with(Vec::is_empty)>
                <p class="hint">"Nothing cached yet: downloaded files are kept here for the next visit."</p>
            </Show>
            <ul class="cached">
                <For
                    each=move || s.cache.get()
                    key=|m| (m.model.clone(), m.bytes.to_bits(), m.files.len())
                    children=move |m| {
                        let model = m.model.clone();
                        let label = format!("Delete {}", m.model);
                        let files = m
                            .files
                            .iter()
                            .map(|f| format!("{} ({})", f.name, format::bytes(f.bytes)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        view! {
                            <li>
                                <span class="name" title=files>{m.model.clone()}</span>
                                <span class="numbers">
                                    {format!(
                                        "{} · {} file{}",
                                        format::bytes(m.bytes),
                                        m.files.len(),
                                        if m.files.len() == 1 { "" } else { "s" },
                                    )}
                                </span>
                                <button
                                    class="secondary small"
                                    aria-label=label
                                    on:click=move |_| delete(model.clone())
                                >
                                    "Delete"
                                </button>
                            </li>
                        }
                    }
                />
            </ul>
            {move || s.cache_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </section>
    }
}
