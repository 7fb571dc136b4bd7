// Merges the partial softmaxes that attention_decode.wgsl wrote for each chunk of a decode
// row: out = Σ_c acc_c·e^(m_c − M) / Σ_c l_c·e^(m_c − M).
//
// Bindings: 0 scratch: [heads, chunks, head_dim] sums of values, then [heads, chunks, 4]
// (m, l, 0, 0) (attention_decode.wgsl's layout), 1 out: [heads · head_dim] (written),
// 2 params (attention_common.wgsl's, with the number of chunks in `chunk_len`).
// attention_split.wgsl gives the workgroup and the head size.
// Dispatch: one workgroup per head (wid.x).
//
// Like the decode kernel, built for latency: the head size is a pipeline constant and the
// chunks (at most MAX_CHUNKS, as in attention.rs) are spread over GROUPS groups of HD4
// threads, so each thread's few loads are independent and in flight together. (A loop
// over the chunks, one after another, was a chain of 17 to 32 loads: 20 µs a layer at
// 2048 positions on an H100.)

const MAX_CHUNKS: u32 = 32u;

override PER_GROUP: u32 = (MAX_CHUNKS + GROUPS - 1u) / GROUPS;

@group(0) @binding(0) var<storage, read> scratch: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

// Each chunk's weight e^(m_c − M) (0 for an empty chunk) and sum.
var<workgroup> ws: array<f32, MAX_CHUNKS>;
var<workgroup> ls: array<f32, MAX_CHUNKS>;

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let chunks = min(params.chunk_len, MAX_CHUNKS);
    let ml_base = params.heads * chunks * HD4 + h * chunks;
    var m_c = -1e30;
    var l_c = 0.0;
    if t < chunks {
        let ml = scratch[ml_base + t];
        m_c = ml.x;
        l_c = ml.y;
        ls[t] = l_c;
        // The max first: `ws` holds the chunks' maxima until every thread has read them.
        ws[t] = select(-1e30, m_c, l_c > 0.0);
    }
    workgroupBarrier();
    var mx = -1e30;
    for (var c = 0u; c < MAX_CHUNKS; c++) {
        if c < chunks {
            mx = max(mx, ws[c]);
        }
    }
    workgroupBarrier();
    if t < chunks {
        ws[t] = select(0.0, exp(m_c - mx), l_c > 0.0);
    }
    workgroupBarrier();
    let g = t / HD4;
    let dv = t % HD4;
    var acc = vec4<f32>(0.0);
    if g < GROUPS {
        for (var r = 0u; r < PER_GROUP; r++) {
            let c = g + r * GROUPS;
            if c < chunks {
                acc += ws[c] * scratch[(h * chunks + c) * HD4 + dv];
            }
        }
    }
    let total = group_total(acc, t);
    if t < HD4 {
        var weight = 0.0;
        for (var c = 0u; c < MAX_CHUNKS; c++) {
            if c < chunks {
                weight += ls[c] * ws[c];
            }
        }
        out[h * HD4 + t] = total / weight;
    }
}
