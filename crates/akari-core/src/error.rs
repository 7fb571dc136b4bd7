//! The error type shared by every akari crate.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not what it claims to be, or is damaged.
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    #[error("unsupported architecture `{0}` (supported: llama, qwen2, phi3)")]
    UnknownArchitecture(String),
    #[error("tensor `{tensor}` has weight type {kind}, which akari cannot read yet")]
    UnsupportedWeightType { tensor: String, kind: String },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("the {backend} backend cannot run {what}")]
    Unsupported { backend: &'static str, what: String },
    #[error("the prompt is {prompt} tokens but the context holds {context} (with {reserve} kept for the reply)")]
    ContextOverflow {
        prompt: usize,
        context: usize,
        reserve: usize,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("generation was cancelled")]
    Cancelled,
    /// Host memory ran out, or a file is larger than this build can hold at once.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A backend's device failed (a GPU error, device loss, out of memory, a timeout).
    #[error("{backend} backend: {msg}")]
    Backend { backend: &'static str, msg: String },
}

impl Error {
    pub fn format(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Format {
            file: file.into(),
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
