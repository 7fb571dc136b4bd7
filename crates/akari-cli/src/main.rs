//! `akari`: run chat models on this machine.

use akari_core::generate::{Completion, Event, GenerateOptions};
use akari_core::sampler::SamplerConfig;
use akari_core::template::Message;
use akari_core::{Device, Dtype};
use akari_engine::{Activations, Engine, LoadOptions, Progress};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "akari",
    version,
    about = "Run chat LLMs locally: GGUF, safetensors and ONNX models on the CPU or GPU",
    after_help = DTYPES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat interactively (/reset clears the conversation, /exit quits).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
    },
    /// Generate one reply and print it.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[arg(long)]
        prompt: String,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
        /// Feed the prompt as is, without the chat template.
        #[arg(long)]
        raw: bool,
        /// Print one JSON object with the text, tokens and stats.
        #[arg(long)]
        json: bool,
    },
    /// Print last-position logits after feeding token ids, then after each greedy step.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        #[arg(long, default_value_t = 0)]
        steps: usize,
    },
    /// Describe a model file.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// List or delete models downloaded from the Hub.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Serve the web app and local model files (in the Hub's URL layout) over HTTP.
    Serve {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Models to serve, as DIR/{owner}/{name}/{files} (default:
        /// $AKARI_CACHE/serve-models, which scripts/models-dir.sh builds).
        #[arg(long, value_name = "DIR")]
        models: Option<PathBuf>,
        /// The built web app.
        #[arg(long, value_name = "DIR", default_value = "target/web")]
        bundle: PathBuf,
    },
    /// Measure prefill and decode speed.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt length for the prefill measurement.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens generated for the decode measurement.
        #[arg(long, default_value_t = 64)]
        gen_tokens: usize,
        /// Measured repetitions (after one warm-up); the median is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Listed under `akari --help`; a test checks it names every [`Dtype`].
const DTYPES_HELP: &str =
    "Weight types (--dtype): auto, fp32, fp16, q8, q4, q4f16, int8, uint8, bnb4";

/// `--dtype`: the names of [`Dtype::ALL`], listed in the help.
fn dtype_parser() -> impl clap::builder::TypedValueParser<Value = Dtype> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Dtype::ALL.map(Dtype::name))
        .try_map(|s| s.parse::<Dtype>())
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A .gguf file, a model folder (Hugging Face or transformers.js ONNX layout), or a Hub
    /// id (owner/name) to download into the akari cache. Defaults to SmolLM2-135M-Instruct
    /// in the akari cache (scripts/fetch-smollm2.sh puts it there).
    model: Option<PathBuf>,
    #[command(flatten)]
    hub: HubArgs,
    /// auto: the GPU when a hardware adapter is there (a software Vulkan driver does not
    /// count) and it takes the model, else the CPU.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Weight type to store (convert) the weights as; for ONNX repositories the file
    /// transformers.js loads for it (q8: model_quantized.onnx, int8: model_int8.onnx,
    /// uint8: model_uint8.onnx, bnb4: model_bnb4.onnx, …). int8 and uint8 convert other
    /// files as q8 does, bnb4 as q4.
    #[arg(long, default_value = "auto", value_parser = dtype_parser())]
    dtype: Dtype,
    /// CPU threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Context length in tokens (default: the model's, at most 4096).
    #[arg(long)]
    context: Option<usize>,
    /// How activations meet quantised weights on the CPU: int16 (about f32 accuracy) or
    /// int8 (llama.cpp's arithmetic).
    #[arg(long, default_value = "int16")]
    activations: Activations,
}

/// Where a Hub id is downloaded from.
#[derive(Args, Clone)]
struct HubArgs {
    /// Hub to download from (default: $AKARI_HUB_HOST, else https://huggingface.co).
    #[arg(long, value_name = "URL")]
    hub_host: Option<String>,
    /// Branch, tag or commit of the Hub repository.
    #[arg(long, default_value = akari_hub::DEFAULT_REVISION)]
    revision: String,
    /// The file to load from the Hub repository (a .gguf, or an .onnx with its folder's
    /// config), instead of the one --dtype picks.
    #[arg(long, value_name = "PATH")]
    file: Option<String>,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List downloaded models with their sizes.
    List,
    /// Delete a downloaded model (every revision).
    Rm {
        /// Hub id, owner/name.
        repo: String,
    },
}

#[derive(Args, Clone)]
struct SamplingArgs {
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Text that ends the reply (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

impl SamplingArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
                ..Default::default()
            },
            stop_strings: self.stop.clone(),
            ..Default::default()
        }
    }
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AKARI_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("akari")
}

const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model to open and the dtype to open it with: a local path as given, or a Hub id
/// downloaded into the cache (then the dtype of the file that was picked for --dtype).
fn resolve_model(args: &ModelArgs) -> Result<(PathBuf, Dtype)> {
    if let Some(id) = args.model.as_deref().and_then(|p| p.to_str()) {
        if akari_hub::looks_like_repo_id(id) {
            let got = hub_fetch(id, &args.hub, args.dtype)?;
            return Ok((got.path, got.dtype));
        }
    }
    Ok((local_model(&args.model)?, args.dtype))
}

fn hub_client(hub: &HubArgs) -> akari_hub::Hub {
    akari_hub::Hub::new(akari_hub::HubOptions {
        host: akari_hub::host_from(hub.hub_host.as_deref()),
        ..Default::default()
    })
}

/// Downloads what `id` needs for `dtype`, one progress bar per file. An interrupted
/// download resumes from its `.part` file on the next run.
fn hub_fetch(id: &str, hub: &HubArgs, dtype: Dtype) -> Result<akari_hub::Resolved> {
    let repo = akari_hub::RepoId::parse(id)?;
    let client = hub_client(hub);
    let bars = indicatif::MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg:32!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut open: std::collections::HashMap<String, ProgressBar> = Default::default();
    let mut on_progress = |p: &akari_hub::FileProgress<'_>| {
        use akari_hub::Stage;
        if p.stage == Stage::Cached {
            return;
        }
        let bar = open.entry(p.path.to_string()).or_insert_with(|| {
            let b = bars.add(ProgressBar::new(p.total.unwrap_or(0)));
            b.set_style(style.clone());
            b.set_message(p.path.to_string());
            b
        });
        if let Some(t) = p.total {
            bar.set_length(t);
        }
        bar.set_position(p.done);
        match p.stage {
            Stage::Retrying { attempt } => bar.set_message(format!("{} (retry {attempt})", p.path)),
            Stage::Done => bar.finish(),
            _ => {}
        }
    };
    let never = AtomicBool::new(false);
    let got = client
        .fetch_model(
            &repo,
            &hub.revision,
            dtype,
            hub.file.as_deref(),
            &mut on_progress,
            &never,
        )
        .with_context(|| {
            format!(
                "{id} is not a local path, and cannot be fetched from {}",
                client.host()
            )
        })?;
    Ok(got)
}

fn local_model(arg: &Option<PathBuf>) -> Result<PathBuf> {
    let path = match arg {
        Some(p) => p.clone(),
        None => {
            let p = cache_dir().join("models").join(DEFAULT_MODEL);
            if !p.exists() {
                bail!(
                    "no model given and the default model is not at {} (run scripts/fetch-smollm2.sh)",
                    p.display()
                );
            }
            p
        }
    };
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    Ok(path)
}

fn load(args: &ModelArgs) -> Result<Engine> {
    let (path, dtype) = resolve_model(args)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let opts = LoadOptions {
        device: args.device,
        dtype,
        threads: args.threads,
        context: args.context,
        cpu_activations: args.activations,
        // `AKARI_GPU_RUN_AHEAD=0|1` overrides the adapter's default.
        gpu_run_ahead: None,
    };
    let mut on_progress = |p: Progress<'_>| {
        if p.total > 1 {
            bar.set_message(format!("{} {}/{}", p.stage, p.done, p.total));
        } else {
            bar.set_message(p.stage.to_string());
        }
    };
    let engine = Engine::load(&path, &opts, &mut on_progress)
        .with_context(|| format!("cannot load {}", path.display()));
    bar.finish_and_clear();
    release_freed_memory();
    engine
}

/// Loading builds large temporary structures (the tokenizer's JSON, converted tensors);
/// glibc keeps freed memory mapped, so hand it back before the model runs.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn messages(system: &Option<String>, user: &str) -> Vec<Message> {
    let mut m = Vec::new();
    if let Some(s) = system {
        m.push(Message {
            role: "system".into(),
            content: s.clone(),
        });
    }
    m.push(Message {
        role: "user".into(),
        content: user.into(),
    });
    m
}

fn stats_json(c: &Completion) -> serde_json::Value {
    let s = &c.stats;
    json!({
        "prompt_tokens": s.prompt_tokens,
        "cached_tokens": s.cached_tokens,
        "generated_tokens": s.generated_tokens,
        "ttft_ms": s.ttft_ms,
        "prefill_ms": s.prefill_ms,
        "prefill_tok_s": s.prefill_tok_s,
        "decode_ms": s.decode_ms,
        "decode_tok_s": s.decode_tok_s,
        "reasoning_ms": s.reasoning_ms,
        "stop": c.stop.name(),
    })
}

/// Streams events to a terminal: reasoning dimmed, answer plain.
fn print_event(out: &mut impl Write, color: bool, e: Event<'_>) {
    let _ = match e {
        Event::ReasoningStart => writeln!(out, "{}[thinking]", if color { "\x1b[2m" } else { "" }),
        Event::ReasoningEnd => write!(out, "\n[/thinking]{}\n", if color { "\x1b[0m" } else { "" }),
        Event::Text { text, .. } => write!(out, "{text}"),
    };
    let _ = out.flush();
}

fn cmd_generate(
    model: &ModelArgs,
    sampling: &SamplingArgs,
    prompt: &str,
    system: &Option<String>,
    raw: bool,
    as_json: bool,
) -> Result<()> {
    let mut engine = load(model)?;
    let mut opts = sampling.options();
    let ids = if raw {
        engine.raw_prompt(prompt)?
    } else {
        let (ids, open) = engine.chat_prompt(&messages(system, prompt))?;
        opts.reasoning_open = open;
        ids
    };
    let stdout = std::io::stdout();
    let color = !as_json && stdout.is_terminal();
    let mut out = stdout.lock();
    let completion = engine.generate(&ids, &opts, |e| {
        if !as_json {
            print_event(&mut out, color, e);
        }
        ControlFlow::Continue(())
    })?;
    if as_json {
        let v = json!({
            "text": completion.text,
            "reasoning": completion.reasoning,
            "tokens": completion.tokens,
            "prompt_tokens": ids,
            "stats": stats_json(&completion),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
        eprintln!("{}", stats_line(&completion));
    }
    Ok(())
}

fn stats_line(c: &Completion) -> String {
    let s = &c.stats;
    format!(
        "[{} prompt tokens ({} cached), {} generated; first token {:.0} ms; prefill {:.1} tok/s; decode {:.1} tok/s; stop: {}]",
        s.prompt_tokens,
        s.cached_tokens,
        s.generated_tokens,
        s.ttft_ms,
        s.prefill_tok_s,
        s.decode_tok_s,
        c.stop.name()
    )
}

/// Ctrl-C while a reply streams stops that reply; at the prompt it quits.
static GENERATING: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

fn cmd_chat(model: &ModelArgs, sampling: &SamplingArgs, system: &Option<String>) -> Result<()> {
    let mut engine = load(model)?;
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    let info = engine.info().clone();
    eprintln!(
        "{} ({}, {} layers) on {}. /reset clears the conversation, /exit quits.",
        info.name.as_deref().unwrap_or("model"),
        info.file_type,
        info.config.num_layers,
        info.backend
    );
    let mut history: Vec<Message> = Vec::new();
    if let Some(s) = system {
        history.push(Message {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let color = stdout.is_terminal();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.retain(|m| m.role == "system");
                engine.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message {
            role: "user".into(),
            content: input.into(),
        });
        let (ids, open) = match engine.chat_prompt(&history) {
            Ok(p) => p,
            Err(e) => {
                history.pop();
                eprintln!("error: {e}");
                continue;
            }
        };
        let mut opts = sampling.options();
        opts.reasoning_open = open;
        let mut out = stdout.lock();
        CANCEL.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = engine.generate(&ids, &opts, |e| {
            print_event(&mut out, color, e);
            if CANCEL.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        GENERATING.store(false, Ordering::SeqCst);
        match result {
            Ok(c) => {
                writeln!(out)?;
                eprintln!("{}", stats_line(&c));
                history.push(Message {
                    role: "assistant".into(),
                    content: c.text,
                });
            }
            Err(e) => {
                history.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(())
}

fn cmd_logits(model: &ModelArgs, tokens: &[u32], steps: usize) -> Result<()> {
    let mut engine = load(model)?;
    let all = engine.logits(tokens, steps)?;
    let steps: Vec<_> = all
        .iter()
        .map(|l| json!({"argmax": akari_core::sampler::argmax(l), "logits": l}))
        .collect();
    println!("{}", json!({ "steps": steps }));
    Ok(())
}

fn cmd_info(model: &ModelArgs, as_json: bool) -> Result<()> {
    let engine = load(model)?;
    let i = engine.info();
    let c = &i.config;
    let formats: Vec<String> = i
        .weight_formats
        .iter()
        .map(|(f, n)| format!("{f} x{n}"))
        .collect();
    if as_json {
        println!(
            "{}",
            json!({
                "name": i.name, "file_type": i.file_type, "architecture": c.arch.name(),
                "layers": c.num_layers, "hidden_size": c.hidden_size, "heads": c.num_heads,
                "kv_heads": c.num_kv_heads, "head_dim": c.head_dim, "vocab_size": c.vocab_size,
                "intermediate_size": c.intermediate_size, "context_length": c.max_position_embeddings,
                "tied_embeddings": c.tie_word_embeddings, "rope_scaling": format!("{:?}", c.rope_scaling),
                "weights": formats, "weight_bytes": i.weight_bytes, "backend": i.backend, "run_ahead": i.run_ahead,
                "stop_ids": engine.stop_ids(),
            })
        );
        return Ok(());
    }
    println!("name            {}", i.name.as_deref().unwrap_or("-"));
    println!("architecture    {}", c.arch.name());
    println!("file type       {}", i.file_type);
    println!(
        "shape           {} layers, hidden {}, {} heads ({} kv) of {}, ffn {}, vocab {}",
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size
    );
    println!(
        "context         {} (trained), rope theta {}, scaling {:?}",
        c.max_position_embeddings, c.rope_theta, c.rope_scaling
    );
    println!(
        "embeddings      {}",
        if c.tie_word_embeddings {
            "tied"
        } else {
            "separate lm_head"
        }
    );
    println!(
        "weights         {} ({:.1} MiB)",
        formats.join(", "),
        i.weight_bytes as f64 / (1 << 20) as f64
    );
    println!("backend         {}", i.backend);
    println!("stop tokens     {:?}", engine.stop_ids());
    for (k, v) in &i.metadata {
        println!("  {k} = {v}");
    }
    Ok(())
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn cmd_bench(
    model: &ModelArgs,
    prompt_tokens: usize,
    gen_tokens: usize,
    repeats: usize,
    as_json: bool,
) -> Result<()> {
    let mut engine = load(model)?;
    let vocab = engine.info().config.vocab_size as u32;
    // A fixed, content-free prompt: speed does not depend on the ids.
    let prompt: Vec<u32> = (0..prompt_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let (mut pp, mut tg, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=repeats.max(1) {
        // Decode follows the prompt, as in a chat: its attention reads a cache of
        // prompt_tokens and more.
        let (prefill, decode) = engine.time_prefill_and_decode(&prompt, gen_tokens)?;
        if rep > 0 {
            pp.push(prompt_tokens as f64 / prefill);
            tg.push(gen_tokens as f64 / decode);
            ttft.push(prefill * 1e3);
        }
    }
    let (pp, tg, ttft) = (median(&mut pp), median(&mut tg), median(&mut ttft));
    let rss = peak_rss_bytes();
    let i = engine.info();
    if as_json {
        println!(
            "{}",
            json!({"model": i.name, "file_type": i.file_type, "backend": i.backend,
                   "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
                   "prefill_tok_s": pp, "decode_tok_s": tg, "ttft_ms": ttft, "peak_rss_bytes": rss})
        );
    } else {
        println!(
            "{} {} on {}",
            i.name.as_deref().unwrap_or("model"),
            i.file_type,
            i.backend
        );
        println!(
            "prefill  {pp:.1} tok/s ({prompt_tokens} tokens, time to first token {ttft:.0} ms)"
        );
        println!("decode   {tg:.1} tok/s ({gen_tokens} tokens after the prompt)");
        if let Some(r) = rss {
            println!("peak RSS {:.1} MiB", r as f64 / (1 << 20) as f64);
        }
    }
    Ok(())
}

fn cmd_cache(command: &CacheCommand) -> Result<()> {
    let root = akari_hub::cache::default_root();
    match command {
        CacheCommand::List => {
            let models = akari_hub::cache::list(&root)?;
            if models.is_empty() {
                eprintln!(
                    "no downloaded models in {}",
                    akari_hub::cache::hub_dir(&root).display()
                );
            }
            for m in models {
                println!(
                    "{:<48} {:>10}",
                    m.repo,
                    indicatif::HumanBytes(m.bytes()).to_string()
                );
                for r in &m.revisions {
                    let partial = if r.partial_bytes > 0 {
                        format!(", {} unfinished", indicatif::HumanBytes(r.partial_bytes))
                    } else {
                        String::new()
                    };
                    println!("  {} ({} files{partial})", r.revision, r.files.len());
                    for (f, n) in &r.files {
                        println!("    {f:<44} {:>10}", indicatif::HumanBytes(*n).to_string());
                    }
                }
            }
        }
        CacheCommand::Rm { repo } => {
            let id = akari_hub::RepoId::parse(repo)?;
            match akari_hub::cache::remove(&root, &id)? {
                Some(n) => println!("deleted {repo} ({})", indicatif::HumanBytes(n)),
                None => bail!("{repo} is not in the cache (see `akari cache list`)"),
            }
        }
    }
    Ok(())
}

fn cmd_serve(host: &str, port: u16, models: &Option<PathBuf>, bundle: &Path) -> Result<()> {
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let models = models.clone().or_else(|| {
        let d = cache_dir().join("serve-models");
        d.is_dir().then_some(d)
    });
    if let Some(m) = &models {
        if !m.is_dir() {
            bail!("{}: no such folder (--models)", m.display());
        }
    }
    let config = akari_serve::ServeConfig {
        models: models.clone(),
        bundle: bundle.to_path_buf(),
    };
    akari_serve::run_until_ctrl_c(addr, config, |bound| {
        match &models {
            Some(m) => eprintln!("serving models from {}", m.display()),
            None => eprintln!("no models folder (--models DIR)"),
        }
        if !bundle.join("index.html").is_file() {
            eprintln!(
                "{} has no web build yet; / explains how to build it",
                bundle.display()
            );
        }
        println!("listening on http://{bound}/ (Ctrl-C stops)");
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes, on one line each, without a backtrace.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AKARI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Chat {
            model,
            sampling,
            system,
        } => cmd_chat(model, sampling, system),
        Command::Generate {
            model,
            sampling,
            prompt,
            system,
            raw,
            json,
        } => cmd_generate(model, sampling, prompt, system, *raw, *json),
        Command::Logits {
            model,
            tokens,
            steps,
        } => cmd_logits(model, tokens, *steps),
        Command::Info { model, json } => cmd_info(model, *json),
        Command::Cache { command } => cmd_cache(command),
        Command::Serve {
            host,
            port,
            models,
            bundle,
        } => cmd_serve(host, *port, models, bundle),
        Command::Bench {
            model,
            prompt_tokens,
            gen_tokens,
            repeats,
            json,
        } => cmd_bench(model, *prompt_tokens, *gen_tokens, *repeats, *json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_dtype() {
        let listed: Vec<&str> = DTYPES_HELP
            .split_once(": ")
            .map(|(_, l)| l.split(", ").collect())
            .unwrap_or_default();
        assert_eq!(listed, Dtype::ALL.map(Dtype::name));
    }
}
