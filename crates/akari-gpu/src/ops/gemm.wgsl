// Quantised matrix × matrix for prompts: Y[T, N] = X[T, K] · W[N, K]ᵀ (+ bias[N]), tiled.
//
// Bindings, Params, formats and byte reads: matmul_common.wgsl, prepended. K must be a
// multiple of 4 (quantised rows are whole 32-value blocks anyway).
//
// Each workgroup computes a TM × TN tile of Y (TM rows of W, TN tokens). It walks K one
// block (TK values) at a time: every thread dequantises eight weights and loads eight inputs
// into workgroup memory, then accumulates a 4 × 4 patch of the tile from there. A weight is
// read from memory once per TN tokens, where the GEMV reads it once per 4; two barriers per
// block and pass keep the cost low on CPU implementations too. With the GLU epilogue the
// gate (W) and up (W2) tiles take turns in the same workgroup memory.
// Dispatch: (row tiles, flattened over x and y past maxComputeWorkgroupsPerDimension, as in
// gemv.wgsl) × ⌈T / TN⌉.

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;
const WG: u32 = 256u;

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

// Four rows' (or tokens') values at step kk of a tile; r a multiple of 4.
fn ws4(kk: u32, r: u32) -> vec4<f32> {
    return ws[(kk * TM + r) / 4u];
}

fn xs4(kk: u32, c: u32) -> vec4<f32> {
    return xs[(kk * TN + c) / 4u];
}

fn run(fmt: u32, wid: vec3<u32>, nwg: vec3<u32>, t: u32) {
    let row0 = (wid.y * nwg.x + wid.x) * TM;
    let tok0 = wid.z * TN;
    let glu = (params.flags & GLU) != 0u;
    let passes = select(1u, 2u, glu);
    // What this thread loads: row `lr` of the W tile and token `lr` of the X tile, values
    // `lk .. lk + 8` of the block.
    let lr = t / 4u;
    let lk = (t % 4u) * 8u;
    // What it computes: rows cr .. cr + 4 and tokens ct .. ct + 4 of the tile.
    let cr = (t / 16u) * 4u;
    let ct = (t % 16u) * 4u;
    // a_i.j: row cr + i, token ct + j (b_i: the up projection's, for GLU).
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        for (var h = 0u; h < 8u; h += 4u) {
            let k = k0 + lk + h;
            var xv = vec4<f32>(0.0);
            if tok0 + lr < params.tokens && k < params.k {
                let o = (tok0 + lr) * params.k + k;
                xv = vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
            }
            let i = (lk + h) * (TN / 4u) + lr / 4u;
            let c = lr % 4u;
            xs[i][c] = xv.x;
            xs[i + TN / 4u][c] = xv.y;
            xs[i + TN / 2u][c] = xv.z;
            xs[i + 3u * TN / 4u][c] = xv.w;
        }
        for (var p = 0u; p < passes; p++) {
            which = p;
            for (var h = 0u; h < 8u; h += 4u) {
                let k = k0 + lk + h;
                var wv = vec4<f32>(0.0);
                if row0 + lr < params.n && k < params.k {
                    wv = w4(fmt, row0 + lr, k);
                }
                let i = (lk + h) * (TM / 4u) + lr / 4u;
                let c = lr % 4u;
                ws[i][c] = wv.x;
                ws[i + TM / 4u][c] = wv.y;
                ws[i + TM / 2u][c] = wv.z;
                ws[i + 3u * TM / 4u][c] = wv.w;
            }
            workgroupBarrier();
            var s0 = vec4<f32>(0.0);
            var s1 = vec4<f32>(0.0);
            var s2 = vec4<f32>(0.0);
            var s3 = vec4<f32>(0.0);
            for (var kk = 0u; kk < TK; kk++) {
                let wr = ws4(kk, cr);
                let xc = xs4(kk, ct);
                s0 += wr.x * xc;
                s1 += wr.y * xc;
                s2 += wr.z * xc;
                s3 += wr.w * xc;
            }
            if p == 0u {
                a0 += s0;
                a1 += s1;
                a2 += s2;
                a3 += s3;
            } else {
                b0 += s0;
                b1 += s1;
                b2 += s2;
                b3 += s3;
            }
            workgroupBarrier();
        }
    }
    put4(tok0 + ct, row0 + cr, a0, b0, glu);
    put4(tok0 + ct, row0 + cr + 1u, a1, b1, glu);
    put4(tok0 + ct, row0 + cr + 2u, a2, b2, glu);
    put4(tok0 + ct, row0 + cr + 3u, a3, b3, glu);
}

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
