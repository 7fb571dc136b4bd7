// What attention.wgsl (prompts) and attention_decode.wgsl (one row) share: the parameters
// and the rope rotation; prepended to each by attention.rs. Each file declares the bindings
// `rotated` names (table, params).

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

// Dim d of a head rotated by the rope at position `pos` (rope.wgsl's rotation), from the
// pair (x0, x1) = (x[i], x[i + half]) with i = d % half.
fn rotated(pos: u32, d: u32, x0: f32, x1: f32) -> f32 {
    let half = params.rope_half;
    let p = pos * half + d % half;
    let c = table[p];
    let s = table[params.sin_off + p];
    return select(x1 * c + x0 * s, x0 * c - x1 * s, d < half);
}

