// Sets tokens aside before a top-k selection (`top_k.wgsl`): for each of `count` token ids,
// copies its raw logit to out[offset + i] and replaces it with NaN, which the selection ranks
// below every real value; an id past the row gets NaN in out. One thread per id; the ids are distinct.
//
// Bindings: 0 logits (read and written, as u32 words), 1 ids, 2 out, 3 params.

struct AsideParams {
    n: u32,
    count: u32,
    offset: u32,
    _a: u32,
}

const NAN: u32 = 0x7fc00000u;

@group(0) @binding(0) var<storage, read_write> logits: array<u32>;
@group(0) @binding(1) var<storage, read> aside_ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> aside_out: array<u32>;
@group(0) @binding(3) var<uniform> aside: AsideParams;

@compute @workgroup_size(64)
fn set_aside(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= aside.count {
        return;
    }
    let id = aside_ids[i];
    if id < aside.n {
        aside_out[aside.offset + i] = logits[id];
        logits[id] = NAN;
    } else {
        aside_out[aside.offset + i] = NAN;
    }
}
