//! Hugging Face model directories (config.json, safetensors, tokenizer files), made by
//! `scripts/make_fixtures.py --hf` from the same weights as the tiny GGUF fixtures:
//! `akari logits` matches the transformers references, `generate` and `info` work, and
//! damaged directories give clear errors.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The reference for a `fixtures/tiny-hf` directory: its own (f16, bf16) or, for f32, the
/// f32 GGUF's (same weights).
fn reference(dir: &Path) -> Value {
    let own = dir.join("reference.json");
    let path = if own.exists() {
        own
    } else {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("dir name");
        fixture(&format!("tiny/{name}-f32/reference.json"))
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference.json is JSON")
}

/// Worst |error| / logit range over a case's steps, and whether every argmax matches.
fn compare(model: &Path, case: &Value, extra: &[&str]) -> (f32, bool) {
    let c = compare_logits(model, case, extra);
    (c.worst_rel_err, c.argmax_ok)
}

fn hf_dirs() -> Vec<PathBuf> {
    let root = fixture("tiny-hf");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs.len(),
        6,
        "expected the tiny-hf fixtures in {}",
        root.display()
    );
    dirs
}

#[test]
fn hf_directories_match_reference_logits() {
    let mut failures = Vec::new();
    for dir in hf_dirs() {
        let reference = reference(&dir);
        for case in reference["cases"].as_array().expect("cases") {
            let (err, argmax_ok) = compare(&dir, case, &[]);
            let name = format!(
                "{}/{}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                case["name"].as_str().unwrap_or("?")
            );
            eprintln!("{name}: worst error {:.2e} of the logit range", err);
            if err > 1e-3 || !argmax_ok {
                failures.push(format!("{name}: error {err:.2e}, argmax ok: {argmax_ok}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn dtype_conversion_applies_to_safetensors() {
    // F16 weights converted to Q8_0 and to F32 on load; llama's top logit leads by ~30% of
    // the range, so quantisation keeps every argmax.
    let dir = fixture("tiny-hf/llama-f16");
    let reference = reference(&dir);
    for dtype in ["q8", "fp32"] {
        for case in reference["cases"].as_array().expect("cases") {
            let (err, argmax_ok) = compare(&dir, case, &["--dtype", dtype]);
            assert!(argmax_ok, "--dtype {dtype}: argmax differs");
            let limit = if dtype == "fp32" { 1e-3 } else { 2e-2 };
            assert!(err < limit, "--dtype {dtype}: error {err}");
        }
    }
    let info = akari(&[
        "info",
        dir.to_str().expect("utf-8"),
        "--json",
        "--dtype",
        "q8",
    ])
    .json();
    let weights: Vec<&str> = info["weights"]
        .as_array()
        .expect("weights")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(weights.iter().all(|w| w.starts_with("Q8_0")), "{weights:?}");
}

#[test]
fn generate_uses_the_tokenizer_files() {
    let gguf = akari(&[
        "generate",
        fixture("tiny/llama-f32/model.gguf")
            .to_str()
            .expect("utf-8"),
        "--prompt",
        "hi",
        "--max-tokens",
        "4",
        "--json",
    ])
    .json();
    // llama: template in tokenizer_config.json; llama3rope: chat_template.jinja;
    // qwen2: a list of named templates.
    for name in ["llama", "llama3rope", "qwen2", "phi3", "llama-bf16"] {
        let dir = fixture(&format!("tiny-hf/{name}"));
        let out = akari(&[
            "generate",
            dir.to_str().expect("utf-8"),
            "--prompt",
            "hi",
            "--max-tokens",
            "4",
            "--json",
        ])
        .json();
        assert_eq!(
            out["prompt_tokens"], gguf["prompt_tokens"],
            "{name}: the ChatML prompt"
        );
        let n = out["tokens"].as_array().expect("tokens").len();
        assert!((1..=4).contains(&n), "{name}: {n} tokens");
        assert!(out["text"].is_string());
    }
}

#[test]
fn info_reports_hf_settings() {
    let info = |name: &str| {
        akari(&[
            "info",
            fixture(&format!("tiny-hf/{name}")).to_str().expect("utf-8"),
            "--json",
        ])
        .json()
    };
    let llama = info("llama");
    assert_eq!(llama["architecture"], "llama");
    assert_eq!(llama["tied_embeddings"], true);
    assert_eq!(llama["file_type"], "F32");
    assert_eq!(llama["name"], "llama");
    assert_eq!(llama["stop_ids"], serde_json::json!([319]));

    let rope = info("llama3rope");
    assert_eq!(rope["tied_embeddings"], false);
    assert!(
        rope["rope_scaling"]
            .as_str()
            .unwrap_or("")
            .starts_with("Llama3"),
        "{}",
        rope["rope_scaling"]
    );

    let phi3 = info("phi3");
    assert_eq!(phi3["architecture"], "phi3");
    assert!(
        phi3["rope_scaling"]
            .as_str()
            .unwrap_or("")
            .starts_with("LongRope"),
        "{}",
        phi3["rope_scaling"]
    );

    // generation_config.json's eos_token_id list: both ids stop.
    let qwen2 = info("qwen2");
    assert_eq!(qwen2["stop_ids"], serde_json::json!([317, 319]));

    assert_eq!(info("llama-f16")["file_type"], "F16");
    assert_eq!(info("llama-bf16")["file_type"], "BF16");

    let text = akari(&["info", fixture("tiny-hf/qwen2").to_str().expect("utf-8")]);
    assert!(text.ok, "{}", text.stderr);
    assert!(text.stdout.contains("qwen2"), "{}", text.stdout);
}

/// A scratch copy of a fixture directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(fixture_dir: &str, tag: &str) -> Scratch {
        let dst = std::env::temp_dir().join(format!("akari-hf-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).expect("scratch dir");
        if !fixture_dir.is_empty() {
            for e in std::fs::read_dir(fixture(fixture_dir)).expect("fixture dir") {
                let p = e.expect("entry").path();
                std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy");
            }
        }
        Scratch(dst)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `akari info` and returns its error output; it must fail.
fn info_error(dir: &str) -> String {
    let run = akari(&["info", dir]);
    assert!(!run.ok, "akari info {dir} succeeded:\n{}", run.stdout);
    run.stderr
}

/// A safetensors file without `drop`, offsets recomputed.
fn without_tensor(bytes: &[u8], drop: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header JSON");
    let data = &bytes[8 + n..];
    let mut entries: Vec<(String, Value)> = header
        .into_iter()
        .filter(|(k, _)| k != drop && k != "__metadata__")
        .collect();
    entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64());
    let mut out_header = serde_json::Map::new();
    let mut out_data = Vec::new();
    for (k, mut v) in entries {
        let (s, e) = (
            v["data_offsets"][0].as_u64().expect("offset") as usize,
            v["data_offsets"][1].as_u64().expect("offset") as usize,
        );
        let start = out_data.len();
        out_data.extend_from_slice(&data[s..e]);
        v["data_offsets"] = serde_json::json!([start, out_data.len()]);
        out_header.insert(k, v);
    }
    let text = Value::Object(out_header).to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&out_data);
    out
}

#[test]
fn bad_directories_give_clear_errors() {
    // No config.json at all.
    let empty = Scratch::copy_of("", "empty");
    let err = info_error(empty.path());
    assert!(err.contains("config.json"), "{err}");

    // An architecture akari does not run.
    let mamba = Scratch::copy_of("tiny-hf/llama", "mamba");
    let cfg = std::fs::read_to_string(mamba.file("config.json")).expect("config");
    std::fs::write(
        mamba.file("config.json"),
        cfg.replace("\"model_type\": \"llama\"", "\"model_type\": \"mamba\""),
    )
    .expect("write");
    let err = info_error(mamba.path());
    assert!(
        err.contains("mamba") && err.contains("architecture"),
        "{err}"
    );

    // A truncated weights file.
    let cut = Scratch::copy_of("tiny-hf/llama", "truncated");
    let bytes = std::fs::read(cut.file("model.safetensors")).expect("weights");
    std::fs::write(cut.file("model.safetensors"), &bytes[..bytes.len() / 2]).expect("write");
    let err = info_error(cut.path());
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    // Cut inside the header too.
    std::fs::write(cut.file("model.safetensors"), &bytes[..100]).expect("write");
    let err = info_error(cut.path());
    assert!(err.contains("truncated"), "{err}");

    // A tensor left out.
    let missing = Scratch::copy_of("tiny-hf/llama", "missing");
    let name = "model.layers.1.mlp.down_proj.weight";
    std::fs::write(
        missing.file("model.safetensors"),
        without_tensor(&bytes, name),
    )
    .expect("write");
    let err = info_error(missing.path());
    assert!(err.contains(name) && err.contains("missing"), "{err}");

    // Phi-3: the fused projection is named.
    let phi3 = Scratch::copy_of("tiny-hf/phi3", "phi3-missing");
    let bytes = std::fs::read(phi3.file("model.safetensors")).expect("weights");
    let name = "model.layers.0.self_attn.qkv_proj.weight";
    std::fs::write(phi3.file("model.safetensors"), without_tensor(&bytes, name)).expect("write");
    let err = info_error(phi3.path());
    assert!(err.contains(name), "{err}");

    // A shape the config does not imply.
    let shape = Scratch::copy_of("tiny-hf/llama", "shape");
    let cfg = std::fs::read_to_string(shape.file("config.json")).expect("config");
    std::fs::write(
        shape.file("config.json"),
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .expect("write");
    let err = info_error(shape.path());
    assert!(err.contains("shape") && err.contains("mlp"), "{err}");

    // A missing shard of a sharded model.
    let shards = Scratch::copy_of("tiny-hf/llama-f16", "shard");
    std::fs::remove_file(shards.file("model-00002-of-00002.safetensors")).expect("rm");
    let err = info_error(shards.path());
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");

    // No weights, no tokenizer.
    let no_weights = Scratch::copy_of("tiny-hf/llama", "noweights");
    std::fs::remove_file(no_weights.file("model.safetensors")).expect("rm");
    let err = info_error(no_weights.path());
    assert!(err.contains("no weights"), "{err}");
    let no_tok = Scratch::copy_of("tiny-hf/llama", "notok");
    std::fs::remove_file(no_tok.file("tokenizer.json")).expect("rm");
    let err = info_error(no_tok.path());
    assert!(err.contains("tokenizer"), "{err}");

    // The weights file instead of its directory.
    let file = fixture("tiny-hf/llama/model.safetensors");
    let err = info_error(file.to_str().expect("utf-8"));
    assert!(err.contains("directory"), "{err}");
}
