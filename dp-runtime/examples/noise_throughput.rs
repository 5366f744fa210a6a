//! Throughput of the noise samplers, in million samples per second (run with `--release`):
//! the ChaCha20 Box–Muller Gaussian, the fused noise + SGD pass, the exact discrete Gaussian at the
//! σ of secure mode, and the integer-grid aggregation of one example.
//!
//! `cargo run --release -p dp-runtime --example noise_throughput`

use std::hint::black_box;
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;

use dp_runtime::model::DpModel;
use dp_runtime::noise::{DiscreteGaussian, GaussianNoise, SecureAggregator};
use dp_runtime::optim::{NoisyGradient, Optimizer, Sgd, StepInfo};
use dp_runtime::rng::from_os;

/// Runs `f` (which produces `per_call` samples) repeatedly for about `seconds` and returns M samples/s.
fn rate(seconds: f64, per_call: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        f();
        calls += 1;
    }
    calls as f64 * per_call as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() -> dp_runtime::Result<()> {
    let seconds = 1.0;
    let n = 1 << 16;

    let mut noise = GaussianNoise::new(from_os()?);
    let mut buf = vec![0.0f64; n];
    let gaussian = rate(seconds, n, || {
        noise.fill(&mut buf);
        black_box(&buf);
    });
    println!("gaussian (ChaCha20, ziggurat, f64)         {gaussian:8.1} M samples/s");
    let box_muller = rate(seconds, n, || {
        noise.fill_box_muller(&mut buf);
        black_box(&buf);
    });
    println!("gaussian (ChaCha20, Box-Muller, f64)       {box_muller:8.1} M samples/s");

    let sum = vec![0.5f32; n];
    let mut params = vec![0.0f32; n];
    let mut sgd = Sgd::new(0.1);
    let at = StepInfo { step: 0, total_steps: 1 };
    let fused = rate(seconds, n, || {
        sgd.step(&mut params, NoisyGradient::new(&sum, Some(&mut noise), 1.1, 256.0), at);
        black_box(&params);
    });
    println!("noise + divide + SGD update, one pass       {fused:8.1} M params/s");

    let mut rng = from_os()?;
    // σ of secure mode for the 26,010-parameter MNIST CNN at noise multiplier 1.1, and two others.
    let mnist_sigma = 1.1 * SecureAggregator::grid_sensitivity(26_010);
    for sigma in [1.0, 100.0, mnist_sigma, 1e6] {
        let sampler = DiscreteGaussian::new(sigma)?;
        let m = 1 << 14;
        let discrete = rate(seconds, m, || {
            let mut acc = 0i64;
            for _ in 0..m {
                acc = acc.wrapping_add(sampler.sample(&mut rng));
            }
            black_box(acc);
        });
        println!("discrete gaussian (exact), sigma {sigma:>9.1}  {discrete:8.2} M samples/s");
    }

    let d = 26_010;
    let mut agg = SecureAggregator::new(d, 1.0, 1.1)?;
    let example: Vec<f32> = (0..d).map(|i| ((i % 17) as f32 - 8.0) * 1e-3).collect();
    let grid = rate(seconds, d, || {
        agg.add_example(&example).expect("dimension matches");
    });
    println!("grid rounding + exact sum of one example    {grid:8.1} M coords/s");

    // Whole private steps of the hand-written MLP (67 parameters, B = 256): secure mode calls the
    // model once per example and adds discrete noise; this measures that overhead end to end.
    let train = common::separable(25_600, 1);
    for secure in [false, true] {
        let mut model = common::Mlp::init(&mut dp_runtime::rng::seeded(1));
        let start = Instant::now();
        let steps = 200;
        dp_runtime::Trainer::new(&mut model)
            .optimizer(Sgd::new(0.1))
            .clip_norm(1.0)
            .noise_multiplier(1.1)
            .expected_batch_size(256)
            .steps(steps)
            .secure_noise(secure)
            .quiet(true)
            .fit(&train, None)?;
        let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
        println!(
            "MLP step (B = 256), secure {secure:5}          {ms:8.3} ms/step (incl. one evaluation pass)"
        );
    }
    Ok(())
}
