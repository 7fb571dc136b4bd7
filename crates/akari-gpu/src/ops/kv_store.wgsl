// Copies rows of k and v into one layer's cache at positions pos.., head-major:
// cache[(h · max_seq + pos + r) · head_dim + d] = k[r, h · head_dim + d], rotating k on the
// way when `rope_half` > 0 (the rope of rope.wgsl, fused so it needs no dispatch of its own).
//
// Bindings: 0 k, 1 v: [rows, kv_heads · head_dim], 2 k_cache, 3 v_cache:
// [kv_heads, max_seq, head_dim] (written), 4 step: [pos, ..], 5 table: rope cos then sin
// (any buffer when not rotating), 6 params.
// Dispatch: x covers kv_heads · head_dim in workgroups of 64, y is the row.

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
@group(0) @binding(2) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read> table: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn kv_store(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if e >= params.kv_dim {
        return;
    }
    let r = gid.y;
    let h = e / params.head_dim;
    let d = e % params.head_dim;
    let dst = (h * params.max_seq + step[0] + r) * params.head_dim + d;
    var kv = k[r * params.kv_dim + e];
    let half = params.rope_half;
    if half > 0u {
        let i = d % half;
        let p = (step[0] + r) * half + i;
        let c = table[p];
        let s = table[params.sin_off + p];
        let base = r * params.kv_dim + h * params.head_dim + i;
        let k0 = k[base];
        let k1 = k[base + half];
        kv = select(k1 * c + k0 * s, k0 * c - k1 * s, d < half);
    }
    k_cache[dst] = kv;
    v_cache[dst] = v[r * params.kv_dim + e];
}
