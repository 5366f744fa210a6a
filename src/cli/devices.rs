//! `dp devices`: what this `dp` can compute on — the CPU's vector units and threads, and, when built
//! with the `cuda` feature, NVRTC and each CUDA device, whose kernels it compiles and loads as a check.

use clap::Args;
use dp_runtime::Result;

/// Arguments of `dp devices`.
#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {}

/// Runs `dp devices`: one line per device or library, on stdout.
pub fn run(_args: DevicesArgs) -> Result<()> {
    println!("cpu: {} threads, {}, {}", rayon::current_num_threads(), vector_units(), super::bf16_products());
    for line in cuda_lines() {
        println!("{line}");
    }
    Ok(())
}

fn vector_units() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "AVX2";
        }
    }
    "no AVX2 (portable kernels)"
}

#[cfg(not(feature = "cuda"))]
fn cuda_lines() -> Vec<String> {
    vec!["cuda: not built (this dp was built without the `cuda` feature: cargo build --release --features cuda)".into()]
}

#[cfg(feature = "cuda")]
fn cuda_lines() -> Vec<String> {
    use dp_cuda::{device, nvrtc};
    let mut lines = vec![match nvrtc::version() {
        Ok((major, minor)) => format!("nvrtc: {major}.{minor}"),
        Err(e) => format!("nvrtc: {e}"),
    }];
    if !device::driver_available() {
        lines.push(format!("cuda: no driver (libcuda.so.1 not found: {})", device::DRIVER_HINT));
        return lines;
    }
    let count = device::device_count();
    lines.push(format!("cuda: {count} device(s); models with a device program train there with --device cuda:N (docs/GPU.md)"));
    for ordinal in 0..count {
        lines.push(match device::Gpu::open(ordinal) {
            Ok(gpu) => {
                format!(
                    "cuda:{ordinal}: {}, kernels compiled and loaded, cuBLAS loaded, {}",
                    gpu.describe(),
                    match gpu.has_bf16_tensor_cores() {
                        true => "bf16 products on tensor cores (--precision bf16)",
                        false => "no bf16 tensor cores (f32 only)",
                    }
                )
            }
            Err(e) => format!("cuda:{ordinal}: {e}"),
        });
    }
    lines
}
