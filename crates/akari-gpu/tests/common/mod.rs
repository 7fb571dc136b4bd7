//! Test data shared by the GPU tests: deterministic, never-zero values and quantised rows.
// Each test binary uses a part of this.
#![allow(dead_code)]

use akari_core::QuantFormat;

/// Deterministic values in ±[0.05, 0.05 + span], never zero.
pub fn signed(n: usize, seed: u64, span: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mag = 0.05 + span * ((s >> 40) as f32 / (1u64 << 24) as f32);
            if s & 1 == 0 {
                mag
            } else {
                -mag
            }
        })
        .collect()
}

/// Deterministic values in ±[0.05, 1], never zero.
pub fn sample(n: usize, seed: u64) -> Vec<f32> {
    signed(n, seed, 0.95)
}

/// A `[rows, cols]` matrix of [`sample`] values, quantised to `format`.
pub fn quantized(format: QuantFormat, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let wf = sample(rows * cols, seed);
    let rb = format.row_bytes(cols);
    let mut bytes = vec![0u8; rows * rb];
    for (src, dst) in wf.chunks_exact(cols).zip(bytes.chunks_exact_mut(rb)) {
        format.quantize_row(src, dst);
    }
    bytes
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}
