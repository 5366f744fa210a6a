//! The device side of `dp` on NVIDIA GPUs: CUDA C kernels kept as source and compiled at run time by
//! NVRTC for the GPU's architecture, products through cuBLAS, both loaded dynamically (building needs
//! no toolkit).
//!
//! The model-independent kernels of a private step, each value for value its CPU counterpart in
//! dp-runtime: the noise ([`noise`], the chunked ChaCha20 ziggurat), the clip factors ([`clip`]) and the
//! noisy SGD or Adam update and the moving average of the parameters ([`update`]), augmentation
//! multiplicity's per-example average, norms and clipped sum ([`views`], not yet run on a GPU), the
//! conversions of bf16 storage ([`storage`], not yet run on a GPU); the launches of a model's device program other than products
//! ([`dense`], [`conv`], [`norm`], [`sequence`], [`lstm`], [`attention`], [`transformer`]); [`program::GpuOps`], the runtime's `DeviceOps` on a GPU;
//! [`trainer::GpuModel`], a model's training state on the GPU, which the `Trainer` steps
//! (`DeviceTraining`). [`device::Gpu`] opens a device and loads everything. Ran on an NVIDIA H200
//! (docs/GPU.md, "Measured").

pub mod attention;
pub mod branch;
pub mod cache;
pub mod clip;
pub mod conv;
pub mod dense;
pub mod device;
pub mod error;
pub mod graphs;
pub mod landing;
pub mod lstm;
pub mod noise;
pub mod norm;
pub mod nvrtc;
pub mod program;
pub mod sequence;
pub mod staging;
pub mod storage;
pub mod trainer;
pub mod transformer;
pub mod update;
pub mod views;

pub use error::{CudaError, Result};

/// The GPU architectures every kernel is compiled for in CI: Ampere (A100) and Hopper (H100, H200).
pub const ARCHITECTURES: [&str; 2] = ["sm_80", "sm_90"];

/// The headers kernel files include, each with its text: `common.cuh` (every file), `activation.cuh`
/// and `reduce.cuh` (dense.cu, conv.cu and norm.cu; sequence.cu, lstm.cu and attention.cu `reduce.cuh`; both include `common.cuh` themselves, so it comes
/// last).
const HEADERS: [(&str, &str); 3] = [
    ("#include \"activation.cuh\"", include_str!("../kernels/activation.cuh")),
    ("#include \"reduce.cuh\"", include_str!("../kernels/reduce.cuh")),
    ("#include \"common.cuh\"", include_str!("../kernels/common.cuh")),
];

/// A kernel file as NVRTC compiles it: each `#include` of a header of `kernels/` replaced by the
/// header, so that nothing is read from disk at run time (the include guards keep a header included
/// twice to one copy).
pub fn source(file: &str) -> String {
    HEADERS.iter().fold(file.to_string(), |text, (include, header)| text.replace(include, header))
}

/// Every kernel file of the crate with its name and entry points: what the NVRTC tests compile.
pub const KERNEL_FILES: &[KernelFile] = &[
    KernelFile { name: "noise.cu", text: noise::SOURCE, entries: &["dp_noise_first", "dp_noise_retry"] },
    KernelFile { name: "clip.cu", text: clip::SOURCE, entries: &["dp_clip_factors"] },
    KernelFile { name: "update.cu", text: update::SOURCE, entries: update::ENTRIES },
    KernelFile { name: "dense.cu", text: dense::SOURCE, entries: dense::ENTRIES },
    KernelFile { name: "conv.cu", text: conv::SOURCE, entries: conv::ENTRIES },
    KernelFile { name: "norm.cu", text: norm::SOURCE, entries: norm::ENTRIES },
    KernelFile { name: "sequence.cu", text: sequence::SOURCE, entries: sequence::ENTRIES },
    KernelFile { name: "lstm.cu", text: lstm::SOURCE, entries: lstm::ENTRIES },
    KernelFile { name: "attention.cu", text: attention::SOURCE, entries: attention::ENTRIES },
    KernelFile { name: "transformer.cu", text: transformer::SOURCE, entries: transformer::ENTRIES },
    KernelFile { name: "views.cu", text: views::SOURCE, entries: views::ENTRIES },
    KernelFile { name: "storage.cu", text: storage::SOURCE, entries: storage::ENTRIES },
];

/// That a kernel `source` defines `define` as `threads` and bounds each of `kernels` by it
/// (`__launch_bounds__(define)` before the kernel's name), so that the host's launch of `threads` per
/// block is the one the compiler fitted the kernels' registers to; and that `threads` is whole warps,
/// at most 1,024 (a block's limit, and `reduce.cuh`'s block sums').
#[cfg(test)]
pub(crate) fn assert_launch_bounds(source: &str, define: &str, threads: u32, kernels: &[&str]) {
    assert!(source.contains(&format!("#define {define} {threads}\n")), "{define} is not {threads}");
    let compact: String = source.split_whitespace().collect();
    for kernel in kernels {
        assert!(
            compact.contains(&format!("__launch_bounds__({define}){kernel}(")),
            "{kernel} not bounded by {define}"
        );
    }
    assert!(threads.is_multiple_of(32) && threads <= 1024, "{threads} threads");
}

/// One kernel source file.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// Its file name in `dp-cuda/kernels/`.
    pub name: &'static str,
    /// Its text, with the `#include`s of the headers still in it (see [`source`]).
    pub text: &'static str,
    /// The `extern "C"` kernels it defines.
    pub entries: &'static [&'static str],
}
