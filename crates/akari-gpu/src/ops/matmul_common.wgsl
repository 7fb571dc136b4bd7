// The part of gemv.wgsl and gemm.wgsl they share: bindings, parameters and reads of weight
// bytes. Prepended to each by gemv.rs (WGSL has no includes).
//
// Bindings (group 0):
//   0  w:      array<u32>  W's bytes exactly as `akari_core::quant` stores them: N rows of
//                          `row_bytes` bytes, rows contiguous, little-endian, the tail padded
//                          with zero words (at least one, so a 4-byte read at the last even
//                          offset stays in bounds).
//   1  x:      array<f32>  [T, K]
//   2  bias:   array<f32>  [y_stride] when `flags & 1`, otherwise any 4-byte buffer (not read)
//   3  y:      array<f32>  [T, y_stride] (written; added to when `flags & 2`): W's N rows
//                          land at columns row0..row0 + N, so a matrix split by rows
//                          across buffers runs one dispatch per part
//   4  w2:     array<u32>  a second matrix like W when `flags & 4` (GLU: y = silu(W·x) · (W2·x)),
//                          otherwise any 4-byte buffer (not read)
//   5  params: Params      uniform
//
// Formats (ggml block layouts, 32 values per quantised block):
//   f32   4 bytes per value
//   f16   2 bytes per value (IEEE half, read with unpack2x16float: no shader-f16 needed)
//   q8_0  34-byte blocks: f16 d, 32 × i8 q              x = d·q
//   q4_0  18-byte blocks: f16 d, 16 bytes of nibbles    x = d·(q − 8)
//   q4_1  20-byte blocks: f16 d, f16 m, 16 bytes        x = d·q + m
// In 4-bit blocks byte j holds value j in its low nibble and value j + 16 in its high one.
// Blocks are 2-byte aligned only, so every read goes through `load_u32` / `load_f16`.

struct Params {
    n: u32,
    k: u32,
    row_bytes: u32,
    flags: u32,
    tokens: u32,
    _a: u32,
    // The rows are a part of a larger matrix: its first row, and y's row length.
    row0: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> w2: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

const HAS_BIAS: u32 = 1u;
const ACCUMULATE: u32 = 2u;
const GLU: u32 = 4u;

// Which matrix is read: 0 for W, 1 for W2 (uniform across the workgroup).
var<private> which: u32;

fn wl(i: u32) -> u32 {
    if which == 0u {
        return w[i];
    }
    return w2[i];
}

// Four bytes starting at byte offset `o`, which must be even.
fn load_u32(o: u32) -> u32 {
    let i = o >> 2u;
    if (o & 2u) == 0u {
        return wl(i);
    }
    return (wl(i) >> 16u) | (wl(i + 1u) << 16u);
}

// The f16 at byte offset `o` (even), widened.
fn load_f16(o: u32) -> f32 {
    let pair = unpack2x16float(wl(o >> 2u));
    return select(pair.x, pair.y, (o & 2u) != 0u);
}

// Byte `i` (0..3) of `v` as a signed value.
fn i8_at(v: u32, i: u32) -> f32 {
    return f32(bitcast<i32>(v << (24u - 8u * i)) >> 24u);
}
