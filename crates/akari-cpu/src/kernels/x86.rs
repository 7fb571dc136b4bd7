//! AVX2 + FMA + F16C kernels. Callers must have detected those features.

use super::{ActBlock, Q16Act, Q8Act};
use akari_core::quant::QK;
use akari_core::QuantFormat;
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;

/// How far ahead (in blocks) weight rows are prefetched: without it decode waits on memory.
const PREFETCH_BLOCKS: usize = 8;

/// What the tile kernel needs of an activation encoding on AVX2.
pub trait SimdAct: ActBlock {
    /// A weight block prepared for products with this encoding.
    type W: Copy;
    unsafe fn zero_w() -> Self::W;
    /// Loads the 32 values of a weight block of format `F` (`q` points at its quants).
    unsafe fn load_w<const F: u8>(q: *const u8) -> Self::W;
    /// `Σ w·x` over the block, as 8 partial sums.
    unsafe fn dot<const F: u8>(w: Self::W, x: &Self) -> __m256i;
    /// Packs 32 rounded values (4 × 8 i32, in order) into the block's storage.
    unsafe fn store(ints: [__m256i; 4], qs: &mut Self);
}

impl SimdAct for Q8Act {
    /// 32 bytes for `maddubs`: unsigned nibbles for the 4-bit formats, raw i8 for Q8_0.
    type W = __m256i;

    #[inline(always)]
    unsafe fn zero_w() -> __m256i {
        _mm256_setzero_si256()
    }

    #[inline(always)]
    unsafe fn load_w<const F: u8>(q: *const u8) -> __m256i {
        if F == Q8_0 {
            _mm256_loadu_si256(q as *const __m256i)
        } else {
            let q = _mm_loadu_si128(q as *const __m128i);
            let low = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(q, low);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
            _mm256_set_m128i(hi, lo)
        }
    }

    #[inline(always)]
    unsafe fn dot<const F: u8>(w: __m256i, x: &Self) -> __m256i {
        let xv = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let ones = _mm256_set1_epi16(1);
        if F == Q8_0 {
            // maddubs needs one unsigned operand: move w's sign onto x.
            let aw = _mm256_sign_epi8(w, w);
            let sx = _mm256_sign_epi8(xv, w);
            _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones)
        }
    }

    #[inline(always)]
    unsafe fn store(ints: [__m256i; 4], blk: &mut Self) {
        // The packs interleave 128-bit lanes; the permute restores element order.
        let a = _mm256_packs_epi32(ints[0], ints[1]);
        let b = _mm256_packs_epi32(ints[2], ints[3]);
        let c = _mm256_packs_epi16(a, b);
        let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(blk.qs.as_mut_ptr() as *mut __m256i, c);
    }
}

impl SimdAct for Q16Act {
    /// The block widened to i16: values 0..16 and 16..32.
    type W = (__m256i, __m256i);

    #[inline(always)]
    unsafe fn zero_w() -> Self::W {
        (_mm256_setzero_si256(), _mm256_setzero_si256())
    }

    #[inline(always)]
    unsafe fn load_w<const F: u8>(q: *const u8) -> Self::W {
        if F == Q8_0 {
            let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(q as *const __m128i));
            let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(16) as *const __m128i));
            (lo, hi)
        } else {
            let q = _mm_loadu_si128(q as *const __m128i);
            let low = _mm_set1_epi8(0x0f);
            let lo = _mm256_cvtepu8_epi16(_mm_and_si128(q, low));
            let hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(q, 4), low));
            (lo, hi)
        }
    }

    #[inline(always)]
    unsafe fn dot<const F: u8>(w: Self::W, x: &Self) -> __m256i {
        let xl = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let xh = _mm256_loadu_si256(x.qs.as_ptr().add(16) as *const __m256i);
        _mm256_add_epi32(_mm256_madd_epi16(w.0, xl), _mm256_madd_epi16(w.1, xh))
    }

    #[inline(always)]
    unsafe fn store(ints: [__m256i; 4], blk: &mut Self) {
        // packs works within 128-bit lanes; the permute restores element order.
        let a = _mm256_permute4x64_epi64(_mm256_packs_epi32(ints[0], ints[1]), 0b11_01_10_00);
        let b = _mm256_permute4x64_epi64(_mm256_packs_epi32(ints[2], ints[3]), 0b11_01_10_00);
        _mm256_storeu_si256(blk.qs.as_mut_ptr() as *mut __m256i, a);
        _mm256_storeu_si256(blk.qs.as_mut_ptr().add(16) as *mut __m256i, b);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row<A: SimdAct>(x: &[f32], out: &mut [A]) {
    let sign_mask = _mm256_set1_ps(-0.0);
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let p = xs.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let mut m = _mm256_andnot_ps(sign_mask, v[0]);
        for vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign_mask, *vi));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let d = _mm_cvtss_f32(m4) / A::MAX;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let mut ints = [_mm256_setzero_si256(); 4];
        for (i, vi) in v.iter().enumerate() {
            // Round half away from zero (like f32::round): add ±0.5 then truncate.
            let scaled = _mm256_mul_ps(*vi, id);
            let half = _mm256_or_ps(_mm256_and_ps(scaled, sign_mask), _mm256_set1_ps(0.5));
            ints[i] = _mm256_cvttps_epi32(_mm256_add_ps(scaled, half));
        }
        let s = _mm256_add_epi32(
            _mm256_add_epi32(ints[0], ints[1]),
            _mm256_add_epi32(ints[2], ints[3]),
        );
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s4 = _mm_hadd_epi32(s4, s4);
        let s4 = _mm_hadd_epi32(s4, s4);
        A::store(ints, blk);
        blk.set_scales(d, d * _mm_cvtsi128_si32(s4) as f32);
    }
}

/// `R` weight rows against `C` activation rows: every weight block is loaded and unpacked
/// once for all `C` tokens, every activation block once for all `R` rows.
#[inline(always)]
unsafe fn tile<A: SimdAct, const F: u8, const R: usize, const C: usize>(
    w: *const u8,
    rb: usize,
    x: &[&[A]],
    nb: usize,
    out: &mut [f32],
    t: usize,
) {
    let (bb, qs_at) = match F {
        Q8_0 => (34, 2),
        Q4_0 => (18, 2),
        _ => (20, 4),
    };
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut off = [[0f32; C]; R];
    for b in 0..nb {
        let mut wv = [A::zero_w(); R];
        let mut dw = [0f32; R];
        let mut mw = [0f32; R];
        for r in 0..R {
            let blk = w.add(r * rb + b * bb);
            // Weight rows are streamed once: ask for them a few blocks ahead. (Past the end
            // of the matrix this names an address prefetch ignores; it never faults.)
            _mm_prefetch::<_MM_HINT_T0>(
                w.wrapping_add(r * rb + (b + PREFETCH_BLOCKS) * bb) as *const i8
            );
            wv[r] = A::load_w::<F>(blk.add(qs_at));
            dw[r] = f16_at(blk);
            mw[r] = match F {
                Q4_0 => -8.0 * dw[r],
                Q4_1 => f16_at(blk.add(2)),
                _ => 0.0,
            };
        }
        for c in 0..C {
            let xb = x.get_unchecked(c).get_unchecked(b);
            for r in 0..R {
                let p = A::dot::<F>(wv[r], xb);
                acc[r][c] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw[r] * xb.d()),
                    _mm256_cvtepi32_ps(p),
                    acc[r][c],
                );
                if F != Q8_0 {
                    off[r][c] += mw[r] * xb.s();
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            *out.get_unchecked_mut(r * t + c) = hsum(acc[r][c]) + off[r][c];
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_format<A: SimdAct, const F: u8>(w: &[u8], rb: usize, x: &[&[A]], out: &mut [f32]) {
    let t = x.len();
    let rows = w.len() / rb;
    let nb = x.first().map(|v| v.len()).unwrap_or(0);
    debug_assert!(x.iter().all(|v| v.len() == nb) && out.len() >= rows * t);
    let wp = w.as_ptr();
    let mut r = 0;
    if t >= 4 {
        // Prefill: 2 rows × 4 tokens per tile.
        while r + 2 <= rows {
            let mut c = 0;
            while c + 4 <= t {
                tile::<A, F, 2, 4>(wp.add(r * rb), rb, &x[c..], nb, &mut out[r * t + c..], t);
                c += 4;
            }
            while c < t {
                tile::<A, F, 2, 1>(wp.add(r * rb), rb, &x[c..], nb, &mut out[r * t + c..], t);
                c += 1;
            }
            r += 2;
        }
    } else {
        // Decode: 4 rows at a time for independent accumulator chains.
        while r + 4 <= rows {
            for c in 0..t {
                tile::<A, F, 4, 1>(wp.add(r * rb), rb, &x[c..], nb, &mut out[r * t + c..], t);
            }
            r += 4;
        }
    }
    while r < rows {
        for c in 0..t {
            tile::<A, F, 1, 1>(wp.add(r * rb), rb, &x[c..], nb, &mut out[r * t + c..], t);
        }
        r += 1;
    }
}

pub(crate) unsafe fn gemm_q<A: SimdAct>(
    format: QuantFormat,
    w: &[u8],
    rb: usize,
    x: &[&[A]],
    out: &mut [f32],
) {
    match format {
        QuantFormat::Q8_0 => gemm_format::<A, Q8_0>(w, rb, x, out),
        QuantFormat::Q4_0 => gemm_format::<A, Q4_0>(w, rb, x, out),
        QuantFormat::Q4_1 => gemm_format::<A, Q4_1>(w, rb, x, out),
        _ => unreachable!("float rows use dot_f"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f(format: QuantFormat, w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let xp = x.as_ptr();
    let wp = w.as_ptr();
    let mut i = 0;
    match format {
        QuantFormat::F32 => {
            let wf = wp as *const f32;
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(wf.add(i)), _mm256_loadu_ps(xp.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(wf.add(i + 8)),
                    _mm256_loadu_ps(xp.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            let mut s = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                s += (wf.add(i)).read_unaligned() * x[i];
                i += 1;
            }
            s
        }
        QuantFormat::F16 => {
            let wh = wp as *const u16;
            while i + 16 <= n {
                let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wh.add(i) as *const __m128i));
                let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wh.add(i + 8) as *const __m128i));
                acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(i + 8)), acc1);
                i += 16;
            }
            let mut s = hsum(_mm256_add_ps(acc0, acc1));
            while i < n {
                s += f16_at(wp.add(2 * i)) * x[i];
                i += 1;
            }
            s
        }
        _ => unreachable!("quantised rows use dot_q"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(ap.add(i + 8)),
            _mm256_loadu_ps(bp.add(i + 8)),
            acc1,
        );
        i += 16;
    }
    let mut s = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let r = _mm256_fmadd_ps(av, _mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)));
        _mm256_storeu_ps(yp.add(i), r);
        i += 8;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// One attention head, as [`super::scalar::attend`]; `q.len()` must be a multiple of 8.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    let len = k.len() / hd;
    scores.clear();
    scores.reserve(len);
    let (qp, kp, vp) = (q.as_ptr(), k.as_ptr(), v.as_ptr());
    // Scores: two accumulators per key row hide the FMA latency.
    for j in 0..len {
        let row = kp.add(j * hd);
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut d = 0;
        while d + 16 <= hd {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(d)), _mm256_loadu_ps(row.add(d)), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(qp.add(d + 8)),
                _mm256_loadu_ps(row.add(d + 8)),
                a1,
            );
            d += 16;
        }
        if d < hd {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(d)), _mm256_loadu_ps(row.add(d)), a0);
        }
        scores.push(hsum(_mm256_add_ps(a0, a1)) * scale);
    }
    super::scalar::softmax(scores);
    // Weighted sum of values, 32 output dimensions held in registers at a time.
    let op = out.as_mut_ptr();
    let mut d = 0;
    while d + 32 <= hd {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (j, p) in scores.iter().enumerate() {
            let pv = _mm256_set1_ps(*p);
            let row = vp.add(j * hd + d);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(row.add(8 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(op.add(d + 8 * i), *a);
        }
        d += 32;
    }
    while d < hd {
        let mut acc = _mm256_setzero_ps();
        for (j, p) in scores.iter().enumerate() {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(*p), _mm256_loadu_ps(vp.add(j * hd + d)), acc);
        }
        _mm256_storeu_ps(op.add(d), acc);
        d += 8;
    }
}
