//! The crate's error type.

use alloc::string::String;

/// Everything that can go wrong in medsam2-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An invalid or unsupported configuration; the message names the key.
    #[error("config: {}", one_line(.0))]
    Config(String),
    /// A checkpoint is unreadable or does not match the model.
    #[error("checkpoint: {}", one_line(.0))]
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
    #[error("invalid input: {}", one_line(.0))]
    InvalidInput(String),
    /// An operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// A volume-level request that does not fit the volume or the session (a
    /// prompt outside the volume, no prompt yet); the message says what and where.
    #[error("{}", one_line(.0))]
    Volume(String),
    /// An error of a medical volume (file, geometry, intensity mapping), with
    /// its own message.
    #[cfg(feature = "std")]
    #[error(transparent)]
    Medical(#[from] crate::medical::MedicalError),
    /// File-system error.
    #[cfg(feature = "std")]
    #[error("{path}: {}", one_line(&source.to_string()))]
    Io {
        /// File concerned.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Error from the tensor backend.
    #[cfg(feature = "std")]
    #[error("tensor backend: {}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// Shorthand for [`Error::Volume`].
    pub fn volume(msg: impl Into<String>) -> Self {
        Error::Volume(msg.into())
    }
}

/// `text` on one line: line breaks become `"; "` and a trailing backtrace
/// (whatever `RUST_BACKTRACE` says) is cut off. Every user-facing message of
/// the crate goes through this.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        // std's `Backtrace` display: "   0: frame" / "at file:line" / "stack backtrace:".
        let frame = l
            .split_once(": ")
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            || l.starts_with("at ")
            || l.starts_with("stack backtrace")
            || l == "disabled backtrace"
            || l.starts_with("note: Some details are omitted");
        if i > 0 && frame {
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(l);
    }
    out
}

/// The message of a candle error without the backtrace candle attaches when
/// `RUST_BACKTRACE` is set, on one line.
#[cfg(feature = "std")]
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as C;
    match e {
        C::WithBacktrace { inner, .. } => candle_message(inner),
        C::Context { inner, context } => {
            one_line(&alloc::format!("{context}: {}", candle_message(inner)))
        }
        C::WithPath { inner, path } => {
            alloc::format!("{}: {}", path.display(), candle_message(inner))
        }
        other => one_line(&other.to_string()),
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    static QUIET_PANICS: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// Runs `f`, turning a panic into `Err(message)` without printing anything:
/// while `f` runs on this thread the panic hook stays silent (on other
/// threads, and outside such calls, the previous hook runs as before). Used
/// around third-party parsers that may panic on malformed input, and by the
/// C ABI so that no panic text reaches a host application's stderr.
#[cfg(feature = "std")]
pub fn catch_panic_quietly<R>(f: impl FnOnce() -> R) -> core::result::Result<R, String> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(alloc::boxed::Box::new(move |info| {
            if QUIET_PANICS.with(|q| q.get()) == 0 {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(q.get() + 1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(q.get() - 1));
    r.map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| String::from(*s))
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        one_line(&msg)
    })
}
