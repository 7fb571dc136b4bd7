//! The load panel: what to load, progress, cancel, errors, browser limits.
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsValue;
use web_sys::AbortController;

use super::cache::refresh_cache;
use super::chat::stop_chat;
use super::files::pick_files;
use super::{FileProgress, State, ENGINE, LOAD_ABORT};
use crate::api::{self, LoadRequest};
use crate::error::AppError;
use crate::format;
use crate::options::{self, DEVICES, DTYPES, MODELS};
use crate::types::{LoadProgress, Stage};

#[component]
pub(super) fn LoadPanel(s: State) -> impl IntoView {
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
                        on:change=move |ev| {
                            // Picking from the list means this model, not a typed id or files.
                            s.model.set(event_target_value(&ev));
                            s.custom.set(String::new());
                            s.local.set(None);
                        }
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
                // Each input sits before its label so the label can show the input's focus.
                <input id="pick-file" class="hidden-input" type="file" multiple on:change=on_file/>
                <label class="button secondary" for="pick-file">"Open file"</label>
                <input
                    id="pick-folder"
                    class="hidden-input"
                    type="file"
                    prop:webkitdirectory=true
                    on:change=on_file
                />
                <label class="button secondary" for="pick-folder">"Open ONNX folder"</label>
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
