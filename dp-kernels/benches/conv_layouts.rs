//! One example's convolution products in the two layouts of its patches, single-threaded, on the conv
//! shapes of the built-in models: the weight gradient (position-major `Δᵀ·A`, channel-major `Δ·Aᵀ`,
//! and channel-major transposed `A·Δᵀ`, which `per_example` uses), the forward and the backward to the
//! input. Run with `cargo bench -p dp-kernels --bench conv_layouts`; medians of 7 timings.

use dp_kernels::gemm::{sgemm_serial, Op};
use std::hint::black_box;

mod support;

/// Median microseconds per call of `f`, over 7 timings of `reps` calls after 3 warm-up calls.
fn time(reps: usize, f: impl FnMut()) -> f64 {
    support::median_seconds_per_call(7, reps, f) * 1e6
}

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * seed) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn main() {
    // (layer, T, d, p): positions, patch length, output channels.
    let shapes = [
        ("MNIST CNN conv1", 196, 64, 16),
        ("MNIST CNN conv2", 25, 256, 32),
        ("CIFAR-10 CNN conv1", 1024, 27, 32),
        ("CIFAR-10 CNN conv2", 1024, 288, 32),
        ("CIFAR-10 CNN conv4", 256, 576, 64),
        ("CIFAR-10 CNN conv5", 64, 576, 128),
        ("residual CNN conv", 1024, 144, 16),
    ];
    println!("microseconds per example (GFLOP/s), one thread");
    println!(
        "{:20} {:>16} {:>16} {:>16} | {:>16} {:>16} | {:>16} {:>16}",
        "layer", "grad PM Δᵀ·A", "grad CM Δ·Aᵀ", "grad CM A·Δᵀ", "fwd PM", "fwd CM", "dx PM", "dx CM"
    );
    for (name, t, d, p) in shapes {
        let (a, delta, w) = (values(t * d, 7919), values(t * p, 104_729), values(p * d, 31));
        let (mut g, mut out, mut cols) = (vec![0.0f32; p * d], vec![0.0f32; p * t], vec![0.0f32; d * t]);
        let flops = 2.0 * (t * d * p) as f64;
        let reps = (2e8 / flops).max(1.0) as usize;
        let cell = |op_a, op_b, m, n, k, x: &[f32], y: &[f32], dst: &mut [f32]| {
            let us = time(reps, || sgemm_serial(op_a, op_b, m, n, k, 1.0, x, y, 0.0, black_box(&mut *dst)));
            format!("{us:7.1} ({:5.1})", flops / us / 1e3)
        };
        // Position-major: A [T][d], Δ [T][p]; channel-major: A [d][T], Δ [p][T] (same values, reread).
        let grad_pm = cell(Op::T, Op::N, p, d, t, &delta, &a, &mut g);
        let grad_cm = cell(Op::N, Op::T, p, d, t, &delta, &a, &mut g);
        let grad_cm_t = cell(Op::N, Op::T, d, p, t, &a, &delta, &mut g);
        let fwd_pm = cell(Op::N, Op::T, p, t, d, &w, &a, &mut out);
        let fwd_cm = cell(Op::N, Op::N, p, t, d, &w, &a, &mut out);
        let dx_pm = cell(Op::N, Op::N, t, d, p, &delta, &w, &mut cols);
        let dx_cm = cell(Op::T, Op::N, d, t, p, &w, &delta, &mut cols);
        println!("{name:20} {grad_pm:>16} {grad_cm:>16} {grad_cm_t:>16} | {fwd_pm:>16} {fwd_cm:>16} | {dx_pm:>16} {dx_cm:>16}");
    }
}
