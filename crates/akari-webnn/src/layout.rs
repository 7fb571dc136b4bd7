//! Weight matrices in the layouts the graph reads.
//!
//! Every matrix is stored transposed, `[in_features, out_features]`, so `matmul(x, w)` needs
//! no transpose in the graph (weights are graph inputs, which a WebNN implementation cannot
//! pre-transpose the way it could a constant). Quantised blocks run along the first axis:
//! `dequantizeLinear` takes a block-wise scale of shape `[in / 32, out]`.

use crate::graph::DataType;
use akari_core::quant::{QuantFormat, QK};
use akari_core::weights::Matrix;
use akari_core::{Error, Result};
use half::f16;

/// A tensor's bytes on the host, waiting to be written into an `MLTensor`.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub name: String,
    pub data_type: DataType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// What the context can run, from `opSupportLimits()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Support {
    /// `dequantizeLinear` takes int8 inputs (Q8_0 stays 8-bit).
    pub dequantize_int8: bool,
    /// `dequantizeLinear` takes uint4 inputs (Q4_0 and Q4_1 stay 4-bit).
    pub dequantize_uint4: bool,
    /// float16 inputs and `cast` from float16 (else float weights are stored as float32).
    pub float16: bool,
}

impl Support {
    /// Everything the backend can use.
    pub const FULL: Support = Support {
        dequantize_int8: true,
        dequantize_uint4: true,
        float16: true,
    };
}

/// How one matrix is stored: the parts and their layout.
pub enum Parts {
    /// `[in, out]` float32 or float16 values.
    Float(HostTensor),
    Quantized(Box<Quantized>),
}

/// `(q − zero_point)·scale` per block, plus a per-block `min` for Q4_1.
pub struct Quantized {
    pub q: HostTensor,
    pub scale: HostTensor,
    pub zero_point: HostTensor,
    pub min: Option<HostTensor>,
}

fn f16_bits(m: &Matrix, at: usize) -> f32 {
    f16::from_le_bytes([m.bytes[at], m.bytes[at + 1]]).to_f32()
}

fn set_nibble(out: &mut [u8], i: usize, v: u8) {
    // The spec packs 4-bit values two per byte, the lower index in the low nibble.
    if i % 2 == 0 {
        out[i / 2] |= v & 0x0f;
    } else {
        out[i / 2] |= (v & 0x0f) << 4;
    }
}

fn tensor(name: String, data_type: DataType, shape: Vec<usize>, bytes: Vec<u8>) -> HostTensor {
    HostTensor {
        name,
        data_type,
        shape,
        bytes,
    }
}

/// `m` transposed to `[cols, rows]` floats of `dt` (float32 or float16).
fn float_transposed(m: &Matrix, name: &str, dt: DataType) -> HostTensor {
    let (rows, cols) = (m.rows, m.cols);
    let mut row = vec![0f32; cols];
    let size = dt.byte_len(1);
    let mut out = vec![0u8; dt.byte_len(rows * cols)];
    let row_bytes = m.row_bytes();
    for r in 0..rows {
        m.format
            .dequantize_row(&m.bytes[r * row_bytes..(r + 1) * row_bytes], &mut row);
        for (c, &x) in row.iter().enumerate() {
            let at = (c * rows + r) * size;
            if dt == DataType::Float16 {
                out[at..at + 2].copy_from_slice(&f16::from_f32(x).to_le_bytes());
            } else {
                out[at..at + 4].copy_from_slice(&x.to_le_bytes());
            }
        }
    }
    tensor(name.to_string(), dt, vec![cols, rows], out)
}

/// Converts `m` (named `name`, its parts `name.q`, `name.scale`, …) for a context with
/// `support`. Returns the parts and whether a quantised matrix had to be dequantised.
pub fn convert(m: &Matrix, name: &str, support: Support) -> Result<(Parts, bool)> {
    let (rows, cols) = (m.rows, m.cols);
    let float_dt = if support.float16 {
        DataType::Float16
    } else {
        DataType::Float32
    };
    let keep = match m.format {
        QuantFormat::F32 => {
            return Ok((
                Parts::Float(float_transposed(m, name, DataType::Float32)),
                false,
            ))
        }
        QuantFormat::F16 => {
            return Ok((Parts::Float(float_transposed(m, name, float_dt)), false));
        }
        QuantFormat::Q8_0 => support.dequantize_int8,
        QuantFormat::Q4_0 | QuantFormat::Q4_1 => support.dequantize_uint4,
    };
    if !keep {
        return Ok((Parts::Float(float_transposed(m, name, float_dt)), true));
    }
    if cols % QK != 0 {
        return Err(Error::ShapeMismatch {
            tensor: name.to_string(),
            expected: vec![rows, cols.next_multiple_of(QK)],
            got: vec![rows, cols],
        });
    }
    let blocks = cols / QK;
    let row_bytes = m.row_bytes();
    let bb = m.format.block_bytes();
    let mut scale = vec![0u8; blocks * rows * 4];
    let put_f32 = |buf: &mut [u8], i: usize, v: f32| {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    };
    let parts = match m.format {
        QuantFormat::Q8_0 => {
            let mut q = vec![0u8; rows * cols];
            for r in 0..rows {
                for b in 0..blocks {
                    let at = r * row_bytes + b * bb;
                    put_f32(&mut scale, b * rows + r, f16_bits(m, at));
                    for j in 0..QK {
                        q[(b * QK + j) * rows + r] = m.bytes[at + 2 + j];
                    }
                }
            }
            Parts::Quantized(Box::new(Quantized {
                q: tensor(format!("{name}.q"), DataType::Int8, vec![cols, rows], q),
                scale: tensor(
                    format!("{name}.scale"),
                    DataType::Float32,
                    vec![blocks, rows],
                    scale,
                ),
                zero_point: tensor(
                    format!("{name}.zero"),
                    DataType::Int8,
                    vec![blocks, rows],
                    vec![0; blocks * rows],
                ),
                min: None,
            }))
        }
        _ => {
            let q4_1 = m.format == QuantFormat::Q4_1;
            let nibbles = if q4_1 { 4 } else { 2 };
            let mut q = vec![0u8; DataType::Uint4.byte_len(rows * cols)];
            let mut min = vec![0u8; if q4_1 { blocks * rows * 4 } else { 0 }];
            for r in 0..rows {
                for b in 0..blocks {
                    let at = r * row_bytes + b * bb;
                    put_f32(&mut scale, b * rows + r, f16_bits(m, at));
                    if q4_1 {
                        put_f32(&mut min, b * rows + r, f16_bits(m, at + 2));
                    }
                    for j in 0..QK / 2 {
                        let byte = m.bytes[at + nibbles + j];
                        set_nibble(&mut q, (b * QK + j) * rows + r, byte & 0x0f);
                        set_nibble(&mut q, (b * QK + j + 16) * rows + r, byte >> 4);
                    }
                }
            }
            // Q4_0 is `d·(q − 8)`: zero point 8. Q4_1 is `d·q + m`: zero point 0, plus m.
            let z = if q4_1 { 0u8 } else { 8 };
            let mut zero = vec![0u8; DataType::Uint4.byte_len(blocks * rows)];
            for i in 0..blocks * rows {
                set_nibble(&mut zero, i, z);
            }
            Parts::Quantized(Box::new(Quantized {
                q: tensor(format!("{name}.q"), DataType::Uint4, vec![cols, rows], q),
                scale: tensor(
                    format!("{name}.scale"),
                    DataType::Float32,
                    vec![blocks, rows],
                    scale,
                ),
                zero_point: tensor(
                    format!("{name}.zero"),
                    DataType::Uint4,
                    vec![blocks, rows],
                    zero,
                ),
                min: q4_1.then(|| {
                    tensor(
                        format!("{name}.min"),
                        DataType::Float32,
                        vec![blocks, rows],
                        min,
                    )
                }),
            }))
        }
    };
    Ok((parts, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use akari_core::weights::Bytes;

    fn matrix(format: QuantFormat, rows: usize, cols: usize) -> (Matrix, Vec<f32>) {
        let src: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let row_bytes = format.row_bytes(cols);
        let mut bytes = vec![0u8; rows * row_bytes];
        for r in 0..rows {
            format.quantize_row(
                &src[r * cols..(r + 1) * cols],
                &mut bytes[r * row_bytes..(r + 1) * row_bytes],
            );
        }
        let m = Matrix::new("w", format, rows, cols, Bytes::from_vec(bytes)).unwrap();
        let mut deq = vec![0f32; rows * cols];
        for r in 0..rows {
            m.row_f32(r, &mut deq[r * cols..(r + 1) * cols]);
        }
        (m, deq)
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn nibble(b: &[u8], i: usize) -> u8 {
        (b[i / 2] >> (4 * (i % 2))) & 0x0f
    }

    /// Each layout, dequantised by the spec's formula, gives the matrix transposed.
    #[test]
    fn layouts_hold_the_transposed_matrix() {
        let (rows, cols) = (3, 64);
        for format in QuantFormat::ALL {
            let (m, want) = matrix(format, rows, cols);
            let (parts, dequantized) = convert(&m, "w", Support::FULL).unwrap();
            assert!(!dequantized);
            let got: Vec<f32> = match parts {
                Parts::Float(t) if t.data_type == DataType::Float32 => f32s(&t.bytes),
                Parts::Float(t) => t
                    .bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Parts::Quantized(qz) => {
                    let Quantized {
                        q,
                        scale,
                        zero_point,
                        min,
                    } = *qz;
                    let s = f32s(&scale.bytes);
                    let mins = min.map(|t| f32s(&t.bytes));
                    (0..rows * cols)
                        .map(|i| {
                            let (c, r) = (i / rows, i % rows);
                            let blk = (c / QK) * rows + r;
                            let (qv, z) = if q.data_type == DataType::Int8 {
                                (q.bytes[i] as i8 as f32, zero_point.bytes[blk] as i8 as f32)
                            } else {
                                (
                                    nibble(&q.bytes, i) as f32,
                                    nibble(&zero_point.bytes, blk) as f32,
                                )
                            };
                            (qv - z) * s[blk] + mins.as_ref().map_or(0.0, |m| m[blk])
                        })
                        .collect()
                }
            };
            for r in 0..rows {
                for c in 0..cols {
                    let (a, b) = (got[c * rows + r], want[r * cols + c]);
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{format:?} {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn without_dequantize_support_weights_become_fp16() {
        let (m, _) = matrix(QuantFormat::Q4_1, 2, 32);
        let support = Support {
            dequantize_int8: true,
            dequantize_uint4: false,
            float16: true,
        };
        let (parts, dequantized) = convert(&m, "w", support).unwrap();
        assert!(dequantized);
        assert!(matches!(parts, Parts::Float(t) if t.data_type == DataType::Float16));
    }
}
