//! The one error type of the runtime: every failure names the file, field, flag or layer involved.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a file operation.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A data or checkpoint file is malformed; `location` is a byte offset, line or tensor name.
    #[error("{}: {location}: {message}", path.display())]
    Format { path: PathBuf, location: String, message: String },

    /// A setting (builder field or command-line flag) has an invalid value.
    #[error("invalid {name}: {message}")]
    InvalidArgument { name: String, message: String },

    /// Data, checkpoint or arguments do not fit the model they are used with.
    #[error("model {model}: {message}")]
    Mismatch { model: String, message: String },

    /// The privacy plan would exceed, or has reached, the allowed budget.
    #[error("privacy budget: {0}")]
    Budget(String),

    /// Training failed after privacy was spent: `steps` steps are accounted in `epsilon` (at `delta`),
    /// `holds` says which parameters the model keeps, `source` is the cause (see [`Error::root`]).
    /// The ε is spent whether or not the run finishes, so it is reported with the failure.
    #[error(
        "training stopped after {steps} accounted steps, epsilon {epsilon:.4} at delta {delta:e} already \
         spent; {holds}. Cause: {source}"
    )]
    Interrupted { steps: u64, epsilon: f64, delta: f64, holds: String, source: Box<Error> },

    /// A rank of a distributed run failed during training; every rank stops with its message
    /// (`docs/DISTRIBUTED.md`).
    #[error("rank {rank} of {ranks} failed: {message}")]
    RankFailed { rank: usize, ranks: usize, message: String },
}

impl Error {
    /// An [`Error::InvalidArgument`] for the field or flag `name`.
    pub fn invalid(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { name: name.into(), message: message.into() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// The innermost cause: the error itself, or for [`Error::Interrupted`] the error that stopped
    /// training (so that a caller can map it to its flag or file).
    pub fn root(&self) -> &Error {
        let mut error = self;
        while let Error::Interrupted { source, .. } = error {
            error = source;
        }
        error
    }

    /// An [`Error::Format`] for `path` at `location`.
    pub fn format(path: impl Into<PathBuf>, location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Format { path: path.into(), location: location.into(), message: message.into() }
    }
}
