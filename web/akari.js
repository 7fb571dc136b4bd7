// akari's JavaScript API: load a chat model and stream replies. The engine runs in a Web
// Worker (worker.js); this module only passes messages. Types: akari.d.ts.

import { listCached as cacheList, deleteCached as cacheDelete } from './cache.js';

// The devices this build of the engine has a backend for (besides WebAssembly).
const ENGINE_DEVICES = { webgpu: true, webnn: true };

export class AkariError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'AkariError';
    this.code = code;
  }
}

export async function capabilities() {
  const wasm = typeof WebAssembly === 'object' && typeof WebAssembly.instantiate === 'function'
    ? { available: true }
    : { available: false, reason: 'this browser has no WebAssembly' };

  const isolated = globalThis.crossOriginIsolated === true && typeof SharedArrayBuffer !== 'undefined';
  const threads = isolated
    ? { available: true, count: navigator.hardwareConcurrency || 1 }
    : {
      available: false,
      count: 1,
      reason: 'the page is not cross-origin isolated (it needs the Cross-Origin-Opener-Policy and ' +
        'Cross-Origin-Embedder-Policy headers), so the engine runs on one thread',
    };

  let webgpu = { available: false, shaderF16: false, reason: 'this browser has no WebGPU' };
  if (navigator.gpu) {
    let adapter = null;
    try {
      adapter = await navigator.gpu.requestAdapter();
    } catch {
      adapter = null;
    }
    if (!adapter) {
      webgpu = { available: false, shaderF16: false, reason: 'WebGPU is present but no GPU adapter was found' };
    } else {
      const shaderF16 = adapter.features.has('shader-f16');
      webgpu = ENGINE_DEVICES.webgpu
        ? { available: true, shaderF16 }
        : { available: false, shaderF16, reason: 'this browser has WebGPU, but this build of the engine does not run on it yet' };
    }
  }

  let webnn = { available: false, reason: 'this browser has no WebNN' };
  if (navigator.ml && typeof navigator.ml.createContext === 'function') {
    let ok = false;
    try {
      await navigator.ml.createContext();
      ok = true;
    } catch {
      ok = false;
    }
    webnn = !ok
      ? { available: false, reason: 'WebNN is present but no context could be created' }
      : ENGINE_DEVICES.webnn
        ? { available: true }
        : { available: false, reason: 'this browser has WebNN, but this build of the engine does not run on it yet' };
  }
  return { wasm, threads, webgpu, webnn };
}

class WorkerEngine {
  #worker;
  #handlers = new Map();
  #nextId = 1;
  #current = null;
  #closed = false;

  constructor(worker, info) {
    this.#worker = worker;
    this.info = Object.freeze(info);
    worker.onmessage = (ev) => {
      const m = ev.data;
      const h = this.#handlers.get(m.id);
      if (h) h(m);
    };
    worker.onerror = (ev) => {
      const err = new AkariError('device', `the engine worker failed: ${ev.message || 'unknown error'}`);
      for (const h of this.#handlers.values()) h({ type: 'error', error: err });
    };
  }

  #check() {
    if (this.#closed) throw new AkariError('device', 'the model was unloaded');
  }

  chat(messages, options = {}) {
    this.#check();
    const { signal, ...opts } = options;
    const id = this.#nextId++;
    const queue = [];
    let error = null;
    let wake = null;
    let finished = false;
    let resolveDone;
    const done = new Promise((r) => { resolveDone = r; });
    this.#handlers.set(id, (m) => {
      if (m.type === 'chunks') {
        queue.push(...m.chunks);
        if (m.chunks.some((c) => c.kind === 'done')) resolveDone();
      } else if (m.type === 'error') {
        error = m.error instanceof AkariError ? m.error : new AkariError(m.error.code, m.error.message);
        resolveDone();
      }
      if (wake) wake();
    });
    // One reply at a time: a new chat ends the one in progress.
    const previous = this.#current;
    if (previous) this.abort();
    this.#current = { id, done };
    done.then(() => {
      if (this.#current && this.#current.id === id) this.#current = null;
    });
    const start = () => {
      if (signal && signal.aborted) {
        error = new AkariError('aborted', 'the reply was aborted before it started');
        resolveDone();
        return;
      }
      this.#worker.postMessage({ type: 'chat', id, messages, options: opts });
    };
    (previous ? previous.done : Promise.resolve()).then(start);
    const onAbort = () => {
      if (this.#current && this.#current.id === id) this.abort();
    };
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            while (queue.length) {
              const c = queue.shift();
              yield c;
              if (c.kind === 'done') {
                finished = true;
                return;
              }
            }
            if (error) {
              finished = true;
              throw error;
            }
            await new Promise((r) => { wake = r; });
            wake = null;
          }
        } finally {
          if (signal) signal.removeEventListener('abort', onAbort);
          // The caller stopped reading early: stop generating.
          if (!finished && self.#current && self.#current.id === id) self.abort();
          done.then(() => self.#handlers.delete(id));
        }
      },
    };
  }

  abort() {
    if (!this.#closed) this.#worker.postMessage({ type: 'abort' });
  }

  reset() {
    this.#check();
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#handlers.set(id, () => {
        this.#handlers.delete(id);
        resolve();
      });
      this.#worker.postMessage({ type: 'reset', id });
    });
  }

  // The logits after `tokens` (token ids, fed from an empty cache) and after each of `steps`
  // greedy steps: for checking one device against another. Forgets the conversation.
  logits(tokens, steps = 0) {
    this.#check();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#handlers.set(id, (m) => {
        this.#handlers.delete(id);
        if (m.type === 'logits') resolve(m.logits);
        else reject(m.error instanceof AkariError ? m.error : new AkariError(m.error.code, m.error.message));
      });
      this.#worker.postMessage({ type: 'logits', id, tokens: Array.from(tokens), steps });
    });
  }

  async unload() {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate();
    const err = new AkariError('aborted', 'the model was unloaded');
    for (const h of this.#handlers.values()) h({ type: 'error', error: err });
    this.#handlers.clear();
  }
}

export function load(source, options = {}) {
  const { progress, signal, ...rest } = options;
  if (signal && signal.aborted) return Promise.reject(new AkariError('aborted', 'loading was aborted'));
  const okSource = typeof source === 'string' ||
    (typeof File !== 'undefined' && (source instanceof File ||
      (Array.isArray(source) && source.length > 0 && source.every((f) => f instanceof File))));
  if (!okSource) {
    return Promise.reject(new AkariError('not-found', 'load() takes a model id, a File or a non-empty File[]'));
  }
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  const host = rest.host || globalThis.location.origin;
  return new Promise((resolve, reject) => {
    const fail = (err) => {
      if (signal) signal.removeEventListener('abort', onAbort);
      worker.terminate();
      reject(err);
    };
    const onAbort = () => fail(new AkariError('aborted', 'loading was aborted'));
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    worker.onmessage = (ev) => {
      const m = ev.data;
      if (m.type === 'progress') {
        if (progress) {
          try {
            progress(m.progress);
          } catch (e) {
            console.error('akari: the progress callback threw:', e);
          }
        }
      } else if (m.type === 'loaded') {
        if (signal) signal.removeEventListener('abort', onAbort);
        resolve(new WorkerEngine(worker, m.info));
      } else if (m.type === 'error') {
        fail(new AkariError(m.error.code, m.error.message));
      }
    };
    worker.onerror = (ev) => {
      fail(new AkariError('device', `the engine worker failed to start: ${ev.message || 'unknown error'}`));
    };
    worker.postMessage({ type: 'load', source, options: { ...rest, host } });
  });
}

export function listCached() {
  return cacheList();
}

export function deleteCached(model) {
  return cacheDelete(model);
}
