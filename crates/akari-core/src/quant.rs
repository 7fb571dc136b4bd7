//! Weight formats that backends execute, and their block layouts.
//!
//! The block layouts are ggml's (`Q8_0`, `Q4_0`, `Q4_1`: 32 values per block, f16 scales),
//! so GGUF weights in these formats are used in place. Other file formats (K-quants, Q5,
//! BF16, ONNX `MatMulNBits`) are converted to one of these at load.

use half::f16;
use std::fmt;

/// Values per quantisation block.
pub const QK: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    F32,
    F16,
    /// 32 × i8 with one f16 scale: `x = d·q`.
    Q8_0,
    /// 32 × 4-bit with one f16 scale: `x = d·(q − 8)`.
    Q4_0,
    /// 32 × 4-bit with f16 scale and minimum: `x = d·q + m`.
    Q4_1,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// Nibble `j` (low) holds value `j`, the high nibble value `j + 16`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl QuantFormat {
    pub const ALL: [QuantFormat; 5] = [
        QuantFormat::F32,
        QuantFormat::F16,
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::F32 => "F32",
            QuantFormat::F16 => "F16",
            QuantFormat::Q8_0 => "Q8_0",
            QuantFormat::Q4_0 => "Q4_0",
            QuantFormat::Q4_1 => "Q4_1",
        }
    }

    /// Values per block (1 for plain floats).
    pub fn block_size(self) -> usize {
        match self {
            QuantFormat::F32 | QuantFormat::F16 => 1,
            _ => QK,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::F32 => 4,
            QuantFormat::F16 => 2,
            QuantFormat::Q8_0 => std::mem::size_of::<BlockQ8_0>(),
            QuantFormat::Q4_0 => std::mem::size_of::<BlockQ4_0>(),
            QuantFormat::Q4_1 => std::mem::size_of::<BlockQ4_1>(),
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `cols` values (`cols` a multiple of the block size).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_size() * self.block_bytes()
    }

    /// Decodes one row. `src` holds exactly `out.len()` values.
    pub fn dequantize_row(self, src: &[u8], out: &mut [f32]) {
        debug_assert_eq!(src.len(), self.row_bytes(out.len()));
        match self {
            QuantFormat::F32 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            QuantFormat::F16 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            QuantFormat::Q8_0 => {
                for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(34)) {
                    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                    for (x, &q) in o.iter_mut().zip(&b[2..]) {
                        *x = d * (q as i8) as f32;
                    }
                }
            }
            QuantFormat::Q4_0 => {
                for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(18)) {
                    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                    for (j, &q) in b[2..].iter().enumerate() {
                        o[j] = d * ((q & 0x0f) as i32 - 8) as f32;
                        o[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                    }
                }
            }
            QuantFormat::Q4_1 => {
                for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(20)) {
                    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                    let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                    for (j, &q) in b[4..].iter().enumerate() {
                        o[j] = d * (q & 0x0f) as f32 + m;
                        o[j + 16] = d * (q >> 4) as f32 + m;
                    }
                }
            }
        }
    }

    /// Encodes one row with ggml's reference rounding. `out` holds exactly the row's bytes.
    pub fn quantize_row(self, src: &[f32], out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.row_bytes(src.len()));
        match self {
            QuantFormat::F32 => {
                for (c, x) in out.chunks_exact_mut(4).zip(src) {
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
            QuantFormat::F16 => {
                for (c, x) in out.chunks_exact_mut(2).zip(src) {
                    c.copy_from_slice(&f16::from_f32(*x).to_le_bytes());
                }
            }
            QuantFormat::Q8_0 => {
                for (b, x) in out.chunks_exact_mut(34).zip(src.chunks_exact(QK)) {
                    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                    for (q, v) in b[2..].iter_mut().zip(x) {
                        *q = ((v * id).round() as i8) as u8;
                    }
                }
            }
            QuantFormat::Q4_0 => {
                for (b, x) in out.chunks_exact_mut(18).zip(src.chunks_exact(QK)) {
                    // The value of largest magnitude maps to -8, keeping its sign.
                    let max = x
                        .iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                    for j in 0..16 {
                        let q0 = ((x[j] * id + 8.5) as i32).clamp(0, 15) as u8;
                        let q1 = ((x[j + 16] * id + 8.5) as i32).clamp(0, 15) as u8;
                        b[2 + j] = q0 | (q1 << 4);
                    }
                }
            }
            QuantFormat::Q4_1 => {
                for (b, x) in out.chunks_exact_mut(20).zip(src.chunks_exact(QK)) {
                    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (max - min) / 15.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    b[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                    b[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
                    for j in 0..16 {
                        let q0 = (((x[j] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                        let q1 = (((x[j + 16] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                        b[4 + j] = q0 | (q1 << 4);
                    }
                }
            }
        }
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        let x = sample(4 * QK, 7);
        for fmt in QuantFormat::ALL {
            let mut bytes = vec![0u8; fmt.row_bytes(x.len())];
            fmt.quantize_row(&x, &mut bytes);
            let mut y = vec![0f32; x.len()];
            fmt.dequantize_row(&bytes, &mut y);
            for (blk_x, blk_y) in x.chunks(QK).zip(y.chunks(QK)) {
                let amax = blk_x.iter().fold(0f32, |m, v| m.max(v.abs()));
                let step = match fmt {
                    QuantFormat::F32 => 0.0,
                    QuantFormat::F16 => amax / 1024.0,
                    QuantFormat::Q8_0 => amax / 127.0,
                    QuantFormat::Q4_0 => amax / 8.0,
                    QuantFormat::Q4_1 => 2.0 * amax / 15.0,
                };
                // Half a quantisation step, plus the f16 rounding of the block scale.
                let scale_rounding = if fmt.is_quantized() {
                    amax / 1024.0
                } else {
                    0.0
                };
                // Q4_0 maps the largest magnitude to -8, so the other extreme clamps at +7:
                // up to a whole step there.
                let step = if fmt == QuantFormat::Q4_0 {
                    2.0 * step
                } else {
                    step
                };
                for (a, b) in blk_x.iter().zip(blk_y) {
                    assert!(
                        (a - b).abs() <= step * 0.5 + scale_rounding + 1e-7,
                        "{fmt}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
