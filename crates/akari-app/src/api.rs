//! Bindings to akari's JavaScript API (`akari.js`), handed to [`crate::start`] as a module
//! object so this crate does not depend on the engine's.
use std::cell::RefCell;

use js_sys::{Function, Object, Promise, Reflect, Symbol};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::error::AppError;
use crate::types::{CachedModel, Capabilities, Chunk, LoadProgress, ModelInfo};

#[wasm_bindgen]
extern "C" {
    /// The `akari.js` module namespace.
    #[derive(Clone)]
    pub type AkariModule;

    #[wasm_bindgen(method, catch)]
    fn capabilities(this: &AkariModule) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn load(this: &AkariModule, source: &JsValue, options: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch, js_name = listCached)]
    fn list_cached(this: &AkariModule) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch, js_name = deleteCached)]
    fn delete_cached(this: &AkariModule, model: &str) -> Result<Promise, JsValue>;

    /// A loaded model.
    #[derive(Clone)]
    pub type Engine;

    #[wasm_bindgen(method, getter)]
    fn info(this: &Engine) -> JsValue;
    #[wasm_bindgen(method, catch)]
    fn chat(this: &Engine, messages: &JsValue, options: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn abort(this: &Engine) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn reset(this: &Engine) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn unload(this: &Engine) -> Result<Promise, JsValue>;
}

thread_local! {
    static MODULE: RefCell<Option<AkariModule>> = const { RefCell::new(None) };
}

/// Remembers the module the page passed in.
pub fn set_module(module: AkariModule) {
    MODULE.with(|m| *m.borrow_mut() = Some(module));
}

fn module() -> Result<AkariModule, AppError> {
    MODULE
        .with(|m| m.borrow().clone())
        .ok_or_else(|| AppError::Other("The engine's module was not passed to start().".into()))
}

/// Reads an `AkariError` (or any thrown value) as an [`AppError`].
pub fn error_from_js(value: JsValue) -> AppError {
    let field = |name: &str| {
        Reflect::get(&value, &JsValue::from_str(name))
            .ok()
            .and_then(|v| v.as_string())
    };
    let code = field("code");
    let message = field("message")
        .or_else(|| value.as_string())
        .unwrap_or_default();
    AppError::from_code(code.as_deref(), &message)
}

async fn call(promise: Result<Promise, JsValue>) -> Result<JsValue, AppError> {
    JsFuture::from(promise.map_err(error_from_js)?)
        .await
        .map_err(error_from_js)
}

fn decode<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, AppError> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| AppError::Other(format!("The engine sent {what} this app cannot read: {e}")))
}

pub async fn capabilities() -> Result<Capabilities, AppError> {
    let value = call(module()?.capabilities()).await?;
    decode(value, "capabilities")
}

pub async fn list_cached() -> Result<Vec<CachedModel>, AppError> {
    let value = call(module()?.list_cached()).await?;
    decode(value, "a cache listing")
}

pub async fn delete_cached(model: &str) -> Result<(), AppError> {
    call(module()?.delete_cached(model)).await.map(|_| ())
}

/// What to load and how; `None` leaves the engine's default.
pub struct LoadRequest<'a> {
    pub source: JsValue,
    pub dtype: &'a str,
    pub device: &'a str,
    pub host: Option<&'a str>,
    pub signal: &'a web_sys::AbortSignal,
}

fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), AppError> {
    Reflect::set(target, &JsValue::from_str(key), value)
        .map(|_| ())
        .map_err(error_from_js)
}

/// Loads a model, reporting progress to `on_progress` until the engine is ready.
pub async fn load(
    request: LoadRequest<'_>,
    on_progress: impl FnMut(LoadProgress) + 'static,
) -> Result<(Engine, ModelInfo), AppError> {
    let mut on_progress = on_progress;
    // Owned by JavaScript from here on and freed when collected, so a report that arrives
    // after `load` has settled still finds a live function.
    let callback = Closure::<dyn FnMut(JsValue)>::new(move |value: JsValue| {
        // A report this app cannot read is skipped, not fatal to the load.
        if let Ok(progress) = serde_wasm_bindgen::from_value::<LoadProgress>(value) {
            on_progress(progress);
        }
    })
    .into_js_value();
    let options = Object::new();
    set(&options, "dtype", &JsValue::from_str(request.dtype))?;
    set(&options, "device", &JsValue::from_str(request.device))?;
    if let Some(host) = request.host {
        set(&options, "host", &JsValue::from_str(host))?;
    }
    set(&options, "signal", request.signal)?;
    set(&options, "progress", &callback)?;
    let engine: Engine = call(module()?.load(&request.source, &options))
        .await?
        .unchecked_into();
    match decode(engine.info(), "model information") {
        Ok(info) => Ok((engine, info)),
        Err(e) => {
            // Unusable without its description; give its memory back.
            let _ = engine.release().await;
            Err(e)
        }
    }
}

#[derive(Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// A reply being streamed: the async iterator `chat()` returned.
pub struct ChatStream {
    iterator: JsValue,
    next: Function,
}

impl Engine {
    /// Starts a reply to `messages`.
    pub fn start_chat(
        &self,
        messages: &[ChatMessage],
        settings: &crate::options::ChatSettings,
        signal: &web_sys::AbortSignal,
    ) -> Result<ChatStream, AppError> {
        let messages = serde_wasm_bindgen::to_value(messages)
            .map_err(|e| AppError::Other(format!("Could not pass the conversation on: {e}")))?;
        let options = Object::new();
        set(&options, "signal", signal)?;
        if let Some(n) = settings.max_tokens {
            set(&options, "maxTokens", &JsValue::from_f64(n as f64))?;
        }
        if let Some(t) = settings.temperature {
            set(&options, "temperature", &JsValue::from_f64(t))?;
        }
        let iterable = self.chat(&messages, &options).map_err(error_from_js)?;
        let not_iterable = || AppError::Other("chat() did not return an async iterable".into());
        let start: Function = Reflect::get(&iterable, &Symbol::async_iterator())
            .map_err(error_from_js)?
            .dyn_into()
            .map_err(|_| not_iterable())?;
        let iterator = start.call0(&iterable).map_err(error_from_js)?;
        let next: Function = Reflect::get(&iterator, &JsValue::from_str("next"))
            .map_err(error_from_js)?
            .dyn_into()
            .map_err(|_| not_iterable())?;
        Ok(ChatStream { iterator, next })
    }

    /// Asks the engine to stop the reply in progress.
    pub fn stop(&self) {
        // Stopping is best effort: the abort signal ends the stream as well.
        let _ = self.abort();
    }

    pub async fn clear(&self) -> Result<(), AppError> {
        call(self.reset()).await.map(|_| ())
    }

    pub async fn release(&self) -> Result<(), AppError> {
        call(self.unload()).await.map(|_| ())
    }
}

impl ChatStream {
    /// The next chunk, or `None` at the end of the stream.
    pub async fn next(&self) -> Result<Option<Chunk>, AppError> {
        let result = self.next.call0(&self.iterator).map_err(error_from_js)?;
        let result = JsFuture::from(Promise::resolve(&result))
            .await
            .map_err(error_from_js)?;
        let done = Reflect::get(&result, &JsValue::from_str("done"))
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            return Ok(None);
        }
        let value = Reflect::get(&result, &JsValue::from_str("value")).map_err(error_from_js)?;
        decode(value, "a chunk").map(Some)
    }

    /// Lets the producer clean up when the reader stops early.
    pub fn close(&self) {
        if let Ok(ret) = Reflect::get(&self.iterator, &JsValue::from_str("return")) {
            if let Some(ret) = ret.dyn_ref::<Function>() {
                let _ = ret.call0(&self.iterator);
            }
        }
    }
}

/// Milliseconds on the page's clock.
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}
