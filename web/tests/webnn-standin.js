// WebNN stand-in, test code only (never part of the bundle): a plain-JavaScript
// implementation of the part of the Web Neural Network API (https://www.w3.org/TR/webnn/)
// that akari's WebNN backend uses, for browsers without WebNN (Debian's Chromium has no
// WebNN backend on Linux). The browser tests inject it into the page and the worker.
//
// It follows the spec's semantics for each op it has — operand descriptors {dataType,
// shape}, bidirectional broadcasting, matmul batching, block-wise dequantizeLinear with
// 4-bit values packed two per byte (the lower index in the low nibble) — and its validation:
// it throws TypeError where the spec throws TypeError (shape or data type mismatches,
// operands of another builder, duplicate input names, wrong byte lengths, a tensor both read
// and written by one dispatch …) and InvalidStateError for a builder used after build().
// float32 ops compute in double precision and round to float32; float16 values are rounded
// to float16 after every op. Execution is synchronous inside dispatch(), which the spec's
// ordering (reads after the dispatches before them) cannot tell apart.
//
// `globalThis.WEBNN_STANDIN_OPTIONS`, set before this script runs, changes it for tests:
//   rejectContext: a message; createContext() rejects with it (NotSupportedError)
//   dequantizeTypes: the input data types opSupportLimits() lists for dequantizeLinear
// Every createContext() call is recorded in `globalThis.WEBNN_STANDIN_LOG`.

(() => {
  'use strict';
  const options = globalThis.WEBNN_STANDIN_OPTIONS || {};
  const log = (globalThis.WEBNN_STANDIN_LOG = globalThis.WEBNN_STANDIN_LOG || []);

  // ---- Data types ----

  const f16round = Math.f16round || ((x) => {
    const a = new Float32Array([x]);
    const b = new Uint32Array(a.buffer);
    const u = b[0];
    const sign = u >>> 31;
    const exp = (u >>> 23) & 0xff;
    let mant = u & 0x7fffff;
    if (exp === 0xff) return x;
    let e = exp - 127;
    if (e > 15) return sign ? -Infinity : Infinity;
    if (e < -24) return sign ? -0 : 0;
    const shift = e < -14 ? 13 + (-14 - e) : 13;
    const full = mant | 0x800000;
    const kept = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    let r = kept + (rem > half || (rem === half && (kept & 1)) ? 1 : 0);
    return (sign ? -1 : 1) * r * 2 ** (e - 23 + shift);
  });

  const TYPES = {
    float32: { bytes: 4, float: true },
    float16: { bytes: 2, float: true },
    int32: { bytes: 4, min: -(2 ** 31), max: 2 ** 31 - 1 },
    uint32: { bytes: 4, min: 0, max: 2 ** 32 - 1 },
    int8: { bytes: 1, min: -128, max: 127 },
    uint8: { bytes: 1, min: 0, max: 255 },
    int4: { bytes: 0.5, min: -8, max: 7 },
    uint4: { bytes: 0.5, min: 0, max: 15 },
  };
  const ALL_TYPES = Object.keys(TYPES);
  const FLOATS = ['float32', 'float16'];

  const size = (shape) => shape.reduce((a, b) => a * b, 1);
  const byteLength = (dataType, shape) => Math.ceil(size(shape) * TYPES[dataType].bytes);

  // Values are held unpacked: floats as Float32Array (float16 already rounded), integers
  // in an Int32Array or Float64Array (uint32).
  function storage(dataType, n) {
    if (TYPES[dataType].float) return new Float32Array(n);
    return dataType === 'uint32' ? new Float64Array(n) : new Int32Array(n);
  }

  function round(dataType, x) {
    if (dataType === 'float16') return f16round(x);
    if (dataType === 'float32') return x;
    const t = TYPES[dataType];
    if (Number.isNaN(x)) return 0;
    return Math.min(t.max, Math.max(t.min, Math.trunc(x)));
  }

  function decode(dataType, bytes, n) {
    const copy = new Uint8Array(bytes).buffer;
    const out = storage(dataType, n);
    const view = new DataView(copy);
    for (let i = 0; i < n; i++) {
      switch (dataType) {
        case 'float32': out[i] = view.getFloat32(i * 4, true); break;
        case 'float16': out[i] = getF16(view, i * 2); break;
        case 'int32': out[i] = view.getInt32(i * 4, true); break;
        case 'uint32': out[i] = view.getUint32(i * 4, true); break;
        case 'int8': out[i] = view.getInt8(i); break;
        case 'uint8': out[i] = view.getUint8(i); break;
        case 'int4': case 'uint4': {
          const nib = (view.getUint8(i >> 1) >> ((i & 1) * 4)) & 15;
          out[i] = dataType === 'int4' && nib > 7 ? nib - 16 : nib;
          break;
        }
      }
    }
    return out;
  }

  function encode(dataType, values, shape) {
    const bytes = new Uint8Array(byteLength(dataType, shape));
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      switch (dataType) {
        case 'float32': view.setFloat32(i * 4, v, true); break;
        case 'float16': setF16(view, i * 2, v); break;
        case 'int32': view.setInt32(i * 4, v, true); break;
        case 'uint32': view.setUint32(i * 4, v, true); break;
        case 'int8': view.setInt8(i, v); break;
        case 'uint8': view.setUint8(i, v); break;
        case 'int4': case 'uint4':
          bytes[i >> 1] |= (v & 15) << ((i & 1) * 4);
          break;
      }
    }
    return bytes;
  }

  function getF16(view, at) {
    if (view.getFloat16) return view.getFloat16(at, true);
    const h = view.getUint16(at, true);
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 31;
    const m = h & 1023;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  }

  function setF16(view, at, v) {
    if (view.setFloat16) return view.setFloat16(at, v, true);
    const r = f16round(v);
    if (Number.isNaN(r)) return view.setUint16(at, 0x7e00, true);
    const sign = r < 0 || Object.is(r, -0) ? 0x8000 : 0;
    const a = Math.abs(r);
    if (a === Infinity) return view.setUint16(at, sign | 0x7c00, true);
    if (a < 2 ** -14) return view.setUint16(at, sign | Math.round(a / 2 ** -24), true);
    const e = Math.floor(Math.log2(a));
    const m = Math.round((a / 2 ** e - 1) * 1024);
    view.setUint16(at, sign | ((e + 15) << 10) | m, true);
  }

  // ---- Validation ----

  const fail = (msg) => { throw new TypeError(`WebNN: ${msg}`); };

  function checkDescriptor(desc, what) {
    if (!desc || typeof desc !== 'object') fail(`${what}: a descriptor is required`);
    if (!ALL_TYPES.includes(desc.dataType)) fail(`${what}: unknown data type ${desc.dataType}`);
    const shape = desc.shape === undefined ? [] : Array.from(desc.shape);
    for (const d of shape) {
      if (!Number.isInteger(d) || d <= 0 || d > 2 ** 32 - 1) fail(`${what}: bad dimension ${d} in [${shape}]`);
    }
    if (!Number.isSafeInteger(byteLength(desc.dataType, shape))) fail(`${what}: too large`);
    return { dataType: desc.dataType, shape };
  }

  function toDims(list, what) {
    const out = Array.from(list ?? [], Number);
    for (const d of out) if (!Number.isInteger(d) || d < 0) fail(`${what}: bad value ${d}`);
    return out;
  }

  function broadcastShapes(a, b, what) {
    const n = Math.max(a.length, b.length);
    const out = [];
    for (let i = 0; i < n; i++) {
      const da = i + a.length >= n ? a[i + a.length - n] : 1;
      const db = i + b.length >= n ? b[i + b.length - n] : 1;
      if (da !== db && da !== 1 && db !== 1) fail(`${what}: shapes [${a}] and [${b}] do not broadcast`);
      out.push(da === 1 ? db : da);
    }
    return out;
  }

  function stridesOf(shape) {
    const s = new Array(shape.length).fill(1);
    for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
    return s;
  }

  // Strides of `shape` read as the (longer or equal) `outShape`: 0 on broadcast dimensions.
  function broadcastStrides(shape, outShape) {
    const st = stridesOf(shape);
    const off = outShape.length - shape.length;
    return outShape.map((_, i) => (i < off || shape[i - off] === 1 ? 0 : st[i - off]));
  }

  // Calls f(outIndex, offsets...) for every element of outShape.
  function forEachIndex(outShape, stridesList, f) {
    const n = size(outShape);
    const rank = outShape.length;
    const idx = new Array(rank).fill(0);
    const offs = stridesList.map(() => 0);
    for (let i = 0; i < n; i++) {
      f(i, offs);
      for (let d = rank - 1; d >= 0; d--) {
        idx[d]++;
        for (let k = 0; k < offs.length; k++) offs[k] += stridesList[k][d];
        if (idx[d] < outShape[d]) break;
        for (let k = 0; k < offs.length; k++) offs[k] -= stridesList[k][d] * outShape[d];
        idx[d] = 0;
      }
    }
  }

  // ---- Graph building ----

  let uid = 0;

  class MLOperand {
    // `sig` names the op and its parameters; with the operands' own keys it identifies what
    // the operand computes (see MLContext.dispatch).
    constructor(builder, dataType, shape, kind, deps, compute, sig) {
      this._sig = sig ?? `#${uid++}`;
      this._builder = builder;
      this._dataType = dataType;
      this._shape = shape;
      this._kind = kind; // 'input' | 'constant' | 'op'
      this._deps = deps;
      this._compute = compute;
      this._id = builder._operands.length;
      builder._operands.push(this);
    }
    get dataType() { return this._dataType; }
    get shape() { return this._shape.slice(); }
  }

  class MLGraphBuilder {
    constructor(context) {
      if (!(context instanceof MLContext)) fail('MLGraphBuilder needs an MLContext');
      if (context._lost) throw new DOMException('WebNN: the context is lost', 'InvalidStateError');
      this._context = context;
      this._operands = [];
      this._inputs = new Map();
      this._built = false;
    }

    _check(...xs) {
      if (this._built) throw new DOMException('WebNN: this builder has already built its graph', 'InvalidStateError');
      for (const x of xs) {
        if (!(x instanceof MLOperand)) fail('an operand is required');
        if (x._builder !== this) fail('the operand belongs to another builder');
      }
    }

    _op(dataType, shape, deps, compute, sig) {
      return new MLOperand(this, dataType, shape, 'op', deps, compute, `${sig}:${dataType}`);
    }

    input(name, descriptor) {
      this._check();
      if (typeof name !== 'string' || name === '') fail('input names must be non-empty');
      if (this._inputs.has(name)) fail(`input name "${name}" is used twice`);
      const d = checkDescriptor(descriptor, `input "${name}"`);
      const x = new MLOperand(this, d.dataType, d.shape, 'input', [], null);
      x._name = name;
      this._inputs.set(name, x);
      return x;
    }

    constant(descriptor, buffer) {
      this._check();
      const d = checkDescriptor(descriptor, 'constant');
      if (!ArrayBuffer.isView(buffer) && !(buffer instanceof ArrayBuffer)) fail('constant needs a buffer');
      const bytes = new Uint8Array(buffer.buffer ?? buffer, buffer.byteOffset ?? 0, buffer.byteLength);
      if (bytes.byteLength !== byteLength(d.dataType, d.shape)) {
        fail(`constant: ${bytes.byteLength} bytes for ${d.dataType} [${d.shape}]`);
      }
      const values = decode(d.dataType, bytes, size(d.shape));
      return new MLOperand(this, d.dataType, d.shape, 'constant', [], () => values);
    }

    _binary(name, a, b, f) {
      this._check(a, b);
      if (a.dataType !== b.dataType) fail(`${name}: data types ${a.dataType} and ${b.dataType} differ`);
      const shape = broadcastShapes(a._shape, b._shape, name);
      const dt = a.dataType;
      return this._op(dt, shape, [a, b], ([x, y]) => {
        const out = storage(dt, size(shape));
        const sa = broadcastStrides(a._shape, shape);
        const sb = broadcastStrides(b._shape, shape);
        forEachIndex(shape, [sa, sb], (i, [ia, ib]) => { out[i] = round(dt, f(x[ia], y[ib])); });
        return out;
      }, name);
    }

    add(a, b) { return this._binary('add', a, b, (x, y) => x + y); }
    sub(a, b) { return this._binary('sub', a, b, (x, y) => x - y); }
    mul(a, b) { return this._binary('mul', a, b, (x, y) => x * y); }
    div(a, b) { return this._binary('div', a, b, (x, y) => x / y); }

    _unary(name, x, f) {
      this._check(x);
      if (!FLOATS.includes(x.dataType)) fail(`${name}: needs a float operand, not ${x.dataType}`);
      const dt = x.dataType;
      return this._op(dt, x._shape, [x], ([v]) => v.map((e) => round(dt, f(e))), name);
    }

    sigmoid(x) { return this._unary('sigmoid', x, (e) => 1 / (1 + Math.exp(-e))); }
    sqrt(x) { return this._unary('sqrt', x, Math.sqrt); }

    matmul(a, b) {
      this._check(a, b);
      if (a.dataType !== b.dataType) fail('matmul: data types differ');
      if (!FLOATS.includes(a.dataType)) fail(`matmul: needs float operands, not ${a.dataType}`);
      const ra = a._shape.length;
      const rb = b._shape.length;
      if (ra < 2 || rb < 2) fail('matmul: operands need rank 2 or more');
      const [m, k] = a._shape.slice(-2);
      const [k2, n] = b._shape.slice(-2);
      if (k !== k2) fail(`matmul: [${a._shape}] and [${b._shape}] do not chain`);
      const batch = broadcastShapes(a._shape.slice(0, -2), b._shape.slice(0, -2), 'matmul');
      const shape = [...batch, m, n];
      const dt = a.dataType;
      return this._op(dt, shape, [a, b], ([x, y]) => {
        const out = storage(dt, size(shape));
        const sa = broadcastStrides(a._shape.slice(0, -2), batch);
        const sb = broadcastStrides(b._shape.slice(0, -2), batch);
        const acc = new Float64Array(n);
        forEachIndex(batch, [sa, sb], (bi, [oa, ob]) => {
          const ba = oa * m * k;
          const bb = ob * k * n;
          for (let i = 0; i < m; i++) {
            acc.fill(0);
            for (let j = 0; j < k; j++) {
              const av = x[ba + i * k + j];
              if (av === 0) continue;
              const row = bb + j * n;
              for (let c = 0; c < n; c++) acc[c] += av * y[row + c];
            }
            const o = (bi * m + i) * n;
            for (let c = 0; c < n; c++) out[o + c] = round(dt, acc[c]);
          }
        });
        return out;
      }, 'matmul');
    }

    reshape(x, newShape) {
      this._check(x);
      const shape = toDims(newShape, 'reshape');
      if (shape.some((d) => d === 0)) fail('reshape: dimensions must be positive');
      if (size(shape) !== size(x._shape)) fail(`reshape: [${x._shape}] cannot become [${shape}]`);
      return this._op(x.dataType, shape, [x], ([v]) => v, `reshape[${shape}]`);
    }

    transpose(x, opts = {}) {
      this._check(x);
      const rank = x._shape.length;
      const perm = opts.permutation === undefined
        ? [...Array(rank).keys()].reverse()
        : toDims(opts.permutation, 'transpose');
      if (perm.length !== rank || new Set(perm).size !== rank || perm.some((p) => p >= rank)) {
        fail(`transpose: [${perm}] is no permutation of rank ${rank}`);
      }
      const shape = perm.map((p) => x._shape[p]);
      const st = stridesOf(x._shape);
      const src = perm.map((p) => st[p]);
      const dt = x.dataType;
      return this._op(dt, shape, [x], ([v]) => {
        const out = storage(dt, size(shape));
        forEachIndex(shape, [src], (i, [o]) => { out[i] = v[o]; });
        return out;
      }, `transpose[${perm}]`);
    }

    slice(x, starts, sizes, opts = {}) {
      this._check(x);
      const rank = x._shape.length;
      const s = toDims(starts, 'slice starts');
      const z = toDims(sizes, 'slice sizes');
      const strides = opts.strides === undefined ? new Array(rank).fill(1) : toDims(opts.strides, 'slice strides');
      if (s.length !== rank || z.length !== rank || strides.length !== rank) fail('slice: starts, sizes and strides need one value per dimension');
      for (let d = 0; d < rank; d++) {
        if (z[d] === 0 || strides[d] === 0) fail('slice: sizes and strides must be positive');
        if (s[d] + z[d] > x._shape[d]) fail(`slice: ${s[d]} + ${z[d]} is past dimension ${d} of [${x._shape}]`);
      }
      const shape = z.map((len, d) => Math.ceil(len / strides[d]));
      const st = stridesOf(x._shape);
      const base = s.reduce((acc, v, d) => acc + v * st[d], 0);
      const step = st.map((v, d) => v * strides[d]);
      const dt = x.dataType;
      return this._op(dt, shape, [x], ([v]) => {
        const out = storage(dt, size(shape));
        forEachIndex(shape, [step], (i, [o]) => { out[i] = v[base + o]; });
        return out;
      }, `slice[${s}][${z}][${strides}]`);
    }

    concat(inputs, axis) {
      const xs = Array.from(inputs ?? []);
      if (xs.length === 0) fail('concat: needs at least one input');
      this._check(...xs);
      const first = xs[0];
      const rank = first._shape.length;
      if (!Number.isInteger(axis) || axis < 0 || axis >= rank) fail(`concat: axis ${axis} is outside rank ${rank}`);
      let total = 0;
      for (const x of xs) {
        if (x.dataType !== first.dataType) fail('concat: data types differ');
        if (x._shape.length !== rank || x._shape.some((d, i) => i !== axis && d !== first._shape[i])) {
          fail(`concat: [${x._shape}] does not join [${first._shape}] on axis ${axis}`);
        }
        total += x._shape[axis];
      }
      const shape = first._shape.slice();
      shape[axis] = total;
      const dt = first.dataType;
      const outer = size(shape.slice(0, axis));
      const inner = size(shape.slice(axis + 1));
      return this._op(dt, shape, xs, (vals) => {
        const out = storage(dt, size(shape));
        let o = 0;
        for (let a = 0; a < outer; a++) {
          vals.forEach((v, k) => {
            const len = xs[k]._shape[axis] * inner;
            out.set(v.subarray(a * len, (a + 1) * len), o);
            o += len;
          });
        }
        return out;
      }, `concat[${axis}]`);
    }

    gather(input, indices, opts = {}) {
      this._check(input, indices);
      const axis = opts.axis ?? 0;
      if (!['int32', 'uint32', 'int64'].includes(indices.dataType)) fail(`gather: indices must be integers, not ${indices.dataType}`);
      const rank = input._shape.length;
      if (!Number.isInteger(axis) || axis < 0 || axis >= rank) fail(`gather: axis ${axis} is outside rank ${rank}`);
      const shape = [...input._shape.slice(0, axis), ...indices._shape, ...input._shape.slice(axis + 1)];
      const dim = input._shape[axis];
      const outer = size(input._shape.slice(0, axis));
      const inner = size(input._shape.slice(axis + 1));
      const count = size(indices._shape);
      const dt = input.dataType;
      return this._op(dt, shape, [input, indices], ([v, idx]) => {
        const out = storage(dt, size(shape));
        for (let o = 0; o < outer; o++) {
          for (let j = 0; j < count; j++) {
            // Negative indices count from the end; out-of-range ones are clamped.
            let at = idx[j] < 0 ? idx[j] + dim : idx[j];
            at = Math.min(dim - 1, Math.max(0, at));
            const src = (o * dim + at) * inner;
            out.set(v.subarray(src, src + inner), (o * count + j) * inner);
          }
        }
        return out;
      }, `gather[${axis}]`);
    }

    softmax(x, axis) {
      this._check(x);
      if (!FLOATS.includes(x.dataType)) fail('softmax: needs a float operand');
      const rank = x._shape.length;
      if (!Number.isInteger(axis) || axis < 0 || axis >= rank) fail(`softmax: axis ${axis} is outside rank ${rank}`);
      const dt = x.dataType;
      const len = x._shape[axis];
      const inner = size(x._shape.slice(axis + 1));
      const outer = size(x._shape.slice(0, axis));
      return this._op(dt, x._shape, [x], ([v]) => {
        const out = storage(dt, v.length);
        for (let o = 0; o < outer; o++) {
          for (let i = 0; i < inner; i++) {
            const at = (j) => (o * len + j) * inner + i;
            let m = -Infinity;
            for (let j = 0; j < len; j++) m = Math.max(m, v[at(j)]);
            let s = 0;
            for (let j = 0; j < len; j++) s += Math.exp(v[at(j)] - m);
            for (let j = 0; j < len; j++) out[at(j)] = round(dt, Math.exp(v[at(j)] - m) / s);
          }
        }
        return out;
      }, `softmax[${axis}]`);
    }

    reduceMean(x, opts = {}) {
      this._check(x);
      const rank = x._shape.length;
      const axes = opts.axes === undefined ? [...Array(rank).keys()] : toDims(opts.axes, 'reduceMean axes');
      if (new Set(axes).size !== axes.length || axes.some((a) => a >= rank)) fail(`reduceMean: bad axes [${axes}] for rank ${rank}`);
      if (!['float32', 'float16', 'int32', 'uint32'].includes(x.dataType)) fail('reduceMean: bad data type');
      const keep = opts.keepDimensions === true;
      const kept = x._shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const shape = keep ? kept : x._shape.filter((_, i) => !axes.includes(i));
      const count = axes.reduce((n, a) => n * x._shape[a], 1);
      const dt = x.dataType;
      return this._op(dt, shape, [x], ([v]) => {
        const acc = new Float64Array(size(kept));
        const dst = broadcastStrides(kept, x._shape);
        forEachIndex(x._shape, [dst], (i, [o]) => { acc[o] += v[i]; });
        const out = storage(dt, acc.length);
        for (let i = 0; i < acc.length; i++) out[i] = round(dt, acc[i] / count);
        return out;
      }, `reduceMean[${axes}][${keep}]`);
    }

    cast(x, dataType) {
      this._check(x);
      if (!ALL_TYPES.includes(dataType)) fail(`cast: unknown data type ${dataType}`);
      return this._op(dataType, x._shape, [x], ([v]) => {
        const out = storage(dataType, v.length);
        for (let i = 0; i < v.length; i++) out[i] = round(dataType, v[i]);
        return out;
      }, 'cast');
    }

    dequantizeLinear(input, scale, zeroPoint) {
      this._check(input, scale, zeroPoint);
      if (!['int4', 'uint4', 'int8', 'uint8', 'int32'].includes(input.dataType)) fail(`dequantizeLinear: input cannot be ${input.dataType}`);
      if (!FLOATS.includes(scale.dataType)) fail(`dequantizeLinear: scale cannot be ${scale.dataType}`);
      if (zeroPoint.dataType !== input.dataType) fail('dequantizeLinear: the zero point must have the input\'s data type');
      const s = scale._shape;
      if (zeroPoint._shape.length !== s.length || zeroPoint._shape.some((d, i) => d !== s[i])) fail('dequantizeLinear: scale and zero point shapes differ');
      const rank = input._shape.length;
      if (s.length !== rank) fail(`dequantizeLinear: scale [${s}] needs the input's rank ${rank}`);
      for (let d = 0; d < rank; d++) {
        if (input._shape[d] % s[d] !== 0) fail(`dequantizeLinear: input [${input._shape}] is not whole blocks of scale [${s}]`);
      }
      const dt = scale.dataType;
      const shape = input._shape;
      const block = shape.map((d, i) => d / s[i]);
      const sst = stridesOf(s);
      // Per dimension, each index's contribution to the block's flat index.
      const contrib = shape.map((d, k) => Int32Array.from({ length: d }, (_, i) => Math.floor(i / block[k]) * sst[k]));
      return this._op(dt, shape, [input, scale, zeroPoint], ([x, sc, zp]) => {
        const out = storage(dt, x.length);
        if (rank === 0) {
          out[0] = round(dt, (x[0] - zp[0]) * sc[0]);
          return out;
        }
        const inner = contrib[rank - 1];
        const outer = shape.slice(0, -1);
        const idx = new Array(outer.length).fill(0);
        const rows = size(outer);
        let o = 0;
        for (let r = 0; r < rows; r++) {
          let base = 0;
          for (let d = 0; d < outer.length; d++) base += contrib[d][idx[d]];
          for (let c = 0; c < inner.length; c++, o++) {
            const b = base + inner[c];
            out[o] = round(dt, (x[o] - zp[b]) * sc[b]);
          }
          for (let d = outer.length - 1; d >= 0; d--) {
            if (++idx[d] < outer[d]) break;
            idx[d] = 0;
          }
        }
        return out;
      }, 'dequantizeLinear');
    }

    async build(outputs) {
      if (this._built) throw new DOMException('WebNN: build() was already called on this builder', 'InvalidStateError');
      const entries = Object.entries(outputs ?? {});
      if (entries.length === 0) fail('build: no outputs');
      for (const [name, x] of entries) {
        if (!(x instanceof MLOperand) || x._builder !== this) fail(`build: output "${name}" is not an operand of this builder`);
        if (x._kind !== 'op') fail(`build: output "${name}" is an input or constant`);
      }
      this._built = true;
      // Operands are made in dependency order; keep those the outputs reach.
      const needed = new Set();
      const visit = (x) => {
        if (needed.has(x._id)) return;
        needed.add(x._id);
        x._deps.forEach(visit);
      };
      entries.forEach(([, x]) => visit(x));
      const nodes = this._operands.filter((x) => needed.has(x._id));
      const inputs = new Map();
      for (const x of nodes) if (x._kind === 'input') inputs.set(x._name, { dataType: x.dataType, shape: x._shape });
      return new MLGraph(this._context, nodes, inputs, new Map(entries));
    }
  }

  class MLGraph {
    constructor(context, nodes, inputs, outputs) {
      this._context = context;
      this._nodes = nodes;
      this._inputs = inputs;
      this._outputs = outputs;
      this._destroyed = false;
    }
    destroy() { this._destroyed = true; }
  }

  class MLTensor {
    constructor(context, desc) {
      this._context = context;
      this._dataType = desc.dataType;
      this._shape = desc.shape;
      this._readable = desc.readable === true;
      this._writable = desc.writable === true;
      this._values = storage(desc.dataType, size(desc.shape));
      this._destroyed = false;
      this._uid = uid++;
      // Writes so far; a dispatch's output counts as changing every time.
      this._version = 0;
      this._dispatched = false;
    }
    get dataType() { return this._dataType; }
    get shape() { return this._shape.slice(); }
    get readable() { return this._readable; }
    get writable() { return this._writable; }
    get constant() { return false; }
    destroy() { this._destroyed = true; }
  }

  const sameDesc = (t, d) => t._dataType === d.dataType && t._shape.length === d.shape.length && t._shape.every((v, i) => v === d.shape[i]);

  class MLContext {
    constructor(deviceType) {
      this._deviceType = deviceType;
      this._lost = false;
      this._kept = new Map();
      this._keys = new Map();
    }

    opSupportLimits() {
      const all = { dataTypes: ALL_TYPES.slice(), rankRange: { min: 0, max: 8 } };
      const floats = { dataTypes: FLOATS.slice(), rankRange: { min: 0, max: 8 } };
      const ints = { dataTypes: ['int32', 'uint32'], rankRange: { min: 0, max: 8 } };
      const quant = {
        dataTypes: options.dequantizeTypes ? options.dequantizeTypes.slice() : ['int4', 'uint4', 'int8', 'uint8', 'int32'],
        rankRange: { min: 0, max: 8 },
      };
      const binary = { a: all, b: all, output: all };
      const unary = { input: floats, output: floats };
      return {
        preferredInputLayout: 'nchw',
        maxTensorByteLength: 2 ** 32,
        input: all,
        constant: all,
        output: all,
        add: binary, sub: binary, mul: binary, div: binary,
        sigmoid: unary, sqrt: unary,
        matmul: { a: floats, b: floats, output: floats },
        reshape: { input: all, output: all },
        transpose: { input: all, output: all },
        slice: { input: all, output: all },
        concat: { inputs: all, output: all },
        gather: { input: all, indices: ints, output: all },
        softmax: unary,
        reduceMean: { input: { dataTypes: ['float32', 'float16', 'int32', 'uint32'], rankRange: { min: 0, max: 8 } }, output: all },
        cast: { input: all, output: all },
        dequantizeLinear: { input: quant, scale: floats, zeroPoint: quant, output: floats },
      };
    }

    async createTensor(descriptor) {
      const d = checkDescriptor(descriptor, 'createTensor');
      return new MLTensor(this, { ...d, readable: descriptor.readable, writable: descriptor.writable });
    }

    _checkTensor(t, what) {
      if (!(t instanceof MLTensor)) fail(`${what}: an MLTensor is required`);
      if (t._context !== this) fail(`${what}: the tensor belongs to another context`);
      if (t._destroyed) fail(`${what}: the tensor was destroyed`);
    }

    writeTensor(tensor, data) {
      this._checkTensor(tensor, 'writeTensor');
      if (!tensor._writable) fail('writeTensor: the tensor is not writable');
      if (!ArrayBuffer.isView(data) && !(data instanceof ArrayBuffer)) fail('writeTensor: needs a buffer');
      const bytes = new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
      const want = byteLength(tensor._dataType, tensor._shape);
      if (bytes.byteLength !== want) fail(`writeTensor: ${bytes.byteLength} bytes for a tensor of ${want}`);
      tensor._values = decode(tensor._dataType, bytes, size(tensor._shape));
      tensor._version++;
    }

    async readTensor(tensor) {
      this._checkTensor(tensor, 'readTensor');
      if (!tensor._readable) fail('readTensor: the tensor is not readable');
      return encode(tensor._dataType, tensor._values, tensor._shape).buffer;
    }

    dispatch(graph, inputs, outputs) {
      if (!(graph instanceof MLGraph) || graph._context !== this) fail('dispatch: the graph belongs to another context');
      if (graph._destroyed) throw new DOMException('WebNN: the graph was destroyed', 'InvalidStateError');
      const ins = Object.entries(inputs ?? {});
      const outs = Object.entries(outputs ?? {});
      if (ins.length !== graph._inputs.size) fail(`dispatch: ${ins.length} inputs for a graph of ${graph._inputs.size}`);
      for (const [name, t] of ins) {
        const d = graph._inputs.get(name);
        if (!d) fail(`dispatch: the graph has no input "${name}"`);
        this._checkTensor(t, `dispatch input "${name}"`);
        if (!sameDesc(t, d)) fail(`dispatch: input "${name}" is ${t._dataType} [${t._shape}], the graph wants ${d.dataType} [${d.shape}]`);
      }
      if (outs.length !== graph._outputs.size) fail(`dispatch: ${outs.length} outputs for a graph of ${graph._outputs.size}`);
      const inputTensors = new Set(ins.map(([, t]) => t));
      const seen = new Set();
      for (const [name, t] of outs) {
        const x = graph._outputs.get(name);
        if (!x) fail(`dispatch: the graph has no output "${name}"`);
        this._checkTensor(t, `dispatch output "${name}"`);
        if (!sameDesc(t, { dataType: x.dataType, shape: x._shape })) fail(`dispatch: output "${name}" has the wrong descriptor`);
        if (seen.has(t)) fail('dispatch: a tensor is given for two outputs');
        if (inputTensors.has(t)) fail(`dispatch: output "${name}" is also an input`);
        seen.add(t);
      }
      // Ops that read only tensors written once and never by a dispatch (weights) give the
      // same result every time: their results where they meet the rest of the graph are kept
      // per context, keyed by what they compute, so weights are dequantised once and not at
      // every step. Everything else is computed afresh.
      const stable = new Map();
      const key = new Map();
      for (const x of graph._nodes) {
        if (x._kind === 'input') {
          const t = inputs[x._name];
          stable.set(x._id, t._version === 1 && !t._dispatched);
          key.set(x._id, `t${t._uid}v${t._version}`);
        } else if (x._kind === 'constant') {
          stable.set(x._id, true);
          key.set(x._id, x._sig);
        } else {
          const st = x._deps.every((d) => stable.get(d._id));
          stable.set(x._id, st);
          if (st) {
            // Interned, so a key stays short however deep the computation.
            const full = `${x._sig}(${x._deps.map((d) => key.get(d._id)).join(',')})`;
            if (!this._keys.has(full)) this._keys.set(full, `k${this._keys.size}`);
            key.set(x._id, this._keys.get(full));
          }
        }
      }
      const kept = new Set();
      for (const x of graph._nodes) {
        if (stable.get(x._id)) continue;
        for (const d of x._deps) if (d._kind === 'op' && stable.get(d._id)) kept.add(d._id);
      }
      for (const x of graph._outputs.values()) if (stable.get(x._id)) kept.add(x._id);
      const cached = (x) => kept.has(x._id) && this._kept.has(key.get(x._id));
      const needed = new Set();
      const todo = [...graph._outputs.values()];
      while (todo.length) {
        const x = todo.pop();
        if (needed.has(x._id)) continue;
        needed.add(x._id);
        if (!cached(x)) todo.push(...x._deps);
      }
      const vals = new Map();
      for (const x of graph._nodes) {
        if (!needed.has(x._id)) continue;
        let v;
        if (x._kind === 'input') v = inputs[x._name]._values;
        else if (cached(x)) v = this._kept.get(key.get(x._id));
        else {
          v = x._compute(x._deps.map((d) => vals.get(d._id)));
          if (kept.has(x._id)) this._kept.set(key.get(x._id), v);
        }
        vals.set(x._id, v);
      }
      for (const [name, t] of outs) {
        const v = vals.get(graph._outputs.get(name)._id);
        // Outputs are fresh copies: an output may be a view of an input (reshape).
        t._values = v.slice();
        t._version++;
        t._dispatched = true;
      }
    }

    destroy() { this._lost = true; }
  }

  class ML {
    async createContext(opts = {}) {
      const deviceType = opts && opts.deviceType;
      log.push({ deviceType: deviceType ?? null });
      if (deviceType !== undefined && !['cpu', 'gpu', 'npu'].includes(deviceType)) {
        fail(`createContext: unknown device type ${deviceType}`);
      }
      if (options.rejectContext) throw new DOMException(options.rejectContext, 'NotSupportedError');
      return new MLContext(deviceType ?? 'default');
    }
  }

  const ml = new ML();
  Object.defineProperty(globalThis.navigator, 'ml', { value: ml, configurable: true, enumerable: true });
  Object.assign(globalThis, { ML, MLContext, MLGraphBuilder, MLGraph, MLOperand, MLTensor });
})();
