//! Models fetched through the Hub layout load and compute exactly as the local files do.

mod common;

use akari_core::{Device, Dtype};
use akari_engine::{Engine, LoadOptions};
use akari_hub::RepoId;
use common::{fixtures, link, TestHub};
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn logits(path: &Path, dtype: Dtype) -> Vec<Vec<f32>> {
    let opts = LoadOptions {
        device: Device::Cpu,
        dtype,
        threads: Some(1),
        ..Default::default()
    };
    let mut engine = Engine::load(path, &opts, &mut |_| {}).unwrap();
    // The `short` prompt of the tiny references, then two greedy steps.
    engine
        .logits(&[274, 32, 113, 117, 105, 99, 107], 2)
        .unwrap()
}

#[test]
fn gguf_through_the_hub_equals_the_local_file() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let repo = "akari-fixtures/tiny-llama-GGUF";
    for (name, fixture) in [
        ("tiny-llama.Q4_0.gguf", "llama-q4_0"),
        ("tiny-llama.Q8_0.gguf", "llama-q8_0"),
        ("tiny-llama.F32.gguf", "llama-f32"),
    ] {
        let file = fixtures().join("tiny").join(fixture).join("model.gguf");
        link(&models, repo, name, &file);
    }
    let server = TestHub::start(&models);
    let hub = server.client(&tmp.path().join("cache"));
    let id = RepoId::parse(repo).unwrap();
    for (dtype, fixture) in [(Dtype::Auto, "llama-q4_0"), (Dtype::Q8, "llama-q8_0")] {
        let got = hub
            .fetch_model(
                &id,
                "main",
                dtype,
                None,
                &mut |_| {},
                &AtomicBool::new(false),
            )
            .unwrap();
        let local = fixtures().join("tiny").join(fixture).join("model.gguf");
        assert_eq!(
            std::fs::read(&got.path).unwrap(),
            std::fs::read(&local).unwrap()
        );
        let from_hub = logits(&got.path, got.dtype);
        assert_eq!(from_hub, logits(&local, Dtype::Auto), "{fixture}");
        assert_eq!(from_hub.len(), 3);
    }
}

#[test]
fn onnx_repository_through_the_hub_equals_the_local_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let repo = "akari-fixtures/tiny-llama-ONNX";
    // The whole fixture folder (every dtype's file, references) as one repository.
    std::fs::create_dir_all(models.join("akari-fixtures")).unwrap();
    std::os::unix::fs::symlink(
        fixtures().join("onnx/llama").canonicalize().unwrap(),
        models.join(repo),
    )
    .unwrap();
    let server = TestHub::start(&models);
    let hub = server.client(&tmp.path().join("cache"));
    let id = RepoId::parse(repo).unwrap();
    for (dtype, file) in [
        (Dtype::Q4, "onnx/model_q4.onnx"),
        (Dtype::Fp16, "onnx/model_fp16.onnx"),
    ] {
        let got = hub
            .fetch_model(
                &id,
                "main",
                dtype,
                None,
                &mut |_| {},
                &AtomicBool::new(false),
            )
            .unwrap();
        assert_eq!(
            got.files,
            [
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
                file
            ]
        );
        assert_eq!(got.path, got.dir);
        assert_eq!(
            logits(&got.path, got.dtype),
            logits(&fixtures().join("onnx/llama"), dtype),
            "{file}"
        );
    }
    // Only what was asked for came down.
    let cached: Vec<String> = akari_hub::cache::list(&tmp.path().join("cache")).unwrap()[0]
        .revisions[0]
        .files
        .iter()
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(
        cached,
        [
            "config.json",
            "generation_config.json",
            "onnx/model_fp16.onnx",
            "onnx/model_q4.onnx",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
}

#[test]
fn safetensors_repository_through_the_hub_equals_the_local_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let repo = "akari-fixtures/tiny-llama";
    std::fs::create_dir_all(models.join("akari-fixtures")).unwrap();
    std::os::unix::fs::symlink(
        fixtures().join("tiny-hf/llama").canonicalize().unwrap(),
        models.join(repo),
    )
    .unwrap();
    let server = TestHub::start(&models);
    let hub = server.client(&tmp.path().join("cache"));
    let got = hub
        .fetch_model(
            &RepoId::parse(repo).unwrap(),
            "main",
            Dtype::Q8,
            None,
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(
        got.files,
        [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "model.safetensors"
        ]
    );
    assert_eq!(got.dtype, Dtype::Q8);
    assert_eq!(
        logits(&got.path, got.dtype),
        logits(&fixtures().join("tiny-hf/llama"), Dtype::Q8)
    );
}
