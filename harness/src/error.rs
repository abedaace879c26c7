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

    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("results.json (de)serialisation: {0}")]
    Json(#[from] serde_json::Error),

    #[error("drawing {path}: {detail}")]
    Chart { path: PathBuf, detail: String },
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
