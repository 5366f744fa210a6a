//! The device side of `dp` on NVIDIA GPUs, so far: CUDA C kernels kept as source, compiled at run
//! time by NVRTC for the GPU's architecture, and the host-side arithmetic of their launches.
//!
//! What exists (docs/GPU.md): the device noise generator ([`noise`]), value for value the CPU's
//! chunked ChaCha20 ziggurat, and the NVRTC compilation of every kernel for sm_80 and sm_90
//! ([`nvrtc`]). What does not exist yet: the model programs (the device `Backend` of the compiler),
//! memory on the device, and launches through the CUDA driver. No code of this crate has run on a GPU.

pub mod error;
pub mod noise;
pub mod nvrtc;

pub use error::{CudaError, Result};

/// The GPU architectures every kernel is compiled for in CI: Ampere (A100) and Hopper (H100, H200).
pub const ARCHITECTURES: [&str; 2] = ["sm_80", "sm_90"];

/// Every kernel source of the crate, by name: what the NVRTC tests compile.
pub const SOURCES: &[(&str, &str)] = &[("noise.cu", noise::SOURCE)];
