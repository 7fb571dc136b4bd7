//! Tiny random llama / qwen2 / phi3 models in every GGUF weight type (made by
//! scripts/make_fixtures.py): `akari logits` must match the reference logits from
//! transformers, computed on the same dequantised weights.

mod common;
use common::*;
use serde_json::Value;

struct Outcome {
    name: String,
    worst_rel_err: f32,
    argmax_ok: bool,
}

#[test]
fn tiny_models_match_reference_logits() {
    let dirs = tiny_fixture_dirs();
    let root = fixture("tiny");
    assert!(
        dirs.len() >= 10,
        "expected the tiny fixtures in {}",
        root.display()
    );
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for dir in &dirs {
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        let reference: Value = serde_json::from_str(&text).expect("valid reference.json");
        let wt = reference["weight_type"]
            .as_str()
            .expect("weight_type")
            .to_uppercase();
        let model = dir.join("model.gguf");
        // Float weights run in f32 like the reference; quantised ones meet int8 activations.
        let exact_weights = matches!(wt.as_str(), "F32" | "F16" | "BF16");
        let mut passes = vec![("auto", if exact_weights { 1e-3 } else { 3e-2 })];
        // Dequantised straight to f32 at load, every weight type must reproduce the
        // reference to f32 rounding: this checks each dequantiser exactly.
        if !exact_weights {
            passes.push(("fp32", 1e-3));
        }
        for case in reference["cases"].as_array().expect("cases") {
            for (dtype, tol) in &passes {
                let name = format!(
                    "{}/{} --dtype {dtype}",
                    dir.file_name().unwrap_or_default().to_string_lossy(),
                    case["name"].as_str().unwrap_or("?")
                );
                let LogitComparison {
                    worst_rel_err: err,
                    argmax_ok,
                    detail,
                } = compare_logits(&model, case, &["--dtype", dtype]);
                if err > *tol || !argmax_ok {
                    failures.push(format!(
                        "{name}: max error {err:.2e} of range (limit {tol:.0e}){detail}"
                    ));
                }
                outcomes.push(Outcome {
                    name,
                    worst_rel_err: err,
                    argmax_ok,
                });
            }
        }
    }
    for o in &outcomes {
        eprintln!(
            "{:<44} max err {:.2e} of range, argmax {}",
            o.name,
            o.worst_rel_err,
            if o.argmax_ok { "same" } else { "DIFFERENT" }
        );
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
