//! The traced graphs, evaluated by a plain reference evaluator, against the CPU backend:
//! every tiny fixture (each architecture, rope kind and weight format), prompt through the
//! prefill graph (a padded chunk included) and then decode steps.

mod common;

use akari_core::model::{LanguageModel, Model};
use akari_cpu::{Activations, CpuBackend};
use akari_webnn::{prepare, Support};
use common::Runner;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/tiny/{name}/model.gguf"))
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let (lo, hi) = b
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    let range = hi - lo;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / range
}

fn check(name: &str, support: Support, tol: f32) {
    let src = akari_formats::open(&fixture(name)).unwrap();
    let ctx = 48;
    let cpu = CpuBackend::new(Some(1), Activations::Int16).unwrap();
    let mut reference = Model::load(cpu, src.config.clone(), src.weights.clone(), ctx).unwrap();
    let mut run = Runner::new(prepare(src.config.clone(), src.weights, ctx, support).unwrap());
    let vocab = src.config.vocab_size as u32;
    // 35 tokens: two full prefill chunks and a padded one of three; then decode steps that
    // cross phi3's longrope switch at 32.
    let prompt: Vec<u32> = (0..35).map(|i| (i * 37 + 11) % vocab).collect();
    let (a, b) = (run.forward(&prompt), reference.forward(&prompt).unwrap());
    let err = max_rel(&a, &b);
    assert!(
        err <= tol,
        "{name}: prompt logits differ by {err} of the range"
    );
    let mut token = 5;
    for step in 0..4 {
        let (a, b) = (run.forward(&[token]), reference.forward(&[token]).unwrap());
        let err = max_rel(&a, &b);
        assert!(
            err <= tol,
            "{name}: step {step} logits differ by {err} of the range"
        );
        token = (token * 31 + 7) % vocab;
    }
}

#[test]
fn every_tiny_fixture_matches_the_cpu() {
    for name in [
        "llama-f32",
        "llama-f16",
        "llama-q8_0",
        "llama-q4_0",
        "llama-q4_1",
        "llama3rope-f32",
        "qwen2-q8_0",
        "phi3-f32",
        "phi3-q4_0",
    ] {
        check(name, Support::FULL, 1e-4);
    }
}

#[test]
fn dequantised_at_load_matches_too() {
    let none = Support {
        dequantize_int8: false,
        dequantize_uint4: false,
        float16: false,
    };
    check("llama-q4_1", none, 1e-4);
    let fp16 = Support {
        float16: true,
        ..none
    };
    check("llama-q8_0", fp16, 2e-2);
}
