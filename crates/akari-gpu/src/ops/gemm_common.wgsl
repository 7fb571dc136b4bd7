// Quantised matrix × matrix for prompts: Y[T, N] = X[T, K] · W[N, K]ᵀ (+ bias[N]), tiled:
// what gemm.wgsl (GPUs) and gemm_soft.wgsl (software adapters) share, prepended to each
// after matmul_common.wgsl (bindings, Params, formats and byte reads). K must be a multiple
// of 4 (quantised rows are whole 32-value blocks anyway).
//
// Each workgroup computes a TM × TN tile of Y (TM rows of W, TN tokens). It walks K one
// block (TK values) at a time: its threads dequantise the block's weights and load its
// inputs into workgroup memory, then each accumulates a patch of the tile from there. A
// weight is read from memory once per TN tokens, where the GEMV reads it once per 4. With
// the GLU epilogue the gate (W) and up (W2) tiles take turns in the same workgroup memory.
// Dispatch: (row tiles, flattened over x and y past maxComputeWorkgroupsPerDimension, as in
// gemv.wgsl) × ⌈T / TN⌉.

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;

// The nibbles of the four bytes of `q`, low (`hi` false) or high halves, as 0..15.
fn nibbles(q: u32, hi: bool) -> vec4<f32> {
    let s = select(0u, 4u, hi);
    return vec4<f32>((vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) >> vec4<u32>(s)) & vec4<u32>(0xfu));
}

// W[row, k .. k + 4] for k a multiple of 4.
fn w4(fmt: u32, row: u32, k: u32) -> vec4<f32> {
    let rb = params.row_bytes;
    let j = k & 31u;
    switch fmt {
        case 0u: {
            let i = row * (rb >> 2u) + k;
            return vec4<f32>(bitcast<f32>(wl(i)), bitcast<f32>(wl(i + 1u)),
                             bitcast<f32>(wl(i + 2u)), bitcast<f32>(wl(i + 3u)));
        }
        case 1u: {
            let o = row * rb + 2u * k;
            return vec4<f32>(unpack2x16float(load_u32(o)), unpack2x16float(load_u32(o + 4u)));
        }
        case 2u: {
            let o = row * rb + (k >> 5u) * 34u;
            let q = load_u32(o + 2u + j);
            return load_f16(o) * vec4<f32>(i8_at(q, 0u), i8_at(q, 1u), i8_at(q, 2u), i8_at(q, 3u));
        }
        case 3u: {
            let o = row * rb + (k >> 5u) * 18u;
            let q = load_u32(o + 2u + (j & 15u));
            return load_f16(o) * (nibbles(q, j >= 16u) - vec4<f32>(8.0));
        }
        default: {
            let o = row * rb + (k >> 5u) * 20u;
            let q = load_u32(o + 4u + (j & 15u));
            return load_f16(o) * nibbles(q, j >= 16u) + vec4<f32>(load_f16(o + 2u));
        }
    }
}

// The tiles, k-major: value (kk, row) at ws[(kk · TM + row) / 4][row % 4], likewise xs by
// token, so a thread reads its four rows (or tokens) as one vector load: four scalar
// loads made the inner loop wait on workgroup memory. 16 KiB together: WebGPU's default
// workgroup storage limit.
var<workgroup> ws: array<vec4<f32>, 512>;
var<workgroup> xs: array<vec4<f32>, 512>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

fn put(tok: u32, row: u32, a: f32, b: f32, glu: bool) {
    if row >= params.n || tok >= params.tokens {
        return;
    }
    let i = tok * params.y_stride + params.row0 + row;
    if glu {
        y[i] = silu(a) * b;
        return;
    }
    var v = a;
    if (params.flags & HAS_BIAS) != 0u {
        v += bias[params.row0 + row];
    }
    if (params.flags & ACCUMULATE) != 0u {
        v += y[i];
    }
    y[i] = v;
}

// Row `row` for tokens tok .. tok + 4.
fn put4(tok: u32, row: u32, a: vec4<f32>, b: vec4<f32>, glu: bool) {
    put(tok, row, a.x, b.x, glu);
    put(tok + 1u, row, a.y, b.y, glu);
    put(tok + 2u, row, a.z, b.z, glu);
    put(tok + 3u, row, a.w, b.w, glu);
}

// Stores W[row, k .. k + 4] (`v`, k at step kk of the block) into the tile: row r of it.
fn store_w(kk: u32, r: u32, v: vec4<f32>) {
    let i = kk * (TM / 4u) + r / 4u;
    let c = r % 4u;
    ws[i][c] = v.x;
    ws[i + TM / 4u][c] = v.y;
    ws[i + TM / 2u][c] = v.z;
    ws[i + 3u * TM / 4u][c] = v.w;
}

// The same for X: token `tok` of the tile.
fn store_x(kk: u32, tok: u32, v: vec4<f32>) {
    let i = kk * (TN / 4u) + tok / 4u;
    let c = tok % 4u;
    xs[i][c] = v.x;
    xs[i + TN / 4u][c] = v.y;
    xs[i + TN / 2u][c] = v.z;
    xs[i + 3u * TN / 4u][c] = v.w;
}

// Four rows' (or tokens') values at step kk of a tile; r a multiple of 4.
fn ws4(kk: u32, r: u32) -> vec4<f32> {
    return ws[(kk * TM + r) / 4u];
}

fn xs4(kk: u32, c: u32) -> vec4<f32> {
    return xs[(kk * TN + c) / 4u];
}

// The entry points, one per format: each file defines WG and `run`.

@compute @workgroup_size(WG)
fn gemm_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    run(0u, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemm_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    run(1u, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemm_q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    run(2u, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemm_q4_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    run(3u, wid, nwg, t);
}

@compute @workgroup_size(WG)
fn gemm_q4_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    run(4u, wid, nwg, t);
}
