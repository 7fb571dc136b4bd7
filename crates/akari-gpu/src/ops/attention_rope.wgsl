// The rope rotation attention.wgsl and attention_decode.wgsl apply to q and k as they load
// them; prepended after attention_common.wgsl. Each file declares the bindings it names
// (table, params).

// Dim d of a head rotated by the rope at position `pos` (rope.wgsl's rotation), from the
// pair (x0, x1) = (x[i], x[i + half]) with i = d % half.
fn rotated(pos: u32, d: u32, x0: f32, x1: f32) -> f32 {
    let half = params.rope_half;
    let p = pos * half + d % half;
    let c = table[p];
    let s = table[params.sin_off + p];
    return select(x1 * c + x0 * s, x0 * c - x1 * s, d < half);
}

