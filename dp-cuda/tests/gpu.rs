//! The kernels on a GPU against the CPU. Marked `#[ignore]`, so `cargo test` lists them as ignored
//! (with the reason) instead of passing them; scripts/gpu/check.sh runs them with `--include-ignored`
//! and `DP_REQUIRE_GPU`, which turns a missing device into a failure. Run by hand without a device,
//! each says `1 GPU test skipped: no CUDA device` and checks nothing. They passed on an NVIDIA H200
//! (2026-12-04; docs/GPU.md).

use dp_cuda::device::{self, Gpu, SgdState, SgdStep};
use dp_runtime::clipping::{clip_factors, ClipMode};
use dp_runtime::noise::gaussian::fill_chunk;
use dp_runtime::optim::{NoisyGradient, Optimizer, OptimizerState, Sgd, StepInfo};

fn gpu(test: &str) -> Option<Gpu> {
    if device::device_count() == 0 {
        assert!(
            std::env::var_os("DP_REQUIRE_GPU").is_none(),
            "DP_REQUIRE_GPU is set but no CUDA device is present"
        );
        say(&format!("1 GPU test skipped: no CUDA device ({test})"));
        return None;
    }
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("testing on {}", gpu.describe());
    Some(gpu)
}

fn xorshift(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_noise_equals_the_cpu_draw() {
    let Some(gpu) = gpu("noise") else { return };
    for len in [1, 129, dp_cuda::noise::CHUNK, 3_000_017] {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(len as u8));
        let device = gpu.standard_normals(&key, len).unwrap();
        let mut cpu = vec![0.0; len];
        for (chunk, values) in cpu.chunks_mut(dp_cuda::noise::CHUNK).enumerate() {
            fill_chunk(&key, chunk as u64, values);
        }
        // The common case is exact arithmetic; the wedge and tail call exp and log, whose last bit
        // may differ between CUDA's libdevice and the host's libm.
        let mut inexact = 0;
        for (i, (c, d)) in cpu.iter().zip(&device).enumerate() {
            if c.to_bits() != d.to_bits() {
                inexact += 1;
                assert!((c - d).abs() <= 1e-14 * c.abs().max(1.0), "coordinate {i}: cpu {c}, gpu {d}");
            }
        }
        assert!(inexact * 1000 <= len, "{inexact} of {len} coordinates differ in their last bits");
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_clip_factors_equal_the_cpus() {
    let Some(gpu) = gpu("clip factors") else { return };
    for batch in [1, 7, 256, 1_000] {
        for (mode, groups) in [(ClipMode::Flat, 1), (ClipMode::Flat, 4), (ClipMode::PerLayer, 4)] {
            let special = [f32::NAN, f32::INFINITY, -1.0, 0.0, f32::MAX];
            let sq: Vec<f32> = xorshift(batch as u64, batch * groups)
                .iter()
                .enumerate()
                .map(
                    |(i, u)| {
                        if i % 31 == 30 {
                            special[i / 31 % 5]
                        } else {
                            10f64.powf(u * 8.0 - 4.0) as f32
                        }
                    },
                )
                .collect();
            let mut cpu = vec![0.0; sq.len()];
            let cpu_bad = clip_factors(mode, 1.0, groups, &sq, &mut cpu).unwrap();
            let (device, device_bad) = gpu.clip_factors(mode, 1.0, groups, &sq).unwrap();
            assert_eq!(device_bad, cpu_bad);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&device), bits(&cpu), "{mode:?} G={groups} B={batch}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_noisy_sgd_update_equals_the_cpus() {
    let Some(gpu) = gpu("noisy SGD update") else { return };
    let len = 100_003;
    let params: Vec<f32> = xorshift(3, len).iter().map(|u| (u - 0.5) as f32).collect();
    let velocity: Vec<f32> = xorshift(5, len).iter().map(|u| (u - 0.5) as f32 * 0.1).collect();
    let sum: Vec<f32> = xorshift(7, len).iter().map(|u| ((u - 0.5) * 40.0) as f32).collect();
    let z: Vec<f64> = xorshift(11, len).iter().map(|u| (u - 0.5) * 6.0).collect();
    for (momentum, nesterov, first) in [(0.0, false, true), (0.9, false, true), (0.9, true, false)] {
        let mut sgd = Sgd::new(0.1).momentum(momentum).nesterov(nesterov).weight_decay(1e-4);
        if !first {
            let buffers = vec![("momentum".to_string(), velocity.clone())];
            sgd.load_state(OptimizerState { kind: "sgd".into(), updates: 1, buffers }, len).unwrap();
        }
        let mut cpu = params.clone();
        let at = StepInfo { step: 0, total_steps: 1 };
        sgd.step(&mut cpu, NoisyGradient::with_drawn_noise(&sum, &z, 0.77, 256.0), at);
        let (mut device, mut device_velocity) = (params.clone(), velocity.clone());
        let state = SgdState { params: &mut device, velocity: &mut device_velocity, sum: &sum, z: &z };
        let step = SgdStep {
            noise_std: 0.77,
            inverse_batch: 1.0 / 256.0,
            lr: 0.1,
            momentum,
            weight_decay: 1e-4,
            first,
            nesterov,
        };
        gpu.sgd_noisy_update(state, step).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&device), bits(&cpu), "momentum {momentum} nesterov {nesterov}");
    }
}

/// A line on the real stderr: libtest captures `eprintln!` of passing tests, and a skip must be seen.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
