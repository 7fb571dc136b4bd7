//! Greedy decode on the GPU records each step before the previous one is read back, fed
//! the device's best token ([`Backend::runs_ahead`]). Whatever the next call turns out to
//! be (that token, another one, a truncated cache, a sampling selection, a logits read),
//! the candidates must be the CPU backend's: a step run ahead is used only when it stands
//! for what comes, and its cache entry is overwritten when it does not.
//!
//! Like the other GPU tests these need an adapter (lavapipe in CI) and fail without one.

use akari_core::backend::Backend;
use akari_core::model::{LanguageModel, Model};
use akari_core::sampler::{Candidates, Selection};
use akari_cpu::{Activations, CpuBackend};
use akari_gpu::GpuBackend;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/tiny/{name}/model.gguf"))
}

/// The GPU's candidates against the CPU's: the same ids, logits within `1e-3` of the
/// largest one's magnitude.
fn assert_same(what: &str, gpu: &Candidates, cpu: &Candidates) {
    let ids = |c: &Candidates| c.top.iter().map(|t| t.0).collect::<Vec<_>>();
    assert_eq!(ids(gpu), ids(cpu), "{what}: candidate ids");
    let scale = cpu.top.iter().map(|t| t.1.abs()).fold(1.0, f32::max);
    for (g, c) in gpu.top.iter().zip(&cpu.top) {
        assert!(
            (g.1 - c.1).abs() <= 1e-3 * scale,
            "{what}: token {} has logit {} on the GPU and {} on the CPU",
            c.0,
            g.1,
            c.1
        );
    }
}

fn check(name: &str) {
    let src = akari_formats::open(&fixture(name)).expect("fixture opens");
    let ctx = 64;
    let cpu = CpuBackend::new(Some(1), Activations::Int16).expect("CPU backend");
    let mut cpu =
        Model::load(cpu, src.config.clone(), src.weights.clone(), ctx).expect("CPU model");
    let mut gpu =
        GpuBackend::new().unwrap_or_else(|e| panic!("no GPU device for the GPU tests: {e}"));
    // Off by default on software adapters, such as the lavapipe CI runs on.
    gpu.set_run_ahead(true);
    assert!(gpu.runs_ahead(), "the GPU backend should run ahead");
    let mut gpu = Model::load(gpu, src.config.clone(), src.weights, ctx).expect("GPU model");
    let vocab = src.config.vocab_size as u32;
    let greedy = Selection {
        k: 1,
        penalised: vec![],
    };
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % vocab).collect();
    let step = |gpu: &mut Model<GpuBackend>,
                cpu: &mut Model<CpuBackend>,
                what: &str,
                tokens: &[u32],
                sel: &Selection| {
        let g = gpu.forward_select(tokens, sel).expect("GPU step");
        let c = cpu.forward_select(tokens, sel).expect("CPU step");
        assert_same(&format!("{name}, {what}"), &g, &c);
        assert_eq!(gpu.position(), cpu.position(), "{name}, {what}: position");
        g.top[0].0
    };
    let mut best = step(&mut gpu, &mut cpu, "prompt", &prompt, &greedy);
    assert!(
        gpu.has_step_ahead(),
        "{name}: a greedy prompt should leave a step ahead"
    );
    for i in 0..4 {
        best = step(
            &mut gpu,
            &mut cpu,
            &format!("greedy step {i}"),
            &[best],
            &greedy,
        );
    }
    // Another token than the one run ahead: that step is dropped and its cache entry
    // overwritten.
    let other = (best + 1) % vocab;
    best = step(&mut gpu, &mut cpu, "another token", &[other], &greedy);
    best = step(
        &mut gpu,
        &mut cpu,
        "greedy after another token",
        &[best],
        &greedy,
    );
    // Back into the cache: the step ahead is for a position that is gone.
    gpu.truncate(gpu.position() - 3);
    cpu.truncate(cpu.position() - 3);
    best = step(&mut gpu, &mut cpu, "after truncating", &[best], &greedy);
    // A sampling selection does not run ahead; greedy after it does again.
    let top4 = Selection {
        k: 4,
        penalised: vec![],
    };
    best = step(&mut gpu, &mut cpu, "top 4", &[best], &top4);
    assert!(
        !gpu.has_step_ahead(),
        "{name}: sampling should not run ahead"
    );
    best = step(&mut gpu, &mut cpu, "greedy after top 4", &[best], &greedy);
    // Logits read in full, then greedy on.
    let g = gpu.forward(&[best]).expect("GPU logits");
    let c = cpu.forward(&[best]).expect("CPU logits");
    let range =
        c.iter().fold(f32::MIN, |m, &x| m.max(x)) - c.iter().fold(f32::MAX, |m, &x| m.min(x));
    let err = g
        .iter()
        .zip(&c)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        err <= 1e-3 * range,
        "{name}: logits after run-ahead steps differ by {err}"
    );
    best = akari_core::sampler::argmax(&c);
    for i in 0..3 {
        best = step(
            &mut gpu,
            &mut cpu,
            &format!("greedy again {i}"),
            &[best],
            &greedy,
        );
    }
    assert!(
        gpu.has_step_ahead(),
        "{name}: greedy should run ahead again"
    );
}

#[test]
fn steps_run_ahead_give_the_cpu_candidates() {
    for name in ["llama-f32", "qwen2-q4_0", "phi3-q8_0"] {
        check(name);
    }
}
