// Quantised matrix × vector: y[n] = Σ_k W[n, k] · x[k] (+ bias[n]).
//
// Bindings, Params, formats and byte reads: matmul_common.wgsl, prepended. Entry points
// gemv_f32, gemv_f16, gemv_q8_0, gemv_q4_0, gemv_q4_1.
//
// Dispatch: one workgroup of WG threads per ROWS output rows, LANES threads per row, row
// groups numbered `wid.y · nwg.x + wid.x` (2-D when N / ROWS exceeds
// maxComputeWorkgroupsPerDimension). Each thread accumulates a strided share of its row
// (elements or blocks `lane, lane + LANES, …`), then the row's lanes sum their partials in
// shared memory. Several rows per workgroup keep every thread busy on short quantised rows
// (576 values are only 18 blocks) and cut the per-workgroup cost on CPU drivers.
// Tokens: `wid.z` covers TB tokens (x row `tok` gives y row `tok`). A lone token (decode)
// takes the scalar `dot_*` path; otherwise the `dot4_*` functions decode each weight once
// and multiply it with the TB tokens' x values (W is read once per TB tokens; prompts of
// GEMM_MIN_TOKENS or more take gemm.wgsl instead).

const WG: u32 = 64u;
const LANES: u32 = 8u;
const ROWS: u32 = 8u; // WG / LANES
const TB: u32 = 4u;

var<workgroup> partial: array<f32, WG>;
var<workgroup> partial4: array<vec4<f32>, WG>;

// Offsets in x of the (up to) TB tokens a workgroup computes together; tokens past the end
// repeat the last one and are not written.
var<private> xo4: vec4<u32>;

// x[e] of the TB tokens.
fn xv(e: u32) -> vec4<f32> {
    return vec4<f32>(x[xo4.x + e], x[xo4.y + e], x[xo4.z + e], x[xo4.w + e]);
}

fn dot_f32(row: u32, t: u32, xo: u32) -> f32 {
    let base = row * (params.row_bytes >> 2u);
    var acc = 0.0;
    for (var i = t; i < params.k; i += LANES) {
        acc += bitcast<f32>(wl(base + i)) * x[xo + i];
    }
    return acc;
}

fn dot_f16(row: u32, t: u32, xo: u32) -> f32 {
    let base = row * params.row_bytes;
    var acc = 0.0;
    if (base & 2u) == 0u {
        // Word-aligned row (K even for every row, or this row by luck): two values a word.
        let words = params.k >> 1u;
        let wbase = base >> 2u;
        for (var i = t; i < words; i += LANES) {
            let v = unpack2x16float(wl(wbase + i));
            acc += v.x * x[xo + 2u * i] + v.y * x[xo + 2u * i + 1u];
        }
        if (params.k & 1u) == 1u && t == 0u {
            acc += load_f16(base + 2u * (params.k - 1u)) * x[xo + params.k - 1u];
        }
    } else {
        for (var i = t; i < params.k; i += LANES) {
            acc += load_f16(base + 2u * i) * x[xo + i];
        }
    }
    return acc;
}

fn dot_q8_0(row: u32, t: u32, xo: u32) -> f32 {
    let blocks = params.k >> 5u;
    var acc = 0.0;
    for (var b = t; b < blocks; b += LANES) {
        let o = row * params.row_bytes + b * 34u;
        let xb = xo + b * 32u;
        var s = 0.0;
        for (var j = 0u; j < 8u; j++) {
            let q = load_u32(o + 2u + 4u * j);
            let xi = xb + 4u * j;
            s += i8_at(q, 0u) * x[xi] + i8_at(q, 1u) * x[xi + 1u]
                + i8_at(q, 2u) * x[xi + 2u] + i8_at(q, 3u) * x[xi + 3u];
        }
        acc += load_f16(o) * s;
    }
    return acc;
}

// Σ q·x over one block of 16 nibble bytes at byte offset `o`, and Σ x (for the offset/min).
fn nibble_dot(o: u32, xb: u32) -> vec2<f32> {
    var s = 0.0;
    var sx = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let q = load_u32(o + 4u * j);
        for (var i = 0u; i < 4u; i++) {
            let byte = (q >> (8u * i)) & 0xffu;
            let lo = x[xb + 4u * j + i];
            let hi = x[xb + 4u * j + i + 16u];
            s += f32(byte & 0xfu) * lo + f32(byte >> 4u) * hi;
            sx += lo + hi;
        }
    }
    return vec2<f32>(s, sx);
}

fn dot_q4_0(row: u32, t: u32, xo: u32) -> f32 {
    let blocks = params.k >> 5u;
    var acc = 0.0;
    for (var b = t; b < blocks; b += LANES) {
        let o = row * params.row_bytes + b * 18u;
        let r = nibble_dot(o + 2u, xo + b * 32u);
        acc += load_f16(o) * (r.x - 8.0 * r.y);
    }
    return acc;
}

fn dot_q4_1(row: u32, t: u32, xo: u32) -> f32 {
    let blocks = params.k >> 5u;
    var acc = 0.0;
    for (var b = t; b < blocks; b += LANES) {
        let o = row * params.row_bytes + b * 20u;
        let r = nibble_dot(o + 4u, xo + b * 32u);
        acc += load_f16(o) * r.x + load_f16(o + 2u) * r.y;
    }
    return acc;
}

// The dot products of one row with TB tokens at once: each weight is loaded and decoded
// once for all of them (prefill).

fn dot4_f32(row: u32, t: u32) -> vec4<f32> {
    let base = row * (params.row_bytes >> 2u);
    var acc = vec4<f32>(0.0);
    for (var i = t; i < params.k; i += LANES) {
        acc += bitcast<f32>(wl(base + i)) * xv(i);
    }
    return acc;
}

fn dot4_f16(row: u32, t: u32) -> vec4<f32> {
    let base = row * params.row_bytes;
    var acc = vec4<f32>(0.0);
    for (var i = t; i < params.k; i += LANES) {
        acc += load_f16(base + 2u * i) * xv(i);
    }
    return acc;
}

fn dot4_q8_0(row: u32, t: u32) -> vec4<f32> {
    let blocks = params.k >> 5u;
    var acc = vec4<f32>(0.0);
    for (var b = t; b < blocks; b += LANES) {
        let o = row * params.row_bytes + b * 34u;
        let xb = b * 32u;
        var s = vec4<f32>(0.0);
        for (var j = 0u; j < 8u; j++) {
            let q = load_u32(o + 2u + 4u * j);
            let xi = xb + 4u * j;
            s += i8_at(q, 0u) * xv(xi) + i8_at(q, 1u) * xv(xi + 1u)
                + i8_at(q, 2u) * xv(xi + 2u) + i8_at(q, 3u) * xv(xi + 3u);
        }
        acc += load_f16(o) * s;
    }
    return acc;
}

// nibble_dot for TB tokens: Σ q·x and Σ x.
struct Nibble4 {
    s: vec4<f32>,
    sx: vec4<f32>,
}

fn nibble_dot4(o: u32, xb: u32) -> Nibble4 {
    var r = Nibble4(vec4<f32>(0.0), vec4<f32>(0.0));
    for (var j = 0u; j < 4u; j++) {
        let q = load_u32(o + 4u * j);
        for (var i = 0u; i < 4u; i++) {
            let byte = (q >> (8u * i)) & 0xffu;
            let lo = xv(xb + 4u * j + i);
            let hi = xv(xb + 4u * j + i + 16u);
            r.s += f32(byte & 0xfu) * lo + f32(byte >> 4u) * hi;
            r.sx += lo + hi;
        }
    }
    return r;
}

fn dot4_q4_0(row: u32, t: u32) -> vec4<f32> {
    let blocks = params.k >> 5u;
    var acc = vec4<f32>(0.0);
    for (var b = t; b < blocks; b += LANES) {
        let o = row * params.row_bytes + b * 18u;
        let r = nibble_dot4(o + 2u, b * 32u);
        acc += load_f16(o) * (r.s - 8.0 * r.sx);
    }
    return acc;
}

fn dot4_q4_1(row: u32, t: u32) -> vec4<f32> {
    let blocks = params.k >> 5u;
    var acc = vec4<f32>(0.0);
    for (var b = t; b < blocks; b += LANES) {
        let o = row * params.row_bytes + b * 20u;
        let r = nibble_dot4(o + 4u, b * 32u);
        acc += load_f16(o) * r.s + load_f16(o + 2u) * r.sx;
    }
    return acc;
}

// Sums each row's LANES partials; the result is valid in the row's lane 0. Every thread of
// the workgroup calls this, so all reach the barriers.
fn reduce(t: u32, acc: f32) -> f32 {
    workgroupBarrier();
    partial[t] = acc;
    workgroupBarrier();
    let lane = t % LANES;
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    return partial[t];
}

fn reduce4(t: u32, acc: vec4<f32>) -> vec4<f32> {
    workgroupBarrier();
    partial4[t] = acc;
    workgroupBarrier();
    let lane = t % LANES;
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial4[t] += partial4[t + s];
        }
        workgroupBarrier();
    }
    return partial4[t];
}

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

fn store(tok: u32, row: u32, v: f32) {
    var r = v;
    if (params.flags & HAS_BIAS) != 0u {
        r += bias[params.row0 + row];
    }
    let i = tok * params.y_stride + params.row0 + row;
    if (params.flags & ACCUMULATE) != 0u {
        r += y[i];
    }
    y[i] = r;
}

// Weight formats, as the entry points name them.
const F32: u32 = 0u;
const F16: u32 = 1u;
const Q8_0: u32 = 2u;
const Q4_0: u32 = 3u;
const Q4_1: u32 = 4u;

fn dot1(fmt: u32, row: u32, lane: u32, xo: u32) -> f32 {
    switch fmt {
        case 0u: { return dot_f32(row, lane, xo); }
        case 1u: { return dot_f16(row, lane, xo); }
        case 2u: { return dot_q8_0(row, lane, xo); }
        case 3u: { return dot_q4_0(row, lane, xo); }
        default: { return dot_q4_1(row, lane, xo); }
    }
}

fn dot4(fmt: u32, row: u32, lane: u32) -> vec4<f32> {
    switch fmt {
        case 0u: { return dot4_f32(row, lane); }
        case 1u: { return dot4_f16(row, lane); }
        case 2u: { return dot4_q8_0(row, lane); }
        case 3u: { return dot4_q4_0(row, lane); }
        default: { return dot4_q4_1(row, lane); }
    }
}

fn run(fmt: u32, wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    let row = (wid.y * nwg.x + wid.x) * ROWS + t / LANES;
    let lane = t % LANES;
    let live = row < params.n;
    let glu = (params.flags & GLU) != 0u;
    let tok0 = wid.z * TB;
    let nt = min(TB, params.tokens - tok0);
    if nt == 1u {
        var a = 0.0;
        var b = 0.0;
        which = 0u;
        if live {
            a = dot1(fmt, row, lane, tok0 * params.k);
        }
        if glu {
            which = 1u;
            if live {
                b = dot1(fmt, row, lane, tok0 * params.k);
            }
        }
        a = reduce(t, a);
        if glu {
            b = reduce(t, b);
        }
        if lane == 0u && live {
            if glu {
                y[tok0 * params.y_stride + params.row0 + row] = silu(a) * b;
            } else {
                store(tok0, row, a);
            }
        }
        return;
    }
    let last = tok0 + nt - 1u;
    xo4 = vec4<u32>(tok0, min(tok0 + 1u, last), min(tok0 + 2u, last), last) * params.k;
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    which = 0u;
    if live {
        a = dot4(fmt, row, lane);
    }
    if glu {
        which = 1u;
        if live {
            b = dot4(fmt, row, lane);
        }
    }
    a = reduce4(t, a);
    if glu {
        b = reduce4(t, b);
    }
    if lane == 0u && live {
        for (var j = 0u; j < nt; j++) {
            if glu {
                y[(tok0 + j) * params.y_stride + params.row0 + row] = silu(a[j]) * b[j];
            } else {
                store(tok0 + j, row, a[j]);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn gemv_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    run(F32, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemv_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    run(F16, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemv_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    run(Q8_0, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemv_q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    run(Q4_0, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemv_q4_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    run(Q4_1, wid, nwg, t);
}
