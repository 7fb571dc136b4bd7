//! ONNX repositories whose files are read a range at a time (a browser's Blobs): weights in
//! external data files are deferred, each read when taken, and equal what the same files in
//! memory give.

use akari_core::weights::Bytes;
use akari_core::Dtype;
use akari_formats::{FileData, FileSource, MemoryFiles};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/onnx")
        .join(name)
}

/// Every file under `dir` by its relative path, as bytes or as a source.
fn files(dir: &Path, streamed: bool) -> MemoryFiles {
    fn walk(base: &Path, dir: &Path, streamed: bool, out: &mut Vec<(String, FileData)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, streamed, out);
                continue;
            }
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let data = if streamed {
                FileData::Source(Arc::new(FileSource::open(&p).unwrap()))
            } else {
                FileData::Bytes(Bytes::from_vec(std::fs::read(&p).unwrap()))
            };
            out.push((rel, data));
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, streamed, &mut out);
    MemoryFiles::with_data("repo", out)
}

#[test]
fn external_data_read_from_sources_is_deferred_and_equal() {
    let target = |d| d;
    for name in [
        "llama-genai-int4",
        "llama-genai-fp32",
        "phi3-genai-int4",
        "phi3-genai-fp32",
        "qwen2-genai-int4",
    ] {
        let dir = fixture(name);
        let eager = akari_formats::open_memory(&files(&dir, false), Dtype::Auto, &target).unwrap();
        let mut lazy =
            akari_formats::open_memory(&files(&dir, true), Dtype::Auto, &target).unwrap();
        assert!(eager.weights.deferred.is_empty(), "{name}");
        assert!(
            lazy.weights.matrices.is_empty(),
            "{name}: nothing read at open"
        );
        assert_eq!(
            lazy.weights.deferred.len(),
            eager.weights.matrices.len(),
            "{name}"
        );
        assert_eq!(lazy.config, eager.config, "{name}");
        assert_eq!(lazy.weights.vectors, eager.weights.vectors, "{name}");
        assert_eq!(lazy.file_type, eager.file_type, "{name}");
        for (key, want) in &eager.weights.matrices {
            let got = lazy.weights.take_matrix(*key).unwrap();
            assert_eq!(
                (got.format, got.rows, got.cols),
                (want.format, want.rows, want.cols),
                "{name} {key}"
            );
            assert_eq!(&got.bytes[..], &want.bytes[..], "{name} {key}");
        }
    }
}

#[test]
fn external_data_cut_short_is_an_error_when_the_model_is_opened() {
    let dir = fixture("llama-genai-int4");
    let tmp = std::env::temp_dir().join(format!("akari-onnx-cut-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.join(p.file_name().unwrap())).unwrap();
    }
    let data = tmp.join("model.onnx.data");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Checked against the file's length when the model is opened, as in memory.
    let streamed = akari_formats::open_memory(&files(&tmp, true), Dtype::Auto, &|d| d)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    let in_memory = akari_formats::open_memory(&files(&tmp, false), Dtype::Auto, &|d| d)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&tmp).ok();
    assert!(
        streamed.contains("runs past the end of `model.onnx.data`"),
        "{streamed}"
    );
    assert_eq!(streamed, in_memory);
}
