//! Times the CPU kernels on the shapes of a SmolLM2-135M prompt of 128 tokens, one thread:
//! the quantised GEMM of each projection (Q4_1 rows, 16-bit activations) and the causal
//! attention of one layer. Natively it measures the AVX2 kernels; built for wasm32-wasip1
//! with simd128 and run under Node, the browser's:
//!
//! ```sh
//! cargo run --release -p akari-cpu --example kernels
//! CARGO_TARGET_WASM32_WASIP1_RUNNER="node scripts/wasi-run.mjs" \
//!   RUSTFLAGS="-C target-feature=+simd128" \
//!   cargo run --release -p akari-cpu --example kernels --target wasm32-wasip1
//! ```

use akari_core::QuantFormat;
use akari_cpu::kernels::{Isa, Q16Act};
use std::time::Instant;

const TOKENS: usize = 128;
const HIDDEN: usize = 576;
const FFN: usize = 1536;
const HEADS: usize = 9;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 30;

/// A small deterministic generator (xorshift), so every build times the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `rows` Q4_1 rows of `cols` values: scale 0.01, minimum −0.08, random nibbles.
fn q4_1_rows(rng: &mut Rng, rows: usize, cols: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(rows * cols / 32 * 20);
    for _ in 0..rows * cols / 32 {
        w.extend_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        w.extend_from_slice(&half::f16::from_f32(-0.08).to_le_bytes());
        w.extend((0..16).map(|_| rng.next() as u8));
    }
    w
}

/// Seconds per call of `f`, the best of a few runs after a warm-up.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let isa = Isa::detect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    println!("kernels: {}", isa.name());

    let mut total = 0.0;
    let mut decode = 0.0;
    for (name, rows, cols, per_layer) in [
        ("q/o", HIDDEN, HIDDEN, 2),
        ("k/v", HIDDEN / 3, HIDDEN, 2),
        ("gate/up", FFN, HIDDEN, 2),
        ("down", HIDDEN, FFN, 1),
    ] {
        let w = q4_1_rows(&mut rng, rows, cols);
        let acts: Vec<Vec<Q16Act>> = (0..TOKENS)
            .map(|_| {
                let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
                let mut a = vec![Q16Act::default(); cols / 32];
                isa.quantize_row(&x, &mut a);
                a
            })
            .collect();
        let x: Vec<&[Q16Act]> = acts.iter().map(|a| a.as_slice()).collect();
        let mut out = vec![0f32; rows * TOKENS];
        let rb = QuantFormat::Q4_1.row_bytes(cols);
        let s = time(|| isa.gemm_q(QuantFormat::Q4_1, &w, rb, &x, &mut out));
        let gmac = (rows * cols * TOKENS) as f64 / s / 1e9;
        let one = time(|| isa.gemm_q(QuantFormat::Q4_1, &w, rb, &x[..1], &mut out));
        println!(
            "gemm {name:8} {rows:5} × {cols:5} × {TOKENS} tokens: {:8.3} ms, {gmac:6.2} GMAC/s; \
             one token {:7.1} µs, {:6.2} GMAC/s",
            s * 1e3,
            one * 1e6,
            (rows * cols) as f64 / one / 1e9
        );
        total += s * per_layer as f64;
        decode += one * per_layer as f64;
    }

    // The tied embedding as the lm_head, Q8_0 (SmolLM2's GGUF), one token.
    {
        let rows = 49152;
        let mut w = Vec::with_capacity(rows * HIDDEN / 32 * 34);
        for _ in 0..rows * HIDDEN / 32 {
            w.extend_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            w.extend((0..32).map(|_| rng.next() as u8));
        }
        let x: Vec<f32> = (0..HIDDEN).map(|_| rng.f32()).collect();
        let mut a = vec![Q16Act::default(); HIDDEN / 32];
        isa.quantize_row(&x, &mut a);
        let mut out = vec![0f32; rows];
        let rb = QuantFormat::Q8_0.row_bytes(HIDDEN);
        let one = time(|| isa.gemm_q(QuantFormat::Q8_0, &w, rb, &[a.as_slice()], &mut out));
        println!(
            "lm_head Q8_0 {rows} × {HIDDEN}, one token: {:.2} ms",
            one * 1e3
        );
    }

    // One layer's causal attention over the prompt: every head, every token.
    let q: Vec<f32> = (0..TOKENS * HEADS * HEAD_DIM).map(|_| rng.f32()).collect();
    let k: Vec<f32> = (0..TOKENS * HEAD_DIM).map(|_| rng.f32()).collect();
    let v: Vec<f32> = (0..TOKENS * HEAD_DIM).map(|_| rng.f32()).collect();
    let mut scores = Vec::new();
    let mut out = vec![0f32; HEAD_DIM];
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let s = time(|| {
        for t in 0..TOKENS {
            for h in 0..HEADS {
                let qh = &q[(t * HEADS + h) * HEAD_DIM..][..HEAD_DIM];
                let n = (t + 1) * HEAD_DIM;
                isa.attend(qh, &k[..n], &v[..n], scale, &mut scores, &mut out);
            }
        }
    });
    println!(
        "attention {HEADS} heads × {TOKENS} tokens (causal): {:8.3} ms",
        s * 1e3
    );
    let one = time(|| {
        for h in 0..HEADS {
            let qh = &q[h * HEAD_DIM..][..HEAD_DIM];
            isa.attend(qh, &k, &v, scale, &mut scores, &mut out);
        }
    });
    println!(
        "attention of one token over {TOKENS} positions: {:.1} µs",
        one * 1e6
    );
    total += s;
    println!(
        "one layer {:.2} ms; {LAYERS} layers {:.0} ms, {:.1} prompt tok/s on one thread",
        total * 1e3,
        total * LAYERS as f64 * 1e3,
        TOKENS as f64 / (total * LAYERS as f64)
    );
    println!(
        "one token through the {LAYERS} layers' projections: {:.2} ms",
        decode * LAYERS as f64 * 1e3
    );
}
