//! akari-engine: from "this file, this dtype, this device" to a chat-ready model.
//!
//! [`Engine::load`] reads the model with `akari-formats`, converts weights to the requested
//! dtype, uploads them to a backend, and builds the tokenizer, chat template and stop
//! tokens. The engine then renders conversations, generates replies and exposes raw logits.

use akari_core::generate::{Completion, Event, GenerateOptions, Generation, Session};
use akari_core::model::{LanguageModel, Model};
use akari_core::template::{opens_reasoning, ChatTemplate, Message};
use akari_core::tokenizer::Tokenizer;
use akari_core::{Device, Dtype, Error, ModelConfig, QuantFormat, Result};
pub use akari_cpu::Activations;
use akari_cpu::CpuBackend;
#[cfg(not(target_arch = "wasm32"))]
pub use akari_formats::FileSource;
pub use akari_formats::{ByteSource, FileData, MemoryFiles};
use std::ops::ControlFlow;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: Dtype,
    /// CPU threads; `None` uses every core.
    pub threads: Option<usize>,
    /// Tokens the KV cache holds; `None` takes the model's trained context, capped at
    /// [`DEFAULT_CONTEXT`].
    pub context: Option<usize>,
    /// How the CPU backend quantises activations for quantised weights.
    pub cpu_activations: Activations,
    /// Whether greedy decode on the GPU records each step before the previous one is read
    /// back; `None` leaves it to the adapter (on, except on software adapters) and, natively,
    /// to `AKARI_GPU_RUN_AHEAD`. Kernel profiling (`AKARI_GPU_PROFILE`) turns it off.
    pub gpu_run_ahead: Option<bool>,
}

/// Default cache size: enough for a long chat, small enough for any machine.
pub const DEFAULT_CONTEXT: usize = 4096;

/// The largest context accepted, so a typo fails with a message instead of an allocation
/// failure (the KV cache and rope tables grow with it).
pub const MAX_CONTEXT: usize = 1 << 20;

/// Default cache size on WebNN: its graphs have static shapes, so every step attends over
/// (and copies) the whole cache, however little of it is used.
pub const DEFAULT_WEBNN_CONTEXT: usize = 1024;

/// A WebNN device: the browser's default context, or one of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebNnDevice {
    Default,
    Gpu,
    Cpu,
    Npu,
}

impl WebNnDevice {
    /// The JS API's names: `webnn`, `webnn-gpu`, `webnn-cpu`, `webnn-npu`.
    pub fn from_name(name: &str) -> Option<WebNnDevice> {
        match name {
            "webnn" => Some(WebNnDevice::Default),
            "webnn-gpu" => Some(WebNnDevice::Gpu),
            "webnn-cpu" => Some(WebNnDevice::Cpu),
            "webnn-npu" => Some(WebNnDevice::Npu),
            _ => None,
        }
    }

    /// `deviceType` for `createContext` (none for the default context).
    pub fn device_type(self) -> Option<&'static str> {
        match self {
            WebNnDevice::Default => None,
            WebNnDevice::Gpu => Some("gpu"),
            WebNnDevice::Cpu => Some("cpu"),
            WebNnDevice::Npu => Some("npu"),
        }
    }
}

/// Progress of a slow step, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub stage: &'a str,
    pub done: u64,
    pub total: u64,
}

/// What was loaded, for `akari info` and the UI.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: Option<String>,
    pub file_type: String,
    pub config: ModelConfig,
    pub device: Device,
    pub backend: String,
    pub weight_formats: Vec<(QuantFormat, usize)>,
    pub weight_bytes: usize,
    /// Weights in the model (matrix elements plus norm and bias values).
    pub parameters: usize,
    pub context: usize,
    /// Whether greedy decode records each step before the previous one is read back
    /// ([`LoadOptions::gpu_run_ahead`]).
    pub run_ahead: bool,
    pub metadata: Vec<(String, String)>,
}

pub struct Engine {
    info: ModelInfo,
    session: Session,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
}

/// Tokens that end a turn in the chat formats we know. They stop generation when the model's
/// template uses them.
const END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<｜end▁of▁sentence｜>",
    "</s>",
];

fn reading_progress(dtype: Dtype) -> Progress<'static> {
    Progress {
        stage: if dtype == Dtype::Auto {
            "reading model"
        } else {
            "reading and converting weights"
        },
        done: 0,
        total: 1,
    }
}

/// A GPU opened before loading: the browser can only open one asynchronously.
#[cfg(any(not(target_arch = "wasm32"), not(target_feature = "atomics")))]
pub type GpuContext = akari_gpu::GpuContext;

/// The threaded browser build has no GPU backend (wgpu's objects are not `Send` there).
#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
pub enum GpuContext {}

/// Every weight format runs on the GPU, with f32 activations.
#[cfg(any(not(target_arch = "wasm32"), not(target_feature = "atomics")))]
fn load_gpu(
    cfg: ModelConfig,
    weights: akari_core::weights::ModelWeights,
    context: usize,
    gpu: Option<GpuContext>,
    run_ahead: Option<bool>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Box<dyn LanguageModel>, String)> {
    let mut backend = match gpu {
        Some(ctx) => akari_gpu::GpuBackend::with_context(ctx),
        #[cfg(not(target_arch = "wasm32"))]
        None => akari_gpu::GpuBackend::new()?,
        #[cfg(target_arch = "wasm32")]
        None => {
            return Err(Error::Unsupported {
                backend: "webgpu",
                what: "loading without an open GPU (the browser opens it asynchronously: \
                       use Engine::load_memory_async)"
                    .into(),
            })
        }
    };
    if let Some(on) = run_ahead {
        backend.set_run_ahead(on);
    }
    let backend_name = backend.description();
    progress(Progress {
        stage: "uploading weights",
        done: 0,
        total: 1,
    });
    let model = Model::load(backend, cfg, weights, context)?;
    Ok((Box::new(model), backend_name))
}

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
fn load_gpu(
    _cfg: ModelConfig,
    _weights: akari_core::weights::ModelWeights,
    _context: usize,
    _gpu: Option<GpuContext>,
    _run_ahead: Option<bool>,
    _progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Box<dyn LanguageModel>, String)> {
    Err(Error::Unsupported {
        backend: "webgpu",
        what: "models in the threaded build of the browser engine (the single-thread build \
               runs WebGPU)"
            .into(),
    })
}

#[cfg(any(not(target_arch = "wasm32"), not(target_feature = "atomics")))]
async fn open_gpu() -> Result<GpuContext> {
    Ok(akari_gpu::GpuContext::new_async().await?)
}

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
async fn open_gpu() -> Result<GpuContext> {
    Err(Error::Unsupported {
        backend: "webgpu",
        what: "models in the threaded build of the browser engine (the single-thread build \
               runs WebGPU)"
            .into(),
    })
}

/// Whether `--device auto` should take the GPU: a hardware adapter is there (a software
/// Vulkan driver is slower than the CPU backend).
#[cfg(not(target_arch = "wasm32"))]
fn hardware_gpu() -> bool {
    akari_gpu::GpuContext::hardware_adapter().is_some()
}

#[cfg(target_arch = "wasm32")]
fn hardware_gpu() -> bool {
    false
}

/// The cache size: `requested`, else the model's trained context capped at
/// [`DEFAULT_CONTEXT`].
fn context_size(cfg: &ModelConfig, requested: Option<usize>) -> Result<usize> {
    let context = requested
        .unwrap_or(cfg.max_position_embeddings.min(DEFAULT_CONTEXT))
        .max(1);
    if context > MAX_CONTEXT {
        return Err(Error::InvalidArgument(format!(
            "a context of {context} tokens is more than akari supports ({MAX_CONTEXT})"
        )));
    }
    Ok(context)
}

fn target_format(dtype: Dtype, file: QuantFormat) -> QuantFormat {
    match dtype {
        Dtype::Auto => file,
        Dtype::Fp32 => QuantFormat::F32,
        Dtype::Fp16 => QuantFormat::F16,
        Dtype::Q8 | Dtype::Int8 | Dtype::Uint8 => QuantFormat::Q8_0,
        Dtype::Q4 | Dtype::Q4f16 | Dtype::Bnb4 => match file {
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => file,
            _ => QuantFormat::Q4_0,
        },
    }
}

/// A tokenizer from `tokenizer.json`, its special tokens set from what
/// `tokenizer_config.json` and `generation_config.json` say (where they say nothing, the
/// guesses [`Tokenizer::from_hf_json`] makes stay).
fn hf_tokenizer(json: &[u8], src: &akari_formats::ModelSource) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_hf_json(json)?;
    let by_name = |name: &Option<String>| name.as_deref().and_then(|n| tok.token_to_id(n));
    let bos = by_name(&src.bos_token).or(src.bos_id);
    let eos = by_name(&src.eos_token).or(src.eos_ids.first().copied());
    if bos.is_some() {
        tok.set_bos_id(bos);
    }
    if eos.is_some() {
        tok.set_eos_id(eos);
    }
    if let Some(add) = src.add_bos {
        tok.set_add_bos_default(add);
    }
    Ok(tok)
}

/// Reads a model from files in memory, converting weights to `opts.dtype`.
fn read_memory(
    files: &MemoryFiles,
    opts: &LoadOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<akari_formats::ModelSource> {
    progress(reading_progress(opts.dtype));
    let dtype = opts.dtype;
    akari_formats::open_memory(files, dtype, &move |default| target_format(dtype, default))
}

impl Engine {
    pub fn load(
        path: &Path,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Engine> {
        progress(reading_progress(opts.dtype));
        let dtype = opts.dtype;
        let src =
            akari_formats::open_with(path, dtype, &move |default| target_format(dtype, default))?;
        Engine::from_source(src, &path.display().to_string(), opts, None, None, progress)
    }

    /// As [`Engine::load`], from files held in memory: one `.gguf` file, or an ONNX
    /// repository's files (see [`akari_formats::open_memory`]). Matrices the backend runs as
    /// stored are used in place, so the weights are not copied.
    pub fn load_memory(
        files: &MemoryFiles,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Engine> {
        let src = read_memory(files, opts, progress)?;
        Engine::from_source(src, files.name(), opts, None, None, progress)
    }

    /// [`Engine::load_memory`] for the browser, where the GPU can only be opened
    /// asynchronously; on other devices it is the same.
    pub async fn load_memory_async(
        files: &MemoryFiles,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Engine> {
        let gpu = if opts.device == Device::Gpu {
            progress(Progress {
                stage: "opening the GPU",
                done: 0,
                total: 1,
            });
            Some(open_gpu().await?)
        } else {
            None
        };
        let src = read_memory(files, opts, progress)?;
        Engine::from_source(src, files.name(), opts, gpu, None, progress)
    }

    /// As [`Engine::load_memory`], on a WebNN context of `device` (the browser's
    /// single-thread build only: WebNN objects live on the thread that made them). Making the
    /// context, building the graphs and uploading the weights are asynchronous.
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    pub async fn load_memory_webnn(
        files: &MemoryFiles,
        opts: &LoadOptions,
        device: WebNnDevice,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Engine> {
        let src = read_memory(files, opts, progress)?;
        let context = context_size(&src.config, opts.context.or(Some(DEFAULT_WEBNN_CONTEXT)))?;
        // The matrices are shared views of the files' bytes: the clone copies norms only.
        let (model, report) = akari_webnn::runtime::load(
            src.config.clone(),
            src.weights.clone(),
            context,
            device.device_type(),
            &mut |stage, done, total| progress(Progress { stage, done, total }),
        )
        .await?;
        if let Some(note) = &report.dequantized {
            progress(Progress {
                stage: note,
                done: 1,
                total: 1,
            });
        }
        let backend = match report.dequantized {
            Some(note) => format!("{}; {note}", report.backend),
            None => report.backend,
        };
        let opts = LoadOptions {
            context: Some(context),
            ..opts.clone()
        };
        Engine::from_source(
            src,
            files.name(),
            &opts,
            None,
            Some((Box::new(model), backend)),
            progress,
        )
    }

    /// WebNN runs only in the browser's single-thread build.
    #[cfg(not(all(target_arch = "wasm32", not(target_feature = "atomics"))))]
    pub async fn load_memory_webnn(
        _files: &MemoryFiles,
        _opts: &LoadOptions,
        _device: WebNnDevice,
        _progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Engine> {
        Err(Error::Unsupported {
            backend: "webnn",
            what: "models outside the browser's single-thread engine (WebNN is a browser API)"
                .into(),
        })
    }

    /// `gpu_ctx`: a GPU opened beforehand (the browser opens it asynchronously). `prebuilt`: a
    /// model already made on its backend (WebNN, made asynchronously) with its description;
    /// `opts.device` is then only recorded.
    fn from_source(
        mut src: akari_formats::ModelSource,
        label: &str,
        opts: &LoadOptions,
        gpu_ctx: Option<GpuContext>,
        prebuilt: Option<(Box<dyn LanguageModel>, String)>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Engine> {
        // Auto stays on the CPU for now: a software Vulkan driver would be slower than it.
        let device = match opts.device {
            Device::Auto if hardware_gpu() => Device::Gpu,
            Device::Auto | Device::Cpu => Device::Cpu,
            Device::Gpu => Device::Gpu,
        };
        let mut formats: Vec<(QuantFormat, usize)> = Vec::new();
        let mut weight_bytes = 0;
        let mut parameters: usize = src.weights.vectors.values().map(Vec::len).sum();
        for (format, rows, cols, bytes) in src.weights.matrix_shapes() {
            weight_bytes += bytes;
            parameters += rows * cols;
            match formats.iter_mut().find(|(f, _)| *f == format) {
                Some((_, n)) => *n += 1,
                None => formats.push((format, 1)),
            }
        }
        formats.sort_by_key(|(f, _)| f.name());

        let tokenizer = match (&src.vocab, &src.tokenizer_json) {
            (Some(v), _) => Tokenizer::from_vocab(v)?,
            (None, Some(json)) => hf_tokenizer(json, &src)?,
            (None, None) => {
                return Err(Error::format(
                    label,
                    "the model carries no tokenizer (no GGUF vocabulary, no tokenizer.json)",
                ))
            }
        };
        let template = match &src.chat_template {
            Some(t) => ChatTemplate::new(t, tokenizer.bos_token(), tokenizer.eos_token())?,
            None => ChatTemplate::chatml(),
        };
        let mut stop_ids: Vec<u32> = Vec::new();
        if let Some(v) = &src.vocab {
            stop_ids.extend(v.eos_id);
            stop_ids.extend(v.eot_id);
        } else {
            stop_ids.extend(tokenizer.eos_id());
        }
        stop_ids.extend(&src.eos_ids);
        for t in END_OF_TURN {
            if template.source().contains(t) {
                stop_ids.extend(tokenizer.token_to_id(t));
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();

        let cfg = src.config.clone();
        let context = context_size(&cfg, opts.context)?;
        let weights = std::mem::take(&mut src.weights);
        // `auto` falls back to the CPU when the GPU cannot take the model (too little memory,
        // a tensor past the device's limits); an explicit `gpu` reports why.
        let mut weights = Some(weights);
        let prebuilt_device = prebuilt.as_ref().map(|_| opts.device);
        let gpu = if prebuilt.is_some() {
            prebuilt
        } else if device == Device::Gpu {
            // Only `auto` needs the weights again after a failed upload; the matrices are
            // shared views, so the copy is the norms and biases.
            let w = if opts.device == Device::Auto {
                weights.clone()
            } else {
                weights.take()
            };
            let w = w.ok_or_else(|| Error::InvalidArgument("weights already taken".into()))?;
            match load_gpu(
                cfg.clone(),
                w,
                context,
                gpu_ctx,
                opts.gpu_run_ahead,
                progress,
            ) {
                Ok(m) => Some(m),
                Err(e) if opts.device == Device::Auto => {
                    tracing::warn!("the GPU could not load the model, using the CPU: {e}");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let device = match prebuilt_device {
            Some(d) => d,
            None if gpu.is_some() => Device::Gpu,
            None => Device::Cpu,
        };
        let (model, backend_name): (Box<dyn LanguageModel>, String) = if let Some(m) = gpu {
            m
        } else {
            let backend = CpuBackend::new(opts.threads, opts.cpu_activations)?;
            let backend_name = format!(
                "cpu ({}, {} threads, {} activations)",
                backend.isa().name(),
                backend.threads(),
                backend.activations().name()
            );
            progress(Progress {
                stage: "uploading weights",
                done: 0,
                total: 1,
            });
            let weights = weights
                .take()
                .ok_or_else(|| Error::InvalidArgument("weights already taken".into()))?;
            let model = Model::load(backend, cfg.clone(), weights, context)?;
            (Box::new(model), backend_name)
        };
        progress(Progress {
            stage: "ready",
            done: 1,
            total: 1,
        });
        Ok(Engine {
            info: ModelInfo {
                name: src.name,
                file_type: src.file_type,
                config: cfg,
                device,
                backend: backend_name,
                weight_formats: formats,
                weight_bytes,
                parameters,
                context,
                run_ahead: model.runs_ahead(),
                metadata: src.metadata,
            },
            session: Session::new(model),
            tokenizer,
            template,
            stop_ids,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Renders a conversation with the model's template and tokenizes it. Returns the ids
    /// and whether the prompt leaves the model inside a `<think>` block.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<(Vec<u32>, bool)> {
        let text = self.template.render(messages, true)?;
        // The template writes BOS itself where the model wants one.
        let ids = self.tokenizer.encode(&text, false)?;
        Ok((ids, opens_reasoning(&text)))
    }

    /// Tokenizes text as is, with BOS if the model wants one.
    pub fn raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, self.tokenizer.add_bos_default())
    }

    /// Generates a reply; the engine's stop tokens are added to `opts.stop_ids`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let mut opts = opts.clone();
        opts.stop_ids.extend_from_slice(&self.stop_ids);
        self.session
            .generate(&self.tokenizer, prompt, &opts, on_event)
    }

    /// Starts a reply that the caller advances with [`Engine::step`], one token per call;
    /// the engine's stop tokens are added to `opts.stop_ids`.
    pub fn start(&mut self, prompt: &[u32], opts: &GenerateOptions) -> Result<Generation> {
        let mut opts = opts.clone();
        opts.stop_ids.extend_from_slice(&self.stop_ids);
        self.session.start(prompt, &opts)
    }

    /// Advances `generation` by one token; returns the completion when the reply ends.
    pub fn step(
        &mut self,
        generation: &mut Generation,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Completion>> {
        generation.step(&mut self.session, &self.tokenizer, on_event)
    }

    /// [`Engine::step`] without blocking, for the browser's asynchronous devices.
    pub async fn step_async(
        &mut self,
        generation: &mut Generation,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Completion>> {
        generation
            .step_async(&mut self.session, &self.tokenizer, on_event)
            .await
    }

    /// Ends `generation` now, reporting the text it held back.
    pub fn cancel(
        &self,
        generation: &mut Generation,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Completion> {
        generation.cancel(&self.tokenizer, on_event)
    }

    /// Forgets the conversation held in the cache.
    pub fn reset(&mut self) {
        self.session.reset();
    }

    /// The model with an empty cache, after checking it holds `total` tokens (`prompt` of
    /// them fed at once, the rest one by one).
    fn fresh_model(&mut self, total: usize, prompt: usize) -> Result<&mut dyn LanguageModel> {
        self.session.reset();
        let model: &mut dyn LanguageModel = self.session.model_mut();
        if total > model.max_seq() {
            return Err(Error::ContextOverflow {
                prompt,
                context: model.max_seq(),
                reserve: total - prompt,
            });
        }
        Ok(model)
    }

    /// Times a prefill of `tokens` from an empty cache and `steps` greedy decode steps after
    /// it: `(prefill seconds, decode seconds)`.
    pub fn time_prefill_and_decode(&mut self, tokens: &[u32], steps: usize) -> Result<(f64, f64)> {
        let model = self.fresh_model(tokens.len() + steps, tokens.len())?;
        // Greedy, as generation runs it: the backend picks the token and only that is read.
        let mut sampler = akari_core::sampler::Sampler::new(Default::default());
        let greedy = sampler.selection(&[]);
        let t0 = web_time::Instant::now();
        let mut next = sampler.pick(&model.forward_select(tokens, &greedy)?, &[]);
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = web_time::Instant::now();
        for _ in 0..steps {
            next = sampler.pick(&model.forward_select(&[next], &greedy)?, &[]);
        }
        let decode = t1.elapsed().as_secs_f64();
        self.session.reset();
        Ok((prefill, decode))
    }

    /// [`Engine::logits`] for backends whose results arrive asynchronously (the browser's).
    pub async fn logits_async(&mut self, tokens: &[u32], steps: usize) -> Result<Vec<Vec<f32>>> {
        let model = self.fresh_model(tokens.len() + steps, tokens.len())?;
        let mut out = vec![model.forward_async(tokens).await?];
        for _ in 0..steps {
            let next = akari_core::sampler::argmax(out.last().map(Vec::as_slice).unwrap_or(&[]));
            out.push(model.forward_async(&[next]).await?);
        }
        self.session.reset();
        Ok(out)
    }

    /// Feeds `tokens` from an empty cache, then takes `steps` greedy steps. Returns the
    /// last-position logits after the prefill and after each step.
    pub fn logits(&mut self, tokens: &[u32], steps: usize) -> Result<Vec<Vec<f32>>> {
        let model = self.fresh_model(tokens.len() + steps, tokens.len())?;
        let mut out = vec![model.forward(tokens)?];
        for _ in 0..steps {
            let next = akari_core::sampler::argmax(out.last().map(Vec::as_slice).unwrap_or(&[]));
            out.push(model.forward(&[next])?);
        }
        self.session.reset();
        Ok(out)
    }
}
