//! The crate's error type.

use alloc::string::String;

/// Everything that can go wrong in medsam2-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An invalid or unsupported configuration; the message names the key.
    #[error("config: {0}")]
    Config(String),
    /// A checkpoint is unreadable or does not match the model.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A tensor has the wrong shape; names the key and both shapes.
    #[error("checkpoint: `{key}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// State-dict key.
        key: String,
        /// Shape the model needs.
        expected: alloc::vec::Vec<usize>,
        /// Shape in the checkpoint.
        found: alloc::vec::Vec<usize>,
    },
    /// Bad input from the caller (image, prompt, mask, index).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// File-system error.
    #[cfg(feature = "std")]
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Error from the tensor backend.
    #[cfg(feature = "std")]
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}
