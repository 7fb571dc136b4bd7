//! The engine as the browser worker drives it, in plain Rust (no JavaScript types), so
//! native tests run the same code: JSON in, chunks out, one token per [`Chat::step`].

use akari_core::generate::{Completion, Event, GenerateOptions, Generation};
use akari_core::sampler::SamplerConfig;
use akari_core::template::Message;
use akari_core::{Device, Error};
use akari_engine::{Engine, LoadOptions, MemoryFiles, Progress, WebNnDevice};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

/// What went wrong, in the JS API's terms (`AkariError.code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    NotFound,
    Corrupt,
    Unsupported,
    OutOfMemory,
    Device,
    Aborted,
    Context,
}

impl ErrorCode {
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not-found",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::OutOfMemory => "out-of-memory",
            ErrorCode::Device => "device",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Context => "context",
        }
    }
}

/// An error with its code and a message meant for people.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
}

impl ChatError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ChatError {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for ChatError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Io { .. } => ErrorCode::NotFound,
            Error::Format { .. } | Error::MissingTensor(_) | Error::ShapeMismatch { .. } => {
                ErrorCode::Corrupt
            }
            Error::UnknownArchitecture(_)
            | Error::UnsupportedWeightType { .. }
            | Error::Unsupported { .. }
            | Error::Tokenizer(_)
            | Error::Template(_)
            | Error::InvalidArgument(_) => ErrorCode::Unsupported,
            Error::ContextOverflow { .. } => ErrorCode::Context,
            Error::Cancelled => ErrorCode::Aborted,
            Error::OutOfMemory(_) => ErrorCode::OutOfMemory,
            Error::Backend { .. } => ErrorCode::Device,
        };
        ChatError::new(code, e.to_string())
    }
}

pub type Result<T, E = ChatError> = std::result::Result<T, E>;

/// The JS API's `ChatOptions` (without the signal, which stays in the page).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChatOptions {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
}

/// Replies stop here unless the caller says otherwise; the same default as `akari generate`.
pub const DEFAULT_MAX_TOKENS: usize = 512;

impl ChatOptions {
    fn generate_options(&self) -> GenerateOptions {
        let d = SamplerConfig::default();
        GenerateOptions {
            max_new_tokens: self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            sampler: SamplerConfig {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_k: self.top_k.unwrap_or(d.top_k),
                top_p: self.top_p.unwrap_or(d.top_p),
                min_p: self.min_p.unwrap_or(d.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
                seed: self.seed.unwrap_or(d.seed),
                ..d
            },
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// The JS API's `Stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub thinking_ms: f64,
    pub stop_reason: String,
}

impl Stats {
    fn from_completion(c: &Completion) -> Stats {
        Stats {
            prompt_tokens: c.stats.prompt_tokens,
            generated_tokens: c.stats.generated_tokens,
            time_to_first_token_ms: c.stats.ttft_ms,
            prefill_tokens_per_second: c.stats.prefill_tok_s,
            decode_tokens_per_second: c.stats.decode_tok_s,
            thinking_ms: c.stats.reasoning_ms.unwrap_or(0.0),
            stop_reason: c.stop.name().to_string(),
        }
    }
}

/// The JS API's `Chunk`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Chunk {
    Think { text: String },
    Answer { text: String },
    Done { stats: Stats },
}

/// The JS API's `ModelInfo`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub dtype: String,
    pub device: String,
    pub parameters: usize,
    pub context_length: usize,
    /// What runs the model, e.g. `cpu (wasm simd128, …)` or `webnn (gpu)`, with a note when
    /// WebNN weights were dequantised at load.
    pub backend: String,
    /// Whether greedy decode records each step before the previous token is read back (the
    /// JS API's `runAhead` load option).
    pub run_ahead: bool,
    /// The WebAssembly heap's size once the model is loaded (it never shrinks, so this is its
    /// peak so far); `None` outside WebAssembly.
    pub heap_bytes: Option<u64>,
}

/// The size of this module's linear memory.
fn heap_bytes() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(core::arch::wasm32::memory_size(0) as u64 * 65536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        None
    }
}

/// Maps the JS API's device names onto what this build runs.
fn device(name: &str) -> Result<Device> {
    match name {
        "auto" | "wasm" | "cpu" => Ok(Device::Cpu),
        "webgpu" | "gpu" => Ok(Device::Gpu),
        "webnn" | "webnn-gpu" | "webnn-cpu" | "webnn-npu" => Err(ChatError::new(
            ErrorCode::Unsupported,
            format!(
                "device `{name}`: WebNN runs only in the browser's single-thread engine, through \
                 its asynchronous load; use `wasm`"
            ),
        )),
        _ => Err(ChatError::new(
            ErrorCode::Unsupported,
            format!(
                "unknown device `{name}` (expected auto, wasm, webgpu, webnn, webnn-gpu, \
                 webnn-cpu or webnn-npu)"
            ),
        )),
    }
}

/// Whether this build has the WebNN backend (the browser's single-thread build).
const WEBNN_BUILT: bool = cfg!(all(target_arch = "wasm32", not(target_feature = "atomics")));

/// Whether this build can run on `name`, so a page learns it before downloading a model.
pub fn check_device(name: &str) -> Result<()> {
    if WebNnDevice::from_name(name).is_some() {
        return if WEBNN_BUILT {
            Ok(())
        } else {
            device(name).map(|_| ())
        };
    }
    let d = device(name)?;
    if d == Device::Gpu && cfg!(all(target_arch = "wasm32", target_feature = "atomics")) {
        return Err(ChatError::new(
            ErrorCode::Unsupported,
            format!(
                "device `{name}`: the threaded build of the browser engine has no GPU backend; \
                 the single-thread build runs WebGPU"
            ),
        ));
    }
    Ok(())
}

/// What a load takes besides its files, dtype and device.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadSettings {
    /// Tokens the KV cache holds; `None` for the engine's default.
    pub context: Option<usize>,
    /// [`LoadOptions::gpu_run_ahead`].
    pub run_ahead: Option<bool>,
}

fn load_options(dtype: &str, device_name: &str, settings: LoadSettings) -> Result<LoadOptions> {
    Ok(LoadOptions {
        device: device(device_name)?,
        dtype: dtype.parse()?,
        context: settings.context,
        gpu_run_ahead: settings.run_ahead,
        ..Default::default()
    })
}

fn no_reply() -> ChatError {
    ChatError::new(
        ErrorCode::Unsupported,
        "no reply in progress: call chat first",
    )
}

/// A GPU that cannot be opened is the browser's limit, said in its terms.
fn device_error(device_name: &str, e: Error) -> ChatError {
    match e {
        Error::Backend { msg, .. } if msg.contains("no GPU adapter") => ChatError::new(
            ErrorCode::Device,
            format!(
                "device `{device_name}`: this browser offers no WebGPU adapter (WebGPU is off, \
                 unsupported here, or blocked for this GPU); use `wasm`"
            ),
        ),
        e => e.into(),
    }
}

/// A loaded model and the reply in progress, if any.
pub struct Chat {
    engine: Engine,
    info: ModelInfo,
    generation: Option<Generation>,
}

impl Chat {
    /// Loads a model from files in memory (one `.gguf`, or an ONNX repository's files).
    pub fn load(
        files: &MemoryFiles,
        dtype: &str,
        device_name: &str,
        settings: LoadSettings,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Chat> {
        let opts = load_options(dtype, device_name, settings)?;
        let engine = Engine::load_memory(files, &opts, &mut |p: Progress<'_>| progress(p.stage))?;
        Ok(Chat::new(engine, files, None))
    }

    /// [`Chat::load`] without blocking: the browser opens its GPU asynchronously, and WebNN
    /// makes its context, graphs and tensors asynchronously.
    pub async fn load_async(
        files: &MemoryFiles,
        dtype: &str,
        device_name: &str,
        settings: LoadSettings,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Chat> {
        if let Some(webnn) = WebNnDevice::from_name(device_name) {
            let opts = LoadOptions {
                dtype: dtype.parse()?,
                context: settings.context,
                ..Default::default()
            };
            let engine = Engine::load_memory_webnn(files, &opts, webnn, &mut |p: Progress<'_>| {
                progress(p.stage)
            })
            .await?;
            return Ok(Chat::new(engine, files, Some(device_name)));
        }
        let opts = load_options(dtype, device_name, settings)?;
        let engine =
            Engine::load_memory_async(files, &opts, &mut |p: Progress<'_>| progress(p.stage))
                .await
                .map_err(|e| device_error(device_name, e))?;
        Ok(Chat::new(engine, files, None))
    }

    /// `device_name`: the device to report when the engine's own record is not it (WebNN).
    fn new(engine: Engine, files: &MemoryFiles, device_name: Option<&str>) -> Chat {
        let i = engine.info();
        let info = ModelInfo {
            name: i
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| files.name().to_string()),
            architecture: i.config.arch.name().to_string(),
            dtype: i.file_type.clone(),
            device: match (device_name, i.device) {
                (Some(name), _) => name,
                (None, Device::Gpu) => "webgpu",
                (None, _) => "wasm",
            }
            .to_string(),
            parameters: i.parameters,
            context_length: i.context,
            backend: i.backend.clone(),
            run_ahead: i.run_ahead,
            heap_bytes: heap_bytes(),
        };
        Chat {
            engine,
            info,
            generation: None,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Renders `messages` with the model's template and starts the reply; a reply still in
    /// progress is dropped (its tokens stay in the cache and are reused where they match).
    pub fn start(&mut self, messages: &[ChatMessage], options: &ChatOptions) -> Result<()> {
        self.generation = None;
        let messages: Vec<Message> = messages
            .iter()
            .map(|m| Message::new(m.role.clone(), m.content.clone()))
            .collect();
        let (ids, open) = self.engine.chat_prompt(&messages)?;
        let mut opts = options.generate_options();
        opts.reasoning_open = open;
        self.generation = Some(self.engine.start(&ids, &opts)?);
        Ok(())
    }

    /// Whether a reply is in progress.
    pub fn busy(&self) -> bool {
        self.generation.is_some()
    }

    /// One token: the text it completes, and `Done` with the stats when the reply ends.
    pub fn step(&mut self) -> Result<Vec<Chunk>> {
        let generation = self.generation.as_mut().ok_or_else(no_reply)?;
        let mut out = Vec::new();
        let result = self.engine.step(generation, &mut |e| collect(&mut out, e));
        self.stepped(result, out)
    }

    /// [`Chat::step`] without blocking, for the browser's GPU.
    pub async fn step_async(&mut self) -> Result<Vec<Chunk>> {
        let generation = self.generation.as_mut().ok_or_else(no_reply)?;
        let mut out = Vec::new();
        let result = self
            .engine
            .step_async(generation, &mut |e| collect(&mut out, e))
            .await;
        self.stepped(result, out)
    }

    fn stepped(
        &mut self,
        result: akari_core::Result<Option<Completion>>,
        mut out: Vec<Chunk>,
    ) -> Result<Vec<Chunk>> {
        match result {
            Ok(Some(done)) => {
                self.generation = None;
                out.push(Chunk::Done {
                    stats: Stats::from_completion(&done),
                });
            }
            Ok(None) => {}
            Err(e) => {
                self.generation = None;
                return Err(e.into());
            }
        }
        Ok(out)
    }

    /// Ends the reply in progress: the text held back, then `Done` (stop reason
    /// `cancelled`). Nothing when no reply is in progress.
    pub fn cancel(&mut self) -> Result<Vec<Chunk>> {
        let Some(mut generation) = self.generation.take() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let done = self
            .engine
            .cancel(&mut generation, &mut |e| collect(&mut out, e))?;
        out.push(Chunk::Done {
            stats: Stats::from_completion(&done),
        });
        Ok(out)
    }

    /// Forgets the conversation held in the cache.
    pub fn reset(&mut self) {
        self.generation = None;
        self.engine.reset();
    }

    /// The last-position logits after `tokens` (from an empty cache) and after each of
    /// `steps` greedy steps, for comparing devices; the conversation is forgotten.
    pub async fn logits_async(&mut self, tokens: &[u32], steps: usize) -> Result<Vec<Vec<f32>>> {
        self.generation = None;
        Ok(self.engine.logits_async(tokens, steps).await?)
    }
}

/// Appends an event's text to `out`, merging it into the last chunk of the same kind.
fn collect(out: &mut Vec<Chunk>, e: Event<'_>) -> ControlFlow<()> {
    if let Event::Text { text, reasoning } = e {
        match (out.last_mut(), reasoning) {
            (Some(Chunk::Think { text: t }), true) | (Some(Chunk::Answer { text: t }), false) => {
                t.push_str(text)
            }
            (_, true) => out.push(Chunk::Think { text: text.into() }),
            (_, false) => out.push(Chunk::Answer { text: text.into() }),
        }
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_merge_into_think_and_answer_chunks() {
        let mut out = Vec::new();
        let text = |text, reasoning| Event::Text { text, reasoning };
        for e in [
            Event::ReasoningStart,
            text("plan", true),
            text(" more", true),
            Event::ReasoningEnd,
            text("Hi", false),
            text("!", false),
        ] {
            assert!(collect(&mut out, e).is_continue());
        }
        assert_eq!(
            out,
            [
                Chunk::Think {
                    text: "plan more".into()
                },
                Chunk::Answer { text: "Hi!".into() }
            ]
        );
        let json = serde_json::to_string(&out).unwrap();
        assert_eq!(
            json,
            r#"[{"kind":"think","text":"plan more"},{"kind":"answer","text":"Hi!"}]"#
        );
    }

    #[test]
    fn chat_options_take_the_js_names() {
        let o: ChatOptions =
            serde_json::from_str(r#"{"maxTokens":7,"topK":3,"repetitionPenalty":1.1,"seed":9}"#)
                .unwrap();
        let g = o.generate_options();
        assert_eq!(g.max_new_tokens, 7);
        assert_eq!(g.sampler.top_k, 3);
        assert_eq!(g.sampler.seed, 9);
        assert!((g.sampler.repetition_penalty - 1.1).abs() < 1e-6);
        assert_eq!(g.sampler.temperature, 0.0);
        let none: ChatOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(none.generate_options().max_new_tokens, DEFAULT_MAX_TOKENS);
    }
}
