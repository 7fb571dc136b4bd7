//! akari-web: the engine inside a browser Web Worker.
//!
//! `web/worker.js` downloads (or reads from the cache) a model's files and hands them over as
//! `Blob`s in a [`ModelFiles`]; the engine reads a GGUF file from its Blob tensor by tensor,
//! so a model larger than the wasm heap loads on WebGPU, and on the CPU the heap holds the
//! weights once. Then it loads a [`WebEngine`]. A reply is generated one token per [`WebEngine::step`] call, so the worker
//! handles an abort message between tokens.
//!
//! Everything with logic lives in [`chat`], plain Rust the native tests drive; this file only
//! converts between JavaScript and Rust values. Results cross as JSON strings.

pub mod chat;

use akari_engine::{ByteSource, FileData, MemoryFiles};
use chat::{Chat, ChatError, ChatMessage, ChatOptions, ErrorCode, LoadSettings};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Whether this build runs rayon on Web Workers (`initThreadPool` is exported).
#[wasm_bindgen(js_name = threadsBuilt)]
pub fn threads_built() -> bool {
    cfg!(feature = "threads")
}

/// Throws the error `load` would give for `device` when this build cannot run on it.
#[wasm_bindgen(js_name = checkDevice)]
pub fn check_device(device: &str) -> Result<(), JsValue> {
    chat::check_device(device).map_err(js_error)
}

/// A JS `Error` carrying the API's `code`.
fn js_error(e: ChatError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    // Setting a property on a fresh Error object cannot fail.
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code.name().into());
    err.into()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, JsValue> {
    serde_json::to_string(v).map_err(|e| {
        js_error(ChatError {
            code: ErrorCode::Unsupported,
            message: format!("cannot encode the result: {e}"),
        })
    })
}

fn from_json<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, JsValue> {
    serde_json::from_str(json).map_err(|e| {
        js_error(ChatError {
            code: ErrorCode::Unsupported,
            message: format!("invalid {what}: {e}"),
        })
    })
}

/// A model's files, as the browser holds them: `Blob`s (a download's spooled bytes, a cached
/// response, a picked `File`), which may live on disk. The engine reads them a range at a
/// time, so a file never has to fit in the wasm heap whole: a GGUF file is read tensor by
/// tensor, each tensor dropped from the heap once the backend has it.
#[wasm_bindgen]
pub struct ModelFiles {
    name: String,
    files: Vec<(String, BlobSource)>,
}

#[wasm_bindgen]
impl ModelFiles {
    /// `name` names the model in messages (a repo id or a file name).
    #[wasm_bindgen(constructor)]
    pub fn new(name: String) -> ModelFiles {
        ModelFiles {
            name,
            files: Vec::new(),
        }
    }

    /// Adds the file `path` (its path in the repository), its bytes in `blob`.
    #[wasm_bindgen(js_name = addBlob)]
    pub fn add_blob(&mut self, path: String, blob: web_sys::Blob) {
        self.files.retain(|(p, _)| *p != path);
        let source = BlobSource::new(&path, blob);
        self.files.push((path, source));
    }

    /// Bytes over all files.
    #[wasm_bindgen(js_name = totalBytes)]
    pub fn total_bytes(&self) -> f64 {
        self.files.iter().map(|(_, b)| b.len as f64).sum()
    }
}

impl ModelFiles {
    fn into_memory(self) -> MemoryFiles {
        let files = self
            .files
            .into_iter()
            .map(|(p, b)| (p, FileData::Source(Arc::new(b))));
        MemoryFiles::with_data(self.name, files)
    }
}

thread_local! {
    /// The Blobs behind live [`BlobSource`]s, by id. JS objects never leave the thread that
    /// made them, while a `ByteSource` must be `Send + Sync`; so the Blob stays here and the
    /// source holds its number. Loading runs on the worker's own thread.
    static BLOBS: RefCell<HashMap<u32, web_sys::Blob>> = RefCell::new(HashMap::new());
    static NEXT_BLOB: Cell<u32> = const { Cell::new(0) };
}

/// A `Blob` read a range at a time with `FileReaderSync` (which Web Workers have).
struct BlobSource {
    id: u32,
    len: u64,
    name: String,
}

impl BlobSource {
    fn new(name: &str, blob: web_sys::Blob) -> BlobSource {
        let id = NEXT_BLOB.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1));
            id
        });
        // Blob sizes are whole numbers of bytes, well inside f64's exact range.
        let len = blob.size() as u64;
        BLOBS.with(|b| b.borrow_mut().insert(id, blob));
        BlobSource {
            id,
            len,
            name: name.to_string(),
        }
    }

    fn error(&self, what: String) -> akari_core::Error {
        akari_core::Error::Io {
            path: self.name.clone().into(),
            source: std::io::Error::other(what),
        }
    }
}

impl Drop for BlobSource {
    fn drop(&mut self) {
        // Dropped off the worker's thread, the entry stays until the worker ends.
        let _ = BLOBS.try_with(|b| b.borrow_mut().remove(&self.id));
    }
}

impl ByteSource for BlobSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> akari_core::Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64);
        if end > self.len {
            return Err(self.error(format!(
                "{len} bytes at {offset}: past the end of the {}-byte file",
                self.len
            )));
        }
        let blob = BLOBS
            .with(|b| b.borrow().get(&self.id).cloned())
            .ok_or_else(|| self.error("the file can only be read on the worker's thread".into()))?;
        let js = |e: JsValue| {
            self.error(format!(
                "cannot read {len} bytes at {offset}: {}",
                e.as_string()
                    .or_else(|| js_sys::Error::from(e).message().as_string())
                    .unwrap_or_default()
            ))
        };
        let part = blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(js)?;
        let buffer = web_sys::FileReaderSync::new()
            .and_then(|r| r.read_as_array_buffer(&part))
            .map_err(js)?;
        let bytes = js_sys::Uint8Array::new(&buffer);
        if bytes.length() as usize != len {
            return Err(self.error(format!(
                "read {} bytes at {offset}, asked for {len}: the file changed while it was read",
                bytes.length()
            )));
        }
        Ok(bytes.to_vec())
    }
}

/// SHA-256 over a download as it streams in (the browser's `crypto.subtle` only hashes
/// whole buffers).
#[wasm_bindgen]
pub struct Sha256 {
    hasher: sha2::Sha256,
}

#[wasm_bindgen]
impl Sha256 {
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Sha256 {
        Sha256 {
            hasher: sha2::Digest::new(),
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        sha2::Digest::update(&mut self.hasher, chunk);
    }

    /// The digest as 64 lowercase hex digits; the hasher starts over.
    #[wasm_bindgen(js_name = finishHex)]
    pub fn finish_hex(&mut self) -> String {
        let digest = sha2::Digest::finalize_reset(&mut self.hasher);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A loaded model, generating one token per [`WebEngine::step`].
///
/// The chat sits behind `Rc<RefCell<..>>` because a step is asynchronous (the GPU's
/// read-back and WebNN's results arrive through the event loop) and its promise must own what
/// it uses. The worker runs one call at a time; a call made while a step is in flight gets an
/// error.
#[wasm_bindgen]
pub struct WebEngine {
    chat: Rc<RefCell<Chat>>,
}

fn busy_error() -> JsValue {
    js_error(ChatError {
        code: ErrorCode::Unsupported,
        message: "the engine is busy with a step; wait for it to finish".into(),
    })
}

impl WebEngine {
    fn chat(&self) -> Result<std::cell::RefMut<'_, Chat>, JsValue> {
        self.chat.try_borrow_mut().map_err(|_| busy_error())
    }
}

#[wasm_bindgen]
impl WebEngine {
    /// Loads the model in `files` (consumed). `dtype`, `device`: the JS API's names;
    /// `context`, `run_ahead`: the JS API's `context` and `runAhead` (`undefined` for the
    /// defaults). `progress(stage)` is called as loading goes on. Resolves to the engine.
    pub async fn load(
        files: ModelFiles,
        dtype: String,
        device: String,
        context: Option<u32>,
        run_ahead: Option<bool>,
        progress: js_sys::Function,
    ) -> Result<WebEngine, JsValue> {
        let files = files.into_memory();
        let mut report = |stage: &str| {
            // A failing progress callback must not stop the load.
            let _ = progress.call1(&JsValue::NULL, &stage.into());
        };
        let chat = Chat::load_async(
            &files,
            &dtype,
            &device,
            LoadSettings {
                context: context.map(|c| c as usize),
                run_ahead,
            },
            &mut report,
        )
        .await
        .map_err(js_error)?;
        Ok(WebEngine {
            chat: Rc::new(RefCell::new(chat)),
        })
    }

    /// The JS API's `ModelInfo`, as JSON.
    pub fn info(&self) -> Result<String, JsValue> {
        to_json(self.chat()?.info())
    }

    /// Starts a reply to `messages` (JSON `ChatMessage[]`) with `options` (JSON
    /// `ChatOptions`).
    pub fn start(&self, messages: &str, options: &str) -> Result<(), JsValue> {
        let messages: Vec<ChatMessage> = from_json(messages, "messages")?;
        let options: ChatOptions = from_json(options, "chat options")?;
        self.chat()?.start(&messages, &options).map_err(js_error)
    }

    /// One token; resolves to JSON `Chunk[]` (possibly empty; the last is `done` when the
    /// reply ends).
    pub fn step(&self) -> js_sys::Promise {
        let chat = self.chat.clone();
        // Holding the borrow across the wait is the point: it marks the step in flight.
        #[allow(clippy::await_holding_refcell_ref)]
        wasm_bindgen_futures::future_to_promise(async move {
            let mut chat = chat.try_borrow_mut().map_err(|_| busy_error())?;
            let chunks = chat.step_async().await.map_err(js_error)?;
            Ok(JsValue::from(to_json(&chunks)?))
        })
    }

    /// Resolves to JSON `number[][]`: the logits after `tokens` (JSON `number[]`, fed from an
    /// empty cache) and after each of `steps` greedy steps.
    pub fn logits(&self, tokens: &str, steps: u32) -> js_sys::Promise {
        let chat = self.chat.clone();
        let tokens: Result<Vec<u32>, JsValue> = from_json(tokens, "token ids");
        #[allow(clippy::await_holding_refcell_ref)]
        wasm_bindgen_futures::future_to_promise(async move {
            let tokens = tokens?;
            let mut chat = chat.try_borrow_mut().map_err(|_| busy_error())?;
            let logits = chat
                .logits_async(&tokens, steps as usize)
                .await
                .map_err(js_error)?;
            Ok(JsValue::from(to_json(&logits)?))
        })
    }

    /// Ends the reply in progress; returns JSON `Chunk[]` ending with `done`.
    pub fn cancel(&self) -> Result<String, JsValue> {
        let chunks = self.chat()?.cancel().map_err(js_error)?;
        to_json(&chunks)
    }

    pub fn busy(&self) -> Result<bool, JsValue> {
        Ok(self.chat()?.busy())
    }

    /// Forgets the conversation held in the cache.
    pub fn reset(&self) -> Result<(), JsValue> {
        self.chat()?.reset();
        Ok(())
    }
}
