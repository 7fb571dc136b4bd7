// The part of the attention kernels that attention.wgsl (any rows, reading the cache) and
// attention_decode.wgsl (one row, storing the new key and value itself) share; prepended to
// each by attention.rs. Each file declares the bindings these functions name (q, k_cache,
// v_cache, scratch, step, table, params). See attention.wgsl for the layout and the method.

const WG: u32 = 64u;
const MAX_HD: u32 = 256u;
const PER_THREAD: u32 = 4u; // MAX_HD / WG

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    chunk_len: u32,
    scale: f32,
    rope_half: u32,
    sin_off: u32,
}

var<workgroup> qs: array<vec4<f32>, 64>; // MAX_HD / 4
var<workgroup> qf: array<f32, MAX_HD>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if t < s {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if t < s {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// The new key and value of a decode step (attention_decode.wgsl), which the cache does not
// hold yet: position `new_pos` reads them from here. NONE where every position is cached.
const NONE: u32 = 0xffffffffu;
var<workgroup> kf: array<vec4<f32>, 64>; // MAX_HD / 4
var<workgroup> vf: array<f32, MAX_HD>;
var<private> new_pos: u32 = NONE;

// Dim d of a head rotated by the rope at position `pos` (rope.wgsl's rotation), from the
// pair (x0, x1) = (x[i], x[i + half]) with i = d % half.
fn rotated(pos: u32, d: u32, x0: f32, x1: f32) -> f32 {
    let half = params.rope_half;
    let p = pos * half + d % half;
    let c = table[p];
    let s = table[params.sin_off + p];
    return select(x1 * c + x0 * s, x0 * c - x1 * s, d < half);
}

// Row r's query of head h, rotated when asked, into `qs`.
fn load_q(h: u32, r: u32, t: u32) {
    let hd = params.head_dim;
    let qo = (r * params.heads + h) * hd;
    let half = params.rope_half;
    for (var d = t; d < hd; d += WG) {
        var v = q[qo + d];
        if half > 0u {
            let i = d % half;
            v = rotated(step[0] + r, d, q[qo + i], q[qo + i + half]);
        }
        qf[d] = v;
    }
    workgroupBarrier();
    for (var d = t; d < hd / 4u; d += WG) {
        qs[d] = vec4<f32>(qf[4u * d], qf[4u * d + 1u], qf[4u * d + 2u], qf[4u * d + 3u]);
    }
    workgroupBarrier();
}

// The running softmax of one (head, row, chunk): max, sum and the accumulated values (the
// thread's output dims t, t + WG, …).
var<private> m: f32;
var<private> l: f32;
var<private> acc: array<f32, PER_THREAD>;

// Attends the query in `qs` (head h, row r) to chunk c's positions.
fn attend(h: u32, r: u32, c: u32, t: u32) {
    let hd = params.head_dim;
    let hd4 = hd / 4u;
    let kvh = h / (params.heads / params.kv_heads);
    let n = step[0] + r + 1u;
    let start = c * params.chunk_len;
    let end = min(n, start + params.chunk_len);
    let cbase = kvh * params.max_seq * hd;
    m = -1e30;
    l = 0.0;
    for (var base = start; base < end; base += WG) {
        let j = base + t;
        var s = -1e30;
        if j < end {
            // Four independent sums keep four loads in flight (a warp issues in order).
            var d0 = vec4<f32>(0.0);
            var d1 = vec4<f32>(0.0);
            var d2 = vec4<f32>(0.0);
            var d3 = vec4<f32>(0.0);
            if j == new_pos {
                for (var d = 0u; d < hd4; d++) {
                    d0 += qs[d] * kf[d];
                }
            } else {
                let ko = (cbase + j * hd) / 4u;
                var d = 0u;
                for (; d + 4u <= hd4; d += 4u) {
                    d0 += qs[d] * k_cache[ko + d];
                    d1 += qs[d + 1u] * k_cache[ko + d + 1u];
                    d2 += qs[d + 2u] * k_cache[ko + d + 2u];
                    d3 += qs[d + 3u] * k_cache[ko + d + 3u];
                }
                for (; d < hd4; d++) {
                    d0 += qs[d] * k_cache[ko + d];
                }
            }
            let dot = d0 + d1 + d2 + d3;
            s = (dot.x + dot.y + dot.z + dot.w) * params.scale;
        }
        let new_m = max(m, reduce_max(t, s));
        let corr = exp(m - new_m);
        var e = 0.0;
        if j < end {
            e = exp(s - new_m);
        }
        probs[t] = e;
        // The barriers inside make `probs` visible to every thread.
        l = l * corr + reduce_sum(t, e);
        let count = min(WG, end - base);
        // The new position, when in this tile, is its last: the cache loop stops before it.
        let fresh = new_pos != NONE && new_pos >= base && new_pos < base + count;
        let cached = count - select(0u, 1u, fresh);
        for (var i = 0u; i < PER_THREAD; i++) {
            let d = t + i * WG;
            if d < hd {
                let vo = cbase + base * hd + d;
                var a0 = 0.0;
                var a1 = 0.0;
                var a2 = 0.0;
                var a3 = 0.0;
                var jj = 0u;
                for (; jj + 4u <= cached; jj += 4u) {
                    a0 += probs[jj] * v_cache[vo + jj * hd];
                    a1 += probs[jj + 1u] * v_cache[vo + (jj + 1u) * hd];
                    a2 += probs[jj + 2u] * v_cache[vo + (jj + 2u) * hd];
                    a3 += probs[jj + 3u] * v_cache[vo + (jj + 3u) * hd];
                }
                for (; jj < cached; jj++) {
                    a0 += probs[jj] * v_cache[vo + jj * hd];
                }
                if fresh {
                    a0 += probs[cached] * vf[d];
                }
                acc[i] = acc[i] * corr + (a0 + a1) + (a2 + a3);
            }
        }
        m = new_m;
        workgroupBarrier();
    }
}

// Chunk c's partial result (one row) for `combine`. An empty chunk (past n) has l = 0.
fn write_partial(h: u32, c: u32, chunks: u32, t: u32) {
    let hd = params.head_dim;
    let so = (h * chunks + c) * (hd + 2u);
    for (var i = 0u; i < PER_THREAD; i++) {
        let d = t + i * WG;
        if d < hd {
            scratch[so + d] = acc[i];
        }
    }
    if t == 0u {
        scratch[so + hd] = m;
        scratch[so + hd + 1u] = l;
    }
}
