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
    /// The device has less memory free than a model's regions for a batch need.
    #[error(
        "{model}: batches of up to {batch} examples need {:.2} GiB more device memory{}, and {device} has \
         {:.2} of its {:.2} GiB free: run fewer examples at once (--max-physical-batch, \
         `Trainer::max_physical_batch`: the batch in chunks, the step unchanged) or use a smaller batch \
         (--batch-size)",
        gib(*needed),
        if *bf16 { " (storing in bf16)" } else { "" },
        gib(*free),
        gib(*total)
    )]
    OutOfMemory {
        model: &'static str,
        /// The examples the regions were for.
        batch: usize,
        /// Whether they were to be stored in bf16.
        bf16: bool,
        device: String,
        /// Bytes needed, free and in all.
        needed: u64,
        free: u64,
        total: u64,
    },
}

/// Bytes in GiB, for messages.
pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// A result of the device side.
pub type Result<T> = std::result::Result<T, CudaError>;
