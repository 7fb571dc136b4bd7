//! Failures as the user should read them.
use thiserror::Error;

/// What went wrong, in plain words. Built from the `code` of the API's `AkariError`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppError {
    #[error("The download failed ({0}). Check the connection and try again.")]
    Download(String),
    #[error("The model was not found ({0}). Check the id or pick the files again.")]
    NotFound(String),
    #[error(
        "The model files are damaged or incomplete ({0}). Delete the cached copy and load again."
    )]
    Corrupt(String),
    #[error("This model is not supported ({0}).")]
    Unsupported(String),
    #[error("Not enough memory for this model ({0}). Try a smaller model or dtype q4.")]
    OutOfMemory(String),
    #[error(
        "The device failed ({0}). Press Load to load the model again, or choose another device."
    )]
    Device(String),
    #[error("Cancelled.")]
    Aborted,
    #[error(
        "The conversation no longer fits in the model's context ({0}). Press Reset to start again."
    )]
    Context(String),
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// Maps an `AkariError` code and message; unknown or missing codes keep the message.
    pub fn from_code(code: Option<&str>, message: &str) -> Self {
        let detail = message.trim().trim_end_matches('.').to_string();
        let detail_or = |fallback: &str| {
            if detail.is_empty() {
                fallback.to_string()
            } else {
                detail.clone()
            }
        };
        match code {
            Some("download") => Self::Download(detail_or("no details")),
            Some("not-found") => Self::NotFound(detail_or("no details")),
            Some("corrupt") => Self::Corrupt(detail_or("no details")),
            Some("unsupported") => Self::Unsupported(detail_or("no details")),
            Some("out-of-memory") => Self::OutOfMemory(detail_or("no details")),
            Some("device") => Self::Device(detail_or("no details")),
            Some("aborted") => Self::Aborted,
            Some("context") => Self::Context(detail_or("no details")),
            _ => Self::Other(detail_or("Something went wrong, with no details given")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_plain_words() {
        assert_eq!(
            AppError::from_code(Some("out-of-memory"), "allocation of 3 GB failed.").to_string(),
            "Not enough memory for this model (allocation of 3 GB failed). Try a smaller model or dtype q4."
        );
        assert_eq!(
            AppError::from_code(Some("download"), "HTTP 503 for config.json").to_string(),
            "The download failed (HTTP 503 for config.json). Check the connection and try again."
        );
        // A lost GPU: the way back is loading again.
        assert_eq!(
            AppError::from_code(
                Some("device"),
                "gpu backend: the GPU device was lost: reset."
            )
            .to_string(),
            "The device failed (gpu backend: the GPU device was lost: reset). Press Load to load \
             the model again, or choose another device."
        );
        assert_eq!(AppError::from_code(Some("aborted"), "x"), AppError::Aborted);
        assert_eq!(
            AppError::from_code(Some("unsupported"), "").to_string(),
            "This model is not supported (no details)."
        );
        assert_eq!(
            AppError::from_code(None, "TypeError: x is undefined").to_string(),
            "TypeError: x is undefined"
        );
        assert_eq!(
            AppError::from_code(Some("new-code"), "  ").to_string(),
            "Something went wrong, with no details given"
        );
    }
}
