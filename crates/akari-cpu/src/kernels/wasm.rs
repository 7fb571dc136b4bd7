//! wasm simd128 kernels for the browser: quantised weight rows against integer activations,
//! float rows, attention, dot and axpy.
//!
//! Quantised weights and activations are widened to i16 and multiplied with
//! `i32x4.dot_i16x8_s`; each block's integer sums are exact, and are scaled and summed in f32
//! vectors, as the AVX2 kernels do (the float order differs from [`super::scalar::dot_q`]'s in
//! the last bits).

use super::{ActBlock, Q16Act, Q8Act};
use akari_core::QuantFormat;
use core::arch::wasm32::*;
use half::f16;

/// Activation blocks as four vectors of eight i16.
pub trait WasmAct: ActBlock {
    fn load_i16(&self) -> [v128; 4];
}

impl WasmAct for Q16Act {
    #[inline(always)]
    fn load_i16(&self) -> [v128; 4] {
        let q = self.qs.as_ptr();
        // SAFETY: `qs` holds 32 i16, so the four 16-byte loads stay inside it; `v128_load`
        // has no alignment requirement.
        unsafe {
            [
                v128_load(q as *const v128),
                v128_load(q.add(8) as *const v128),
                v128_load(q.add(16) as *const v128),
                v128_load(q.add(24) as *const v128),
            ]
        }
    }
}

impl WasmAct for Q8Act {
    #[inline(always)]
    fn load_i16(&self) -> [v128; 4] {
        let q = self.qs.as_ptr();
        // SAFETY: `qs` holds 32 i8: two 16-byte loads, unaligned loads allowed.
        let (lo, hi) = unsafe {
            (
                v128_load(q as *const v128),
                v128_load(q.add(16) as *const v128),
            )
        };
        [
            i16x8_extend_low_i8x16(lo),
            i16x8_extend_high_i8x16(lo),
            i16x8_extend_low_i8x16(hi),
            i16x8_extend_high_i8x16(hi),
        ]
    }
}

/// The f16 at byte `i` of `b`. Without a hardware conversion, `half`'s is a chain of
/// branches, and a block's scales are converted for every block: instead the magnitude's bits
/// go where an f32's would and are rescaled by 2^112, which is exact for zero, subnormals and
/// normals (wasm keeps subnormals). Infinities and NaNs, never valid scales, take `half`'s
/// path.
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    let h = u16::from_le_bytes([b[i], b[i + 1]]);
    if h & 0x7c00 == 0x7c00 {
        return f16::from_bits(h).to_f32();
    }
    let magnitude = f32::from_bits(u32::from(h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    if h & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Sixteen bytes of `b` from `at` as a vector.
#[inline(always)]
fn load16(b: &[u8], at: usize) -> v128 {
    let s = &b[at..at + 16];
    // SAFETY: `s` is 16 bytes long (the slice above checked it); unaligned loads are allowed.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

/// A weight block's 32 values as four vectors of eight i16 (Q4: the low nibbles are values
/// 0..16, the high ones 16..32).
#[inline(always)]
fn load_w(format: QuantFormat, b: &[u8]) -> [v128; 4] {
    match format {
        QuantFormat::Q8_0 => {
            let lo = load16(b, 2);
            let hi = load16(b, 18);
            [
                i16x8_extend_low_i8x16(lo),
                i16x8_extend_high_i8x16(lo),
                i16x8_extend_low_i8x16(hi),
                i16x8_extend_high_i8x16(hi),
            ]
        }
        _ => {
            let q = load16(b, if format == QuantFormat::Q4_0 { 2 } else { 4 });
            let lo = v128_and(q, u8x16_splat(0x0f));
            let hi = u8x16_shr(q, 4);
            [
                u16x8_extend_low_u8x16(lo),
                u16x8_extend_high_u8x16(lo),
                u16x8_extend_low_u8x16(hi),
                u16x8_extend_high_u8x16(hi),
            ]
        }
    }
}

/// `Σ w·x` over one block's 32 values, exactly, as four partial sums.
#[inline(always)]
fn block_dot(w: &[v128; 4], x: &[v128; 4]) -> v128 {
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(w[0], x[0]), i32x4_dot_i16x8(w[1], x[1])),
        i32x4_add(i32x4_dot_i16x8(w[2], x[2]), i32x4_dot_i16x8(w[3], x[3])),
    )
}

/// One weight row `w` against `C` activation rows from `x`, into `out[c]`: each weight block
/// is loaded, unpacked and its scales converted once for all `C` tokens, and the sums stay in
/// vectors until the end (a horizontal sum per block cost as much as its products).
#[inline(always)]
fn tile<A: WasmAct, const C: usize>(format: QuantFormat, w: &[u8], x: &[&[A]], out: &mut [f32]) {
    let mut acc = [f32x4_splat(0.0); C];
    let mut off = [0f32; C];
    for (b, blk) in w.chunks_exact(format.block_bytes()).enumerate() {
        let wv = load_w(format, blk);
        let dw = f16_at(blk, 0);
        let mw = match format {
            QuantFormat::Q4_0 => -8.0 * dw,
            QuantFormat::Q4_1 => f16_at(blk, 2),
            _ => 0.0,
        };
        for c in 0..C {
            let xb = &x[c][b];
            let p = f32x4_convert_i32x4(block_dot(&wv, &xb.load_i16()));
            acc[c] = f32x4_add(acc[c], f32x4_mul(p, f32x4_splat(dw * xb.d())));
            off[c] += mw * xb.s();
        }
    }
    for c in 0..C {
        out[c] = hsum_f32(acc[c]) + off[c];
    }
}

/// As [`super::Isa::gemm_q`], one weight row at a time. A prompt's tokens go 32 (then 8) at a
/// time against it: unpacking a weight block and converting its scales cost as much as its
/// products, so the more tokens share them the better (one thread, SmolLM2-135M's shapes under
/// Node: 3.3 GMAC/s a token at a time, 7.6 eight at a time, 13.5 thirty-two). Tiles of 2 or 4
/// rows measured lower, for prompts and for one token alike (5.5 GMAC/s a row at a time
/// against 3.7 for two and 4.2 for four): their unpacked blocks and sums outgrow the 16
/// vector registers.
pub fn gemm_q<A: WasmAct>(format: QuantFormat, w: &[u8], rb: usize, x: &[&[A]], out: &mut [f32]) {
    debug_assert_eq!(rb % format.block_bytes(), 0);
    let t = x.len();
    for (r, wr) in w.chunks_exact(rb).enumerate() {
        let out = &mut out[r * t..(r + 1) * t];
        let mut c = 0;
        while c + 32 <= t {
            tile::<A, 32>(format, wr, &x[c..], &mut out[c..]);
            c += 32;
        }
        while c + 8 <= t {
            tile::<A, 8>(format, wr, &x[c..], &mut out[c..]);
            c += 8;
        }
        for c in c..t {
            tile::<A, 1>(format, wr, &x[c..], &mut out[c..]);
        }
    }
}

/// `Σ a·b` over f32, in four lanes (two accumulators each) summed at the end.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut a0, mut a1) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut i = 0;
    while i + 8 <= n {
        a0 = f32x4_add(a0, f32x4_mul(load4(a, i), load4(b, i)));
        a1 = f32x4_add(a1, f32x4_mul(load4(a, i + 4), load4(b, i + 4)));
        i += 8;
    }
    let mut s = hsum_f32(f32x4_add(a0, a1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// `y += a · x` over f32.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = f32x4_splat(a);
    let mut i = 0;
    while i + 4 <= n {
        store4(y, i, f32x4_add(load4(y, i), f32x4_mul(av, load4(x, i))));
        i += 4;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// One attention head, as [`super::scalar::attend`]; `q.len()` must be a multiple of 4.
pub fn attend(q: &[f32], k: &[f32], v: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let hd = q.len();
    debug_assert_eq!(hd % 4, 0);
    scores.clear();
    scores.extend(k.chunks_exact(hd).map(|kj| dot_f32(q, kj) * scale));
    super::scalar::softmax(scores);
    // Weighted sum of values, 32 output dimensions held in registers at a time.
    let mut d = 0;
    while d + 32 <= hd {
        let mut acc = [f32x4_splat(0.0); 8];
        for (p, vj) in scores.iter().zip(v.chunks_exact(hd)) {
            let pv = f32x4_splat(*p);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = f32x4_add(*a, f32x4_mul(pv, load4(vj, d + 4 * i)));
            }
        }
        for (i, a) in acc.iter().enumerate() {
            store4(out, d + 4 * i, *a);
        }
        d += 32;
    }
    while d < hd {
        let mut acc = f32x4_splat(0.0);
        for (p, vj) in scores.iter().zip(v.chunks_exact(hd)) {
            acc = f32x4_add(acc, f32x4_mul(f32x4_splat(*p), load4(vj, d)));
        }
        store4(out, d, acc);
        d += 4;
    }
}

/// Four f32 of `s` from `i`.
#[inline(always)]
fn load4(s: &[f32], i: usize) -> v128 {
    let s = &s[i..i + 4];
    // SAFETY: `s` holds 4 f32 (checked above); unaligned loads are allowed.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

/// Stores four f32 into `s` from `i`.
#[inline(always)]
fn store4(s: &mut [f32], i: usize, v: v128) {
    let s = &mut s[i..i + 4];
    // SAFETY: `s` holds 4 f32 (checked above); unaligned stores are allowed.
    unsafe { v128_store(s.as_mut_ptr() as *mut v128, v) }
}

#[inline(always)]
fn hsum_f32(v: v128) -> f32 {
    (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
        + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
}

/// `w_row · x` for an F32 or F16 weight row against f32 activations.
pub fn dot_f(format: QuantFormat, w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / format.block_bytes());
    let (mut a0, mut a1) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut i = 0;
    match format {
        QuantFormat::F32 => {
            while i + 8 <= n {
                a0 = f32x4_add(a0, f32x4_mul(load16(w, 4 * i), load4(x, i)));
                a1 = f32x4_add(a1, f32x4_mul(load16(w, 4 * i + 16), load4(x, i + 4)));
                i += 8;
            }
        }
        QuantFormat::F16 => {
            while i + 8 <= n {
                let h = load16(w, 2 * i);
                a0 = f32x4_add(
                    a0,
                    f32x4_mul(f16x4_to_f32(u32x4_extend_low_u16x8(h)), load4(x, i)),
                );
                a1 = f32x4_add(
                    a1,
                    f32x4_mul(f16x4_to_f32(u32x4_extend_high_u16x8(h)), load4(x, i + 4)),
                );
                i += 8;
            }
        }
        _ => unreachable!("quantised rows use gemm_q"),
    }
    let mut s = hsum_f32(f32x4_add(a0, a1));
    while i < n {
        let v = match format {
            QuantFormat::F32 => {
                f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]])
            }
            _ => f16_at(w, 2 * i),
        };
        s += v * x[i];
        i += 1;
    }
    s
}

/// Four f16 (one in the low half of each u32 lane) as f32, as [`f16_at`] converts one:
/// exact for every finite value; an infinity or NaN comes out as a large finite value (65536
/// and up), which weights never hold.
#[inline(always)]
fn f16x4_to_f32(h: v128) -> v128 {
    let magnitude = f32x4_mul(
        u32x4_shl(v128_and(h, u32x4_splat(0x7fff)), 13),
        f32x4_splat(f32::from_bits(0x7780_0000)),
    );
    v128_or(magnitude, u32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversions_equal_half_on_every_value() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h);
            let one = f16_at(&h.to_le_bytes(), 0);
            let four = f32x4_extract_lane::<1>(f16x4_to_f32(u32x4(0, u32::from(h), 0, 0)));
            if want.is_nan() {
                assert!(one.is_nan(), "{h:#06x}");
                continue;
            }
            assert_eq!(one.to_bits(), want.to_f32().to_bits(), "{h:#06x}");
            if want.is_finite() {
                assert_eq!(four.to_bits(), want.to_f32().to_bits(), "{h:#06x}");
            }
        }
    }
}
