//! Broken or unsupported input must end in a clear error, never a panic.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn base() -> Vec<u8> {
    std::fs::read(fixture("tiny/llama-f32/model.gguf")).expect("tiny llama fixture")
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("akari-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

fn info_error(path: &Path) -> String {
    let run = akari(&["info", path.to_str().expect("utf-8 path")]);
    assert!(!run.ok, "akari accepted {}", path.display());
    run.stderr
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern present")
}

#[test]
fn truncated_file() {
    let b = base();
    for cut in [3, 10, 40, b.len() / 4, b.len() / 2, b.len() - 1] {
        let err = info_error(&write_temp(&format!("cut{cut}.gguf"), &b[..cut]));
        assert!(
            err.contains("cut") && err.contains("gguf"),
            "error names the file: {err}"
        );
    }
}

#[test]
fn wrong_magic() {
    let mut b = base();
    b[..4].copy_from_slice(b"GGUX");
    let err = info_error(&write_temp("magic.gguf", &b));
    assert!(
        err.to_lowercase().contains("magic") || err.contains("not a GGUF"),
        "{err}"
    );
}

#[test]
fn tensor_data_past_the_end() {
    let b = base();
    // The header is intact; the last tensor's bytes are not all there.
    let err = info_error(&write_temp("short.gguf", &b[..b.len() - 64]));
    assert!(
        err.contains("past the end") || err.contains("beyond"),
        "{err}"
    );
}

#[test]
fn unknown_architecture() {
    let mut b = base();
    let key = b"general.architecture";
    let at = find(&b, key) + key.len() + 4 + 8;
    assert_eq!(&b[at..at + 5], b"llama");
    b[at..at + 5].copy_from_slice(b"mamba");
    let err = info_error(&write_temp("arch.gguf", &b));
    assert!(
        err.contains("mamba") && err.contains("architecture"),
        "{err}"
    );
}

#[test]
fn unsupported_weight_type() {
    // Rows of 256 values, so the IQ2_XXS block size fits and the type itself is refused.
    let mut b = std::fs::read(fixture("tiny/llamak-f32/model.gguf")).expect("tiny llamak fixture");
    let name = b"token_embd.weight";
    // name, n_dims (u32), two u64 dims, then the type id (u32).
    let at = find(&b, name) + name.len();
    let n_dims = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
    let ty = at + 4 + 8 * n_dims;
    b[ty..ty + 4].copy_from_slice(&16u32.to_le_bytes()); // IQ2_XXS
    let err = info_error(&write_temp("type.gguf", &b));
    assert!(
        err.contains("token_embd.weight") && err.contains("weight type"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_context() {
    let model = fixture("tiny/llama-f32/model.gguf");
    let prompt = "the quick brown fox jumps over the lazy dog ".repeat(20);
    let run = akari(&[
        "generate",
        model.to_str().expect("path"),
        "--prompt",
        &prompt,
        "--raw",
        "--context",
        "64",
    ]);
    assert!(!run.ok);
    assert!(run.stderr.contains("context"), "{}", run.stderr);
}

#[test]
fn missing_file_and_bad_flags() {
    let run = akari(&["info", "/nonexistent/model.gguf"]);
    assert!(
        !run.ok && run.stderr.contains("no such file"),
        "{}",
        run.stderr
    );
    let model = fixture("tiny/llama-f32/model.gguf");
    let run = akari(&["info", model.to_str().expect("path"), "--dtype", "q3"]);
    // clap rejects it and lists the dtypes.
    assert!(
        !run.ok
            && run.stderr.contains("invalid value 'q3'")
            && run.stderr.contains("q4f16, int8, uint8"),
        "{}",
        run.stderr
    );
    let run = akari(&[
        "logits",
        model.to_str().expect("path"),
        "--tokens",
        "1,999999",
    ]);
    assert!(
        !run.ok && run.stderr.contains("outside the vocabulary"),
        "{}",
        run.stderr
    );
}
