//! What can go wrong while resolving and downloading, in words a user can act on.

use std::path::PathBuf;

pub type Result<T, E = HubError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{id}` is not a model id: {reason}")]
    InvalidRepo { id: String, reason: &'static str },

    #[error("model or file not found on {host}: {path}")]
    NotFound { host: String, path: String },

    #[error(
        "{host} refused access to {path} (HTTP {status}): the model may be private or gated, \
         or may not exist; set HF_TOKEN to a token that can read it"
    )]
    Unauthorized {
        host: String,
        path: String,
        status: u16,
    },

    #[error("{url}: the server answered HTTP {status}")]
    Http { url: String, status: u16 },

    #[error("cannot download {url}: network error after {attempts} attempts: {source}")]
    Network {
        url: String,
        attempts: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "{path}: the download has {got} bytes but the server announced {expected}; the partial \
         file was deleted"
    )]
    SizeMismatch {
        path: String,
        expected: u64,
        got: u64,
    },

    #[error(
        "{path}: sha256 of the download is {got} but the server announced {expected}; the \
         partial file was deleted"
    )]
    HashMismatch {
        path: String,
        expected: String,
        got: String,
    },

    #[error("download of {path} cancelled (the partial file is kept and resumes next time)")]
    Cancelled { path: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{url}: unexpected answer: {reason}")]
    BadAnswer { url: String, reason: String },

    #[error("{repo} has no file for --dtype {dtype} ({wanted}); files there: {choices}")]
    NoMatchingFile {
        repo: String,
        dtype: String,
        wanted: String,
        choices: String,
    },

    #[error("{repo}: {reason}")]
    UnknownLayout { repo: String, reason: String },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}
