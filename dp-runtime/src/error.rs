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

    /// An [`Error::Format`] for `path` at `location`.
    pub fn format(path: impl Into<PathBuf>, location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Format { path: path.into(), location: location.into(), message: message.into() }
    }
}
