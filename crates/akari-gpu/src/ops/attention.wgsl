// Causal attention of a prompt's rows over one layer's cache: row r (position pos + r) of
// head h attends to positions 0..=pos + r of its key/value head h / (heads / kv_heads).
// Decode (one row) has attention_decode.wgsl.
//
// Bindings: 0 q: [rows, heads · head_dim], 1 k_cache, 2 v_cache: [kv_heads, max_seq,
// head_dim], 3 out: [rows, heads · head_dim] (written), 4 step: [pos, ..], 5 table: rope
// cos then sin (any buffer when q is not to be rotated), 6 params (attention_common.wgsl's).
// With `rope_half` > 0 the query is rotated as it is loaded (rope.wgsl's rotation, fused).
//
// Dispatch `attention_rows` (software adapters, below): one thread per (row, head).
//
// Dispatch `attention`: one workgroup of WG threads per (head = wid.x, row = wid.y); the
// rows give the parallelism. The softmax is computed online over tiles of WG positions
// (running max and sum, the accumulator rescaled when the max grows): each thread scores
// one position of the tile, then each thread accumulates head_dim / WG output values over
// the tile. head_dim ≤ MAX_HD and a multiple of 4.

const WG: u32 = 64u;
const MAX_HD: u32 = 256u;
const PER_THREAD: u32 = 4u; // MAX_HD / WG

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<KvWord>;
@group(0) @binding(2) var<storage, read> v_cache: array<KvWord>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read> table: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

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

// Value `e` of the value cache (in its [kv_heads, max_seq, head_dim] order).
fn v_one(e: u32) -> f32 {
    return kv_get(v_cache[e / 4u])[e % 4u];
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

// The running softmax of one (head, row): max, sum and the accumulated values (the
// thread's output dims t, t + WG, …).
var<private> m: f32;
var<private> l: f32;
var<private> acc: array<f32, PER_THREAD>;

// Attends the query in `qs` (head h, row r) to positions 0..=pos + r.
fn attend(h: u32, r: u32, t: u32) {
    let hd = params.head_dim;
    let hd4 = hd / 4u;
    let kvh = h / (params.heads / params.kv_heads);
    let end = step[0] + r + 1u;
    let cbase = kvh * params.max_seq * hd;
    m = -1e30;
    l = 0.0;
    for (var base = 0u; base < end; base += WG) {
        let j = base + t;
        var s = -1e30;
        if j < end {
            // Four independent sums keep four loads in flight (a warp issues in order).
            var d0 = vec4<f32>(0.0);
            var d1 = vec4<f32>(0.0);
            var d2 = vec4<f32>(0.0);
            var d3 = vec4<f32>(0.0);
            let ko = (cbase + j * hd) / 4u;
            var d = 0u;
            for (; d + 4u <= hd4; d += 4u) {
                d0 += qs[d] * kv_get(k_cache[ko + d]);
                d1 += qs[d + 1u] * kv_get(k_cache[ko + d + 1u]);
                d2 += qs[d + 2u] * kv_get(k_cache[ko + d + 2u]);
                d3 += qs[d + 3u] * kv_get(k_cache[ko + d + 3u]);
            }
            for (; d < hd4; d++) {
                d0 += qs[d] * kv_get(k_cache[ko + d]);
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
        for (var i = 0u; i < PER_THREAD; i++) {
            let d = t + i * WG;
            if d < hd {
                let vo = cbase + base * hd + d;
                var a0 = 0.0;
                var a1 = 0.0;
                var a2 = 0.0;
                var a3 = 0.0;
                var jj = 0u;
                for (; jj + 4u <= count; jj += 4u) {
                    a0 += probs[jj] * v_one(vo + jj * hd);
                    a1 += probs[jj + 1u] * v_one(vo + (jj + 1u) * hd);
                    a2 += probs[jj + 2u] * v_one(vo + (jj + 2u) * hd);
                    a3 += probs[jj + 3u] * v_one(vo + (jj + 3u) * hd);
                }
                for (; jj < count; jj++) {
                    a0 += probs[jj] * v_one(vo + jj * hd);
                }
                acc[i] = acc[i] * corr + (a0 + a1) + (a2 + a3);
            }
        }
        m = new_m;
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let r = wid.y;
    load_q(h, r, t);
    attend(h, r, t);
    let hd = params.head_dim;
    let qo = (r * params.heads + h) * hd;
    for (var i = 0u; i < PER_THREAD; i++) {
        let d = t + i * WG;
        if d < hd {
            out[qo + d] = acc[i] / l;
        }
    }
}

// The same for software adapters (lavapipe, SwiftShader), which run a workgroup's threads
// on a CPU core a few SIMD lanes at a time: there every barrier switches each thread out and
// back in, and `attention` takes about fourteen a tile. Here one thread walks its (row, head)'s
// keys alone, with no workgroup memory and no barrier; a workgroup's threads are consecutive
// rows of one head, so lanes run together read the same keys and values.
// Dispatch: (⌈rows / WG⌉, heads); row = wid.x · WG + t, head = wid.y.
const ROWS_MAX_HD4: u32 = 64u; // MAX_HD / 4

@compute @workgroup_size(WG)
fn attention_rows(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) t: u32) {
    let r = wid.x * WG + t;
    let h = wid.y;
    if r >= params.rows {
        return;
    }
    let hd = params.head_dim;
    let hd4 = hd / 4u;
    let pos = step[0] + r;
    let qo = (r * params.heads + h) * hd;
    let half = params.rope_half;
    var qv: array<vec4<f32>, ROWS_MAX_HD4>;
    for (var i = 0u; i < hd4; i++) {
        var v: vec4<f32>;
        for (var e = 0u; e < 4u; e++) {
            let d = 4u * i + e;
            v[e] = q[qo + d];
            if half > 0u {
                let j = d % half;
                v[e] = rotated(pos, d, q[qo + j], q[qo + j + half]);
            }
        }
        qv[i] = v * params.scale;
    }
    let kvh = h / (params.heads / params.kv_heads);
    let cbase = kvh * params.max_seq * hd4;
    var acc: array<vec4<f32>, ROWS_MAX_HD4>;
    var mx = -1e30;
    var sum = 0.0;
    for (var j = 0u; j <= pos; j++) {
        let ko = cbase + j * hd4;
        var s4 = vec4<f32>(0.0);
        for (var i = 0u; i < hd4; i++) {
            s4 += qv[i] * kv_get(k_cache[ko + i]);
        }
        let s = s4.x + s4.y + s4.z + s4.w;
        let new_m = max(mx, s);
        let corr = exp(mx - new_m);
        let p = exp(s - new_m);
        sum = sum * corr + p;
        for (var i = 0u; i < hd4; i++) {
            acc[i] = acc[i] * corr + p * kv_get(v_cache[ko + i]);
        }
        mx = new_m;
    }
    for (var i = 0u; i < hd4; i++) {
        let a = acc[i] / sum;
        out[qo + 4u * i] = a.x;
        out[qo + 4u * i + 1u] = a.y;
        out[qo + 4u * i + 2u] = a.z;
        out[qo + 4u * i + 3u] = a.w;
    }
}
