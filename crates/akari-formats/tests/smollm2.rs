//! Reads the real SmolLM2-135M-Instruct Q4_1 GGUF when it has been fetched
//! (`scripts/fetch-smollm2.sh`); skips, saying why, when it has not.

use akari_core::weights::{LayerTensor, TensorKey};
use akari_core::{Arch, QuantFormat};
use std::path::PathBuf;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(c) = std::env::var_os("AKARI_CACHE") {
        let c = PathBuf::from(c);
        dirs.push(c.join("models"));
        dirs.push(c);
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cache/akari/models"));
    }
    dirs.into_iter().map(|d| d.join(FILE)).find(|p| p.is_file())
}

#[test]
fn smollm2_q4_1_parses() {
    let Some(path) = model_path() else {
        eprintln!("SKIPPED smollm2_q4_1_parses: {FILE} not found in $AKARI_CACHE or ~/.cache/akari/models (run scripts/fetch-smollm2.sh)");
        return;
    };
    let header = akari_formats::open_gguf_header(&path).unwrap();
    let mut types = std::collections::BTreeMap::<String, Vec<String>>::new();
    for t in &header.tensors {
        let short = t
            .name
            .split('.')
            .filter(|p| p.parse::<usize>().is_err())
            .collect::<Vec<_>>()
            .join(".");
        let e = types
            .entry(format!("{} {:?}", t.ggml_type, t.shape().len()))
            .or_default();
        if !e.contains(&short) {
            e.push(short);
        }
    }
    eprintln!(
        "GGUF v{}, {} tensors, alignment {}",
        header.version,
        header.tensors.len(),
        header.alignment
    );
    for (ty, names) in &types {
        eprintln!("  {ty}: {names:?}");
    }

    let m = akari_formats::open_gguf(&path).unwrap();
    for (k, v) in &m.metadata {
        eprintln!("  {k} = {v}");
    }
    let c = &m.config;
    eprintln!("{c:?}\nfile_type {} name {:?}", m.file_type, m.name);
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(c.num_layers, 30);
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.num_heads, 9);
    assert_eq!(c.num_kv_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.vocab_size, 49152);
    assert!(c.tie_word_embeddings);
    assert!(!c.qkv_bias);
    assert_eq!(m.file_type, "Q4_1");
    let q = &m.weights.matrices[&TensorKey::Layer(0, LayerTensor::Q)];
    assert_eq!((q.rows, q.cols), (576, 576));
    assert_eq!(
        m.weights.matrices[&TensorKey::Layer(29, LayerTensor::Down)].format,
        QuantFormat::Q4_1
    );
    let v = m.vocab.as_ref().unwrap();
    assert_eq!(v.tokens.len(), 49152);
    eprintln!(
        "vocab model {} pre {:?} bos {:?} eos {:?} eot {:?} unk {:?} pad {:?} add_bos {:?} merges {:?}",
        v.model,
        v.pre,
        v.bos_id,
        v.eos_id,
        v.eot_id,
        v.unk_id,
        v.pad_id,
        v.add_bos,
        v.merges.as_ref().map(Vec::len)
    );
    assert!(m.chat_template.is_some());
}
