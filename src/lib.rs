// The README is the crate's front page, and its Rust example runs as a doctest.
#![doc = include_str!("../README.md")]

// Generated code names this crate `::dp`, also from inside it (the `dp` binary's built-in models).
extern crate self as dp;

pub use dp_macros::dp_model;

pub mod models;
pub use dp_runtime::*;

/// NVIDIA GPUs (the `cuda` feature): a model's device program on a GPU ([`cuda::trainer::GpuModel`]),
/// the kernels and their NVRTC compilation. docs/GPU.md says what runs there and what does not yet.
#[cfg(feature = "cuda")]
pub use dp_cuda as cuda;

/// Everything a model definition and a training script need.
pub mod prelude {
    pub use crate::dp_model;
    pub use dp_runtime::{Batch, Dataset, DpModel, Loss, Precision, Workspace};
}

/// The `dp` command line (the binary's implementation); not a stable API.
#[doc(hidden)]
pub mod cli;

/// Paths the generated code uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use dp_kernels as kernels;
    pub use dp_runtime as runtime;
    pub use rand::RngCore;
}
