//! wasm simd128 kernels for the browser: quantised weight rows against integer activations.
//!
//! Weights and activations are widened to i16 and multiplied with `i32x4.dot_i16x8_s`; the
//! block's integer sum is exact, and the float steps per block are the scalar reference's, so
//! the result equals [`super::scalar::dot_q`] bit for bit. The rest (float rows, attention)
//! stays on the scalar kernels, whose float order the tests compare against.

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

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Sixteen bytes of `b` from `at` as a vector.
#[inline(always)]
fn load16(b: &[u8], at: usize) -> v128 {
    let s = &b[at..at + 16];
    // SAFETY: `s` is 16 bytes long (the slice above checked it); unaligned loads are allowed.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

#[inline(always)]
fn hsum(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v)
        + i32x4_extract_lane::<1>(v)
        + i32x4_extract_lane::<2>(v)
        + i32x4_extract_lane::<3>(v)
}

/// `Σ w·x` over one block's 32 values, exactly.
#[inline(always)]
fn block_sum<A: WasmAct>(format: QuantFormat, b: &[u8], x: &[v128; 4]) -> i32 {
    let w = match format {
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
    };
    let s = i32x4_add(
        i32x4_add(i32x4_dot_i16x8(w[0], x[0]), i32x4_dot_i16x8(w[1], x[1])),
        i32x4_add(i32x4_dot_i16x8(w[2], x[2]), i32x4_dot_i16x8(w[3], x[3])),
    );
    hsum(s)
}

/// One quantised weight row against one activation row; equal to the scalar `dot_q`.
pub fn dot_q<A: WasmAct>(format: QuantFormat, w: &[u8], x: &[A]) -> f32 {
    let bb = format.block_bytes();
    let mut acc = 0f32;
    for (b, xb) in w.chunks_exact(bb).zip(x) {
        let d = f16_at(b, 0) * xb.d();
        let s = block_sum::<A>(format, b, &xb.load_i16());
        match format {
            QuantFormat::Q8_0 => acc += d * s as f32,
            QuantFormat::Q4_0 => acc += d * s as f32 - 8.0 * f16_at(b, 0) * xb.s(),
            _ => acc += d * s as f32 + f16_at(b, 2) * xb.s(),
        }
    }
    acc
}

/// As [`super::Isa::gemm_q`].
pub fn gemm_q<A: WasmAct>(format: QuantFormat, w: &[u8], rb: usize, x: &[&[A]], out: &mut [f32]) {
    debug_assert_eq!(rb % format.block_bytes(), 0);
    let t = x.len();
    for (r, wr) in w.chunks_exact(rb).enumerate() {
        for (c, xc) in x.iter().enumerate() {
            out[r * t + c] = dot_q(format, wr, xc);
        }
    }
}
