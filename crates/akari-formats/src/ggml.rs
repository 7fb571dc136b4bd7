//! ggml tensor types: their block layouts, reference dequantisers, and conversion to the
//! formats akari's backends execute ([`QuantFormat`]).
//!
//! | ggml type                     | backend format | how                                        |
//! |-------------------------------|----------------|--------------------------------------------|
//! | F32, F16, Q8_0, Q4_0, Q4_1    | same           | used in place (zero-copy)                  |
//! | BF16                          | F32            | widened                                    |
//! | Q4_K                          | Q4_1           | each 32-value sub-block → one Q4_1 block   |
//! | Q5_0, Q5_1, Q5_K, Q6_K        | Q8_0           | dequantised to f32, requantised            |
//!
//! The dequantisers follow ggml's reference `dequantize_row_*` (ggml-quants.c) value for value.

use akari_core::quant::QuantFormat;
use akari_core::weights::{Bytes, Matrix};
use akari_core::{Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// Every ggml tensor type a GGUF file may name. Only some can be read (see
/// [`GgmlType::is_supported`]); the others are known so that errors and `akari info` can
/// name them and so their sizes can still be validated.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

struct TypeInfo {
    ty: GgmlType,
    id: u32,
    name: &'static str,
    /// Values per block.
    block: usize,
    /// Bytes per block.
    bytes: usize,
}

const fn t(ty: GgmlType, id: u32, name: &'static str, block: usize, bytes: usize) -> TypeInfo {
    TypeInfo {
        ty,
        id,
        name,
        block,
        bytes,
    }
}

/// ggml's `type_traits` table: id, name, block size, block bytes (ggml.c / ggml-common.h).
/// Ids 4, 5 (Q4_2, Q4_3) and 31–33 (Q4_0_4_4 …) were removed from ggml and are unknown here.
const TYPES: &[TypeInfo] = &[
    t(GgmlType::F32, 0, "F32", 1, 4),
    t(GgmlType::F16, 1, "F16", 1, 2),
    t(GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    t(GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    t(GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    t(GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    t(GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    t(GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    t(GgmlType::Q2_K, 10, "Q2_K", QK_K, 84),
    t(GgmlType::Q3_K, 11, "Q3_K", QK_K, 110),
    t(GgmlType::Q4_K, 12, "Q4_K", QK_K, 144),
    t(GgmlType::Q5_K, 13, "Q5_K", QK_K, 176),
    t(GgmlType::Q6_K, 14, "Q6_K", QK_K, 210),
    t(GgmlType::Q8_K, 15, "Q8_K", QK_K, 292),
    t(GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
    t(GgmlType::IQ2_XS, 17, "IQ2_XS", QK_K, 74),
    t(GgmlType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
    t(GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 50),
    t(GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    t(GgmlType::IQ3_S, 21, "IQ3_S", QK_K, 110),
    t(GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 82),
    t(GgmlType::IQ4_XS, 23, "IQ4_XS", QK_K, 136),
    t(GgmlType::I8, 24, "I8", 1, 1),
    t(GgmlType::I16, 25, "I16", 1, 2),
    t(GgmlType::I32, 26, "I32", 1, 4),
    t(GgmlType::I64, 27, "I64", 1, 8),
    t(GgmlType::F64, 28, "F64", 1, 8),
    t(GgmlType::IQ1_M, 29, "IQ1_M", QK_K, 56),
    t(GgmlType::BF16, 30, "BF16", 1, 2),
    t(GgmlType::TQ1_0, 34, "TQ1_0", QK_K, 54),
    t(GgmlType::TQ2_0, 35, "TQ2_0", QK_K, 66),
    t(GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

impl GgmlType {
    /// The type with ggml id `id`, if ggml has (or had, still readable) one.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|t| t.id == id).map(|t| t.ty)
    }

    fn info(self) -> &'static TypeInfo {
        // Every variant has exactly one row (checked by a test); the fallback is unreachable.
        TYPES.iter().find(|t| t.ty == self).unwrap_or(&TYPES[0])
    }

    pub fn id(self) -> u32 {
        self.info().id
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Values per block (1 for plain numbers).
    pub fn block_size(self) -> usize {
        self.info().block
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.info().bytes
    }

    /// Bytes of `n` values; `None` when `n` is not a whole number of blocks or on overflow.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if n % bs != 0 {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes() as u64)
    }

    /// Whether akari can read tensors of this type (dequantise and convert them).
    pub fn is_supported(self) -> bool {
        self.backend_format().is_some()
    }

    /// The backend format matrices of this type are loaded as; `None` when unsupported.
    pub fn backend_format(self) -> Option<QuantFormat> {
        Some(match self {
            GgmlType::F32 | GgmlType::BF16 => QuantFormat::F32,
            GgmlType::F16 => QuantFormat::F16,
            GgmlType::Q8_0 => QuantFormat::Q8_0,
            GgmlType::Q4_0 => QuantFormat::Q4_0,
            GgmlType::Q4_1 | GgmlType::Q4_K => QuantFormat::Q4_1,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K | GgmlType::Q6_K => QuantFormat::Q8_0,
            _ => return None,
        })
    }

    /// The backend format whose byte layout is identical to this type, if any: such tensors
    /// are used in place.
    pub fn native_format(self) -> Option<QuantFormat> {
        Some(match self {
            GgmlType::F32 => QuantFormat::F32,
            GgmlType::F16 => QuantFormat::F16,
            GgmlType::Q8_0 => QuantFormat::Q8_0,
            GgmlType::Q4_0 => QuantFormat::Q4_0,
            GgmlType::Q4_1 => QuantFormat::Q4_1,
            _ => return None,
        })
    }

    /// Decodes `out.len()` values from `src`, exactly as ggml's reference dequantiser.
    ///
    /// Fails (never panics) when the type is unsupported or `src` is not exactly the bytes of
    /// `out.len()` values.
    pub fn dequantize_row(self, src: &[u8], out: &mut [f32]) -> Result<()> {
        let want = self.bytes_for(out.len() as u64);
        if want != Some(src.len() as u64) {
            return Err(Error::InvalidArgument(format!(
                "{}: {} bytes do not hold {} values",
                self.name(),
                src.len(),
                out.len()
            )));
        }
        if let Some(fmt) = self.native_format() {
            fmt.dequantize_row(src, out);
            return Ok(());
        }
        match self {
            GgmlType::BF16 => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            GgmlType::Q5_0 => dequant_blocks(src, out, 32, 22, dequant_q5_0),
            GgmlType::Q5_1 => dequant_blocks(src, out, 32, 24, dequant_q5_1),
            GgmlType::Q4_K => dequant_blocks(src, out, QK_K, 144, dequant_q4_k),
            GgmlType::Q5_K => dequant_blocks(src, out, QK_K, 176, dequant_q5_k),
            GgmlType::Q6_K => dequant_blocks(src, out, QK_K, 210, dequant_q6_k),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "akari cannot dequantise {} tensors",
                    other.name()
                )))
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn dequant_blocks(
    src: &[u8],
    out: &mut [f32],
    block: usize,
    bytes: usize,
    f: fn(&[u8], &mut [f32]),
) {
    for (b, o) in src.chunks_exact(bytes).zip(out.chunks_exact_mut(block)) {
        f(b, o);
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `block_q5_0`: `d: f16, qh: [u8; 4], qs: [u8; 16]`.
fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((qs[j] as u32 & 0x0f) | xh0) as i32 - 16;
        let x1 = ((qs[j] as u32 >> 4) | xh1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `block_q5_1`: `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`.
fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let x0 = (qs[j] as u32 & 0x0f) | xh0;
        let x1 = (qs[j] as u32 >> 4) | xh1;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) from the 12
/// packed scale bytes of a Q4_K / Q5_K block.
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K`: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
fn dequant_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (g, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = get_scale_min_k4(2 * g, scales);
        let (d1, m1) = (d * sc as f32, min * m as f32);
        let (sc, m) = get_scale_min_k4(2 * g + 1, scales);
        let (d2, m2) = (d * sc as f32, min * m as f32);
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// `block_q5_K`: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`.
fn dequant_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let ql = &b[48..176];
    let (mut u1, mut u2) = (1u8, 2u8);
    for (g, (q, y)) in ql.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = get_scale_min_k4(2 * g, scales);
        let (d1, m1) = (d * sc as f32, min * m as f32);
        let (sc, m) = get_scale_min_k4(2 * g + 1, scales);
        let (d2, m2) = (d * sc as f32, min * m as f32);
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}

/// `block_q6_K`: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
fn dequant_q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = f16_at(b, 208);
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
        let y = &mut y[128 * n..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| sc[is + k] as i8 as f32;
            y[l] = d * s(0) * q1 as f32;
            y[l + 32] = d * s(2) * q2 as f32;
            y[l + 64] = d * s(4) * q3 as f32;
            y[l + 96] = d * s(6) * q4 as f32;
        }
    }
}

/// Repacks one Q4_K super-block (144 bytes) as eight Q4_1 blocks (8 × 20 bytes).
///
/// A Q4_K sub-block is `x = (d·sc)·q − (dmin·m)` with 4-bit `q`, which is Q4_1's
/// `x = d'·q + m'` with `d' = d·sc`, `m' = −dmin·m`: exact up to the f16 rounding of the two
/// products. Q4_K keeps sub-block `2g` in the low nibbles of 32 bytes and `2g + 1` in their
/// high nibbles; Q4_1 pairs value `j` with value `j + 16` in one byte.
pub fn q4_k_to_q4_1(src: &[u8], dst: &mut [u8]) {
    let d = f16_at(src, 0);
    let min = f16_at(src, 2);
    let scales = &src[4..16];
    let qs = &src[16..144];
    for (g, (q, out)) in qs
        .chunks_exact(32)
        .zip(dst.chunks_exact_mut(40))
        .enumerate()
    {
        for (half, blk) in out.chunks_exact_mut(20).enumerate() {
            let (sc, m) = get_scale_min_k4(2 * g + half, scales);
            let bd = f16::from_f32(d * sc as f32);
            let bm = f16::from_f32(-(min * m as f32));
            blk[0..2].copy_from_slice(&bd.to_le_bytes());
            blk[2..4].copy_from_slice(&bm.to_le_bytes());
            let nib = |v: u8| if half == 0 { v & 0x0f } else { v >> 4 };
            for k in 0..16 {
                blk[4 + k] = nib(q[k]) | (nib(q[k + 16]) << 4);
            }
        }
    }
}

/// Makes a backend [`Matrix`] of `rows × cols` values of type `ty` held in `bytes`.
///
/// Types the backends run are used in place (the matrix shares `bytes`); the others are
/// converted, rows in parallel. `name` is for error messages.
pub fn to_matrix(
    name: &str,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Bytes,
) -> Result<Matrix> {
    to_matrix_as(name, ty, rows, cols, bytes, &|default| default)
}

/// As [`to_matrix`], stored as `target(default format)`; conversions go straight from the
/// file's type, so an f32 target is exact for every type.
pub fn to_matrix_as(
    name: &str,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Bytes,
    target: &(dyn Fn(QuantFormat) -> QuantFormat + Sync),
) -> Result<Matrix> {
    let unsupported = || Error::UnsupportedWeightType {
        tensor: name.to_string(),
        kind: format!("{ty} (ggml type {})", ty.id()),
    };
    let target = target(ty.backend_format().ok_or_else(unsupported)?);
    if ty.native_format() == Some(target) {
        return Matrix::new(name, target, rows, cols, bytes);
    }
    let src_rb = ty.bytes_for(cols as u64).map(|b| b as usize);
    let want = src_rb.and_then(|rb| rb.checked_mul(rows));
    if cols % target.block_size() != 0 || want != Some(bytes.len()) {
        return Err(Error::InvalidArgument(format!(
            "tensor `{name}`: {} bytes do not hold {rows}x{cols} {ty} values",
            bytes.len()
        )));
    }
    let src_rb = src_rb.unwrap_or(0);
    let dst_rb = target.row_bytes(cols);
    let mut out = vec![0u8; rows * dst_rb];
    if rows > 0 && dst_rb > 0 {
        out.par_chunks_mut(dst_rb)
            .zip(bytes.par_chunks(src_rb))
            .try_for_each_init(
                || vec![0f32; cols],
                |tmp, (dst, src)| -> Result<()> {
                    if ty == GgmlType::Q4_K && target == QuantFormat::Q4_1 {
                        for (s, d) in src.chunks_exact(144).zip(dst.chunks_exact_mut(160)) {
                            q4_k_to_q4_1(s, d);
                        }
                    } else {
                        ty.dequantize_row(src, tmp)?;
                        target.quantize_row(tmp, dst);
                    }
                    Ok(())
                },
            )?;
    }
    Matrix::new(name, target, rows, cols, Bytes::from_vec(out))
}

/// All values of a tensor as f32, whatever its type.
pub fn to_f32(name: &str, ty: GgmlType, n: usize, bytes: &[u8]) -> Result<Vec<f32>> {
    if !ty.is_supported() {
        return Err(Error::UnsupportedWeightType {
            tensor: name.to_string(),
            kind: format!("{ty} (ggml type {})", ty.id()),
        });
    }
    let mut out = vec![0f32; n];
    ty.dequantize_row(bytes, &mut out)
        .map_err(|e| Error::InvalidArgument(format!("tensor `{name}`: {e}")))?;
    Ok(out)
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

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    fn deq(ty: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        ty.dequantize_row(b, &mut out).unwrap();
        out
    }

    #[test]
    fn type_table_is_consistent() {
        let all = [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q8_1,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q8_K,
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ3_XXS,
            GgmlType::IQ1_S,
            GgmlType::IQ4_NL,
            GgmlType::IQ3_S,
            GgmlType::IQ2_S,
            GgmlType::IQ4_XS,
            GgmlType::I8,
            GgmlType::I16,
            GgmlType::I32,
            GgmlType::I64,
            GgmlType::F64,
            GgmlType::IQ1_M,
            GgmlType::BF16,
            GgmlType::TQ1_0,
            GgmlType::TQ2_0,
            GgmlType::MXFP4,
        ];
        assert_eq!(all.len(), TYPES.len());
        for ty in all {
            assert_eq!(TYPES.iter().filter(|t| t.ty == ty).count(), 1, "{ty:?}");
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        }
        for (id, ty) in [
            (0, "F32"),
            (1, "F16"),
            (30, "BF16"),
            (8, "Q8_0"),
            (2, "Q4_0"),
            (3, "Q4_1"),
        ] {
            assert_eq!(GgmlType::from_id(id).unwrap().name(), ty);
        }
        for (id, ty) in [
            (6, "Q5_0"),
            (7, "Q5_1"),
            (12, "Q4_K"),
            (13, "Q5_K"),
            (14, "Q6_K"),
            (16, "IQ2_XXS"),
        ] {
            assert_eq!(GgmlType::from_id(id).unwrap().name(), ty);
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(99), None);
    }

    #[test]
    fn bad_lengths_and_unsupported_types_are_errors() {
        let mut out = [0f32; 32];
        assert!(GgmlType::Q5_0.dequantize_row(&[0; 21], &mut out).is_err());
        assert!(GgmlType::Q4_K.dequantize_row(&[0; 144], &mut out).is_err());
        assert!(GgmlType::IQ4_NL.dequantize_row(&[0; 18], &mut out).is_err());
        let m = to_matrix("w", GgmlType::IQ2_XXS, 1, 256, Bytes::from_vec(vec![0; 66]));
        assert!(matches!(m, Err(Error::UnsupportedWeightType { .. })));
        let m = to_matrix("w", GgmlType::Q6_K, 2, 256, Bytes::from_vec(vec![0; 210]));
        assert!(m.is_err());
    }

    #[test]
    fn bf16() {
        let vals = [1.0f32, -2.5, 0.0, 3.140625, -0.0078125];
        let bytes: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(deq(GgmlType::BF16, &bytes, vals.len()), vals);
        let m = to_matrix("w", GgmlType::BF16, 1, 5, Bytes::from_vec(bytes)).unwrap();
        assert_eq!(m.format, QuantFormat::F32);
        let mut row = [0f32; 5];
        m.row_f32(0, &mut row);
        assert_eq!(row, vals);
    }

    /// A tiny Q5_0 quantiser: `x = d·(q − 16)` with 5-bit `q`.
    fn quant_q5(q: &[u8; 32], d: f32, m: Option<f32>) -> Vec<u8> {
        let mut b = h(d).to_vec();
        if let Some(m) = m {
            b.extend(h(m));
        }
        let mut qh = 0u32;
        for (j, &v) in q.iter().enumerate() {
            qh |= ((v as u32 >> 4) & 1) << j;
        }
        b.extend(qh.to_le_bytes());
        for j in 0..16 {
            b.push((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        }
        b
    }

    #[test]
    fn q5_0_and_q5_1() {
        let mut q = [0u8; 32];
        for (j, v) in q.iter_mut().enumerate() {
            *v = ((j * 7 + 3) % 32) as u8;
        }
        let b = quant_q5(&q, 0.5, None);
        assert_eq!(b.len(), 22);
        let y = deq(GgmlType::Q5_0, &b, 32);
        for j in 0..32 {
            assert_eq!(y[j], 0.5 * (q[j] as f32 - 16.0), "j={j}");
        }
        let b = quant_q5(&q, 0.25, Some(-1.5));
        assert_eq!(b.len(), 24);
        let y = deq(GgmlType::Q5_1, &b, 32);
        for j in 0..32 {
            assert_eq!(y[j], 0.25 * q[j] as f32 - 1.5, "j={j}");
        }
        // Conversion goes to Q8_0 through f32 and stays close.
        let m = to_matrix("w", GgmlType::Q5_1, 1, 32, Bytes::from_vec(b)).unwrap();
        assert_eq!(m.format, QuantFormat::Q8_0);
        let mut row = [0f32; 32];
        m.row_f32(0, &mut row);
        for j in 0..32 {
            assert!(
                (row[j] - y[j]).abs() <= 6.25 / 127.0 / 2.0 + 1e-3,
                "{} vs {}",
                row[j],
                y[j]
            );
        }
    }

    /// Packs eight 6-bit (scale, min) pairs the way ggml's `quantize_row_q4_K_ref` does.
    fn pack_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = sc[j];
                s[j + 4] = mn[j];
            } else {
                s[j + 4] = (sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4);
                s[j - 4] |= (sc[j] >> 4) << 6;
                s[j] |= (mn[j] >> 4) << 6;
            }
        }
        s
    }

    fn k_params() -> ([u8; 8], [u8; 8]) {
        ([1, 63, 17, 40, 5, 33, 62, 9], [0, 7, 63, 21, 48, 2, 35, 60])
    }

    #[test]
    fn scale_min_unpacking() {
        let (sc, mn) = k_params();
        let s = pack_scales(&sc, &mn);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &s), (sc[j], mn[j]));
        }
    }

    /// Values 0..32 (or 0..16) per sub-block, deterministic.
    fn k_quants(bits: u32) -> Vec<u8> {
        (0..QK_K)
            .map(|i| ((i * 37 + i / 7) % (1 << bits)) as u8)
            .collect()
    }

    #[test]
    fn q4_k_and_its_q4_1_repacking() {
        let (sc, mn) = k_params();
        let (d, dmin) = (0.0625f32, 0.03125f32);
        let q = k_quants(4);
        let mut b = Vec::new();
        b.extend(h(d));
        b.extend(h(dmin));
        b.extend(pack_scales(&sc, &mn));
        for g in 0..4 {
            for l in 0..32 {
                b.push(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
            }
        }
        assert_eq!(b.len(), 144);
        let y = deq(GgmlType::Q4_K, &b, QK_K);
        for i in 0..QK_K {
            let s = i / 32;
            let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
            assert_eq!(y[i], want, "i={i}");
        }
        let m = to_matrix("w", GgmlType::Q4_K, 1, QK_K, Bytes::from_vec(b)).unwrap();
        assert_eq!(m.format, QuantFormat::Q4_1);
        let mut row = vec![0f32; QK_K];
        m.row_f32(0, &mut row);
        for i in 0..QK_K {
            let s = i / 32;
            let bd = f16::from_f32(d * sc[s] as f32).to_f32();
            let bm = f16::from_f32(-dmin * mn[s] as f32).to_f32();
            assert_eq!(row[i], bd * q[i] as f32 + bm, "i={i}");
            // These scales are exact in f16, so the repacking is exact.
            assert_eq!(row[i], y[i], "i={i}");
        }
    }

    #[test]
    fn q5_k() {
        let (sc, mn) = k_params();
        let (d, dmin) = (0.125f32, 0.0625f32);
        let q = k_quants(5);
        let mut b = Vec::new();
        b.extend(h(d));
        b.extend(h(dmin));
        b.extend(pack_scales(&sc, &mn));
        let mut qh = [0u8; 32];
        let mut ql = [0u8; 128];
        for g in 0..4 {
            for l in 0..32 {
                let (lo, hi) = (q[64 * g + l], q[64 * g + 32 + l]);
                ql[32 * g + l] = (lo & 0x0f) | ((hi & 0x0f) << 4);
                qh[l] |= ((lo >> 4) & 1) << (2 * g);
                qh[l] |= ((hi >> 4) & 1) << (2 * g + 1);
            }
        }
        b.extend(qh);
        b.extend(ql);
        assert_eq!(b.len(), 176);
        let y = deq(GgmlType::Q5_K, &b, QK_K);
        for i in 0..QK_K {
            let s = i / 32;
            let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
            assert_eq!(y[i], want, "i={i}");
        }
    }

    #[test]
    fn q6_k() {
        let d = 0.015625f32;
        let scales: [i8; 16] = [1, -3, 7, 127, -128, 0, 5, 9, -1, 2, 33, -64, 12, 8, -7, 100];
        let q = k_quants(6);
        // Layout per 128-value half n: ql[64n + l] low nibble = q[l], high = q[l + 64];
        // ql[64n + 32 + l] low = q[l + 32], high = q[l + 96]; qh[32n + l] holds the top two
        // bits of q[l], q[l+32], q[l+64], q[l+96] at shifts 0, 2, 4, 6.
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for n in 0..2 {
            let q = &q[128 * n..];
            for l in 0..32 {
                ql[64 * n + l] = (q[l] & 0x0f) | ((q[l + 64] & 0x0f) << 4);
                ql[64 * n + 32 + l] = (q[l + 32] & 0x0f) | ((q[l + 96] & 0x0f) << 4);
                qh[32 * n + l] = (q[l] >> 4)
                    | ((q[l + 32] >> 4) << 2)
                    | ((q[l + 64] >> 4) << 4)
                    | ((q[l + 96] >> 4) << 6);
            }
        }
        let mut b = Vec::new();
        b.extend(ql);
        b.extend(qh);
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend(h(d));
        assert_eq!(b.len(), 210);
        let y = deq(GgmlType::Q6_K, &b, QK_K);
        for i in 0..QK_K {
            let want = d * scales[i / 16] as f32 * (q[i] as i32 - 32) as f32;
            assert_eq!(y[i], want, "i={i}");
        }
        let m = to_matrix("w", GgmlType::Q6_K, 1, QK_K, Bytes::from_vec(b)).unwrap();
        assert_eq!(m.format, QuantFormat::Q8_0);
    }

    #[test]
    fn hand_built_legacy_blocks() {
        // Q8_0: x = d·q.
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let y = deq(GgmlType::Q8_0, &b, 32);
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, 0.5 * (j as f32 - 16.0));
        }
        // Q4_0: x = d·(q − 8); byte j holds value j (low nibble) and j + 16 (high).
        let q: Vec<u8> = (0..32).map(|j| ((j * 5 + 1) % 16) as u8).collect();
        let mut b = h(0.25).to_vec();
        b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
        let y = deq(GgmlType::Q4_0, &b, 32);
        for j in 0..32 {
            assert_eq!(y[j], 0.25 * (q[j] as f32 - 8.0), "j={j}");
        }
        // Q4_1: x = d·q + m.
        let mut b = h(0.125).to_vec();
        b.extend(h(-2.0));
        b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
        let y = deq(GgmlType::Q4_1, &b, 32);
        for j in 0..32 {
            assert_eq!(y[j], 0.125 * q[j] as f32 - 2.0, "j={j}");
        }
        // F16 and F32.
        let y = deq(GgmlType::F16, &[h(1.5), h(-0.25)].concat(), 2);
        assert_eq!(y, [1.5, -0.25]);
        let y = deq(
            GgmlType::F32,
            &[3.5f32.to_le_bytes(), (-1f32).to_le_bytes()].concat(),
            2,
        );
        assert_eq!(y, [3.5, -1.0]);
    }

    #[test]
    fn native_types_match_backend_dequantisers() {
        let x = sample(64, 3);
        for (ty, fmt) in [
            (GgmlType::F32, QuantFormat::F32),
            (GgmlType::F16, QuantFormat::F16),
            (GgmlType::Q8_0, QuantFormat::Q8_0),
            (GgmlType::Q4_0, QuantFormat::Q4_0),
            (GgmlType::Q4_1, QuantFormat::Q4_1),
        ] {
            let mut b = vec![0u8; fmt.row_bytes(64)];
            fmt.quantize_row(&x, &mut b);
            let mut want = vec![0f32; 64];
            fmt.dequantize_row(&b, &mut want);
            assert_eq!(deq(ty, &b, 64), want);
            let bytes = Bytes::from_vec(b);
            let m = to_matrix("w", ty, 2, 32, bytes.clone()).unwrap();
            assert_eq!(m.format, fmt);
            assert_eq!(
                m.bytes.as_ptr(),
                bytes.as_ptr(),
                "{ty} should be used in place"
            );
        }
    }
}
