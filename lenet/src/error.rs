//! The crate's error: every message names the file, the op or the value that
//! was wrong, so the binary can print it as is.

use std::path::PathBuf;

use thiserror::Error;

/// Result with the crate's [`LenetError`].
pub type Result<T, E = LenetError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum LenetError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An IDX file is malformed: wrong magic, bad dimensions, truncated,
    /// mismatched counts or a label out of range.
    #[error("{}: {detail}", path.display())]
    Data { path: PathBuf, detail: String },

    /// No data directory holds the four files.
    #[error(
        "Fashion-MNIST not found; tried:\n{}\nGet it with `make setup` (installs the Debian package \
         dataset-fashion-mnist into /usr/share/datasets/fashion-mnist), or pass --data DIR (or set \
         FASHION_MNIST_DIR) to a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, \
         t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each raw or .gz). MNIST in the same layout works too.",
        tried.iter().map(|t| format!("  {t}")).collect::<Vec<_>>().join("\n")
    )]
    DataMissing { tried: Vec<String> },

    /// A checkpoint cannot be used: wrong names, shapes, dtype or metadata.
    #[error("checkpoint {}: {detail}", path.display())]
    Checkpoint { path: PathBuf, detail: String },

    /// A kernel or device call failed.
    #[error(transparent)]
    Kernel(#[from] kernels_core::Error),

    /// The loss stopped being finite: training diverged. `what` names the
    /// loss (a step's, or the test loss after an epoch's last step); `kept`
    /// says what the checkpoint file holds (filled in by `Trainer::fit`).
    #[error("{what} became {loss} at epoch {epoch}, step {step}: training diverged (try a smaller --lr){kept}")]
    NonFinite { what: &'static str, epoch: usize, step: u64, loss: f64, kept: String },

    /// A save found NaN or infinity in the state it was about to write, and
    /// wrote nothing. `kept` as for `NonFinite`.
    #[error(
        "not saving {}: tensor `{tensor}` holds a non-finite value (training diverged; try a smaller --lr){kept}",
        path.display()
    )]
    NonFiniteState { path: PathBuf, tensor: String, kept: String },

    /// A checkpoint save failed during training; `kept` says what the file
    /// still holds.
    #[error("{source}{kept}")]
    Save { source: Box<LenetError>, kept: String },

    /// A path exists but is the wrong kind of thing (a directory where a
    /// file is needed, a file where a directory is), or cannot be used.
    #[error("{}: {detail}", path.display())]
    BadPath { path: PathBuf, detail: String },

    /// Some outputs could not be written after training (each was reported
    /// as it failed); `kept` says where the checkpoint is.
    #[error("{failed} output(s) could not be written (see above); {kept}")]
    Outputs { failed: usize, kept: String },

    /// The command line or a configuration value is inconsistent.
    #[error("{0}")]
    Config(String),

    /// Drawing an SVG failed.
    #[error("plot {}: {detail}", path.display())]
    Plot { path: PathBuf, detail: String },
}

impl LenetError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
    pub fn data(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Data { path: path.into(), detail: detail.into() }
    }
    pub fn bad_path(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::BadPath { path: path.into(), detail: detail.into() }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.into(), detail: detail.into() }
    }
}
