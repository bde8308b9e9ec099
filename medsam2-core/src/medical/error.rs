//! The error type of the `medical` module.

use std::path::PathBuf;

/// Everything that can go wrong while reading, writing or processing a volume.
#[derive(Debug, thiserror::Error)]
pub enum MedicalError {
    /// An operating-system I/O error (file missing, unreadable, disk full...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An error tied to a file: the path and the underlying error.
    #[error("{}: {source}", path.display())]
    File {
        /// The file being read or written.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<MedicalError>,
    },
    /// The bytes do not form a valid file of the given format (malformed or truncated).
    #[error("invalid {format} data: {reason}")]
    Format {
        /// The file format (`"NIfTI"`, `"NRRD"`, `"NPY"`, `"NPZ"`, `"gzip"`).
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A valid file that uses a feature this module does not implement.
    #[error("unsupported {format} feature: {reason}")]
    Unsupported {
        /// The file format.
        format: &'static str,
        /// The feature.
        reason: String,
    },
    /// The data declared by a header exceeds [`MAX_VOXEL_BYTES`](crate::medical::MAX_VOXEL_BYTES).
    #[error("volume of {bytes} bytes exceeds the limit of {limit} bytes (MAX_VOXEL_BYTES)")]
    TooLarge {
        /// Bytes the header asks for.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The path names something other than a regular file (a directory, FIFO,
    /// device or socket); only regular files are read.
    #[error("{0}, not a regular file")]
    NotRegularFile(&'static str),
    /// The file name has no extension this module knows.
    #[error("unknown file type (expected .nii, .nii.gz, .nrrd or .npz): {0}")]
    UnknownFormat(String),
    /// Two volumes (or a volume and a mask) do not fit together.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),
    /// An argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl MedicalError {
    /// A [`MedicalError::Format`] error.
    pub(crate) fn format(format: &'static str, reason: impl Into<String>) -> Self {
        MedicalError::Format {
            format,
            reason: crate::error::one_line(&reason.into()),
        }
    }

    /// A [`MedicalError::Unsupported`] error.
    pub(crate) fn unsupported(format: &'static str, reason: impl Into<String>) -> Self {
        MedicalError::Unsupported {
            format,
            reason: crate::error::one_line(&reason.into()),
        }
    }

    /// Wraps `self` with the path of the file it concerns.
    pub fn with_path(self, path: impl Into<PathBuf>) -> Self {
        MedicalError::File {
            path: path.into(),
            source: Box::new(self),
        }
    }
}

/// The result type of the `medical` module.
pub type Result<T> = std::result::Result<T, MedicalError>;
