//! The worker's engine, driven natively: a model loaded from files in memory, stepped one
//! token at a time, must give exactly what the engine's own loop gives from the same files on
//! disk.

use akari_core::generate::GenerateOptions;
use akari_core::template::Message;
use akari_core::weights::Bytes;
use akari_core::Device;
use akari_engine::{Engine, FileData, LoadOptions, MemoryFiles};
use akari_web::chat::{Chat, ChatMessage, ChatOptions, Chunk, ErrorCode, LoadSettings};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir`, keyed by its path relative to `dir`: in memory, or (`streamed`)
/// read a range at a time as the browser reads its Blobs.
fn dir_files(dir: &Path, streamed: bool) -> MemoryFiles {
    fn walk(base: &Path, dir: &Path, streamed: bool, out: &mut Vec<(String, FileData)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, streamed, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                let data = if streamed {
                    FileData::Source(Arc::new(akari_engine::FileSource::open(&p).unwrap()))
                } else {
                    FileData::Bytes(Bytes::from_vec(std::fs::read(&p).unwrap()))
                };
                out.push((rel, data));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, streamed, &mut files);
    MemoryFiles::with_data("test-model", files)
}

fn memory_files(dir: &Path) -> MemoryFiles {
    dir_files(dir, false)
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
        let mut chat =
            Chat::load(&files, dtype, "wasm", LoadSettings::default(), &mut |_| {}).unwrap();
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
    let mut chat = Chat::load(
        &files,
        "auto",
        "auto",
        LoadSettings {
            context: Some(128),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
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
    let err = Chat::load(&files, "auto", "wasm", LoadSettings::default(), &mut |_| {})
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::Corrupt, "{}", err.message);
    assert!(err.message.contains("model.gguf"), "{}", err.message);

    let junk = MemoryFiles::new(
        "junk",
        [("model.gguf".to_string(), Bytes::from_vec(vec![7; 64]))],
    );
    let err = Chat::load(&junk, "auto", "wasm", LoadSettings::default(), &mut |_| {})
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
    let err = Chat::load(
        &good,
        "auto",
        "webnn-npu",
        LoadSettings::default(),
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert_eq!(err.code, ErrorCode::Unsupported);
    assert!(err.message.contains("WebNN"), "{}", err.message);
}

/// The model file as the browser hands it over: read a range at a time, never whole.
fn source_files(path: &Path) -> MemoryFiles {
    let source = akari_engine::FileSource::open(path).unwrap();
    MemoryFiles::with_data(
        "streamed",
        [("model.gguf".to_string(), FileData::Source(Arc::new(source)))],
    )
}

#[test]
fn gguf_read_tensor_by_tensor_gives_the_logits_of_the_file_on_disk() {
    let tokens = [1u32, 5, 9, 2, 7];
    // Unpermuted Q/K (llama), fused and cut tensors (phi3), a K-quant converted on the way,
    // biases (qwen2); on the CPU and on the GPU.
    let cases = [
        ("llama-q4_0", Device::Cpu),
        ("phi3-q8_0", Device::Cpu),
        ("llamak-q6_k", Device::Cpu),
        ("qwen2-q4_0", Device::Gpu),
        ("phi3-f32", Device::Gpu),
    ];
    for (fixture, device) in cases {
        let path = root()
            .join("fixtures/tiny")
            .join(fixture)
            .join("model.gguf");
        let opts = LoadOptions {
            device,
            context: Some(64),
            ..Default::default()
        };
        let mut on_disk = Engine::load(&path, &opts, &mut |_| {}).unwrap();
        let mut streamed = Engine::load_memory(&source_files(&path), &opts, &mut |_| {}).unwrap();
        assert_eq!(streamed.info().weight_bytes, on_disk.info().weight_bytes);
        assert_eq!(streamed.info().parameters, on_disk.info().parameters);
        assert_eq!(
            streamed.logits(&tokens, 3).unwrap(),
            on_disk.logits(&tokens, 3).unwrap(),
            "{fixture} on {device:?}"
        );
    }
}

#[test]
fn a_file_that_shrinks_while_it_is_read_gives_a_readable_error() {
    let path = root().join("fixtures/tiny/llama-q8_0/model.gguf");
    let dir = std::env::temp_dir().join(format!("akari-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("model.gguf");
    std::fs::copy(&path, &copy).unwrap();
    // Opened at its full length, then cut: a picked file can change on disk before it is read.
    let files = source_files(&copy);
    let len = std::fs::metadata(&copy).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    f.set_len(len / 2).unwrap();
    let err = Chat::load(&files, "auto", "wasm", LoadSettings::default(), &mut |_| {})
        .err()
        .expect("a cut file must not load");
    assert!(
        err.message.contains("model.gguf"),
        "the error names the file: {}",
        err.message
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn onnx_external_data_read_tensor_by_tensor_gives_the_logits_of_the_folder_on_disk() {
    let tokens = [1u32, 5, 9, 2, 7];
    let cases = [
        ("llama-genai-int4", Device::Gpu),
        ("phi3-genai-int4", Device::Cpu),
        ("qwen2-genai-fp32", Device::Gpu),
    ];
    for (fixture, device) in cases {
        let dir = root().join("fixtures/onnx").join(fixture);
        let opts = LoadOptions {
            device,
            context: Some(64),
            ..Default::default()
        };
        let mut on_disk = Engine::load(&dir, &opts, &mut |_| {}).unwrap();
        let mut streamed = Engine::load_memory(&dir_files(&dir, true), &opts, &mut |_| {}).unwrap();
        assert_eq!(streamed.info().weight_bytes, on_disk.info().weight_bytes);
        assert_eq!(
            streamed.logits(&tokens, 3).unwrap(),
            on_disk.logits(&tokens, 3).unwrap(),
            "{fixture} on {device:?}"
        );
    }
}
