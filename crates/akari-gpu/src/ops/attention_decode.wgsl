// Decode attention (one row) with the cache append folded in: the step's new key (rotated)
// and value come in as inputs; every workgroup puts them in workgroup memory and attends to
// them there at the new position, and one workgroup per key/value head writes them to the
// cache for the steps after (nothing in this dispatch reads that position from the cache).
// That saves kv_store.wgsl's dispatch, which cost as much as a small GEMV. The result always
// goes to `scratch`, merged by `combine`.
//
// Bindings: 0 q, 1 k, 2 v: this step's [kv_heads · head_dim], 3 k_cache, 4 v_cache (the
// new position written), 5 scratch, 6 step, 7 table, 8 params (attention.wgsl's).
// Dispatch: one workgroup per (head = wid.x, chunk = wid.z).

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read> step: array<u32>;
@group(0) @binding(7) var<storage, read> table: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let c = wid.z;
    let hd = params.head_dim;
    let group = params.heads / params.kv_heads;
    let kvh = h / group;
    let pos = step[0];
    // The new key, rotated as kv_store.wgsl rotates it, and value.
    let half = params.rope_half;
    let ko = kvh * hd;
    for (var d = t; d < hd; d += WG) {
        var kd = k[ko + d];
        if half > 0u {
            let i = d % half;
            kd = rotated(pos, d, k[ko + i], k[ko + i + half]);
        }
        qf[d] = kd;
        vf[d] = v[ko + d];
    }
    workgroupBarrier();
    let dst = (kvh * params.max_seq + pos) * hd;
    for (var d = t; d < hd / 4u; d += WG) {
        let k4 = vec4<f32>(qf[4u * d], qf[4u * d + 1u], qf[4u * d + 2u], qf[4u * d + 3u]);
        kf[d] = k4;
        if h % group == 0u && c == 0u {
            k_cache[dst / 4u + d] = k4;
        }
    }
    if h % group == 0u && c == 0u {
        for (var d = t; d < hd; d += WG) {
            v_cache[dst + d] = vf[d];
        }
    }
    // `qf` is the query's next.
    workgroupBarrier();
    new_pos = pos;
    load_q(h, 0u, t);
    attend(h, 0u, c, t);
    write_partial(h, c, nwg.z, t);
}
