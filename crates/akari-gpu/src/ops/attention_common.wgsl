// The parameters every attention kernel takes (attention.wgsl, attention_decode.wgsl,
// attention_combine.wgsl); prepended to each by attention.rs, which writes them.

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    chunk_len: u32,
    scale: f32,
    rope_half: u32,
    sin_off: u32,
    // Prompt rows (attention.wgsl's `attention_rows`).
    rows: u32,
}
