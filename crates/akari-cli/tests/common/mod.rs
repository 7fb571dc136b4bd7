//! Helpers for tests that run the `akari` binary.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        assert!(self.ok, "akari failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("akari printed no JSON ({e}): {}", self.stdout))
    }
}

pub fn akari(args: &[&str]) -> Run {
    akari_env(args, &[])
}

/// [`akari`] with extra environment variables.
pub fn akari_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_akari"))
        .args(args)
        .env("AKARI_LOG", "error")
        .envs(envs.iter().copied())
        .output()
        .expect("the akari binary runs");
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "akari {args:?} panicked:\n{}",
        run.stderr
    );
    run
}

/// The real SmolLM2-135M-Instruct GGUF: `$AKARI_MODEL`, else the default cache location.
/// `scripts/test.sh` fetches it before the tests run.
pub fn smollm2() -> PathBuf {
    if let Some(p) = std::env::var_os("AKARI_MODEL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("AKARI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/akari")
        });
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-smollm2.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The tiny GGUF fixtures (`fixtures/tiny/*` with a `reference.json`), sorted.
pub fn tiny_fixture_dirs() -> Vec<PathBuf> {
    let root = fixture("tiny");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.json").exists())
        .collect();
    dirs.sort();
    dirs
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// How `akari logits` compares with one reference case.
pub struct LogitComparison {
    /// Worst |error| over every step, as a fraction of that step's logit range.
    pub worst_rel_err: f32,
    pub argmax_ok: bool,
    /// The steps whose argmax differs, for the failure message.
    pub detail: String,
}

/// Runs `akari logits MODEL` on a reference case (`prompt_tokens`, `steps[]`) with `extra`
/// arguments and compares every step.
pub fn compare_logits(model: &std::path::Path, case: &Value, extra: &[&str]) -> LogitComparison {
    compare_logits_env(model, case, extra, &[])
}

/// [`compare_logits`] with extra environment variables for `akari`.
pub fn compare_logits_env(
    model: &std::path::Path,
    case: &Value,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> LogitComparison {
    let prompt: Vec<String> = ids(&case["prompt_tokens"])
        .iter()
        .map(|t| t.to_string())
        .collect();
    let steps = case["steps"].as_array().expect("steps");
    let n_steps = (steps.len() - 1).to_string();
    let prompt = prompt.join(",");
    let mut args = vec![
        "logits",
        model.to_str().expect("utf-8 path"),
        "--tokens",
        &prompt,
        "--steps",
        &n_steps,
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    let got = akari_env(&args, envs).json();
    let got = got["steps"].as_array().expect("steps in output");
    assert_eq!(got.len(), steps.len());
    let mut cmp = LogitComparison {
        worst_rel_err: 0.0,
        argmax_ok: true,
        detail: String::new(),
    };
    for (i, (g, r)) in got.iter().zip(steps).enumerate() {
        let (gl, rl) = (floats(&g["logits"]), floats(&r["logits"]));
        assert_eq!(gl.len(), rl.len(), "vocabulary size");
        let range = rl.iter().cloned().fold(f32::MIN, f32::max)
            - rl.iter().cloned().fold(f32::MAX, f32::min);
        let err = gl
            .iter()
            .zip(&rl)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / range;
        cmp.worst_rel_err = cmp.worst_rel_err.max(err);
        if g["argmax"] != r["argmax"] {
            cmp.argmax_ok = false;
            cmp.detail += &format!(
                " step {i}: argmax {} vs {} (margin {})",
                g["argmax"], r["argmax"], r["margin"]
            );
        }
    }
    cmp
}
