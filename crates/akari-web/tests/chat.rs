//! The worker's engine, driven natively: a model loaded from files in memory, stepped one
//! token at a time, must give exactly what the engine's own loop gives from the same files on
//! disk.

use akari_core::generate::GenerateOptions;
use akari_core::template::Message;
use akari_core::weights::Bytes;
use akari_engine::{Engine, LoadOptions, MemoryFiles};
use akari_web::chat::{Chat, ChatMessage, ChatOptions, Chunk, ErrorCode};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir`, keyed by its path relative to `dir`.
fn memory_files(dir: &Path) -> MemoryFiles {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Bytes)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, Bytes::from_vec(std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    MemoryFiles::new("test-model", files)
}

fn run_steps(chat: &mut Chat, prompt: &str, max_tokens: usize) -> (String, Vec<Chunk>) {
    let messages = vec![ChatMessage {
        role: "user".into(),
        content: prompt.into(),
    }];
    let options = ChatOptions {
        max_tokens: Some(max_tokens),
        ..Default::default()
    };
    chat.start(&messages, &options).unwrap();
    let mut all = Vec::new();
    while chat.busy() {
        all.extend(chat.step().unwrap());
    }
    let text = all
        .iter()
        .filter_map(|c| match c {
            Chunk::Answer { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    (text, all)
}

fn native_reply(path: &Path, dtype: akari_core::Dtype, prompt: &str, max_tokens: usize) -> String {
    let opts = LoadOptions {
        dtype,
        ..Default::default()
    };
    let mut engine = Engine::load(path, &opts, &mut |_| {}).unwrap();
    let (ids, open) = engine.chat_prompt(&[Message::user(prompt)]).unwrap();
    let gen = GenerateOptions {
        max_new_tokens: max_tokens,
        reasoning_open: open,
        ..Default::default()
    };
    let done = engine
        .generate(&ids, &gen, |_| ControlFlow::Continue(()))
        .unwrap();
    done.text
}

#[test]
fn onnx_repository_in_memory_matches_the_engine_on_disk() {
    let dir = root().join("fixtures/onnx/llama");
    let files = memory_files(&dir);
    for dtype in ["q4", "fp32"] {
        let mut chat = Chat::load(&files, dtype, "wasm", None, &mut |_| {}).unwrap();
        assert_eq!(chat.info().architecture, "llama");
        assert!(chat.info().parameters > 0);
        let (text, chunks) = run_steps(&mut chat, "hello there", 24);
        let want = native_reply(&dir, dtype.parse().unwrap(), "hello there", 24);
        assert!(!want.is_empty());
        assert_eq!(text, want, "dtype {dtype}");
        match chunks.last() {
            Some(Chunk::Done { stats }) => {
                assert_eq!(stats.generated_tokens, 24);
                assert_eq!(stats.stop_reason, "max_tokens");
                assert!(stats.prompt_tokens > 0);
            }
            other => panic!("the last chunk is not done: {other:?}"),
        }
    }
}

#[test]
fn gguf_in_memory_matches_the_engine_on_disk_and_cancel_ends_the_reply() {
    let path = root().join("fixtures/tiny/qwen2-q8_0/model.gguf");
    let bytes = Bytes::from_vec(std::fs::read(&path).unwrap());
    let files = MemoryFiles::new("tiny", [("model.gguf".to_string(), bytes)]);
    let mut chat = Chat::load(&files, "auto", "auto", Some(128), &mut |_| {}).unwrap();
    let (text, _) = run_steps(&mut chat, "abc", 16);
    assert_eq!(
        text,
        native_reply(&path, akari_core::Dtype::Auto, "abc", 16)
    );

    // Cancel after three tokens: the reply ends with `done`, stop reason `cancelled`.
    chat.reset();
    let messages = vec![ChatMessage {
        role: "user".into(),
        content: "abc".into(),
    }];
    chat.start(&messages, &ChatOptions::default()).unwrap();
    for _ in 0..3 {
        chat.step().unwrap();
    }
    let end = chat.cancel().unwrap();
    match end.last() {
        Some(Chunk::Done { stats }) => {
            assert_eq!(stats.stop_reason, "cancelled");
            assert_eq!(stats.generated_tokens, 3);
        }
        other => panic!("the last chunk is not done: {other:?}"),
    }
    assert!(!chat.busy());
    assert_eq!(chat.step().unwrap_err().code, ErrorCode::Unsupported);
}

#[test]
fn damaged_and_unsupported_inputs_give_coded_errors() {
    let path = root().join("fixtures/tiny/llama-q4_0/model.gguf");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    let files = MemoryFiles::new("cut", [("model.gguf".to_string(), Bytes::from_vec(bytes))]);
    let err = Chat::load(&files, "auto", "wasm", None, &mut |_| {})
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::Corrupt, "{}", err.message);
    assert!(err.message.contains("model.gguf"), "{}", err.message);

    let junk = MemoryFiles::new(
        "junk",
        [("model.gguf".to_string(), Bytes::from_vec(vec![7; 64]))],
    );
    let err = Chat::load(&junk, "auto", "wasm", None, &mut |_| {})
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::Corrupt);

    let good = MemoryFiles::new(
        "tiny",
        [(
            "model.gguf".to_string(),
            Bytes::from_vec(std::fs::read(&path).unwrap()),
        )],
    );
    let err = Chat::load(&good, "auto", "webnn-npu", None, &mut |_| {})
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::Unsupported);
    assert!(err.message.contains("WebNN"), "{}", err.message);
}
