//! Errors of the device side.

/// What went wrong on the device side.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library could not be loaded.
    #[error("{library} not found: {hint}")]
    LibraryMissing {
        /// The library's file name, e.g. `libnvrtc.so.12`.
        library: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// NVRTC refused a kernel source; `log` is its compiler output.
    #[error("{source_name} does not compile for {arch}: {log}")]
    Compile {
        /// The kernel file.
        source_name: String,
        /// The target architecture.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// The CUDA driver refused a call.
    #[error("CUDA driver error while {during}: {message}")]
    Driver {
        /// What was being done.
        during: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The inputs of a kernel call do not fit together.
    #[error("{0}")]
    Mismatch(String),
}

/// A result of the device side.
pub type Result<T> = std::result::Result<T, CudaError>;
