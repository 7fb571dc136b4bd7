//! `--device gpu` end to end, on whatever adapter wgpu finds (Mesa's lavapipe in CI, which
//! `scripts/test.sh` installs). Without an adapter these tests fail with wgpu's reason: they
//! never pass by skipping.
//!
//! The GPU runs f32 activations on the weights as stored, so every weight type that runs
//! natively (F32, F16, Q8_0, Q4_0, Q4_1) must reproduce the transformers reference (computed
//! on the same dequantised weights) to f32 rounding.

mod common;
use common::*;
use serde_json::Value;

/// Weight types the GPU runs as stored; the others are converted at load (K-quants, Q5 and
/// BF16) and are checked with `--dtype fp32`, which dequantises them exactly.
const NATIVE: &[&str] = &["F32", "F16", "Q8_0", "Q4_0", "Q4_1"];

/// With the KV cache in f32 (`AKARI_GPU_KV_CACHE=f32`). Observed: at most 3e-6 of the logit
/// range on lavapipe.
const TOLERANCE: f32 = 1e-4;

/// With the default f16 KV cache: keys and values rounded to f16 once (2^-11 of each) move
/// the logits by up to 3.5e-4 of their range on these fixtures.
const KV_F16_TOLERANCE: f32 = 1e-3;

/// The f32 cache, for the cases held to [`TOLERANCE`].
const KV_F32: (&str, &str) = ("AKARI_GPU_KV_CACHE", "f32");

/// The fixtures every run must include (more are checked when present).
const REQUIRED: &[&str] = &[
    "llama-f32",
    "llama-f16",
    "llama-q4_0",
    "llama-q4_1",
    "llama-q8_0",
    "qwen2-q8_0",
    "phi3-f32",
    "llama3rope-f32",
];

#[test]
fn gpu_backend_names_the_adapter() {
    let model = fixture("tiny/llama-f32/model.gguf");
    let run = akari(&[
        "info",
        model.to_str().expect("utf-8 path"),
        "--device",
        "gpu",
        "--json",
    ]);
    let info = run.json();
    let backend = info["backend"].as_str().expect("backend").to_string();
    eprintln!("backend: {backend}");
    assert!(
        backend.starts_with("gpu (") && backend.len() > "gpu ()".len(),
        "backend {backend:?} does not name the adapter"
    );
}

#[test]
fn tiny_models_on_the_gpu_match_reference_logits() {
    let dirs = tiny_fixture_dirs();
    for name in REQUIRED {
        assert!(
            dirs.iter().any(|d| d.ends_with(name)),
            "fixture tiny/{name} is missing"
        );
    }
    let mut failures = Vec::new();
    for dir in &dirs {
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        let reference: Value = serde_json::from_str(&text).expect("valid reference.json");
        let wt = reference["weight_type"]
            .as_str()
            .expect("weight_type")
            .to_uppercase();
        let dtype = if NATIVE.contains(&wt.as_str()) {
            "auto"
        } else {
            "fp32"
        };
        let model = dir.join("model.gguf");
        let dir_name = dir.file_name().unwrap_or_default().to_string_lossy();
        // Both one-token GEMV paths (software adapters default to the general kernel) with
        // an exact f32 cache, and the default, f16 cache.
        for (case, kernels, cache) in reference["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .flat_map(|c| [(c, "0", "f32"), (c, "1", "f32"), (c, "0", "f16")])
        {
            let name = format!(
                "{dir_name}/{} --dtype {dtype} (decode kernels {kernels}, {cache} cache)",
                case["name"].as_str().unwrap_or("?")
            );
            let limit = if cache == "f32" {
                TOLERANCE
            } else {
                KV_F16_TOLERANCE
            };
            let LogitComparison {
                worst_rel_err: err,
                argmax_ok,
                detail,
            } = compare_logits_env(
                &model,
                case,
                &["--device", "gpu", "--dtype", dtype],
                &[
                    ("AKARI_GPU_DECODE_KERNELS", kernels),
                    ("AKARI_GPU_KV_CACHE", cache),
                ],
            );
            eprintln!(
                "{name:<44} max err {err:.2e} of range, argmax {}",
                if argmax_ok { "same" } else { "DIFFERENT" }
            );
            if err > limit || !argmax_ok {
                failures.push(format!(
                    "{name}: max error {err:.2e} of range (limit {limit:.0e}){detail}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// The real SmolLM2 in f32 on both devices: greedy decoding must pick the same 32 tokens,
/// with each step recorded ahead of the previous one's read (on GPUs by default, forced here
/// on the software adapter) and without.
#[test]
fn smollm2_greedy_tokens_on_the_gpu_equal_the_cpu() {
    let prompt = "Write a short poem about the ocean.";
    let cpu = smollm2_tokens("cpu", prompt, 32, &[]);
    assert_eq!(cpu.len(), 32, "the CPU reply should run to 32 tokens");
    for ahead in ["1", "0"] {
        let gpu = smollm2_tokens_env("gpu", prompt, 32, &[], &[("AKARI_GPU_RUN_AHEAD", ahead)]);
        let same = cpu.iter().zip(&gpu).take_while(|(a, b)| a == b).count();
        assert_eq!(
            gpu, cpu,
            "GPU (running ahead: {ahead}) and CPU tokens part ways after {same}"
        );
    }
}

/// SmolLM2's tokens on `device` for `prompt`, with extra sampling flags.
fn smollm2_tokens(device: &str, prompt: &str, tokens: usize, flags: &[&str]) -> Vec<u32> {
    smollm2_tokens_env(device, prompt, tokens, flags, &[])
}

/// [`smollm2_tokens`] with extra environment variables.
fn smollm2_tokens_env(
    device: &str,
    prompt: &str,
    tokens: usize,
    flags: &[&str],
    envs: &[(&str, &str)],
) -> Vec<u32> {
    let model = smollm2();
    let max = tokens.to_string();
    let mut args = vec![
        "generate",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        prompt,
        "--dtype",
        "fp32",
        "--device",
        device,
        "--max-tokens",
        &max,
        "--json",
    ];
    args.extend_from_slice(flags);
    let out = akari_env(&args, envs).json();
    eprintln!("{device} {flags:?}: {:?}", out["text"]);
    ids(&out["tokens"])
}

/// The GPU selects candidates on the device and the sampler finishes on the host: with a
/// seed and top-k 20 (the whole candidate set read back) the tokens are the CPU's, which
/// selects from the full row.
#[test]
fn smollm2_seeded_sampling_on_the_gpu_equals_the_cpu() {
    let prompt = "Tell me a story about a cat.";
    let flags = [
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.95",
        "--seed",
        "42",
    ];
    let cpu = smollm2_tokens("cpu", prompt, 24, &flags);
    let gpu = smollm2_tokens("gpu", prompt, 24, &flags);
    assert_eq!(cpu.len(), 24, "the CPU reply should run to 24 tokens");
    let greedy = smollm2_tokens("cpu", prompt, 24, &[]);
    assert_ne!(
        cpu, greedy,
        "sampling at temperature 0.9 should leave the greedy path"
    );
    let same = cpu.iter().zip(&gpu).take_while(|(a, b)| a == b).count();
    assert_eq!(gpu, cpu, "GPU and CPU tokens part ways after {same}");
}

/// Greedy with penalties: the penalised tokens are set aside on the device, penalised on the
/// host and merged back, so the pick is the CPU's token for token.
#[test]
fn smollm2_penalised_greedy_on_the_gpu_equals_the_cpu() {
    let prompt = "List the days of the week, again and again.";
    let flags = ["--repeat-penalty", "1.3", "--frequency-penalty", "0.2"];
    let cpu = smollm2_tokens("cpu", prompt, 32, &flags);
    let gpu = smollm2_tokens("gpu", prompt, 32, &flags);
    let plain = smollm2_tokens("cpu", prompt, 32, &[]);
    assert_eq!(cpu.len(), 32, "the CPU reply should run to 32 tokens");
    assert_ne!(cpu, plain, "the penalties should change the reply");
    let same = cpu.iter().zip(&gpu).take_while(|(a, b)| a == b).count();
    assert_eq!(gpu, cpu, "GPU and CPU tokens part ways after {same}");
}

/// Bad input on the GPU is an error, not a panic.
#[test]
fn gpu_rejects_out_of_vocabulary_tokens() {
    let model = fixture("tiny/llama-f32/model.gguf");
    let run = akari(&[
        "logits",
        model.to_str().expect("utf-8 path"),
        "--device",
        "gpu",
        "--tokens",
        "1,99999999",
    ]);
    assert!(!run.ok, "an out-of-vocabulary token must fail");
    assert!(run.stderr.contains("99999999"), "{}", run.stderr);
}

/// A cache longer than one attention tile: decode splits it across workgroups and merges
/// the partial softmaxes (flash-decoding), in the o projection's GEMV where its one-token
/// kernel can (quantised and f16 weights) and in a pass of its own where not, or, below
/// `AKARI_GPU_ATTENTION_ONE_CHUNK` positions, one workgroup a head walks all its tiles.
/// Every way, logits after a 300-token prompt and each of 6 greedy steps must match the
/// CPU backend's.
#[test]
fn long_context_decode_on_the_gpu_matches_the_cpu() {
    let prompt: Vec<String> = (0..300u32)
        .map(|i| ((i * 37 + 11) % 200).to_string())
        .collect();
    let prompt = prompt.join(",");
    let run = |model: &str, device: &str, envs: &[(&str, &str)]| {
        let model = fixture(&format!("tiny/{model}/model.gguf"));
        let out = akari_env(
            &[
                "logits",
                model.to_str().expect("utf-8 path"),
                "--tokens",
                &prompt,
                "--steps",
                "6",
                "--context",
                "512",
                "--device",
                device,
            ],
            envs,
        )
        .json();
        out["steps"]
            .as_array()
            .expect("steps in output")
            .iter()
            .map(|s| floats(&s["logits"]))
            .collect::<Vec<_>>()
    };
    // Software adapters default to the general GEMV, which merges in a pass of its own.
    // The 300-token prompt takes the tiled GEMM and the prompt attention: both kinds each.
    // F16 rows on the decode kernels hold the norm's weight folded into their columns, each
    // product rounded to f16 once more (at most one f16 step, 2^-10 of a weight): observed
    // 3e-4 of the range. Also run: the flags read from the uniform, and two query heads a
    // workgroup in the decode attention (the fixture has two per key/value head), and the
    // kernels written for adapters without subgroups (lavapipe has them). The cache
    // is f32 unless a case asks for the default f16 one (the split decode attention, and
    // the GPU's prompt attention with the decode kernels).
    let folded = 1e-3;
    let f16_cache = ("AKARI_GPU_KV_CACHE", "f16");
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], f32);
    let cases: [Case; 13] = [
        (
            "llama-f32",
            &[("AKARI_GPU_ATTENTION_ONE_CHUNK", "0"), f16_cache],
            KV_F16_TOLERANCE,
        ),
        (
            "llama-q4_0",
            &[
                ("AKARI_GPU_DECODE_KERNELS", "1"),
                ("AKARI_GPU_SOFT_ATTENTION", "0"),
                f16_cache,
            ],
            KV_F16_TOLERANCE,
        ),
        (
            "llama-f32",
            &[("AKARI_GPU_ATTENTION_ONE_CHUNK", "0")],
            TOLERANCE,
        ),
        (
            "llama-f32",
            &[("AKARI_GPU_ATTENTION_ONE_CHUNK", "512")],
            TOLERANCE,
        ),
        ("llama-f32", &[("AKARI_GPU_DECODE_KERNELS", "1")], TOLERANCE),
        (
            "llama-q4_0",
            &[("AKARI_GPU_DECODE_KERNELS", "1")],
            TOLERANCE,
        ),
        ("llama-f16", &[("AKARI_GPU_DECODE_KERNELS", "1")], folded),
        (
            "llama-f16",
            &[
                ("AKARI_GPU_DECODE_KERNELS", "1"),
                ("AKARI_GPU_FOLD_NORM", "0"),
            ],
            TOLERANCE,
        ),
        (
            "llama-f16",
            &[
                ("AKARI_GPU_DECODE_KERNELS", "1"),
                ("AKARI_GPU_FLAG_CONSTANTS", "0"),
            ],
            folded,
        ),
        (
            "llama-q4_0",
            &[
                ("AKARI_GPU_DECODE_KERNELS", "1"),
                ("AKARI_GPU_ATTENTION_G", "2"),
            ],
            TOLERANCE,
        ),
        ("llama-q4_0", &[("AKARI_GPU_SOFT_GEMM", "0")], TOLERANCE),
        (
            "llama-q4_0",
            &[
                ("AKARI_GPU_DECODE_KERNELS", "1"),
                ("AKARI_GPU_SUBGROUPS", "0"),
                f16_cache,
            ],
            KV_F16_TOLERANCE,
        ),
        (
            "llama-q4_0",
            &[("AKARI_GPU_SOFT_ATTENTION", "0")],
            TOLERANCE,
        ),
    ];
    let mut failures = Vec::new();
    for (model, envs, tolerance) in cases {
        let mut envs = envs.to_vec();
        if !envs.iter().any(|(k, _)| *k == KV_F32.0) {
            envs.push(KV_F32);
        }
        let cpu = run(model, "cpu", &[]);
        let gpu = run(model, "gpu", &envs);
        assert_eq!(cpu.len(), 7, "{model}: a prompt and 6 steps");
        assert_eq!(
            gpu.len(),
            cpu.len(),
            "{model} {envs:?}: a prompt and 6 steps"
        );
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let range = c.iter().cloned().fold(f32::MIN, f32::max)
                - c.iter().cloned().fold(f32::MAX, f32::min);
            let err = c
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            eprintln!(
                "{model} {envs:?}, step {i}: max error {:.2e} of range",
                err / range
            );
            if err > tolerance * range {
                failures.push(format!(
                    "{model} {envs:?}, step {i}: GPU logits differ from the CPU's by {err} \
                     (range {range})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// Weights split across buffers (as a browser's 128 MiB binding limit needs for large
/// embeddings; forced here by lowering the split size) give exactly the logits of the
/// unsplit run: SmolLM2 in f32 with every matrix split (the embedding into 110 parts), and
/// as stored (Q4_1) with the decode kernels, after a prompt and three greedy steps.
#[test]
fn split_weights_on_the_gpu_give_the_same_logits() {
    let model = smollm2();
    let run = |dtype: &str, envs: &[(&str, &str)]| {
        let out = akari_env(
            &[
                "logits",
                model.to_str().expect("utf-8 path"),
                "--tokens",
                "1,504,3255,314,4194,30,216,17,23,9",
                "--steps",
                "3",
                "--context",
                "64",
                "--dtype",
                dtype,
                "--device",
                "gpu",
            ],
            envs,
        );
        assert!(out.ok, "akari logits failed: {}", out.stderr);
        out.json()["steps"]
            .as_array()
            .expect("steps in output")
            .iter()
            .map(|s| floats(&s["logits"]))
            .collect::<Vec<_>>()
    };
    for (dtype, limit, kernels) in [("fp32", "1048576", "0"), ("auto", "4194304", "1")] {
        let whole = run(dtype, &[("AKARI_GPU_DECODE_KERNELS", kernels)]);
        let split = run(
            dtype,
            &[
                ("AKARI_GPU_DECODE_KERNELS", kernels),
                ("AKARI_GPU_MATRIX_BINDING_LIMIT", limit),
            ],
        );
        assert_eq!(whole.len(), 4);
        for (i, (w, s)) in whole.iter().zip(&split).enumerate() {
            assert_eq!(w.len(), 49152);
            let bad = w.iter().zip(s).position(|(a, b)| a != b);
            assert!(
                bad.is_none() && w.len() == s.len(),
                "{dtype}, step {i}: split logits differ first at {bad:?}"
            );
        }
    }
}
