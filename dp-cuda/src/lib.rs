//! The device side of `dp` on NVIDIA GPUs, so far: CUDA C kernels kept as source, compiled at run
//! time by NVRTC for the GPU's architecture, and the host-side arithmetic of their launches.
//!
//! What exists (docs/GPU.md): the model-independent kernels of a private step, each value for value
//! its CPU counterpart in dp-runtime — the noise ([`noise`], the chunked ChaCha20 ziggurat), the clip
//! factors ([`clip`]) and the noisy SGD update ([`update`]) — and the NVRTC compilation of every
//! kernel for sm_80 and sm_90 ([`nvrtc`]), and [`device::Gpu`], which runs each of them through the
//! CUDA driver on host data (what the GPU tests compare with the CPU). What does not exist yet: the
//! model programs (the device `Backend` of the compiler) and a training step that stays on the device.
//! No code of this crate has run on a GPU.

pub mod clip;
pub mod device;
pub mod error;
pub mod noise;
pub mod nvrtc;
pub mod update;

pub use error::{CudaError, Result};

/// The GPU architectures every kernel is compiled for in CI: Ampere (A100) and Hopper (H100, H200).
pub const ARCHITECTURES: [&str; 2] = ["sm_80", "sm_90"];

/// The header every kernel file includes (`#include "common.cuh"`).
const COMMON: &str = include_str!("../kernels/common.cuh");

/// A kernel file as NVRTC compiles it: its `#include "common.cuh"` replaced by the header, so that
/// nothing is read from disk at run time.
pub fn source(file: &str) -> String {
    file.replace("#include \"common.cuh\"", COMMON)
}

/// Every kernel file of the crate with its name and entry points: what the NVRTC tests compile.
pub const KERNEL_FILES: &[KernelFile] = &[
    KernelFile { name: "noise.cu", text: noise::SOURCE, entries: &["dp_noise_first", "dp_noise_retry"] },
    KernelFile { name: "clip.cu", text: clip::SOURCE, entries: &["dp_clip_factors"] },
    KernelFile { name: "update.cu", text: update::SOURCE, entries: &["dp_sgd_noisy_update"] },
];

/// One kernel source file.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// Its file name in `dp-cuda/kernels/`.
    pub name: &'static str,
    /// Its text, with the `#include` of the common header still in it (see [`source`]).
    pub text: &'static str,
    /// The `extern "C"` kernels it defines.
    pub entries: &'static [&'static str],
}
