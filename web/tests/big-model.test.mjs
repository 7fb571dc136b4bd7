// A model whose weights are larger than 2 GiB, loaded on WebGPU in headless Chromium: an ONNX
// repository with external data (scripts/make_big_onnx.py), downloaded from the Hub-layout
// server, read a tensor at a time into GPU buffers. Asserts the greedy reply equals the
// native engine's and that the WebAssembly heap stayed far smaller than the weights. Run by
// scripts/demo-big-model.sh (too heavy for CI: the export needs about 12 GB of memory, and
// SwiftShader takes minutes a token on a model this size).
//
// Environment: AKARI_BIG_MODEL (the repository folder), AKARI_BIN (the native akari
// binary), AKARI_NPM (a folder whose node_modules holds playwright-core), CHROMIUM.

import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as harness from './harness.mjs';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const bundle = path.resolve(here, '../../target/web');
const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run scripts/demo-big-model.sh)`);
  return v;
};
const model = need('AKARI_BIG_MODEL');
const akariBin = need('AKARI_BIN');
const require = createRequire(path.join(need('AKARI_NPM'), 'node_modules/'));
const { chromium } = require('playwright-core');

const REPO = 'akari-test/big-qwen2-fp16';
const PROMPT = 'hello there';
const MAX_TOKENS = 4;

let server;
let browser;
let modelsDir;
let userData;

before(async () => {
  modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-big-models-'));
  await fs.mkdir(path.dirname(path.join(modelsDir, REPO)), { recursive: true });
  await fs.symlink(path.resolve(model), path.join(modelsDir, REPO));
  server = await startServer({ root: bundle, models: modelsDir });
  userData = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-big-chromium-'));
  browser = await harness.launch(chromium, userData);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.close();
  if (modelsDir) await fs.rm(modelsDir, { recursive: true, force: true });
  if (userData) await fs.rm(userData, { recursive: true, force: true });
});

test('fp16 ONNX with weights over 2 GiB on webgpu: the greedy reply equals the native engine', async () => {
  const data = (await fs.stat(path.join(model, 'onnx/model_fp16.onnx_data'))).size;
  assert.ok(data > 2 ** 31, `external data ${data} bytes`);
  let t = performance.now();
  const want = harness.nativeReply(akariBin, model, PROMPT, MAX_TOKENS, ['--dtype', 'fp16']);
  console.log(`native (CPU): ${JSON.stringify(want)} in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.log(`[browser ${m.type()}] ${m.text()}`);
  });
  await page.goto(`${server.url}/test.html`);
  await page.waitForFunction(() => window.akari !== undefined);
  t = performance.now();
  const got = await harness.loadAndChat(page, REPO, { dtype: 'fp16', device: 'webgpu' },
    [{ role: 'user', content: PROMPT }], { maxTokens: MAX_TOKENS });
  const seconds = ((performance.now() - t) / 1000).toFixed(1);
  console.log(`webgpu: ${JSON.stringify(got.answer)} in ${seconds} s; wasm heap ${got.info.heapBytes} bytes ` +
    `for ${data} bytes of weights; ${got.info.parameters} parameters; stats ${JSON.stringify(got.done)}`);
  assert.equal(got.info.device, 'webgpu');
  assert.equal(got.answer, want);
  // One tensor at a time passes through the heap (the largest here, the MLP's 27.5 MB).
  assert.ok(got.info.heapBytes < 2 ** 30, `wasm heap ${got.info.heapBytes} bytes`);
  assert.ok(got.info.parameters > 1e9, `parameters ${got.info.parameters}`);
});
