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
// bytes) and f16 rows (K a multiple of 8) are aligned as they are.
//
// What the kernels share is this file; each is built with the file that declares its
// weights and reads its rows: gemv_decode_quant.wgsl (Q4_0, Q4_1, Q8_0, as words) or
// gemv_decode_f16.wgsl (f16, as 16-byte words). Binding 0 and binding 4 (the second matrix)
// are declared there.
//
// Dispatch: one workgroup of WG threads per ROWS = WG / LANES rows (row groups numbered
// `wid.y · nwg.x + wid.x`); a row's LANES threads take its pairs (blocks, 8-value groups)
// `lane, lane + LANES, …` and sum their partials (gemv_sums.wgsl or, with subgroups,
// gemv_sums_subgroups.wgsl).

const WG: u32 = 256u;
// Threads per row (16, 32 or 64, chosen by the Rust side from the row length) and rows per
// workgroup.
override LANES: u32 = 16u;
override ROWS: u32 = WG / LANES;
// A lane's units of a row (pairs of blocks, blocks or 8-value groups) are lane, lane + LANES,
// …. UNITS, set when the Rust side knows the row length as it builds the pipeline, is how
// many a lane takes at most: the loops over them then have a fixed count and unroll, so a
// lane's loads are all in flight at once rather than one round trip to memory per unit.
override UNITS: u32 = 0u;

// How many times a lane's loop over `n` units runs (units past `n` are skipped inside).
fn lane_units(n: u32, lane: u32) -> u32 {
    if UNITS > 0u {
        return UNITS;
    }
    return (n + LANES - 1u - lane) / LANES;
}

// Unit i of a lane's loop over `n` units, clamped into the row, and its weight: 1, or 0 for a
// unit past the row (it repeats the row's last unit, so no branch stops the loads).
fn lane_unit(n: u32, lane: u32, i: u32) -> u32 {
    return min(lane + i * LANES, n - 1u);
}

fn unit_weight(n: u32, lane: u32, i: u32) -> f32 {
    return select(0.0, 1.0, lane + i * LANES < n);
}

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

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;
// f32 values (split), or quantised blocks (`flags & 32`): u32 words either way.
@group(0) @binding(6) var<storage, read_write> y2: array<u32>;
@group(0) @binding(7) var<storage, read_write> y3: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

// The flags again as a pipeline constant, with FLAGS_SET: the Rust side builds one pipeline
// per combination it uses, so every test of a flag folds away when the pipeline is built and
// the loops over the weights hold no branch (a branch between two units' loads keeps the
// compiler from issuing them together). Without FLAGS_SET the kernels read `params.flags`.
override FLAGS: u32 = 0u;
const FLAGS_SET: u32 = 0x80000000u;

fn has(flag: u32) -> bool {
    if (FLAGS & FLAGS_SET) != 0u {
        return (FLAGS & flag) != 0u;
    }
    return (params.flags & flag) != 0u;
}

const HAS_BIAS: u32 = 1u;
const ACCUMULATE: u32 = 2u;
const GLU: u32 = 4u;
const NORM: u32 = 8u;
const SPLIT: u32 = 16u;
const QUANTIZE_OUT: u32 = 32u;
const COMBINE: u32 = 64u;
// With NORM: the norm weight is already in W's columns (folded at first use, f16 rows only),
// so x is scaled by 1 / rms(x) alone.
const NORM_FOLDED: u32 = 128u;

// 1 / rms(x) when normalising (uniform across the workgroup).
var<private> scale: f32;

// Inputs of up to STAGE vec4s are copied once per workgroup into workgroup memory (already
// normalised), so the rows' threads read them from there instead of reading x (and the norm
// weight) from memory once per row: quantised rows read 32 or 64 inputs per few weight
// words, and those reads, not the weights, were the cost.
const STAGE: u32 = 512u;
var<workgroup> xs: array<vec4<f32>, STAGE>;
var<private> staged: bool;

// Workgroup-memory layouts chosen so that the threads of a warp read different banks, bit by
// bit (a pipeline constant; the Rust side sets all three unless told otherwise):
// 1 `xs` is stored 16 vec4s apart (vec4 i at (i mod 16) · STAGE/16 + i / 16). A Q4_0 or Q8_0
//   lane reads its pair's 16 vec4s, and neighbouring lanes take neighbouring pairs, 256 bytes
//   apart in input order: every such read of 8 threads fell on the same four banks.
// 2 the integer-dot kernel's quantised input (gemv_decode_quant.wgsl) is stored word kind
//   by word kind rather than block by block, for the same reason (blocks are 64 bytes).
// 4 the quantised GLU output is written word kind by word kind (word w of block b at
//   w · blocks + b) rather than as 18-word blocks, so that the down projection's lanes, each
//   on its own block, read neighbouring words of memory rather than words 72 bytes apart.
override SWIZZLE: u32 = 7u;

fn xs_at(i: u32) -> u32 {
    if (SWIZZLE & 1u) != 0u {
        return (i % 16u) * (STAGE / 16u) + i / 16u;
    }
    return i;
}

// x[i] (vec4 i), normalised when asked, from memory.
fn xg(i: u32) -> vec4<f32> {
    if has(NORM_FOLDED) {
        return x[i] * scale;
    }
    if has(NORM) {
        return x[i] * norm[i] * scale;
    }
    return x[i];
}

// The same, from workgroup memory when staged (quantised rows).
fn xv(i: u32) -> vec4<f32> {
    if staged {
        return xs[xs_at(i)];
    }
    return xg(i);
}

// Where this thread's row is, and whether it exists.
var<private> my_row: u32;
var<private> my_lane: u32;
var<private> live: bool;

// The row's bias and the value it accumulates into, loaded by its lane 0 as soon as the row
// is known, so that the epilogue, at the end of a chain of dependent steps, does not wait on
// memory once more.
var<private> row_bias: f32;
var<private> row_acc: f32;

// Loads moved ahead of what they would wait behind, bit by bit (a pipeline constant; the
// Rust side sets both unless told otherwise): 1 the epilogue's bias and accumulator (above),
// 2 a Q4_0 lane's one pair of blocks in the q/k/v and o projections (gemv_decode_quant.wgsl).
override PREFETCH: u32 = 3u;

// The thread's row in row group `g` (ROWS rows a group).
fn set_row(g: u32, t: u32) {
    my_row = g * ROWS + t / LANES;
    my_lane = t % LANES;
    live = my_row < params.n;
    if (PREFETCH & 1u) != 0u && my_lane == 0u && live {
        let i = params.row0 + my_row;
        if has(HAS_BIAS) {
            row_bias = bias[i];
        }
        if has(ACCUMULATE) {
            row_acc = y[i];
        }
    }
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

// Unit u of the input times the norm weight (unless W holds it), and the unit's sum of
// squares.
fn unit_normed(u: u32) -> Unit {
    let a = x[2u * u];
    let b = x[2u * u + 1u];
    if has(NORM_FOLDED) {
        return Unit(a, b, dot(a, a) + dot(b, b));
    }
    return Unit(a * norm[2u * u], b * norm[2u * u + 1u], dot(a, a) + dot(b, b));
}

// 1 / rms(x) into `scale` when normalising.
fn norm_scale(t: u32) {
    // The branch holds barriers, so it must test a value WGSL's uniformity analysis can see
    // is uniform: a private variable never counts as one.
    let norm_on = has(NORM);
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
        scale = 1.0 / sqrt(workgroup_sum(ss, t) / f32(params.k) + params.eps);
    }
}

// Copies the (normalised) input into workgroup memory when it fits. Only the quantised
// entry points call it: f16 rows read each input against four weight words, and there the
// copy (and the workgroup memory it takes from the cache) cost more than it saves
// (measured on an H100: Q4_0 decode +17 %; f16 −5 % when it was staged too).
fn stage_input(t: u32) {
    let stage = params.k <= 4u * STAGE;
    if stage {
        if has(COMBINE) {
            combine_input(t);
        } else if held {
            for (var u = t; u < params.k / 8u; u += WG) {
                xs[xs_at(2u * u)] = xu(u, 0u, t);
                xs[xs_at(2u * u + 1u)] = xu(u, 1u, t);
            }
        } else {
            for (var i = t; i < params.k / 4u; i += WG) {
                xs[xs_at(i)] = xg(i);
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
// Per (head, chunk): (max, sum), and its weight e^(m − M) / Σ_c l_c·e^(m_c − M).
var<workgroup> parts: array<vec2<f32>, MAX_PARTIALS>;
var<workgroup> weights: array<f32, MAX_PARTIALS>;

// The merge's loops over chunks run to MERGE_CHUNKS, at least the number of chunks (rounded
// up by the Rust side, which fixes it when it builds the pipeline), so that they unroll and their
// loads (chunks past the real ones clamped to the last, weighted 0) are issued together: with
// the count read from `params`, each iteration's load waited for the one before (at 2048
// positions, 16 chunks, the o projection took 1.6 µs a layer longer than at 128).
// 0 keeps the loops to `params.chunks`.
override MERGE_CHUNKS: u32 = 0u;

fn merge_chunks(chunks: u32) -> u32 {
    if MERGE_CHUNKS > 0u {
        return MERGE_CHUNKS;
    }
    return chunks;
}

fn combine_input(t: u32) {
    let hd4 = params.hd4;
    let chunks = params.chunks;
    let heads = params.k / (4u * hd4);
    let n = heads * chunks;
    let loops = merge_chunks(chunks);
    for (var i = t; i < n; i += WG) {
        let ml = x[n * hd4 + i];
        parts[i] = ml.xy;
    }
    workgroupBarrier();
    // A thread a (head, chunk) finds its head's max and sum itself, so no thread walks the
    // chunks one exponent after another (a thread a head doing so: the o projection 421 µs
    // a token against 404, profiled at 2048 positions on an H100).
    for (var i = t; i < n; i += WG) {
        let first = (i / chunks) * chunks;
        var mx = -1e30;
        for (var c = 0u; c < loops; c++) {
            let p = parts[first + min(c, chunks - 1u)];
            mx = select(mx, max(mx, p.x), c < chunks && p.y > 0.0);
        }
        var total = 0.0;
        for (var c = 0u; c < loops; c++) {
            let p = parts[first + min(c, chunks - 1u)];
            total += select(0.0, p.y * exp(p.x - mx), c < chunks && p.y > 0.0);
        }
        let p = parts[i];
        weights[i] = select(0.0, exp(p.x - mx) / total, p.y > 0.0);
    }
    workgroupBarrier();
    for (var i = t; i < params.k / 4u; i += WG) {
        let first = (i / hd4) * chunks;
        let dv = i % hd4;
        var acc = vec4<f32>(0.0);
        for (var c = 0u; c < loops; c++) {
            let cc = min(c, chunks - 1u);
            let weight = select(0.0, weights[first + cc], c < chunks);
            acc += weight * x[(first + cc) * hd4 + dv];
        }
        xs[xs_at(i)] = acc;
    }
}

// Sums the row's partial dot products (`v`: with W, and with W2 for GLU) and applies the
// epilogue.
fn finish(v: vec2<f32>, t: u32) {
    let r = lanes_sum(v, t);
    if my_lane == 0u && live {
        epilogue(r);
    }
}

// The epilogue of the row's lane 0, given the row's dot products (with W, and W2 for GLU).
fn epilogue(r: vec2<f32>) {
    let i = params.row0 + my_row;
    if has(GLU) {
        y[i] = r.x / (1.0 + exp(-r.x)) * r.y;
        return;
    }
    var o = r.x;
    let early = (PREFETCH & 1u) != 0u;
    if has(HAS_BIAS) {
        o += select(bias[i], row_bias, early);
    }
    if has(ACCUMULATE) {
        o += select(y[i], row_acc, early);
    }
    if !has(SPLIT) || i < params.split1 {
        y[i] = o;
    } else if i < params.split2 {
        y2[i - params.split1] = bitcast<u32>(o);
    } else {
        y3[i - params.split2] = o;
    }
}
