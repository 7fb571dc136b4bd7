// One benchmark run per page: load one engine, generate once to warm it up, then time one
// greedy reply. Every engine is timed the same way from this page:
//   ttftMs      from the call that starts the reply to the first generated token reaching JS
//   prefillTps  prompt tokens / ttftMs
//   decodeTps   (generated tokens - 1) / (time of the last token - time of the first token)
// Each engine's own figures are kept under `reported` for comparison.
//
// Paths (see bench.mjs for how the site is laid out): /akari/ the akari bundle, /tjs/
// transformers.js, /ort/ onnxruntime-web, /wllama/ wllama, /local-models/ the model files as
// plain files; the Hub URL layout (`/{owner}/{name}/resolve/main/...`) comes from akari serve.

const now = () => performance.now();

function summary(promptTokens, tokenTimes, t0) {
  const n = tokenTimes.length;
  const ttftMs = n > 0 ? tokenTimes[0] - t0 : NaN;
  const decodeMs = n > 1 ? tokenTimes[n - 1] - tokenTimes[0] : NaN;
  return {
    promptTokens,
    generatedTokens: n,
    ttftMs,
    prefillTps: promptTokens / (ttftMs / 1000),
    decodeTps: (n - 1) / (decodeMs / 1000),
  };
}

async function runAkari(cfg) {
  const akari = await import('/akari/akari.js');
  const t = now();
  const engine = await akari.load(cfg.model, {
    device: cfg.device || 'wasm',
    dtype: cfg.dtype,
    threads: cfg.threads,
    context: cfg.context,
  });
  const loadMs = now() - t;
  const chat = async (messages, maxTokens) => {
    await engine.reset();
    // A chunk carries the text of one or more tokens; the `done` stats count the tokens, so
    // the arrival time of each chunk stands for its tokens.
    const chunkTimes = [];
    let text = '';
    let stats = null;
    const t0 = now();
    for await (const c of engine.chat(messages, { maxTokens, temperature: 0 })) {
      if (c.kind === 'done') stats = c.stats;
      else {
        chunkTimes.push(now());
        text += c.text;
      }
    }
    return { t0, chunkTimes, text, stats };
  };
  await chat(cfg.warmupMessages, cfg.warmupTokens);
  const r = await chat(cfg.messages, cfg.maxTokens);
  const info = engine.info;
  await engine.unload();
  const n = r.stats.generatedTokens;
  const ttftMs = r.chunkTimes[0] - r.t0;
  const decodeMs = r.chunkTimes[r.chunkTimes.length - 1] - r.chunkTimes[0];
  return {
    promptTokens: r.stats.promptTokens,
    generatedTokens: n,
    ttftMs,
    prefillTps: r.stats.promptTokens / (ttftMs / 1000),
    decodeTps: (n - 1) / (decodeMs / 1000),
    loadMs,
    text: r.text,
    threads: info.threads,
    stopReason: r.stats.stopReason,
    reported: {
      ttftMs: r.stats.timeToFirstTokenMs,
      prefillTps: r.stats.prefillTokensPerSecond,
      decodeTps: r.stats.decodeTokensPerSecond,
    },
    info,
  };
}

async function runTransformers(cfg) {
  const tjs = await import('/tjs/transformers.js');
  const { env, AutoTokenizer, AutoModelForCausalLM, BaseStreamer } = tjs;
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = '/local-models/';
  env.useBrowserCache = false;
  const onnx = env.backends.onnx;
  onnx.wasm.wasmPaths = {
    mjs: new URL('/ort/ort-wasm-simd-threaded.asyncify.mjs', location.href).href,
    wasm: new URL('/ort/ort-wasm-simd-threaded.asyncify.wasm', location.href).href,
  };
  onnx.wasm.numThreads = cfg.threads;
  const template = await (await fetch(`/local-models/${cfg.model}/chat_template.jinja`)).text();

  const t = now();
  const tokenizer = await AutoTokenizer.from_pretrained(cfg.model);
  const model = await AutoModelForCausalLM.from_pretrained(cfg.model, {
    dtype: cfg.dtype,
    device: cfg.device,
  });
  const loadMs = now() - t;

  // `put` is called once with the prompt, then once per generated token.
  class TimingStreamer extends BaseStreamer {
    constructor() {
      super();
      this.calls = 0;
      this.times = [];
      this.ids = [];
    }
    put(value) {
      if (this.calls++ === 0) return;
      this.times.push(now());
      this.ids.push(...value[0].map(Number));
    }
    end() {}
  }
  const chat = async (messages, maxTokens) => {
    const inputs = tokenizer.apply_chat_template(messages, {
      chat_template: template,
      add_generation_prompt: true,
      return_dict: true,
    });
    const streamer = new TimingStreamer();
    const t0 = now();
    await model.generate({
      ...inputs,
      max_new_tokens: maxTokens,
      min_new_tokens: maxTokens,
      do_sample: false,
      streamer,
    });
    const promptTokens = inputs.input_ids.dims[1];
    return { ...summary(promptTokens, streamer.times, t0), text: tokenizer.decode(streamer.ids, { skip_special_tokens: true }) };
  };
  await chat(cfg.warmupMessages, cfg.warmupTokens);
  const r = await chat(cfg.messages, cfg.maxTokens);
  await model.dispose();
  return { ...r, loadMs, threads: cfg.device === 'wasm' ? onnx.wasm.numThreads : null, device: cfg.device };
}

async function runWllama(cfg) {
  const { Wllama } = await import('/wllama/index.js');
  const wllama = new Wllama(
    { default: new URL('/wllama/wasm/wllama.wasm', location.href).href },
    { suppressNativeLog: true, allowOffline: false },
  );
  const t = now();
  await wllama.loadModelFromUrl(new URL(cfg.url, location.href).href, {
    n_threads: cfg.threads,
    n_ctx: cfg.context,
    // Off: wllama would otherwise offload every layer to WebGPU when the page has it.
    n_gpu_layers: 0,
    useCache: false,
  });
  const loadMs = now() - t;
  const chat = async (messages, maxTokens) => {
    const times = [];
    let text = '';
    let timings = null;
    let usage = null;
    const t0 = now();
    await wllama.createChatCompletion({
      messages,
      max_tokens: maxTokens,
      temperature: 0,
      ignore_eos: true,
      cache_prompt: false,
      stream: true,
      onData: (chunk) => {
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) {
          times.push(now());
          text += delta;
        }
        if (chunk.timings) timings = chunk.timings;
        if (chunk.usage) usage = chunk.usage;
      },
    });
    return { t0, times, text, timings, usage };
  };
  await chat(cfg.warmupMessages, cfg.warmupTokens);
  const r = await chat(cfg.messages, cfg.maxTokens);
  const threads = wllama.getNumThreads();
  const multithread = wllama.isMultithread();
  await wllama.exit();
  // Text chunks can hold several tokens (held back UTF-8, stop-string checks): the token
  // counts come from the engine, the times from the chunks.
  const promptTokens = r.timings?.prompt_n ?? r.usage?.prompt_tokens;
  const n = r.timings?.predicted_n ?? r.usage?.completion_tokens ?? r.times.length;
  const ttftMs = r.times[0] - r.t0;
  const decodeMs = r.times[r.times.length - 1] - r.times[0];
  return {
    promptTokens,
    generatedTokens: n,
    ttftMs,
    prefillTps: promptTokens / (ttftMs / 1000),
    decodeTps: (n - 1) / (decodeMs / 1000),
    loadMs,
    text: r.text,
    threads,
    multithread,
    reported: r.timings
      ? { prefillTps: r.timings.prompt_per_second, decodeTps: r.timings.predicted_per_second }
      : null,
  };
}

export async function runBench(cfg) {
  const started = now();
  let result;
  if (cfg.engine === 'akari') result = await runAkari(cfg);
  else if (cfg.engine === 'transformers.js') result = await runTransformers(cfg);
  else if (cfg.engine === 'wllama') result = await runWllama(cfg);
  else throw new Error(`unknown engine ${cfg.engine}`);
  return {
    ...result,
    crossOriginIsolated: self.crossOriginIsolated,
    hardwareConcurrency: navigator.hardwareConcurrency,
    totalMs: now() - started,
  };
}
