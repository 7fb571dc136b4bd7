//! Dot-product kernels between one weight row and one activation row.
//!
//! Quantised weights meet int8 activations: each activation row is quantised once per matmul
//! into [`Q8Act`] blocks of 32 (f32 scale, i8 values and their sum), then every weight block
//! contributes `d_w·d_x·Σ q_w·q_x` plus a term from the activation sum for formats with an
//! offset (Q4_0's −8, Q4_1's minimum). Float weights meet f32 activations.
//!
//! `scalar` is the reference every SIMD path is tested against; `x86` holds AVX2/FMA/F16C
//! versions picked at run time. NEON and wasm simd128 versions slot in beside them.

pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use akari_core::quant::QK;
use akari_core::QuantFormat;

/// One block of 32 activations quantised to i8.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8Act {
    pub d: f32,
    /// `d · Σ qs`, for the offset terms of Q4_0 and Q4_1.
    pub s: f32,
    pub qs: [i8; QK],
}

impl Default for Q8Act {
    fn default() -> Self {
        Q8Act {
            d: 0.0,
            s: 0.0,
            qs: [0; QK],
        }
    }
}

/// One block of 32 activations quantised to i16: 256 times finer than [`Q8Act`], so the
/// quantised path computes what f32 activations would, to about 1e-5.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q16Act {
    pub d: f32,
    /// `d · Σ qs`, for the offset terms of Q4_0 and Q4_1.
    pub s: f32,
    pub qs: [i16; QK],
}

impl Default for Q16Act {
    fn default() -> Self {
        Q16Act {
            d: 0.0,
            s: 0.0,
            qs: [0; QK],
        }
    }
}

/// Which instruction set the kernels use, decided once at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("AKARI_CPU_SCALAR").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
        }
    }

    /// Quantises a row of activations (length a multiple of 32).
    pub fn quantize_row(self, x: &[f32], out: &mut [Q8Act]) {
        match self {
            Isa::Scalar => scalar::quantize_row(x, out),
            // SAFETY: `Avx2` is only chosen after detecting avx2, fma and f16c.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::quantize_row(x, out) },
        }
    }

    /// `w_row · x` for a quantised weight row against quantised activations.
    pub fn dot_q(self, format: QuantFormat, w: &[u8], x: &[Q8Act]) -> f32 {
        match self {
            Isa::Scalar => scalar::dot_q(format, w, x),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dot_q(format, w, x) },
        }
    }

    /// `out[r * x.len() + c] = w_r · x_c` for `rows` consecutive weight rows of `rb` bytes
    /// each, against every activation row in `x`.
    pub fn gemm_q(self, format: QuantFormat, w: &[u8], rb: usize, x: &[&[Q8Act]], out: &mut [f32]) {
        match self {
            Isa::Scalar => {
                let t = x.len();
                for (r, wr) in w.chunks_exact(rb).enumerate() {
                    for (c, xc) in x.iter().enumerate() {
                        out[r * t + c] = scalar::dot_q(format, wr, xc);
                    }
                }
            }
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::gemm_q(format, w, rb, x, out) },
        }
    }

    /// Quantises a row of activations to i16 blocks (length a multiple of 32).
    pub fn quantize_row16(self, x: &[f32], out: &mut [Q16Act]) {
        match self {
            Isa::Scalar => scalar::quantize_row16(x, out),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::quantize_row16(x, out) },
        }
    }

    /// As [`Isa::gemm_q`], against i16 activations.
    pub fn gemm_q16(
        self,
        format: QuantFormat,
        w: &[u8],
        rb: usize,
        x: &[&[Q16Act]],
        out: &mut [f32],
    ) {
        match self {
            Isa::Scalar => {
                let t = x.len();
                for (r, wr) in w.chunks_exact(rb).enumerate() {
                    for (c, xc) in x.iter().enumerate() {
                        out[r * t + c] = scalar::dot_q16(format, wr, xc);
                    }
                }
            }
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::gemm_q16(format, w, rb, x, out) },
        }
    }

    /// `w_row · x` for an F32 or F16 weight row against f32 activations.
    pub fn dot_f(self, format: QuantFormat, w: &[u8], x: &[f32]) -> f32 {
        match self {
            Isa::Scalar => scalar::dot_f(format, w, x),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dot_f(format, w, x) },
        }
    }

    /// `a · b` over f32.
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Isa::Scalar => scalar::dot_f32(a, b),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dot_f32(a, b) },
        }
    }

    /// `y += a · x` over f32.
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        match self {
            Isa::Scalar => scalar::axpy(a, x, y),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::axpy(a, x, y) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Never zero, both signs, a few larger outliers.
                let u = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
                let u = if u.abs() < 1e-3 { 0.5 } else { u };
                if (s >> 20) % 17 == 0 {
                    u * 8.0
                } else {
                    u
                }
            })
            .collect()
    }

    fn encode(format: QuantFormat, x: &[f32]) -> Vec<u8> {
        let mut b = vec![0u8; format.row_bytes(x.len())];
        format.quantize_row(x, &mut b);
        b
    }

    /// Every SIMD kernel agrees with the scalar reference, on lengths that are and are not
    /// multiples of the SIMD widths.
    #[test]
    fn simd_matches_scalar() {
        let isa = Isa::detect();
        for &n in &[32usize, 64, 96, 288, 576, 1536] {
            let w = random(n, n as u64);
            let x = random(n, 1000 + n as u64);
            let mut xq = vec![Q8Act::default(); n / QK];
            let mut xq_ref = xq.clone();
            isa.quantize_row(&x, &mut xq);
            scalar::quantize_row(&x, &mut xq_ref);
            for (a, b) in xq.iter().zip(&xq_ref) {
                assert_eq!(a.qs, b.qs, "quantize_row n={n}");
                assert!((a.s - b.s).abs() <= 1e-6 * (1.0 + b.s.abs()));
                assert!((a.d - b.d).abs() <= 1e-7 * b.d.abs());
            }
            for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4_1] {
                let wb = encode(fmt, &w);
                let r = scalar::dot_q(fmt, &wb, &xq_ref);
                let s = isa.dot_q(fmt, &wb, &xq_ref);
                assert!(
                    (r - s).abs() <= 1e-4 * (1.0 + r.abs()),
                    "{fmt} n={n}: {r} vs {s}"
                );
                // And the quantised dot is close to the exact one.
                let mut wd = vec![0f32; n];
                fmt.dequantize_row(&wb, &mut wd);
                let exact: f32 = wd.iter().zip(&x).map(|(a, b)| a * b).sum();
                let norm: f32 = wd.iter().map(|a| a.abs()).sum::<f32>() * 8.0 / 127.0;
                assert!((exact - r).abs() <= norm, "{fmt} n={n}: {exact} vs {r}");
            }
            // Tiles of every shape: rows and tokens that are and are not multiples of 4.
            for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4_1] {
                let (rows, toks) = (7usize, 6usize);
                let ws: Vec<f32> = random(rows * n, 77 + n as u64);
                let wb = encode(fmt, &ws);
                let rb = fmt.row_bytes(n);
                let xs: Vec<Vec<Q8Act>> = (0..toks)
                    .map(|c| {
                        let xr = random(n, 500 + c as u64);
                        let mut q = vec![Q8Act::default(); n / QK];
                        scalar::quantize_row(&xr, &mut q);
                        q
                    })
                    .collect();
                for t in 1..=toks {
                    let xrefs: Vec<&[Q8Act]> = xs[..t].iter().map(|v| v.as_slice()).collect();
                    let mut got = vec![0f32; rows * t];
                    isa.gemm_q(fmt, &wb, rb, &xrefs, &mut got);
                    for r in 0..rows {
                        for c in 0..t {
                            let want = scalar::dot_q(fmt, &wb[r * rb..(r + 1) * rb], &xs[c]);
                            let g = got[r * t + c];
                            assert!(
                                (want - g).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{fmt} n={n} t={t} r={r} c={c}: {want} vs {g}"
                            );
                        }
                    }
                }
            }
            // The i16 path: SIMD equals scalar, and both equal the f32 dot closely.
            let mut x16 = vec![Q16Act::default(); n / QK];
            let mut x16_ref = x16.clone();
            isa.quantize_row16(&x, &mut x16);
            scalar::quantize_row16(&x, &mut x16_ref);
            for (a, b) in x16.iter().zip(&x16_ref) {
                assert_eq!(a.qs, b.qs, "quantize_row16 n={n}");
                assert!((a.s - b.s).abs() <= 1e-6 * (1.0 + b.s.abs()));
            }
            for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4_1] {
                let (rows, toks) = (7usize, 6usize);
                let ws: Vec<f32> = random(rows * n, 91 + n as u64);
                let wb = encode(fmt, &ws);
                let rb = fmt.row_bytes(n);
                let xs: Vec<Vec<f32>> = (0..toks).map(|c| random(n, 700 + c as u64)).collect();
                let xq: Vec<Vec<Q16Act>> = xs
                    .iter()
                    .map(|xr| {
                        let mut q = vec![Q16Act::default(); n / QK];
                        scalar::quantize_row16(xr, &mut q);
                        q
                    })
                    .collect();
                for t in 1..=toks {
                    let xrefs: Vec<&[Q16Act]> = xq[..t].iter().map(|v| v.as_slice()).collect();
                    let mut got = vec![0f32; rows * t];
                    isa.gemm_q16(fmt, &wb, rb, &xrefs, &mut got);
                    for r in 0..rows {
                        let wr = &wb[r * rb..(r + 1) * rb];
                        let mut wd = vec![0f32; n];
                        fmt.dequantize_row(wr, &mut wd);
                        for c in 0..t {
                            let want = scalar::dot_q16(fmt, wr, &xq[c]);
                            let g = got[r * t + c];
                            assert!(
                                (want - g).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{fmt} i16 n={n} t={t}: {want} vs {g}"
                            );
                            let exact: f64 = wd
                                .iter()
                                .zip(&xs[c])
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum();
                            let scale: f64 =
                                wd.iter().map(|a| a.abs() as f64).sum::<f64>() * 8.0 / 32767.0;
                            assert!(
                                (exact - want as f64).abs() <= scale + 1e-4,
                                "{fmt} i16 vs exact: {exact} vs {want}"
                            );
                        }
                    }
                }
            }
            for fmt in [QuantFormat::F32, QuantFormat::F16] {
                let wb = encode(fmt, &w);
                let r = scalar::dot_f(fmt, &wb, &x);
                let s = isa.dot_f(fmt, &wb, &x);
                assert!(
                    (r - s).abs() <= 1e-4 * (1.0 + r.abs()),
                    "{fmt} n={n}: {r} vs {s}"
                );
            }
            for m in [n - 1, n, 7] {
                let r = scalar::dot_f32(&w[..m], &x[..m]);
                let s = isa.dot_f32(&w[..m], &x[..m]);
                assert!((r - s).abs() <= 1e-4 * (1.0 + r.abs()));
                let mut y1 = x[..m].to_vec();
                let mut y2 = y1.clone();
                scalar::axpy(0.37, &w[..m], &mut y1);
                isa.axpy(0.37, &w[..m], &mut y2);
                for (a, b) in y1.iter().zip(&y2) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()));
                }
            }
        }
    }
}
