//! The one error type of the workspace's kernels. Messages name the op and
//! the offending dimensions so a user can see which call was wrong.

use thiserror::Error;

/// Result with the workspace's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A tensor's shape does not fit the op (wrong rank, mismatched channels,
    /// batch or length).
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A parameter is invalid on its own (zero stride, zero window, ...).
    #[error("{op}: invalid parameter: {detail}")]
    Param { op: &'static str, detail: String },

    /// The parameters are valid but the output would have no elements.
    #[error("{op}: empty output: {detail}")]
    EmptyOutput { op: &'static str, detail: String },

    /// A host tensor was built with data that does not match its shape.
    #[error("tensor: shape {shape:?} holds {expected} elements but {actual} were given")]
    DataLength { shape: Vec<usize>, expected: usize, actual: usize },

    /// A label is outside [0, classes).
    #[error("{op}: label {label} at position {index} is out of range for {classes} classes")]
    Label { op: &'static str, index: usize, label: usize, classes: usize },

    /// A device (OpenCL) failed: no platform, a build failure with its log,
    /// an enqueue or transfer error.
    #[error("device: {0}")]
    Device(String),

    /// A scratch allocation would exceed what the backend allows.
    #[error("{op}: needs {bytes} bytes of scratch, more than the {limit} allowed")]
    Scratch { op: &'static str, bytes: usize, limit: usize },
}

impl Error {
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape { op, detail: detail.into() }
    }
    pub fn param(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Param { op, detail: detail.into() }
    }
    pub fn empty(op: &'static str, detail: impl Into<String>) -> Self {
        Error::EmptyOutput { op, detail: detail.into() }
    }
}
