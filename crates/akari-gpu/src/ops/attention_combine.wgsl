// Merges the partial softmaxes that `attention.wgsl` wrote for each chunk of a decode row.
//
// Bindings: 0 scratch: [heads, chunks, head_dim + 2] (acc[head_dim], m, l per chunk),
// 1 out: [heads · head_dim] (written), 2 params (`attention.wgsl`'s, with the number of
// chunks in `chunk_len`).

const WG: u32 = 64u;
const PER_THREAD: u32 = 4u; // MAX_HD / WG

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    chunk_len: u32,
    scale: f32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<storage, read> scratch: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

// One row: out = Σ_c acc_c·e^(m_c − M) / Σ_c l_c·e^(m_c − M).
// Dispatch: one workgroup per head (wid.x); params.chunk_len holds the number of chunks.
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let hd = params.head_dim;
    let chunks = params.chunk_len;
    var mx = -1e30;
    for (var c = 0u; c < chunks; c++) {
        let so = (h * chunks + c) * (hd + 2u);
        if scratch[so + hd + 1u] > 0.0 {
            mx = max(mx, scratch[so + hd]);
        }
    }
    var total = 0.0;
    var acc: array<f32, PER_THREAD>;
    for (var c = 0u; c < chunks; c++) {
        let so = (h * chunks + c) * (hd + 2u);
        let lc = scratch[so + hd + 1u];
        if lc > 0.0 {
            let f = exp(scratch[so + hd] - mx);
            total += lc * f;
            for (var i = 0u; i < PER_THREAD; i++) {
                let d = t + i * WG;
                if d < hd {
                    acc[i] += scratch[so + d] * f;
                }
            }
        }
    }
    for (var i = 0u; i < PER_THREAD; i++) {
        let d = t + i * WG;
        if d < hd {
            out[h * hd + d] = acc[i] / total;
        }
    }
}
