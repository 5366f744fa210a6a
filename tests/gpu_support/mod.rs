//! What the GPU program tests share: finding the device, saying visibly when there is none, and
//! comparing one batch on the GPU with the CPU program.

#![allow(dead_code)] // each test file uses its own part

use super::dense_models::{close, close_sum, cpu_reference_in, TestInput};
use dp::clipping::ClipMode;
use dp::cuda::device::{self, Gpu};
use dp::cuda::trainer::{Clipping, GpuModel};
use dp::prelude::*;

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// GPU 0, or `None` after saying that `test` was skipped (a failure under `DP_REQUIRE_GPU`).
pub fn gpu(test: &str) -> Option<Gpu> {
    if device::device_count() == 0 {
        assert!(
            std::env::var_os("DP_REQUIRE_GPU").is_none(),
            "DP_REQUIRE_GPU is set but no CUDA device is present"
        );
        say(&format!("1 GPU test skipped: no CUDA device ({test})"));
        return None;
    }
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("{e}"));
    say(&format!("{test}: on {}", gpu.describe()));
    Some(gpu)
}

/// One batch through the device program on the GPU and through the CPU program, both in `precision`:
/// losses, norms (a poisoned example's NaN), clip factors and non-finite counts, the clipped sum (no
/// NaN example reaching it) to `tol` relative (the sum relative to its largest coordinate); in f32
/// also the plain gradient sum of an unpoisoned batch. In bf16 the device forms every conv's and
/// LSTM's per-example gradients with bf16 products where the CPU's plain sum may run in f32, so the
/// plain sums are compared in f32 only.
#[allow(clippy::too_many_arguments)]
pub fn batch_matches_cpu_in<M: DpModel>(
    precision: Precision,
    tol: f32,
    on_gpu: &mut GpuModel<M>,
    model: &M,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
    poison: bool,
) where
    M::Input: TestInput,
{
    let groups = M::GROUPS.len();
    let cpu = cpu_reference_in(precision, model, inputs, labels, n, 0.5);
    let (gpu_losses, gpu_sq) = on_gpu.per_example_norms(inputs, labels, n).unwrap();
    let tag = |what: &str| format!("{} {} n={n} {what}", M::NAME, precision.name());
    let from = usize::from(poison);
    close(&tag("losses"), &gpu_losses[from..], &cpu.losses[from..], tol);
    close(&tag("squared norms"), &gpu_sq[from * groups..], &cpu.sq_norms[from * groups..], tol);
    if poison {
        assert!(gpu_sq[..groups].iter().all(|v| v.is_nan()), "{}", tag("poisoned norm"));
    }
    let clipping = Clipping { mode: ClipMode::Flat, norm: 0.5 };
    let (gpu_factors, gpu_bad) = on_gpu.clip_factors(clipping, n).unwrap();
    assert_eq!(gpu_bad, cpu.non_finite, "{}", tag("non-finite count"));
    close(&tag("clip factors"), &gpu_factors, &cpu.factors, tol);
    let gpu_sum = on_gpu.clipped_sum(&cpu.factors, n).unwrap();
    assert!(gpu_sum.iter().all(|v| v.is_finite()), "{}", tag("a NaN example reached the sum"));
    close_sum(&tag("clipped sum"), &gpu_sum, &cpu.clipped_sum, tol);
    if !poison && precision == Precision::F32 {
        let gpu_grad = on_gpu.gradient_sum(inputs, labels, n).unwrap();
        close_sum(&tag("gradient sum"), &gpu_grad, &cpu.gradient_sum, tol);
    }
}
