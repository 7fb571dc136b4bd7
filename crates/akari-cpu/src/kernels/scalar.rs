//! Portable reference kernels.

use super::ActBlock;
use akari_core::quant::QK;
use akari_core::QuantFormat;
use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

pub fn quantize_row<A: ActBlock>(x: &[f32], out: &mut [A]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / A::MAX;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i32; QK];
        for (q, v) in qs.iter_mut().zip(xs) {
            // Round half away from zero, like the SIMD paths.
            *q = (v * id).round() as i32;
        }
        blk.set(d, &qs);
    }
}

pub fn dot_q<A: ActBlock>(format: QuantFormat, w: &[u8], x: &[A]) -> f32 {
    let bb = format.block_bytes();
    let mut acc = 0f32;
    for (b, xb) in w.chunks_exact(bb).zip(x) {
        let d = f16_at(b, 0) * xb.d();
        match format {
            QuantFormat::Q8_0 => {
                let s: i32 = (0..QK).map(|j| (b[2 + j] as i8) as i32 * xb.q(j)).sum();
                acc += d * s as f32;
            }
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
                let qs = if format == QuantFormat::Q4_0 {
                    &b[2..]
                } else {
                    &b[4..]
                };
                let mut s = 0i32;
                for (j, &q) in qs.iter().enumerate() {
                    s += (q & 0x0f) as i32 * xb.q(j);
                    s += (q >> 4) as i32 * xb.q(j + 16);
                }
                if format == QuantFormat::Q4_0 {
                    acc += d * s as f32 - 8.0 * f16_at(b, 0) * xb.s();
                } else {
                    acc += d * s as f32 + f16_at(b, 2) * xb.s();
                }
            }
            QuantFormat::F32 | QuantFormat::F16 => unreachable!("float rows use dot_f"),
        }
    }
    acc
}

pub fn dot_f(format: QuantFormat, w: &[u8], x: &[f32]) -> f32 {
    match format {
        QuantFormat::F32 => w
            .chunks_exact(4)
            .zip(x)
            .map(|(c, v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
            .sum(),
        QuantFormat::F16 => w
            .chunks_exact(2)
            .zip(x)
            .map(|(c, v)| f16::from_le_bytes([c[0], c[1]]).to_f32() * v)
            .sum(),
        _ => unreachable!("quantised rows use dot_q"),
    }
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Softmax over `scores` in place, returning nothing: the caller's weights.
pub fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    scores.iter_mut().for_each(|s| *s *= inv);
}

/// One attention head: `out = softmax(scale · K q) · V` over the `len` rows of `k` and `v`.
pub fn attend(q: &[f32], k: &[f32], v: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let hd = q.len();
    scores.clear();
    scores.extend(k.chunks_exact(hd).map(|kj| dot_f32(q, kj) * scale));
    softmax(scores);
    out.fill(0.0);
    for (p, vj) in scores.iter().zip(v.chunks_exact(hd)) {
        axpy(*p, vj, out);
    }
}
