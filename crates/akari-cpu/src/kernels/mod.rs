//! Dot-product kernels between weight rows and activation rows.
//!
//! Quantised weights meet integer activations: each activation row is quantised once per
//! matmul into blocks of 32 (an f32 scale, integer values, and `scale · Σ values`), then every
//! weight block contributes `d_w·d_x·Σ q_w·q_x`, plus a term from the activation sum for
//! formats with an offset (Q4_0's −8, Q4_1's minimum). Two encodings implement
//! [`ActBlock`]: [`Q16Act`] (the default: f32 accuracy to about 1e-5) and [`Q8Act`]
//! (llama.cpp's arithmetic). Float weights meet f32 activations.
//!
//! `scalar` is the reference every SIMD path is tested against; `x86` holds AVX2/FMA/F16C
//! versions picked at run time; `wasm` the simd128 versions the browser build compiles in
//! (tested against the scalar reference when built for wasm32-wasip1 and run under Node, and
//! in the browser tests against native runs). NEON versions slot in beside them.

pub(crate) mod scalar;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

use akari_core::quant::QK;
use akari_core::QuantFormat;

/// A block of 32 activations quantised to integers, as the kernels consume it.
pub trait ActBlock: Copy + Default + Send + Sync + 'static {
    /// The largest quantised magnitude.
    const MAX: f32;
    fn d(&self) -> f32;
    /// `d · Σ q`, for the offset terms of Q4_0 and Q4_1.
    fn s(&self) -> f32;
    fn q(&self, i: usize) -> i32;
    fn set(&mut self, d: f32, qs: &[i32; QK]);
    fn set_scales(&mut self, d: f32, s: f32);
}

/// One block of 32 activations quantised to i8, as llama.cpp does.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8Act {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

/// One block of 32 activations quantised to i16: 256 times finer than [`Q8Act`], so the
/// quantised path computes what f32 activations would, to about 1e-5.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q16Act {
    pub d: f32,
    pub s: f32,
    pub qs: [i16; QK],
}

macro_rules! act_block {
    ($t:ty, $q:ty, $max:expr) => {
        impl Default for $t {
            fn default() -> Self {
                Self {
                    d: 0.0,
                    s: 0.0,
                    qs: [0; QK],
                }
            }
        }

        impl ActBlock for $t {
            const MAX: f32 = $max;
            fn d(&self) -> f32 {
                self.d
            }
            fn s(&self) -> f32 {
                self.s
            }
            fn q(&self, i: usize) -> i32 {
                self.qs[i] as i32
            }
            fn set(&mut self, d: f32, qs: &[i32; QK]) {
                for (o, q) in self.qs.iter_mut().zip(qs) {
                    *o = *q as $q;
                }
                self.d = d;
                self.s = d * qs.iter().sum::<i32>() as f32;
            }
            fn set_scales(&mut self, d: f32, s: f32) {
                self.d = d;
                self.s = s;
            }
        }
    };
}

act_block!(Q8Act, i8, 127.0);
act_block!(Q16Act, i16, 32767.0);

/// An activation encoding every compiled kernel set can run.
#[cfg(target_arch = "x86_64")]
pub trait Act: ActBlock + x86::SimdAct {}
#[cfg(target_arch = "x86_64")]
impl<T: ActBlock + x86::SimdAct> Act for T {}
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub trait Act: ActBlock + wasm::WasmAct {}
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl<T: ActBlock + wasm::WasmAct> Act for T {}
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub trait Act: ActBlock {}
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
impl<T: ActBlock> Act for T {}

/// Which instruction set the kernels use, decided once at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Chosen at compile time: a wasm module built with simd128 only loads where it exists.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
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
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            return Isa::Simd128;
        }
        #[allow(unreachable_code)]
        Isa::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => "simd128",
        }
    }

    /// Quantises a row of activations (length a multiple of 32).
    pub fn quantize_row<A: Act>(self, x: &[f32], out: &mut [A]) {
        match self {
            Isa::Scalar => scalar::quantize_row(x, out),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => scalar::quantize_row(x, out),
            // SAFETY: `Avx2` is only chosen after detecting avx2, fma and f16c.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::quantize_row(x, out) },
        }
    }

    /// `out[r * x.len() + c] = w_r · x_c` for consecutive quantised weight rows of `rb` bytes
    /// each in `w`, against every activation row in `x`.
    pub fn gemm_q<A: Act>(
        self,
        format: QuantFormat,
        w: &[u8],
        rb: usize,
        x: &[&[A]],
        out: &mut [f32],
    ) {
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
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => wasm::gemm_q(format, w, rb, x, out),
        }
    }

    /// `w_row · x` for an F32 or F16 weight row against f32 activations.
    pub fn dot_f(self, format: QuantFormat, w: &[u8], x: &[f32]) -> f32 {
        match self {
            Isa::Scalar => scalar::dot_f(format, w, x),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => wasm::dot_f(format, w, x),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dot_f(format, w, x) },
        }
    }

    /// One attention head over `len` cached positions: `out = softmax(scale · K q) · V`, with
    /// `k` and `v` holding `len` rows of `q.len()` values. `scores` is scratch space.
    pub fn attend(
        self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above; the kernel handles head sizes that are multiples of 8.
            Isa::Avx2 if q.len() % 8 == 0 => unsafe { x86::attend(q, k, v, scale, scores, out) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 if q.len() % 4 == 0 => wasm::attend(q, k, v, scale, scores, out),
            _ => scalar::attend(q, k, v, scale, scores, out),
        }
    }

    /// `a · b` over f32.
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Isa::Scalar => scalar::dot_f32(a, b),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => wasm::dot_f32(a, b),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dot_f32(a, b) },
        }
    }

    /// `y += a · x` over f32.
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        match self {
            Isa::Scalar => scalar::axpy(a, x, y),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => wasm::axpy(a, x, y),
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

    fn quantized<A: Act>(isa: Isa, x: &[f32]) -> Vec<A> {
        let mut q = vec![A::default(); x.len() / QK];
        isa.quantize_row(x, &mut q);
        q
    }

    /// For one activation encoding: SIMD quantisation equals the scalar one; SIMD tiles of
    /// every shape (rows and tokens that are and are not multiples of the tile) equal the
    /// scalar dot; and the quantised dot is within the encoding's rounding of the exact one.
    fn check_encoding<A: Act>(isa: Isa) {
        for &n in &[32usize, 64, 96, 288, 576, 1536] {
            let x = random(n, 1000 + n as u64);
            let (simd, reference) = (quantized::<A>(isa, &x), quantized::<A>(Isa::Scalar, &x));
            for (a, b) in simd.iter().zip(&reference) {
                assert!((0..QK).all(|i| a.q(i) == b.q(i)), "quantize_row n={n}");
                assert!((a.d() - b.d()).abs() <= 1e-7 * b.d().abs());
                assert!((a.s() - b.s()).abs() <= 1e-6 * (1.0 + b.s().abs()));
            }
            for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4_1] {
                // 45 tokens: every tile width of the wasm kernel (32, 8, single) and its
                // remainders.
                let (rows, toks) = (7usize, 45usize);
                let wb = encode(fmt, &random(rows * n, 77 + n as u64));
                let rb = fmt.row_bytes(n);
                let xs: Vec<Vec<f32>> = (0..toks).map(|c| random(n, 500 + c as u64)).collect();
                let xq: Vec<Vec<A>> = xs
                    .iter()
                    .map(|xr| quantized::<A>(Isa::Scalar, xr))
                    .collect();
                for t in 1..=toks {
                    let xrefs: Vec<&[A]> = xq[..t].iter().map(|v| v.as_slice()).collect();
                    let mut got = vec![0f32; rows * t];
                    isa.gemm_q(fmt, &wb, rb, &xrefs, &mut got);
                    for r in 0..rows {
                        let wr = &wb[r * rb..(r + 1) * rb];
                        let mut wd = vec![0f32; n];
                        fmt.dequantize_row(wr, &mut wd);
                        // Kernels that keep the offset term (Q4_0's −8, Q4_1's minimum) apart
                        // from the products, as the SIMD ones do, round the two large sums
                        // before they cancel: their error scales with the terms, not the
                        // result.
                        let offsets: Vec<f32> = wr
                            .chunks_exact(fmt.block_bytes())
                            .map(|b| {
                                let d = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]);
                                match fmt {
                                    QuantFormat::Q4_0 => 8.0 * d(0).to_f32().abs(),
                                    QuantFormat::Q4_1 => d(2).to_f32().abs(),
                                    _ => 0.0,
                                }
                            })
                            .collect();
                        for c in 0..t {
                            let want = scalar::dot_q(fmt, wr, &xq[c]);
                            let g = got[r * t + c];
                            let terms: f32 = wd
                                .iter()
                                .zip(&xs[c])
                                .enumerate()
                                .map(|(k, (a, b))| (a.abs() + offsets[k / QK]) * b.abs())
                                .sum();
                            assert!(
                                (want - g).abs() <= 1e-4 * (1.0 + want.abs()) + 1e-6 * terms,
                                "{fmt} n={n} t={t} r={r} c={c}: {want} vs {g}"
                            );
                            let exact: f64 = wd
                                .iter()
                                .zip(&xs[c])
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum();
                            let rounding: f64 = wd.iter().map(|a| a.abs() as f64).sum::<f64>()
                                * 8.0
                                / A::MAX as f64;
                            assert!(
                                (exact - want as f64).abs() <= rounding + 1e-4,
                                "{fmt} n={n}: exact {exact} vs quantised {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn int8_kernels_match_reference() {
        check_encoding::<Q8Act>(Isa::detect());
    }

    #[test]
    fn int16_kernels_match_reference() {
        check_encoding::<Q16Act>(Isa::detect());
    }

    #[test]
    fn attention_matches_reference() {
        let isa = Isa::detect();
        for &hd in &[8usize, 16, 64, 96, 128] {
            for &len in &[1usize, 3, 17, 130] {
                let q = random(hd, hd as u64);
                let k = random(hd * len, 7 + len as u64);
                let v = random(hd * len, 9 + len as u64);
                let (mut s1, mut s2) = (Vec::new(), Vec::new());
                let (mut o1, mut o2) = (vec![0f32; hd], vec![1f32; hd]);
                scalar::attend(&q, &k, &v, 0.125, &mut s1, &mut o1);
                isa.attend(&q, &k, &v, 0.125, &mut s2, &mut o2);
                for (a, b) in o1.iter().zip(&o2) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                        "hd={hd} len={len}: {a} vs {b}"
                    );
                }
                // And against a plain softmax-weighted sum.
                let sc: Vec<f64> = k
                    .chunks(hd)
                    .map(|kj| kj.iter().zip(&q).map(|(a, b)| (a * b) as f64).sum::<f64>() * 0.125)
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let want: f64 = w
                        .iter()
                        .zip(v.chunks(hd))
                        .map(|(p, vj)| p / z * vj[d] as f64)
                        .sum();
                    assert!((want - o1[d] as f64).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }
    }

    #[test]
    fn float_kernels_match_reference() {
        let isa = Isa::detect();
        for &n in &[32usize, 64, 96, 288, 576, 1536] {
            let w = random(n, n as u64);
            let x = random(n, 1000 + n as u64);
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
