// Decode's matrix × vector for one token: y[n] = Σ_k W[n, k] · x[k], with the epilogues of
// gemv.wgsl (bias, accumulate into y, GLU with a second matrix). Same bindings and Params,
// except that binding 5 is the norm weight (any 16-byte buffer when unused), bindings 6 and
// 7 are second and third outputs, and Params moves to binding 8.
//
// With `flags & 16` (split) W is several matrices' rows one after another (q, k and v) and
// the result goes to three outputs: rows 0..split1 to y, split1..split2 to y2, the rest to
// y3 (bias, when given, covers all of W's rows), so three projections of one input cost one
// dispatch. Without it y2 and y3 are any 4-byte buffers, not written.
//
// With `flags & 8` the input is RMS-normalised first, x ← x / rms(x) · norm
// (eps in `Params.eps`), so the norm before a projection costs no dispatch of its own: each
// workgroup computes rms(x) itself, which is cheap next to reading its rows of W.
// `x` is read as vec4s.
//
// Why a second kernel: one token leaves little parallelism, so this one gives each row
// LANES threads and makes every weight read an aligned word. ggml's blocks are 2-byte
// aligned only, but a *pair* of Q4_0 (36 bytes) or Q8_0 (68 bytes) blocks starting at an
// even block is word-aligned when a row holds an even number of blocks (the Rust side checks),
// so each thread takes whole pairs and unpacks the halves in registers. Q4_1 blocks (20
// bytes) and f16 rows (K a multiple of 8) are aligned as they are; f16 rows are read 8
// values at a time through a 16-byte view of the same buffers (`wv`, `wv2`), which took
// F16 decode on an H100 from 371 to 389–403 tok/s (with gate and up loaded together).
//
// Dispatch: one workgroup of WG threads per ROWS = WG / LANES rows (row groups numbered
// `wid.y · nwg.x + wid.x`); a row's LANES threads take its pairs (blocks, 8-value groups)
// `lane, lane + LANES, …` and sum their partials in shared memory.

const WG: u32 = 256u;
// Threads per row (16, 32 or 64, chosen by the Rust side from the row length) and rows per
// workgroup.
override LANES: u32 = 16u;
override ROWS: u32 = WG / LANES;

struct Params {
    n: u32,
    k: u32,
    row_bytes: u32,
    flags: u32,
    tokens: u32,
    eps: f32,
    // As in matmul_common.wgsl: the part's first row, and y's length.
    row0: u32,
    y_stride: u32,
    // Where y2's and y3's rows begin, with `flags & 16`.
    split1: u32,
    split2: u32,
    // With `flags & 64`: chunks of the attention's partial results, and head_dim / 4.
    chunks: u32,
    hd4: u32,
}

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> w2: array<u32>;
@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;
// f32 values (split), or quantised blocks (`flags & 32`): u32 words either way.
@group(0) @binding(6) var<storage, read_write> y2: array<u32>;
@group(0) @binding(7) var<storage, read_write> y3: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

const HAS_BIAS: u32 = 1u;
const ACCUMULATE: u32 = 2u;
const GLU: u32 = 4u;
const NORM: u32 = 8u;
const SPLIT: u32 = 16u;
const QUANTIZE_OUT: u32 = 32u;
const COMBINE: u32 = 64u;

// 1 / rms(x) when normalising (uniform across the workgroup).
var<private> scale: f32;
var<private> normed: bool;

// Inputs of up to STAGE vec4s are copied once per workgroup into workgroup memory (already
// normalised), so the rows' threads read them from there instead of reading x (and the norm
// weight) from memory once per row: quantised rows read 32 or 64 inputs per few weight
// words, and those reads, not the weights, were the cost.
const STAGE: u32 = 512u;
var<workgroup> xs: array<vec4<f32>, STAGE>;
var<private> staged: bool;

// x[i] (vec4 i), normalised when asked, from memory.
fn xg(i: u32) -> vec4<f32> {
    if normed {
        return x[i] * norm[i] * scale;
    }
    return x[i];
}

// The same, from workgroup memory when staged (quantised rows).
fn xv(i: u32) -> vec4<f32> {
    if staged {
        return xs[i];
    }
    return xg(i);
}

var<workgroup> partial: array<vec2<f32>, WG>;

// Which matrix the dot products read: 0 for W, 1 for W2 (uniform across the workgroup).
var<private> which: u32;

fn wl(i: u32) -> u32 {
    if which == 0u {
        return w[i];
    }
    return w2[i];
}

// The 4 low and 4 high nibbles of a word, as values 0..15.
fn lo4(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u)) & vec4<u32>(0xfu));
}

fn hi4(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v >> 4u, v >> 12u, v >> 20u, v >> 28u)) & vec4<u32>(0xfu));
}

// The 4 bytes of a word as signed values.
fn i8x4(v: u32) -> vec4<f32> {
    let s = vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u),
        bitcast<i32>(v));
    return vec4<f32>(s >> vec4<u32>(24u));
}

// Σ q·x of a 4-bit block's 16 bytes (as 4 words) against x[xq..xq + 8) (32 values); the
// nibbles are offset by `off` (8 for Q4_0, 0 for Q4_1).
fn nibbles(q0: u32, q1: u32, q2: u32, q3: u32, xq: u32, off: f32) -> f32 {
    let o = vec4<f32>(off);
    var s = dot(lo4(q0) - o, xv(xq)) + dot(hi4(q0) - o, xv(xq + 4u));
    s += dot(lo4(q1) - o, xv(xq + 1u)) + dot(hi4(q1) - o, xv(xq + 5u));
    s += dot(lo4(q2) - o, xv(xq + 2u)) + dot(hi4(q2) - o, xv(xq + 6u));
    s += dot(lo4(q3) - o, xv(xq + 3u)) + dot(hi4(q3) - o, xv(xq + 7u));
    return s;
}

fn sum4(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

// Q4_0 pairs: 36 bytes = 9 words; d0 in the low half of word 0, block 0's nibbles in bytes
// 2..18, d1 in the high half of word 4, block 1's nibbles in words 5..8.
fn row_q4_0(row: u32, lane: u32) -> f32 {
    let pairs = params.k >> 6u;
    let base = row * (params.row_bytes >> 2u);
    var acc = 0.0;
    for (var p = lane; p < pairs; p += LANES) {
        let o = base + p * 9u;
        let a0 = wl(o);
        let a1 = wl(o + 1u);
        let a2 = wl(o + 2u);
        let a3 = wl(o + 3u);
        let a4 = wl(o + 4u);
        let xq = p * 16u;
        let d0 = unpack2x16float(a0).x;
        let d1 = unpack2x16float(a4).y;
        acc += d0 * nibbles((a0 >> 16u) | (a1 << 16u), (a1 >> 16u) | (a2 << 16u),
            (a2 >> 16u) | (a3 << 16u), (a3 >> 16u) | (a4 << 16u), xq, 8.0);
        acc += d1 * nibbles(wl(o + 5u), wl(o + 6u), wl(o + 7u), wl(o + 8u), xq + 8u, 8.0);
    }
    return acc;
}

// Q4_1 blocks: 20 bytes = 5 words; d and m in word 0, nibbles in words 1..4.
fn row_q4_1(row: u32, lane: u32) -> f32 {
    let blocks = params.k >> 5u;
    let base = row * (params.row_bytes >> 2u);
    var acc = 0.0;
    for (var b = lane; b < blocks; b += LANES) {
        let o = base + b * 5u;
        let dm = unpack2x16float(wl(o));
        let xq = b * 8u;
        var sx = vec4<f32>(0.0);
        for (var i = 0u; i < 8u; i++) {
            sx += xv(xq + i);
        }
        acc += dm.x * nibbles(wl(o + 1u), wl(o + 2u), wl(o + 3u), wl(o + 4u), xq, 0.0)
            + dm.y * sum4(sx);
    }
    return acc;
}

// Σ q·x of 32 signed bytes given as 8 words, against x[xq..xq + 8).
fn bytes8(q: array<u32, 8>, xq: u32) -> f32 {
    var s = 0.0;
    for (var i = 0u; i < 8u; i++) {
        s += dot(i8x4(q[i]), xv(xq + i));
    }
    return s;
}

// Q8_0 pairs: 68 bytes = 17 words; d0 in the low half of word 0, block 0's bytes in bytes
// 2..34, d1 in the high half of word 8, block 1's bytes in words 9..16.
fn row_q8_0(row: u32, lane: u32) -> f32 {
    let pairs = params.k >> 6u;
    let base = row * (params.row_bytes >> 2u);
    var acc = 0.0;
    for (var p = lane; p < pairs; p += LANES) {
        let o = base + p * 17u;
        var a: array<u32, 9>;
        for (var i = 0u; i < 9u; i++) {
            a[i] = wl(o + i);
        }
        var q0: array<u32, 8>;
        var q1: array<u32, 8>;
        for (var i = 0u; i < 8u; i++) {
            q0[i] = (a[i] >> 16u) | (a[i + 1u] << 16u);
            q1[i] = wl(o + 9u + i);
        }
        let xq = p * 16u;
        acc += unpack2x16float(a[0]).x * bytes8(q0, xq);
        acc += unpack2x16float(a[8]).y * bytes8(q1, xq + 8u);
    }
    return acc;
}

// The weights as 16-byte words, for f16 rows: with K a multiple of 8 every row starts on 16
// bytes, so 8 values are one vector load. The same buffers as w and w2 (an entry point uses
// one view or the other).
@group(0) @binding(0) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> wv2: array<vec4<u32>>;

// Σ of 8 f16 weights (one 16-byte word) times x[2g], x[2g + 1].
fn dot8(q: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    return dot(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), x0)
        + dot(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), x1);
}

// f16 rows: the row's dot products with W and, for GLU, W2, both words loaded before
// either is used.
fn row_f16(row: u32, lane: u32, glu: bool) -> vec2<f32> {
    let groups = params.k >> 3u;
    let base = row * (params.row_bytes >> 4u);
    var acc = vec2<f32>(0.0);
    for (var g = lane; g < groups; g += LANES) {
        let a = wv[base + g];
        var b = vec4<u32>(0u);
        if glu {
            b = wv2[base + g];
        }
        let x0 = xv(2u * g);
        let x1 = xv(2u * g + 1u);
        acc.x += dot8(a, x0, x1);
        if glu {
            acc.y += dot8(b, x0, x1);
        }
    }
    return acc;
}

// Where this thread's row is, and whether it exists.
var<private> my_row: u32;
var<private> my_lane: u32;
var<private> live: bool;

// The thread's row in row group `g` (ROWS rows a group).
fn set_row(g: u32, t: u32) {
    my_row = g * ROWS + t / LANES;
    my_lane = t % LANES;
    live = my_row < params.n;
}

// Everything before the dot products: the thread's row (one row group a workgroup), and
// 1 / rms(x) when normalising.
fn begin(wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    set_row(wid.y * nwg.x + wid.x, t);
    norm_scale(t);
}

// The thread's share of the input times the norm weight, loaded once by `norm_scale` when it
// normalises a row of at most 2 · WG units of 8 inputs: units t (h0, h1) and t + WG (h2,
// h3). Staging and quantising take the input from here instead of loading it again: in a
// one-token GEMV every load is a round trip to memory on the critical path.
var<private> held: bool;
var<private> h0: vec4<f32>;
var<private> h1: vec4<f32>;
var<private> h2: vec4<f32>;
var<private> h3: vec4<f32>;

// Inputs 8u + 4·half .. + 4 (vec4 2u + half), normalised when asked; with `held`, u is the
// thread's own unit t or t + WG.
fn xu(u: u32, half: u32, t: u32) -> vec4<f32> {
    if held {
        if u == t {
            return select(h0, h1, half == 1u) * scale;
        }
        return select(h2, h3, half == 1u) * scale;
    }
    return xg(2u * u + half);
}

struct Unit {
    a: vec4<f32>,
    b: vec4<f32>,
    ss: f32,
}

// Unit u of the input times the norm weight, and the unit's sum of squares.
fn unit_normed(u: u32) -> Unit {
    let a = x[2u * u];
    let b = x[2u * u + 1u];
    return Unit(a * norm[2u * u], b * norm[2u * u + 1u], dot(a, a) + dot(b, b));
}

// 1 / rms(x) into `scale` when normalising.
fn norm_scale(t: u32) {
    // The branch holds barriers, so it must test a value WGSL's uniformity analysis can see
    // is uniform: a private variable never counts as one.
    let norm_on = (params.flags & NORM) != 0u;
    normed = norm_on;
    let units = params.k / 8u;
    held = norm_on && params.k % 8u == 0u && units <= 2u * WG;
    if norm_on {
        var ss = 0.0;
        if held {
            if t < units {
                let p = unit_normed(t);
                ss += p.ss;
                h0 = p.a;
                h1 = p.b;
            }
            if t + WG < units {
                let p = unit_normed(t + WG);
                ss += p.ss;
                h2 = p.a;
                h3 = p.b;
            }
        } else {
            for (var i = t; i < params.k / 4u; i += WG) {
                let v = x[i];
                ss += dot(v, v);
            }
        }
        partial[t] = vec2<f32>(ss, 0.0);
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if t < s {
                partial[t] += partial[t + s];
            }
            workgroupBarrier();
        }
        scale = 1.0 / sqrt(partial[0].x / f32(params.k) + params.eps);
        workgroupBarrier();
    }
}

// Copies the (normalised) input into workgroup memory when it fits. Only the quantised
// entry points call it: f16 rows read each input against four weight words, and there the
// copy (and the workgroup memory it takes from the cache) cost more than it saves
// (measured on an H100: Q4_0 decode +17 %; f16 −5 % when it was staged too).
fn stage_input(t: u32) {
    let stage = params.k <= 4u * STAGE;
    if stage {
        if (params.flags & COMBINE) != 0u {
            combine_input(t);
        } else if held {
            for (var u = t; u < params.k / 8u; u += WG) {
                xs[2u * u] = xu(u, 0u, t);
                xs[2u * u + 1u] = xu(u, 1u, t);
            }
        } else {
            for (var i = t; i < params.k / 4u; i += WG) {
                var xi = x[i];
                if normed {
                    xi *= norm[i] * scale;
                }
                xs[i] = xi;
            }
        }
        workgroupBarrier();
    }
    staged = stage;
}

// With `flags & 64` (combine; one token, staged, no norm) x is not the input but the split
// decode attention's partial results (attention_decode.wgsl's scratch: per head and chunk
// the sum of values, then (max, sum of exponents)), and staging merges them into the input
// as attention_combine.wgsl would, which saves that dispatch. Every workgroup merges them
// itself: a few loads from L2 next to its rows of W.
const MAX_PARTIALS: u32 = 512u;
// Per (head, chunk): (max, sum), then its weight e^(m − M) / Σ_c l_c·e^(m_c − M).
var<workgroup> parts: array<vec2<f32>, MAX_PARTIALS>;

fn combine_input(t: u32) {
    let hd4 = params.hd4;
    let chunks = params.chunks;
    let heads = params.k / (4u * hd4);
    let n = heads * chunks;
    for (var i = t; i < n; i += WG) {
        let ml = x[n * hd4 + i];
        parts[i] = ml.xy;
    }
    workgroupBarrier();
    if t < heads {
        let first = t * chunks;
        var mx = -1e30;
        for (var c = 0u; c < chunks; c++) {
            let p = parts[first + c];
            if p.y > 0.0 {
                mx = max(mx, p.x);
            }
        }
        var total = 0.0;
        for (var c = 0u; c < chunks; c++) {
            let p = parts[first + c];
            total += select(0.0, p.y * exp(p.x - mx), p.y > 0.0);
        }
        for (var c = 0u; c < chunks; c++) {
            let p = parts[first + c];
            parts[first + c].x = select(0.0, exp(p.x - mx) / total, p.y > 0.0);
        }
    }
    workgroupBarrier();
    for (var i = t; i < params.k / 4u; i += WG) {
        let first = (i / hd4) * chunks;
        let dv = i % hd4;
        var acc = vec4<f32>(0.0);
        for (var c = 0u; c < chunks; c++) {
            acc += parts[first + c].x * x[(first + c) * hd4 + dv];
        }
        xs[i] = acc;
    }
}

// Sums the row's partial dot products (`v`: with W, and with W2 for GLU) over its LANES
// threads: the row's lane 0 finds the sums in partial[t].
fn reduce_lanes(v: vec2<f32>, t: u32) {
    partial[t] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if my_lane < s {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
}

// Sums the row's partial dot products and applies the epilogue.
fn finish(v: vec2<f32>, t: u32) {
    let glu = (params.flags & GLU) != 0u;
    reduce_lanes(v, t);
    if my_lane == 0u && live {
        let r = partial[t];
        let i = params.row0 + my_row;
        if glu {
            y[i] = r.x / (1.0 + exp(-r.x)) * r.y;
        } else {
            var o = r.x;
            if (params.flags & HAS_BIAS) != 0u {
                o += bias[i];
            }
            if (params.flags & ACCUMULATE) != 0u {
                o += y[i];
            }
            if (params.flags & SPLIT) == 0u || i < params.split1 {
                y[i] = o;
            } else if i < params.split2 {
                y2[i - params.split1] = bitcast<u32>(o);
            } else {
                y3[i - params.split2] = o;
            }
        }
    }
}

// Each entry point: its row's dot product with W, then with W2 for GLU (`which`). WGSL has
// no generics, so the four repeat these lines with their own row function.

@compute @workgroup_size(WG)
fn decode_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) t: u32) {
    begin(wid, nwg, t);
    // Staged only to merge attention partials (see stage_input).
    if (params.flags & COMBINE) != 0u {
        stage_input(t);
    }
    var v = vec2<f32>(0.0);
    if live {
        v = row_f16(my_row, my_lane, (params.flags & GLU) != 0u);
    }
    finish(v, t);
}

@compute @workgroup_size(WG)
fn decode_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    begin(wid, nwg, t);
    stage_input(t);
    var v = vec2<f32>(0.0);
    which = 0u;
    if live {
        v.x = row_q8_0(my_row, my_lane);
    }
    which = 1u;
    if live && (params.flags & GLU) != 0u {
        v.y = row_q8_0(my_row, my_lane);
    }
    finish(v, t);
}

@compute @workgroup_size(WG)
fn decode_q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    begin(wid, nwg, t);
    stage_input(t);
    var v = vec2<f32>(0.0);
    which = 0u;
    if live {
        v.x = row_q4_0(my_row, my_lane);
    }
    which = 1u;
    if live && (params.flags & GLU) != 0u {
        v.y = row_q4_0(my_row, my_lane);
    }
    finish(v, t);
}

@compute @workgroup_size(WG)
fn decode_q4_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    begin(wid, nwg, t);
    stage_input(t);
    var v = vec2<f32>(0.0);
    which = 0u;
    if live {
        v.x = row_q4_1(my_row, my_lane);
    }
    which = 1u;
    if live && (params.flags & GLU) != 0u {
        v.y = row_q4_1(my_row, my_lane);
    }
    finish(v, t);
}

// Q4_0 on integer dot products, for the matrices where unpacking nibbles to floats (~5
// instructions a weight) bounds the GEMV rather than memory: gate/up (GLU) and
// vocabulary-sized ones, K ≤ 4096. Each workgroup quantises the (normalised) input once to
// 16-bit integers per 32-value block, x ≈ dx·(256·hi + lo), keeping the low bytes and the
// (signed) high bytes as packed words in workgroup memory; a row's block is then 16
// `dot4U8Packed` / `dot4I8Packed` of its masked nibble words against them. 16-bit inputs keep
// the result within ~1e-5 of f32 inputs (8-bit ones, as llama.cpp's CUDA kernels use, do
// not). Workgroups loop over row groups (the Rust side dispatches at most a thousand or
// so), so the input is quantised once for many rows. The small matrices keep `decode_q4_0`:
// they are bound by latency, which the quantisation would lengthen.

const DOT_BLOCKS: u32 = 128u;
// Per block: its low bytes (inputs 0..15, 16..31) and high bytes, as 4 vec4s.
var<workgroup> xq: array<vec4<u32>, 512>;
// Per block: dx, and 8 · Σ (256·hi + lo) (the −8 offset of every nibble, applied once).
var<workgroup> xd: array<vec2<f32>, DOT_BLOCKS>;
// Per 8 inputs: their max |x|, then the sum of their 16-bit values.
var<workgroup> qmax: array<f32, 512>;
var<workgroup> qsum: array<i32, 512>;

// Low bytes and high bytes of four 16-bit values, as two packed words.
fn split16(q: vec4<i32>) -> vec2<u32> {
    let u = bitcast<vec4<u32>>(q);
    let m = vec4<u32>(0xffu);
    return vec2<u32>(pack4xU8(u & m), pack4xU8((u >> vec4<u32>(8u)) & m));
}

// The max of 4 consecutive `qmax` entries: block j's.
fn block_max(j: u32) -> f32 {
    return max(max(qmax[4u * j], qmax[4u * j + 1u]), max(qmax[4u * j + 2u], qmax[4u * j + 3u]));
}

// Quantises the (normalised) input into `xq` and `xd`: every thread takes 8 inputs at a time
// (a quarter block), so the whole workgroup shares the work.
fn quantize_input(t: u32) {
    let units = params.k >> 3u;
    for (var u = t; u < units; u += WG) {
        let m = max(abs(xu(u, 0u, t)), abs(xu(u, 1u, t)));
        qmax[u] = max(max(m.x, m.y), max(m.z, m.w));
    }
    workgroupBarrier();
    for (var u = t; u < units; u += WG) {
        let j = u >> 2u;
        let amax = block_max(j);
        let id = select(0.0, 32767.0 / amax, amax > 0.0);
        let q0 = vec4<i32>(round(xu(u, 0u, t) * id));
        let q1 = vec4<i32>(round(xu(u, 1u, t) * id));
        let s = q0 + q1;
        qsum[u] = s.x + s.y + s.z + s.w;
        let p0 = split16(q0);
        let p1 = split16(q1);
        // Quarter r holds inputs 8r..8r + 8: low words 2r, 2r + 1 of the block's eight.
        let r = u & 3u;
        let lo = j * 4u + (r >> 1u);
        let c = (2u * r) & 3u;
        xq[lo][c] = p0.x;
        xq[lo][c + 1u] = p1.x;
        xq[lo + 2u][c] = p0.y;
        xq[lo + 2u][c + 1u] = p1.y;
    }
    workgroupBarrier();
    for (var j = t; j < (params.k >> 5u); j += WG) {
        let sum = qsum[4u * j] + qsum[4u * j + 1u] + qsum[4u * j + 2u] + qsum[4u * j + 3u];
        xd[j] = vec2<f32>(block_max(j) / 32767.0, 8.0 * f32(sum));
    }
    workgroupBarrier();
}

struct Q4Block {
    q: vec4<u32>,
    d: f32,
}

// Block b of the Q4_0 row at word `base` (rows hold an even number of 18-byte blocks, so
// they start on a word). An odd block's scale is the high half of word ⌊18b / 4⌋ and its
// nibbles the next four words; an even block's scale is that word's low half and its nibbles
// start two bytes in.
fn q4_0_block(base: u32, b: u32) -> Q4Block {
    let o = base + (b * 9u) / 2u;
    let a0 = wl(o);
    let a1 = wl(o + 1u);
    let a2 = wl(o + 2u);
    let a3 = wl(o + 3u);
    let a4 = wl(o + 4u);
    let odd = (b & 1u) != 0u;
    let d = unpack2x16float(a0);
    let shifted = vec4<u32>((a0 >> 16u) | (a1 << 16u), (a1 >> 16u) | (a2 << 16u),
        (a2 >> 16u) | (a3 << 16u), (a3 >> 16u) | (a4 << 16u));
    return Q4Block(select(shifted, vec4<u32>(a1, a2, a3, a4), odd), select(d.x, d.y, odd));
}

// d · dx · Σ (q − 8)·(256·hi + lo) for block j of the input in `xq`, `xd`.
fn block_dot(p: Q4Block, j: u32) -> f32 {
    return block_dot_with(p, xq[j * 4u], xq[j * 4u + 1u], xq[j * 4u + 2u], xq[j * 4u + 3u], xd[j]);
}

// The same against one block of quantised input given as its words: low bytes of inputs
// 0..16 and 16..32 (l0, l1), high bytes (h0, h1), and (dx, 8 · Σ (256·hi + lo)). Nibbles `q`:
// byte i holds inputs i and i + 16.
fn block_dot_with(p: Q4Block, l0: vec4<u32>, l1: vec4<u32>, h0: vec4<u32>, h1: vec4<u32>,
                  x: vec2<f32>) -> f32 {
    let m = vec4<u32>(0x0f0f0f0fu);
    let ql = p.q & m;
    let qh = (p.q >> vec4<u32>(4u)) & m;
    let lo = dot4U8Packed(ql.x, l0.x) + dot4U8Packed(ql.y, l0.y) + dot4U8Packed(ql.z, l0.z)
        + dot4U8Packed(ql.w, l0.w) + dot4U8Packed(qh.x, l1.x) + dot4U8Packed(qh.y, l1.y)
        + dot4U8Packed(qh.z, l1.z) + dot4U8Packed(qh.w, l1.w);
    let hi = dot4I8Packed(ql.x, h0.x) + dot4I8Packed(ql.y, h0.y) + dot4I8Packed(ql.z, h0.z)
        + dot4I8Packed(ql.w, h0.w) + dot4I8Packed(qh.x, h1.x) + dot4I8Packed(qh.y, h1.y)
        + dot4I8Packed(qh.z, h1.z) + dot4I8Packed(qh.w, h1.w);
    let s = f32(bitcast<i32>(lo) + 256 * hi);
    return p.d * x.x * (s - x.y);
}

// The row's dot products with W (and W2 for GLU), both blocks loaded before either is used.
fn row_q4_0_dot(row: u32, lane: u32, glu: bool) -> vec2<f32> {
    let base = row * (params.row_bytes >> 2u);
    var v = vec2<f32>(0.0);
    for (var b = lane; b < (params.k >> 5u); b += LANES) {
        which = 0u;
        let p = q4_0_block(base, b);
        var p2 = p;
        if glu {
            which = 1u;
            p2 = q4_0_block(base, b);
        }
        v.x += block_dot(p, b);
        if glu {
            v.y += block_dot(p2, b);
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn decode_q4_0_dot(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    let first = wid.y * nwg.x + wid.x;
    let stride = nwg.x * nwg.y;
    let groups = (params.n + ROWS - 1u) / ROWS;
    let glu = (params.flags & GLU) != 0u;
    let quantize_out = (params.flags & QUANTIZE_OUT) != 0u;
    norm_scale(t);
    quantize_input(t);
    for (var g = first; g < groups; g += stride) {
        set_row(g, t);
        var v = vec2<f32>(0.0);
        if live {
            v = row_q4_0_dot(my_row, my_lane, glu);
        }
        if quantize_out {
            finish_quantized(v, t, g);
        } else {
            finish(v, t);
        }
    }
}

// GLU's output quantised for the next GEMV (down), as `quantize_input` would: with ROWS = 32
// (the Rust side sets LANES = 8), row group g is the next input's block g, so the workgroup
// that computed it writes it to y2 as 18 words: low bytes of its 32 values (8 words), high
// bytes (8 words), dx and 8 · Σ (256·hi + lo). The down GEMV then reads it as is
// (`decode_q4_0_dotq`), with no quantisation of its own.
var<workgroup> out_vals: array<f32, 32>;
var<workgroup> out_q: array<i32, 32>;

fn finish_quantized(v: vec2<f32>, t: u32, g: u32) {
    reduce_lanes(v, t);
    if my_lane == 0u {
        var o = 0.0;
        if live {
            let r = partial[t];
            o = r.x / (1.0 + exp(-r.x)) * r.y;
            y[params.row0 + my_row] = o;
        }
        out_vals[t / LANES] = o;
    }
    workgroupBarrier();
    if t < 32u {
        var amax = 0.0;
        for (var i = 0u; i < 32u; i++) {
            amax = max(amax, abs(out_vals[i]));
        }
        let id = select(0.0, 32767.0 / amax, amax > 0.0);
        out_q[t] = i32(round(out_vals[t] * id));
        if t == 0u {
            // dx goes out now; the sum once every value is quantised.
            y2[g * 18u + 16u] = bitcast<u32>(amax / 32767.0);
        }
    }
    workgroupBarrier();
    if t < 8u {
        let q = vec4<i32>(out_q[4u * t], out_q[4u * t + 1u], out_q[4u * t + 2u], out_q[4u * t + 3u]);
        let p = split16(q);
        y2[g * 18u + t] = p.x;
        y2[g * 18u + 8u + t] = p.y;
    } else if t == 8u {
        var sum = 0;
        for (var i = 0u; i < 32u; i++) {
            sum += out_q[i];
        }
        y2[g * 18u + 17u] = bitcast<u32>(8.0 * f32(sum));
    }
    // `partial` and `out_vals` are written again by the next row group.
    workgroupBarrier();
}

// A one-token Q4_0 GEMV whose input comes already quantised (by `finish_quantized`) in w2's
// binding, 18 words a block: the down projection after GLU. No norm, no quantisation, no
// workgroup memory but the final sums: every row reads the input blocks it needs directly.
@compute @workgroup_size(WG)
fn decode_q4_0_dotq(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    // Binds what the other entry points bind (the layout is derived per entry point), though
    // a quantised input has no norm to apply.
    _ = &norm;
    begin(wid, nwg, t);
    var v = vec2<f32>(0.0);
    which = 0u;
    if live {
        let base = my_row * (params.row_bytes >> 2u);
        for (var b = my_lane; b < (params.k >> 5u); b += LANES) {
            let p = q4_0_block(base, b);
            let o = b * 18u;
            let l0 = vec4<u32>(w2[o], w2[o + 1u], w2[o + 2u], w2[o + 3u]);
            let l1 = vec4<u32>(w2[o + 4u], w2[o + 5u], w2[o + 6u], w2[o + 7u]);
            let h0 = vec4<u32>(w2[o + 8u], w2[o + 9u], w2[o + 10u], w2[o + 11u]);
            let h1 = vec4<u32>(w2[o + 12u], w2[o + 13u], w2[o + 14u], w2[o + 15u]);
            let x = vec2<f32>(bitcast<f32>(w2[o + 16u]), bitcast<f32>(w2[o + 17u]));
            v.x += block_dot_with(p, l0, l1, h0, h1, x);
        }
    }
    finish(v, t);
}
