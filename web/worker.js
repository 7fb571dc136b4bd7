// The engine's Web Worker: downloads (or reads from the cache) a model's files, loads them
// into the WebAssembly engine and generates replies one token at a time, so an abort message
// is handled between tokens. The page talks to it through akari.js only.

import {
  addExtraToIndex, addToIndex, listingUrl, openCache, resolveUrl,
} from './cache.js';

// The engine module in use (the threaded build when it started, else the single-thread one)
// and the single-thread module, which is the one with the WebGPU backend.
let wasm = null;
let single = null;
let threads = 1;
let engine = null;
let aborted = false;
// Chats and resets run one after another.
let queue = Promise.resolve();

class WorkerError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function errorPayload(e) {
  if (e && typeof e.code === 'string') return { code: e.code, message: e.message };
  const message = e && e.message ? e.message : String(e);
  // The wasm heap is limited to 4 GiB; growing past it surfaces as a RangeError.
  if (e instanceof RangeError || /memory/i.test(message)) return { code: 'out-of-memory', message };
  return { code: 'device', message };
}

async function singleThreaded() {
  if (!single) {
    const m = await import('./pkg/akari_web.js');
    await m.default();
    single = m;
  }
  return single;
}

// The engine module for `device`: WebGPU and WebNN run in the single-thread build (the GPU or
// the WebNN device does the work; their objects cannot be shared between threads), the CPU on
// threads when it can.
async function initWasm(wantThreads, device) {
  if (device === 'webgpu' || device === 'gpu' || device.startsWith('webnn')) {
    wasm = await singleThreaded();
    threads = 1;
    return;
  }
  if (wasm) return;
  const canThread = self.crossOriginIsolated === true && typeof SharedArrayBuffer !== 'undefined';
  if (canThread && wantThreads !== 1) {
    try {
      const m = await import('./pkg-threads/akari_web.js');
      await m.default();
      const n = Math.max(1, wantThreads || navigator.hardwareConcurrency || 1);
      // A pool whose workers never report back must not hang the load.
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('the thread pool did not start within 30 s')), 30_000);
      });
      try {
        await Promise.race([m.initThreadPool(n), timeout]);
      } finally {
        clearTimeout(timer);
      }
      wasm = m;
      threads = n;
      return;
    } catch (e) {
      console.warn('akari: the threaded engine did not start, using one thread:', e);
    }
  }
  wasm = await singleThreaded();
  threads = 1;
}

// Lets queued messages (an abort) run before the next token; a message-channel task is not
// throttled the way nested timers are.
function yieldToEvents() {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(null);
  });
}

function progress(p) {
  postMessage({ type: 'progress', progress: p });
}

// ---- File choice per dtype (the native downloader's rules) ----

const GGUF_TAGS = {
  auto: ['Q4_K_M', 'Q4_0', 'Q4_1', 'Q8_0', 'F16'],
  q4: ['Q4_K_M', 'Q4_0', 'Q4_1', 'Q4_K_S', 'Q4_K'],
  q4f16: ['Q4_K_M', 'Q4_0', 'Q4_1', 'Q4_K_S', 'Q4_K'],
  q8: ['Q8_0'],
  fp16: ['F16'],
  fp32: ['F32'],
};

const ONNX_FILES = {
  auto: ['model_q4.onnx', 'model_quantized.onnx', 'model.onnx'],
  fp32: ['model.onnx'],
  fp16: ['model_fp16.onnx'],
  q8: ['model_quantized.onnx'],
  q4: ['model_q4.onnx'],
  q4f16: ['model_q4f16.onnx'],
};

const SIDE_FILES = [
  'tokenizer_config.json', 'generation_config.json', 'chat_template.jinja',
  'chat_template.json', 'special_tokens_map.json',
];

// Whether `tag` is a word of its own in a GGUF file name: Q4_0 in x.Q4_0.gguf, not F16 in x-BF16.gguf.
function hasTag(file, tag) {
  const name = file.split('/').pop().toUpperCase().replace(/\.GGUF$/, '');
  let i = name.indexOf(tag);
  while (i >= 0) {
    const before = i > 0 ? name[i - 1] : '';
    const after = name[i + tag.length] || '';
    if (!/[A-Z0-9]/.test(before) && !/[A-Z0-9]/.test(after)) return true;
    i = name.indexOf(tag, i + 1);
  }
  return false;
}

function noMatch(repo, dtype, wanted, choices) {
  return new WorkerError(
    'not-found',
    `${repo}: no file for dtype ${dtype} (looked for ${wanted.join(' / ')}; ` +
      `available: ${choices.length ? choices.join(', ') : 'none'})`,
  );
}

function onnxSelection(repo, paths, model) {
  const config = paths.includes('config.json') ? 'config.json' : 'genai_config.json';
  for (const need of [config, 'tokenizer.json']) {
    if (!paths.includes(need)) {
      throw new WorkerError('not-found', `${repo}: the repository has no ${need}, which akari needs to load it`);
    }
  }
  const files = [config, 'tokenizer.json', ...SIDE_FILES.filter((f) => paths.includes(f)), model];
  files.push(...paths.filter((p) => p.startsWith(`${model}_data`) || p === `${model}.data`));
  return files;
}

// The files to fetch for `dtype` (or the one `file`), from a repository's file list.
export function selectFiles(repo, paths, dtype, file) {
  const ggufs = paths.filter((p) => p.toLowerCase().endsWith('.gguf'));
  const onnx = paths.filter((p) => p.endsWith('.onnx'));
  if (file) {
    if (!paths.includes(file)) throw noMatch(repo, dtype, [file], [...ggufs, ...onnx]);
    return file.endsWith('.onnx') ? onnxSelection(repo, paths, file) : [file];
  }
  if (ggufs.length) {
    const tags = GGUF_TAGS[dtype] || [];
    for (const t of tags) {
      const hit = ggufs.find((f) => hasTag(f, t));
      if (hit) return [hit];
    }
    if (dtype === 'auto' && ggufs.length === 1) return [ggufs[0]];
    throw noMatch(repo, dtype, tags, ggufs);
  }
  if (onnx.length) {
    const folder = onnx.some((f) => f.startsWith('onnx/')) ? 'onnx/' : '';
    const inFolder = onnx.filter((f) => f.startsWith(folder) && !f.slice(folder.length).includes('/'));
    const wanted = ONNX_FILES[dtype] || [];
    let chosen = wanted.map((w) => folder + w).find((p) => paths.includes(p));
    if (!chosen && dtype === 'auto' && inFolder.length === 1) chosen = inFolder[0];
    if (!chosen) throw noMatch(repo, dtype, wanted, inFolder);
    return onnxSelection(repo, paths, chosen);
  }
  throw new WorkerError(
    'unsupported',
    `${repo}: no .gguf or .onnx files to load (files: ${paths.length ? paths.join(', ') : 'none'})`,
  );
}

// ---- Downloads ----

const RETRIES = 5;

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function fetchListing(cache, host, repo, revision, model) {
  const url = listingUrl(host, repo, revision);
  let res = cache ? await cache.match(url) : undefined;
  if (!res) {
    try {
      res = await fetch(url);
    } catch (e) {
      throw new WorkerError('download', `${repo}: cannot reach ${host} (${e.message})`);
    }
    if (res.status === 404 || res.status === 401) {
      throw new WorkerError('not-found', `${repo}: no such model at ${host} (HTTP ${res.status})`);
    }
    if (!res.ok) throw new WorkerError('download', `${repo}: listing failed with HTTP ${res.status}`);
    if (cache) {
      await cache.put(url, res.clone());
      await addExtraToIndex(cache, model, url);
    }
  }
  let json;
  try {
    json = await res.json();
  } catch {
    throw new WorkerError('download', `${repo}: the file listing is not JSON`);
  }
  const siblings = Array.isArray(json.siblings) ? json.siblings : [];
  return siblings.map((s) => s.rfilename).filter((p) => typeof p === 'string');
}

// A download's bytes, gathered into a Blob every 32 MiB: the browser may keep Blobs on disk,
// so a large model is not held in memory while it downloads. The engine reads the final Blob
// and the cache stores it.
const SPOOL_BYTES = 32 << 20;

class Spool {
  constructor() {
    this.blobs = [];
    this.pending = [];
    this.pendingBytes = 0;
  }

  push(chunk) {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= SPOOL_BYTES) this.flush();
  }

  flush() {
    if (!this.pending.length) return;
    this.blobs.push(new Blob(this.pending));
    this.pending = [];
    this.pendingBytes = 0;
  }

  blob() {
    this.flush();
    return new Blob(this.blobs);
  }
}

// Downloads `url` into a Blob, resuming with a Range request after a dropped connection, and
// checks its size and (when the host gives one) sha256. The engine reads the Blob a range at
// a time, so the file never has to fit in the wasm heap whole.
async function download(url, name, signalProgress) {
  let received = 0;
  let total = null;
  let sha = null;
  let failures = 0;
  const spool = new Spool();
  const hasher = new wasm.Sha256();
  const started = performance.now();
  let lastReport = 0;
  try {
    for (;;) {
      let res;
      try {
        res = await fetch(url, received > 0 ? { headers: { Range: `bytes=${received}-` } } : {});
      } catch (e) {
        if (++failures > RETRIES) throw new WorkerError('download', `${name}: ${e.message}`);
        await sleep(250 * failures);
        continue;
      }
      if (res.status === 404) throw new WorkerError('not-found', `${name}: not found (HTTP 404)`);
      if (!res.ok) {
        if (res.status >= 500 && ++failures <= RETRIES) {
          await sleep(250 * failures);
          continue;
        }
        throw new WorkerError('download', `${name}: HTTP ${res.status}`);
      }
      let skip = 0;
      if (received === 0 || total === null) {
        const linked = res.headers.get('x-linked-size');
        const length = res.headers.get('content-length');
        total = linked !== null ? Number(linked) : length !== null ? Number(length) : null;
        // X-Linked-Etag when the host answers directly; after the Hub's redirect to its file
        // store only the final response's ETag is visible, which is the sha256 there too.
        const tag = res.headers.get('x-linked-etag') || res.headers.get('etag') || '';
        const etag = tag.replace(/^W\//, '').replace(/"/g, '');
        if (/^[0-9a-f]{64}$/i.test(etag)) sha = etag.toLowerCase();
      } else if (res.status !== 206) {
        // The server ignored the range: skip what we already have.
        skip = received;
      }
      const reader = res.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          let chunk = value;
          if (skip > 0) {
            const cut = Math.min(skip, chunk.length);
            chunk = chunk.subarray(cut);
            skip -= cut;
            if (!chunk.length) continue;
          }
          if (total !== null && received + chunk.length > total) {
            throw new WorkerError('corrupt', `${name}: the server sent more than the ${total} bytes it announced`);
          }
          hasher.update(chunk);
          spool.push(chunk);
          received += chunk.length;
          const now = performance.now();
          if (now - lastReport > 100) {
            lastReport = now;
            signalProgress(received, total, received / Math.max(1e-3, (now - started) / 1000));
          }
        }
        if (total === null || received >= total) break;
        // A clean end before the announced size: the connection dropped.
        if (++failures > RETRIES) break;
      } catch (e) {
        if (e instanceof WorkerError) throw e;
        if (++failures > RETRIES) throw new WorkerError('download', `${name}: ${e.message}`);
        await sleep(250 * failures);
      }
    }
    if (total !== null && received !== total) {
      throw new WorkerError('corrupt', `${name}: received ${received} bytes, expected ${total}`);
    }
    const body = spool.blob();
    const digest = hasher.finishHex();
    if (sha !== null && digest !== sha) {
      throw new WorkerError('corrupt', `${name}: sha256 ${digest} does not match the expected ${sha}`);
    }
    const seconds = (performance.now() - started) / 1000;
    signalProgress(received, received, received / Math.max(1e-3, seconds));
    return { body, bytes: received, sha256: digest };
  } finally {
    hasher.free();
  }
}

// The cached copy of `url` as a Blob (the browser keeps it on disk; nothing is read yet), or
// null when there is none.
async function fromCache(cache, url, name, signalProgress) {
  const res = cache ? await cache.match(url) : undefined;
  if (!res) return null;
  const size = Number(res.headers.get('content-length'));
  if (!Number.isFinite(size) || size <= 0) return null;
  const started = performance.now();
  const body = await res.blob();
  if (body.size !== size) {
    throw new WorkerError('corrupt', `${name}: the cached copy has ${body.size} bytes, expected ${size}; delete it and reload`);
  }
  signalProgress(size, size, size / Math.max(1e-3, (performance.now() - started) / 1000));
  return body;
}

async function loadFromHub(repo, options, files) {
  const host = (options.host || self.location.origin).replace(/\/+$/, '');
  const revision = options.revision || 'main';
  const dtype = options.dtype || 'auto';
  const cache = await openCache();
  const paths = await fetchListing(cache, host, repo, revision, repo);
  const chosen = selectFiles(repo, paths, dtype, options.file);
  for (const name of chosen) {
    const url = resolveUrl(host, repo, revision, name);
    const cached = await fromCache(cache, url, name, (loaded, total, bytesPerSecond) =>
      progress({ stage: 'cache', file: name, loaded, total, bytesPerSecond }));
    if (cached) {
      files.addBlob(name, cached);
      continue;
    }
    const got = await download(url, name, (loaded, total, bytesPerSecond) =>
      progress({ stage: 'download', file: name, loaded, total: total ?? undefined, bytesPerSecond }));
    files.addBlob(name, got.body);
    if (cache) {
      const body = got.body;
      const headers = { 'content-length': String(got.bytes), 'x-akari-sha256': got.sha256 };
      try {
        await cache.put(url, new Response(body, { headers }));
        await addToIndex(cache, repo, { url, name, bytes: got.bytes });
      } catch (e) {
        // A full disk only costs the next load a download.
        console.warn(`akari: could not cache ${name}:`, e);
      }
    }
  }
  // The files picked are the dtype: the engine loads them as stored.
  return 'auto';
}

// A local file's path inside its model folder: webkitRelativePath without the folder's name.
function localPath(file) {
  const rel = file.webkitRelativePath || '';
  if (!rel) return file.name;
  const parts = rel.split('/');
  return parts.length > 1 ? parts.slice(1).join('/') : rel;
}

async function loadLocal(list, options, files) {
  const byPath = new Map(list.map((f) => [localPath(f), f]));
  const chosen = selectFiles('the chosen files', [...byPath.keys()], options.dtype || 'auto', options.file);
  for (const name of chosen) {
    const f = byPath.get(name);
    // A File is a Blob: the engine reads it from disk as it needs it.
    files.addBlob(name, f);
    progress({ stage: 'load', file: name, loaded: f.size, total: f.size });
  }
  return 'auto';
}

async function load(source, options) {
  const device = options.device || 'auto';
  await initWasm(options.threads, device);
  // Before any download: a device this build or this browser cannot use fails now.
  wasm.checkDevice(device);
  if ((device === 'webgpu' || device === 'gpu') && !navigator.gpu) {
    throw new WorkerError('unsupported', `device \`${device}\`: this browser has no WebGPU (navigator.gpu is missing); use \`wasm\``);
  }
  if (device.startsWith('webnn') && !(navigator.ml && typeof navigator.ml.createContext === 'function')) {
    throw new WorkerError('unsupported', `device \`${device}\`: this browser has no WebNN (navigator.ml is missing); use \`wasm\` or \`webgpu\``);
  }
  const isFiles = typeof source !== 'string';
  const list = isFiles ? (Array.isArray(source) ? source : [source]) : null;
  const name = isFiles ? (list.length === 1 ? list[0].name : localPath(list[0]).split('/')[0] || 'local files') : source;
  const files = new wasm.ModelFiles(name);
  let dtype;
  try {
    dtype = isFiles ? await loadLocal(list, options, files) : await loadFromHub(source, options, files);
  } catch (e) {
    files.free();
    throw e;
  }
  progress({ stage: 'load' });
  if (engine) {
    engine.free();
    engine = null;
  }
  // `files` is handed over to the engine (and freed with it).
  // The engine reports its own steps (reading, converting, uploading weights) as `load`.
  engine = await wasm.WebEngine.load(files, dtype, device, options.context ?? undefined, options.runAhead ?? undefined, (step) => {
    if (step !== 'ready') progress({ stage: 'load', step });
  });
  const info = JSON.parse(engine.info());
  info.threads = threads;
  progress({ stage: 'ready' });
  return info;
}

async function chat(id, messages, options) {
  aborted = false;
  if (!engine) throw new WorkerError('device', 'no model is loaded');
  engine.start(JSON.stringify(messages), JSON.stringify(options || {}));
  for (;;) {
    if (aborted) {
      postMessage({ type: 'chunks', id, chunks: JSON.parse(engine.cancel()) });
      return;
    }
    const chunks = JSON.parse(await engine.step());
    if (chunks.length) postMessage({ type: 'chunks', id, chunks });
    if (chunks.some((c) => c.kind === 'done')) return;
    await yieldToEvents();
  }
}

self.onmessage = (ev) => {
  const m = ev.data;
  switch (m.type) {
    case 'load':
      load(m.source, m.options || {}).then(
        (info) => postMessage({ type: 'loaded', info }),
        (e) => postMessage({ type: 'error', error: errorPayload(e) }),
      );
      break;
    case 'chat':
      queue = queue.then(() => chat(m.id, m.messages, m.options).catch((e) =>
        postMessage({ type: 'error', id: m.id, error: errorPayload(e) })));
      break;
    case 'logits':
      queue = queue.then(async () => {
        if (!engine) throw new WorkerError('device', 'no model is loaded');
        const logits = JSON.parse(await engine.logits(JSON.stringify(m.tokens), m.steps));
        postMessage({ type: 'logits', id: m.id, logits });
      }).catch((e) => postMessage({ type: 'error', id: m.id, error: errorPayload(e) }));
      break;
    case 'abort':
      aborted = true;
      break;
    case 'reset':
      queue = queue.then(() => {
        if (engine) engine.reset();
        postMessage({ type: 'reset-done', id: m.id });
      });
      break;
    default:
      break;
  }
};
