//! The harness's error type. A validation failure names the op, the shape,
//! the backend and the worst elements; the binary prints it and exits 1.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HarnessError {
    /// A kernel returned a result outside its tolerance: never timed, never reported.
    #[error("validation failed {stage}: op {op}, shape {shape}, backend {backend}\n{detail}")]
    Validation { stage: &'static str, op: String, shape: String, backend: String, detail: String },

    /// A kernel or device call failed while measuring.
    #[error("op {op}, shape {shape}, backend {backend}: {source}")]
    Kernel { op: String, shape: String, backend: String, source: kernels_core::Error },

    /// Anything else from the kernel crates (oracle, uploads, LeNet).
    #[error(transparent)]
    Core(#[from] kernels_core::Error),

    /// A backend could not be set up, or a ceiling could not be measured.
    #[error("{0}")]
    Setup(String),

    /// A bad command line value.
    #[error("{0}")]
    Usage(String),

    /// A file or directory could not be read, written or created; `action`
    /// says which ("reading", "writing", "creating directory").
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// A results.json (or whichever file was given) that is not valid JSON
    /// of this schema, named by its path.
    #[error("{path}: not a harness results file: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },

    /// Serialising the report failed (not expected: every field is plain data).
    #[error("serialising the report: {0}")]
    Json(#[from] serde_json::Error),

    /// A report holds a value no measurement can produce (non-finite,
    /// negative or absurdly large), so it cannot be drawn or trusted.
    #[error("{path}: {detail}")]
    BadValue { path: PathBuf, detail: String },

    #[error("drawing {path}: {detail}")]
    Chart { path: PathBuf, detail: String },
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
