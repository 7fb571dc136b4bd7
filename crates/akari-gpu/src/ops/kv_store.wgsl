// Copies rows of k and v into one layer's cache at positions pos.., head-major:
// cache[(h · max_seq + pos + r) · head_dim + d] = k[r, h · head_dim + d], rotating k on the
// way when `rope_half` > 0 (the rope of rope.wgsl, fused so it needs no dispatch of its own).
// The cache holds `KvWord`s of four values (kv_f16.wgsl or kv_f32.wgsl, prepended).
//
// Bindings: 0 k, 1 v: [rows, kv_heads · head_dim], 2 k_cache, 3 v_cache:
// [kv_heads, max_seq, head_dim] (written), 4 step: [pos, ..], 5 table: rope cos then sin
// (any buffer when not rotating), 6 params.
// Dispatch: x covers kv_heads · head_dim / 4 (four values a thread) in workgroups of 64, y
// is the row.

struct Params {
    kv_dim: u32,
    head_dim: u32,
    max_seq: u32,
    rope_half: u32,
    sin_off: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<KvWord>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<KvWord>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read> table: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn kv_store(@builtin(global_invocation_id) gid: vec3<u32>) {
    // head_dim is a multiple of 4, so a thread's four values are in one head.
    let e0 = 4u * gid.x;
    if e0 >= params.kv_dim {
        return;
    }
    let r = gid.y;
    let h = e0 / params.head_dim;
    let d0 = e0 % params.head_dim;
    let dst = ((h * params.max_seq + step[0] + r) * params.head_dim + d0) / 4u;
    let half = params.rope_half;
    var kv: vec4<f32>;
    var vv: vec4<f32>;
    for (var c = 0u; c < 4u; c++) {
        let e = e0 + c;
        let d = d0 + c;
        kv[c] = k[r * params.kv_dim + e];
        vv[c] = v[r * params.kv_dim + e];
        if half > 0u {
            let i = d % half;
            let p = (step[0] + r) * half + i;
            let cs = table[p];
            let sn = table[params.sin_off + p];
            let base = r * params.kv_dim + h * params.head_dim + i;
            let k0 = k[base];
            let k1 = k[base + half];
            kv[c] = select(k1 * cs + k0 * sn, k0 * cs - k1 * sn, d < half);
        }
    }
    k_cache[dst] = kv_put(kv);
    v_cache[dst] = kv_put(vv);
}
