// Runs a wasm32-wasip1 program under Node's WASI, with the host's file system visible at
// `/` and the working directory kept: cargo's runner for that target, so that the CPU
// kernels' tests and benchmarks run as WebAssembly (simd128) outside a browser.
//   node scripts/wasi-run.mjs program.wasm [args…]

import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { WASI } from 'node:wasi';

const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: [file, ...args],
  env: { ...process.env, PWD: process.cwd() },
  preopens: { '/': '/' },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
