// Causal attention over one layer's cache: row r (position pos + r) of head h attends to
// positions 0..=pos + r of its key/value head h / (heads / kv_heads).
//
// Bindings: 0 q: [rows, heads · head_dim], 1 k_cache, 2 v_cache: [kv_heads, max_seq,
// head_dim], 3 out: [rows, heads · head_dim] (written), 4 scratch: per (head, chunk) partial
// results [heads, chunks, head_dim + 2] (written when chunks > 1), 5 step: [pos, ..],
// 6 table: rope cos then sin (any buffer when q is not to be rotated), 7 params. With
// `rope_half` > 0 the query is rotated as it is loaded (rope.wgsl's rotation, fused).
//
// Dispatch `attention`: one workgroup of WG threads per (head = wid.x, row = wid.y,
// chunk = wid.z). A chunk is `chunk_len` consecutive positions; with one chunk (prompts:
// the rows give the parallelism) the result is written directly, with several each writes
// its partial softmax for `combine` (one workgroup per head) to merge. Decode, which splits
// a long cache into chunks that run in parallel (flash-decoding), uses
// attention_decode.wgsl. The method (attention_common.wgsl):
// within a chunk the softmax is computed online over tiles of WG positions (running max and
// sum, the accumulator rescaled when the max grows): each thread scores one position of the
// tile, then each thread accumulates head_dim / WG output values over the tile.
// head_dim ≤ MAX_HD and a multiple of 4.

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;
@group(0) @binding(6) var<storage, read> table: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let r = wid.y;
    let c = wid.z;
    load_q(h, r, t);
    attend(h, r, c, t);
    if nwg.z == 1u {
        let hd = params.head_dim;
        let qo = (r * params.heads + h) * hd;
        for (var i = 0u; i < PER_THREAD; i++) {
            let d = t + i * WG;
            if d < hd {
                out[qo + d] = acc[i] / l;
            }
        }
        return;
    }
    write_partial(h, c, nwg.z, t);
}
