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

// Each chunk's max and sum, loaded once by the workgroup (at most MAX_CHUNKS, as in
// attention.rs), so the loop over chunks below issues only independent loads: with the
// values read one chunk after another, a long cache's 17 or 32 chunks were a chain of
// dependent loads.
const MAX_CHUNKS: u32 = 32u;
var<workgroup> ms: array<f32, MAX_CHUNKS>;
var<workgroup> ls: array<f32, MAX_CHUNKS>;

// One row: out = Σ_c acc_c·e^(m_c − M) / Σ_c l_c·e^(m_c − M), over the chunks with l_c > 0
// (an empty chunk, past the row's positions, has l = 0 and acc = 0).
// Dispatch: one workgroup per head (wid.x); params.chunk_len holds the number of chunks.
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let hd = params.head_dim;
    let chunks = min(params.chunk_len, MAX_CHUNKS);
    for (var c = t; c < chunks; c += WG) {
        let so = (h * chunks + c) * (hd + 2u);
        ms[c] = scratch[so + hd];
        ls[c] = scratch[so + hd + 1u];
    }
    workgroupBarrier();
    var mx = -1e30;
    for (var c = 0u; c < chunks; c++) {
        if ls[c] > 0.0 {
            mx = max(mx, ms[c]);
        }
    }
    var total = 0.0;
    var acc: array<f32, PER_THREAD>;
    for (var c = 0u; c < chunks; c++) {
        let f = select(0.0, exp(ms[c] - mx), ls[c] > 0.0);
        total += ls[c] * f;
        let so = (h * chunks + c) * (hd + 2u);
        for (var i = 0u; i < PER_THREAD; i++) {
            let d = t + i * WG;
            if d < hd {
                acc[i] += scratch[so + d] * f;
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
