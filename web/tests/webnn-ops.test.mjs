// The WebNN stand-in (webnn-standin.js), op by op, in headless Chromium:
// - every case of target/webnn-cases.json (written by `cargo run -p akari-webnn --example
//   webnn-cases`): the graph akari's WebNN backend records for one op — matmul in each
//   weight format, embed, rms_norm, rope, attention, silu·mul, softmax — built with the
//   stand-in's MLGraphBuilder on random non-zero inputs, against the CPU backend's kernels;
// - calls the spec rejects, which the stand-in must reject the same way.
//
// Environment: AKARI_NPM (a folder whose node_modules holds playwright-core), CHROMIUM,
// AKARI_WEBNN_CASES (the cases file; default target/webnn-cases.json).

import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');
const npm = process.env.AKARI_NPM;
if (!npm) throw new Error('AKARI_NPM is not set (run scripts/test-web.sh)');
const require = createRequire(path.join(npm, 'node_modules/'));
const { chromium } = require('playwright-core');
const casesFile = process.env.AKARI_WEBNN_CASES || path.join(repoRoot, 'target/webnn-cases.json');

let browser;
let page;
let server;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update'],
  });
  page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.addInitScript({ path: path.join(here, 'webnn-standin.js') });
  // An empty page on 127.0.0.1, a secure context, as the API requires.
  server = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>webnn ops</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.evaluate(() => {
    // Builds a recorded graph (the JSON form of akari_webnn::graph::Graph) with the
    // builder, the same calls the backend's runtime makes.
    window.buildRecorded = async (ctx, graph) => {
      const b = new MLGraphBuilder(ctx);
      const ops = [];
      for (const n of graph.nodes) {
        const o = (i) => ops[i];
        let r;
        switch (n.op) {
          case 'input': r = b.input(n.name, { dataType: n.dataType, shape: n.shape }); break;
          case 'scalar': r = b.constant({ dataType: 'float32', shape: [] }, new Float32Array([n.value])); break;
          case 'binary': r = b[n.kind](o(n.a), o(n.b)); break;
          case 'unary': r = b[n.kind](o(n.x)); break;
          case 'matmul': r = b.matmul(o(n.a), o(n.b)); break;
          case 'reshape': r = b.reshape(o(n.x), n.newShape); break;
          case 'transpose': r = b.transpose(o(n.x), { permutation: n.permutation }); break;
          case 'slice': r = b.slice(o(n.x), n.starts, n.sizes); break;
          case 'concat': r = b.concat(n.xs.map(o), n.axis); break;
          case 'gather': r = b.gather(o(n.x), o(n.indices), { axis: n.axis }); break;
          case 'softmax': r = b.softmax(o(n.x), n.axis); break;
          case 'reduceMean': r = b.reduceMean(o(n.x), { axes: n.axes, keepDimensions: true }); break;
          case 'cast': r = b.cast(o(n.x), n.to); break;
          case 'dequantizeLinear': r = b.dequantizeLinear(o(n.x), o(n.scale), o(n.zeroPoint)); break;
          default: throw new Error(`unknown op ${n.op}`);
        }
        // The recorder inferred each shape; the stand-in must agree.
        if (JSON.stringify(r.shape) !== JSON.stringify(n.shape) || r.dataType !== n.dataType) {
          throw new Error(`${n.op}: stand-in made ${r.dataType} [${r.shape}], recorder ${n.dataType} [${n.shape}]`);
        }
        ops.push(r);
      }
      const outputs = {};
      for (const [name, id] of graph.outputs) outputs[name] = ops[id];
      return { graph: await b.build(outputs), ops };
    };
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

test('stand-in ops match the CPU backend, case by case', async () => {
  const cases = JSON.parse(await fs.readFile(casesFile, 'utf8'));
  assert.ok(cases.length >= 15, `only ${cases.length} cases`);
  const results = await page.evaluate(async (cases) => {
    const ctx = await navigator.ml.createContext();
    const out = [];
    for (const c of cases) {
      const { graph, ops } = await window.buildRecorded(ctx, c.graph);
      const inputs = {};
      for (const t of c.inputs) {
        const tensor = await ctx.createTensor({ dataType: t.dataType, shape: t.shape, writable: true });
        ctx.writeTensor(tensor, new Uint8Array(t.bytes));
        inputs[t.name] = tensor;
      }
      const outputs = {};
      for (const [name, id] of c.graph.outputs) {
        outputs[name] = await ctx.createTensor({ dataType: ops[id].dataType, shape: ops[id].shape, readable: true });
      }
      ctx.dispatch(graph, inputs, outputs);
      const errors = {};
      for (const [name, want] of Object.entries(c.expected)) {
        const got = new Float32Array(await ctx.readTensor(outputs[name]));
        const lo = Math.min(...want.data);
        const hi = Math.max(...want.data);
        const range = hi - lo || Math.max(...want.data.map(Math.abs)) || 1;
        let worst = 0;
        for (let i = 0; i < want.data.length; i++) worst = Math.max(worst, Math.abs(got[i] - want.data[i]));
        errors[name] = { err: worst / range, len: got.length, want: want.data.length };
      }
      out.push({ name: c.name, tolerance: c.tolerance, errors });
    }
    return out;
  }, cases);
  for (const r of results) {
    for (const [name, e] of Object.entries(r.errors)) {
      assert.equal(e.len, e.want, `${r.name} ${name}: length`);
      assert.ok(e.err <= r.tolerance, `${r.name} ${name}: off by ${e.err} of the range (allowed ${r.tolerance})`);
    }
  }
  const names = results.map((r) => r.name).join(', ');
  for (const op of ['matmul Q4_1', 'matmul Q8_0', 'matmul F16', 'embed Q4_0', 'rms_norm', 'rope', 'attention', 'silu_mul', 'softmax']) {
    assert.ok(names.includes(op), `no case for ${op}`);
  }
});

test('4-bit values pack two per byte, the lower index in the low nibble', async () => {
  const got = await page.evaluate(async () => {
    const ctx = await navigator.ml.createContext();
    const b = new MLGraphBuilder(ctx);
    const q = b.input('q', { dataType: 'uint4', shape: [3] });
    const s = b.constant({ dataType: 'float32', shape: [1] }, new Float32Array([0.5]));
    const z = b.constant({ dataType: 'uint4', shape: [1] }, new Uint8Array([1]));
    const g = await b.build({ y: b.dequantizeLinear(q, s, z) });
    const qt = await ctx.createTensor({ dataType: 'uint4', shape: [3], writable: true });
    ctx.writeTensor(qt, new Uint8Array([0x53, 0x09]));
    const yt = await ctx.createTensor({ dataType: 'float32', shape: [3], readable: true });
    ctx.dispatch(g, { q: qt }, { y: yt });
    return Array.from(new Float32Array(await ctx.readTensor(yt)));
  });
  // 3, 5, 9 minus the zero point 1, times 0.5.
  assert.deepEqual(got, [1, 2, 4]);
});

test('the stand-in rejects what the spec rejects', async () => {
  const outcomes = await page.evaluate(async () => {
    const ctx = await navigator.ml.createContext();
    const f32 = (shape) => ({ dataType: 'float32', shape });
    const cases = {
      'unknown data type': (b) => b.input('x', { dataType: 'float64', shape: [2] }),
      'zero dimension': (b) => b.input('x', f32([2, 0])),
      'duplicate input name': (b) => { b.input('x', f32([2])); b.input('x', f32([2])); },
      'shapes that do not broadcast': (b) => b.add(b.input('a', f32([2, 3])), b.input('b', f32([4, 3]))),
      'mixed data types': (b) => b.add(b.input('a', f32([2])), b.input('b', { dataType: 'int32', shape: [2] })),
      'matmul inner sizes': (b) => b.matmul(b.input('a', f32([2, 3])), b.input('b', f32([4, 5]))),
      'matmul of rank 1': (b) => b.matmul(b.input('a', f32([3])), b.input('b', f32([3, 2]))),
      'matmul of integers': (b) => b.matmul(b.input('a', { dataType: 'int32', shape: [2, 2] }), b.input('b', { dataType: 'int32', shape: [2, 2] })),
      'reshape to another size': (b) => b.reshape(b.input('x', f32([2, 3])), [4]),
      'transpose with a bad permutation': (b) => b.transpose(b.input('x', f32([2, 3])), { permutation: [0, 0] }),
      'slice past the end': (b) => b.slice(b.input('x', f32([4])), [2], [3]),
      'concat of unequal shapes': (b) => b.concat([b.input('a', f32([2, 3])), b.input('b', f32([3, 3]))], 1),
      'gather with float indices': (b) => b.gather(b.input('x', f32([4])), b.input('i', f32([1]))),
      'gather axis past the rank': (b) => b.gather(b.input('x', f32([4])), b.input('i', { dataType: 'int32', shape: [1] }), { axis: 1 }),
      'softmax axis past the rank': (b) => b.softmax(b.input('x', f32([2, 3])), 2),
      'reduceMean repeated axes': (b) => b.reduceMean(b.input('x', f32([2, 3])), { axes: [1, 1] }),
      'dequantize with a zero point of another type': (b) => b.dequantizeLinear(
        b.input('q', { dataType: 'int8', shape: [4, 2] }), b.input('s', f32([2, 2])), b.input('z', { dataType: 'uint8', shape: [2, 2] })),
      'dequantize with partial blocks': (b) => b.dequantizeLinear(
        b.input('q', { dataType: 'int8', shape: [4, 2] }), b.input('s', f32([3, 2])), b.input('z', { dataType: 'int8', shape: [3, 2] })),
      'dequantize of float input': (b) => b.dequantizeLinear(b.input('q', f32([2])), b.input('s', f32([1])), b.input('z', f32([1]))),
      'constant with the wrong byte length': (b) => b.constant(f32([3]), new Float32Array(2)),
      'operand of another builder': (b) => b.add(b.input('a', f32([2])), new MLGraphBuilder(ctx).input('b', f32([2]))),
    };
    const out = {};
    for (const [name, f] of Object.entries(cases)) {
      try {
        f(new MLGraphBuilder(ctx));
        out[name] = 'no error';
      } catch (e) {
        out[name] = e.name;
      }
    }
    const rejected = async (name, p) => {
      try {
        await p();
        out[name] = 'no error';
      } catch (e) {
        out[name] = e.name;
      }
    };
    // A builder builds once; afterwards it refuses ops and a second build.
    const b = new MLGraphBuilder(ctx);
    const x = b.input('x', f32([2]));
    const y = b.add(x, x);
    const g = await b.build({ y });
    await rejected('op after build', async () => b.add(x, x));
    await rejected('second build', () => b.build({ y }));
    await rejected('input as output', () => { const b2 = new MLGraphBuilder(ctx); return b2.build({ x: b2.input('x', f32([2])) }); });
    await rejected('no outputs', () => new MLGraphBuilder(ctx).build({}));
    await rejected('unknown device type', () => navigator.ml.createContext({ deviceType: 'xpu' }));
    const xt = await ctx.createTensor({ dataType: 'float32', shape: [2], writable: true });
    const yt = await ctx.createTensor({ dataType: 'float32', shape: [2], readable: true });
    const wrong = await ctx.createTensor({ dataType: 'float32', shape: [3], writable: true, readable: true });
    await rejected('writeTensor with the wrong byte length', async () => ctx.writeTensor(xt, new Float32Array(3)));
    await rejected('writeTensor to a tensor not writable', async () => ctx.writeTensor(yt, new Float32Array(2)));
    await rejected('readTensor of a tensor not readable', () => ctx.readTensor(xt));
    await rejected('dispatch without an input', async () => ctx.dispatch(g, {}, { y: yt }));
    await rejected('dispatch with a wrong shape', async () => ctx.dispatch(g, { x: wrong }, { y: yt }));
    await rejected('dispatch reading and writing one tensor', async () => {
      const both = await ctx.createTensor({ dataType: 'float32', shape: [2], writable: true, readable: true });
      ctx.dispatch(g, { x: both }, { y: both });
    });
    await rejected('dispatch with an unknown output', async () => ctx.dispatch(g, { x: xt }, { z: yt }));
    // And the same graph runs when the call is right.
    ctx.writeTensor(xt, new Float32Array([1.5, -2]));
    ctx.dispatch(g, { x: xt }, { y: yt });
    out.result = Array.from(new Float32Array(await ctx.readTensor(yt)));
    return out;
  });
  const { result, ...errors } = outcomes;
  assert.deepEqual(result, [3, -4]);
  for (const [name, kind] of Object.entries(errors)) {
    const want = ['op after build', 'second build'].includes(name) ? 'InvalidStateError' : 'TypeError';
    assert.equal(kind, want, name);
  }
  assert.ok(Object.keys(errors).length >= 30, Object.keys(errors).join(', '));
});
