//! Model file readers: a file in, one canonical [`ModelSource`] out.
//!
//! # Contract
//!
//! Whatever the file format, a reader hands the engine:
//!
//! - a [`ModelConfig`] that passed [`ModelConfig::validate`], with `tie_word_embeddings`,
//!   `qkv_bias` and `rope_scaling` decided from what the file holds;
//! - [`ModelWeights`] keyed by [`TensorKey`], every matrix `[rows = out_features,
//!   cols = in_features]` in Hugging Face layout (llama.cpp's rotary permutation of Q/K undone,
//!   fused projections split), in a [`QuantFormat`](akari_core::QuantFormat) a backend runs,
//!   and every vector (norms, biases) in f32. Every tensor the decoder needs is present and
//!   has the shape the config implies; `Output` is absent exactly when the embedding is tied;
//! - the vocabulary and chat template, when the file carries them: GGUF's vocabulary as a
//!   [`VocabSpec`], a Hugging Face directory's `tokenizer.json` as bytes together with the
//!   special tokens its `tokenizer_config.json` and `generation_config.json` name.
//!
//! Matrices whose file layout is a backend format are not copied: their [`Bytes`] are slices
//! of the memory-mapped file. A damaged or hostile file gives an [`Error`] naming the file and
//! the problem, never a panic, and nothing is allocated from a size the file claims before
//! that size is checked against the file's length.
//!
//! Formats: GGUF v2/v3 ([`gguf`]); Hugging Face model directories ([`hf`]) with safetensors
//! weights ([`safetensors`]); transformers.js-style ONNX repositories ([`onnx`]: optimum's
//! decoder exports, fp32/fp16/MatMulNBits q4). The ggml tensor types and their conversions
//! are in [`ggml`].

pub mod files;
pub mod ggml;
pub mod gguf;
pub mod hf;
pub mod onnx;
pub mod safetensors;

use akari_core::tokenizer::VocabSpec;
#[cfg(doc)]
use akari_core::weights::TensorKey;
use akari_core::weights::{Bytes, ModelWeights};
use akari_core::{Dtype, Error, ModelConfig, Result};
use std::path::Path;
use std::sync::Arc;

#[cfg(not(target_arch = "wasm32"))]
pub use files::FileSource;
pub use files::{ByteSource, FileData, MemoryFiles};
pub use gguf::GgufFile;

/// A model as read from a file: hyper-parameters, canonical weights, tokenizer, template.
#[derive(Debug)]
pub struct ModelSource {
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub vocab: Option<VocabSpec>,
    pub chat_template: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// The file's dominant weight type, human readable (e.g. `Q4_1`, `Q4_K_M`).
    pub file_type: String,
    /// Every metadata entry, its value summarised for display (long arrays and strings cut).
    pub metadata: Vec<(String, String)>,
    /// A Hugging Face `tokenizer.json` (directories; GGUF carries `vocab` instead).
    pub tokenizer_json: Option<Bytes>,
    /// `tokenizer_config.json`'s `bos_token`.
    pub bos_token: Option<String>,
    /// `tokenizer_config.json`'s `eos_token`.
    pub eos_token: Option<String>,
    /// `bos_token_id` of `generation_config.json`, else of `config.json`.
    pub bos_id: Option<u32>,
    /// `eos_token_id` (an id or a list) of `generation_config.json`, else of `config.json`:
    /// every token that ends generation.
    pub eos_ids: Vec<u32>,
    /// `tokenizer_config.json`'s `add_bos_token`, when it says.
    pub add_bos: Option<bool>,
}

/// Opens a model of any supported format: a GGUF file (recognised by its magic), a Hugging
/// Face model directory, or an ONNX repository (a directory with `onnx/*.onnx`, or one
/// `.onnx` file in it).
pub fn open(path: &Path) -> Result<ModelSource> {
    open_as(path, &|default| default)
}

/// As [`open`], storing each matrix as `target(the format the reader would pick)`,
/// converted straight from the file. An ONNX directory's file is chosen as for `auto`.
pub fn open_as(path: &Path, target: &gguf::load::ConvertTo) -> Result<ModelSource> {
    open_with(path, Dtype::Auto, target)
}

/// As [`open_as`], except for transformers.js-style ONNX repositories: there `dtype` picks
/// the file the way transformers.js does ([`onnx::choose_file`]) and its weights are kept as
/// that file stores them (a q4 file keeps its f32 embedding, as onnxruntime runs it); `target`
/// is not applied. Pass an `.onnx` file instead to convert its weights with `target`. Other
/// formats (and onnxruntime-genai folders, which hold one model) ignore `dtype`.
pub fn open_with(path: &Path, dtype: Dtype, target: &gguf::load::ConvertTo) -> Result<ModelSource> {
    if path.is_dir() {
        let has_safetensors = path.join(hf::WEIGHTS).is_file()
            || path.join(hf::WEIGHTS_INDEX).is_file()
            || std::fs::read_dir(path).ok().is_some_and(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
            });
        if !has_safetensors && onnx::onnx_folder(path).is_some() {
            return onnx::open_dir(path, dtype, target);
        }
        return hf::open_dir(path, target);
    }
    if path.extension().is_some_and(|x| x == "onnx") && path.is_file() {
        return onnx::open_file(path, target);
    }
    let mut magic = [0u8; 4];
    let read =
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    match read {
        Ok(()) if &magic == gguf::MAGIC => {
            let file = GgufFile::parse(map_file(path)?, &path.display().to_string())?;
            gguf::load::model_source_with(&file, target)
        }
        Ok(()) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let in_hf_dir = path.parent().is_some_and(|d| d.join(hf::CONFIG).is_file());
            let msg = if (name.ends_with(".safetensors") || name == hf::CONFIG) && in_hf_dir {
                "part of a Hugging Face model directory: pass the directory itself"
            } else {
                "not a GGUF file, an ONNX file, nor a Hugging Face model directory"
            };
            Err(Error::format(path.display().to_string(), msg))
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::format(
            path.display().to_string(),
            "file is too short to be a model",
        )),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Opens a model from files handed over in memory (a browser's downloads or picked files): one
/// `.gguf` file, or an ONNX repository's files (the `.onnx` file chosen by `dtype`, as in
/// [`open_with`]). GGUF matrices are stored as `target(the reader's format)`; a GGUF file given
/// as a [`ByteSource`] is read a tensor at a time, its matrices deferred until taken.
pub fn open_memory(
    files: &MemoryFiles,
    dtype: Dtype,
    target: &gguf::load::ConvertTo,
) -> Result<ModelSource> {
    let ggufs: Vec<&str> = files.paths().filter(|p| p.ends_with(".gguf")).collect();
    if files.paths().any(|p| p.ends_with(".onnx")) {
        return onnx::open_memory(files, dtype);
    }
    match ggufs.as_slice() {
        [one] => {
            let data = files
                .get(one)
                .ok_or_else(|| Error::format(*one, "file is missing"))?;
            if data.len() < 4 || data.read_at(0, 4, one)? != gguf::MAGIC {
                return Err(Error::format(*one, "not a GGUF file (bad magic)"));
            }
            let file = match data {
                FileData::Bytes(bytes) => GgufFile::parse(bytes.clone(), one)?,
                FileData::Source(source) => GgufFile::parse_source(source.clone(), one)?,
            };
            gguf::load::model_source_with(&file, target)
        }
        [] => Err(Error::format(
            files.name(),
            "no model here: expected one .gguf file, or an ONNX repository (config.json, \
             tokenizer files, onnx/*.onnx)",
        )),
        many => Err(Error::format(
            files.name(),
            format!(
                "{} .gguf files given; pass one: {}",
                many.len(),
                many.join(", ")
            ),
        )),
    }
}

/// Memory-maps `path` and reads it as GGUF. Matrices in backend formats stay in the map.
pub fn open_gguf(path: &Path) -> Result<ModelSource> {
    read_gguf(map_file(path)?, &path.display().to_string())
}

/// Reads a GGUF file held in `bytes`; `file_name` appears in errors.
pub fn read_gguf(bytes: Bytes, file_name: &str) -> Result<ModelSource> {
    let file = GgufFile::parse(bytes, file_name)?;
    gguf::load::model_source(&file)
}

/// Parses only the header, metadata and tensor table of a GGUF file (memory-mapped).
pub fn open_gguf_header(path: &Path) -> Result<GgufFile> {
    GgufFile::parse(map_file(path)?, &path.display().to_string())
}

/// The whole file as [`Bytes`], memory-mapped.
pub fn map_file(path: &Path) -> Result<Bytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        // Mapping an empty file fails on some platforms; it is no model either way.
        return Err(Error::format(path.display().to_string(), "file is empty"));
    }
    // SAFETY: the map is read-only and private to this process. Its contents stay valid as
    // long as no one truncates or rewrites the file while it is mapped; model files are
    // written once and then only read, the same assumption llama.cpp and every other
    // mmap-based loader make. The map lives as long as the `Bytes` that share it.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Bytes::new(Arc::new(map)))
}
