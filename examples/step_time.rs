//! Times one private DP-SGD step (per-example norms, clip factors, clipped sum) and one non-private
//! step (loss and gradient) of the Adult FCNN at B = 128 on synthetic inputs; prints the medians.
//!
//! `cargo run --release --example step_time`

use dp::models::AdultFfnn;
use dp::prelude::*;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const BATCH: usize = 128;
const WARMUP: usize = 20;
const TIMED: usize = 100;
const CLIP: f32 = 1.0;

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Runs `step` WARMUP times, then returns the median of TIMED timed runs in milliseconds.
fn time(mut step: impl FnMut()) -> f64 {
    (0..WARMUP).for_each(|_| step());
    let samples = (0..TIMED)
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median_ms(samples)
}

fn main() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let model = AdultFfnn::init(&mut rng);
    let inputs: Vec<f32> = (0..BATCH * 104).map(|_| f32::from(rng.random_bool(0.13))).collect();
    let labels: Vec<f32> = (0..BATCH).map(|_| f32::from(rng.random_bool(0.25))).collect();
    let batch = Batch { inputs: &inputs, labels: &labels, size: BATCH };
    let groups = AdultFfnn::GROUPS.len();
    let mut ws = Workspace::new::<AdultFfnn>(BATCH);
    let mut losses = vec![0.0f32; BATCH];
    let mut sq_norms = vec![0.0f32; BATCH * groups];
    let mut factors = vec![0.0f32; BATCH * groups];
    let mut grad = vec![0.0f32; AdultFfnn::PARAM_COUNT];

    let private = time(|| {
        model.per_example_norms(&mut ws, batch, &mut losses, &mut sq_norms);
        // Flat clipping: one factor per example from its total norm.
        for (norms, f) in sq_norms.chunks_exact(groups).zip(factors.chunks_exact_mut(groups)) {
            let norm = norms.iter().sum::<f32>().sqrt();
            f.fill(if norm.is_finite() { (CLIP / norm).min(1.0) } else { 0.0 });
        }
        grad.fill(0.0);
        model.clipped_sum(&mut ws, batch, &factors, &mut grad);
    });
    let non_private = time(|| {
        grad.fill(0.0);
        model.loss_and_gradient(&mut ws, batch, &mut losses, &mut grad);
    });
    println!(
        "AdultFfnn ({} parameters), B = {BATCH}, median of {TIMED} steps after {WARMUP} warm-up:",
        AdultFfnn::PARAM_COUNT
    );
    println!("  private step     {private:.4} ms");
    println!("  non-private step {non_private:.4} ms");
    println!("  ratio            {:.2}x", private / non_private);
}
