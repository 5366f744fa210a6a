//! Pooling over a batch of 128, one thread: max pooling forward on the MNIST CNN's pools (2×2
//! windows, stride 1), average pooling forward and backward on the CIFAR-10 CNN's (2×2, stride 2).
//! Run with `cargo bench -p dp-kernels --bench pooling`; medians of 9 timings of 10 calls.

use dp_kernels::pool::{avg_pool2d_backward, avg_pool2d_forward, max_pool2d_forward, Pool2dGeometry};
use std::hint::black_box;

mod support;

/// Median milliseconds per call of `f` (9 timings of 10 calls after 3 warm-up calls).
fn time(f: impl FnMut()) -> f64 {
    support::median_seconds_per_call(9, 10, f) * 1e3
}

fn values(len: usize) -> Vec<f32> {
    (0..len).map(|k| (k * 7919 % 1000) as f32 / 1000.0).collect()
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let batch = 128;
    let geometry = |channels, side, stride| Pool2dGeometry {
        channels,
        in_h: side,
        in_w: side,
        kernel: 2,
        stride,
        padding: 0,
    };
    println!("milliseconds per batch of {batch}, one thread (median of 9)");
    for (name, geom) in [
        ("MNIST CNN pool 1 (16 × 14 × 14)", geometry(16, 14, 1)),
        ("MNIST CNN pool 2 (32 × 5 × 5)", geometry(32, 5, 1)),
    ] {
        let x = values(batch * geom.input_len());
        let mut out = vec![0.0; batch * geom.output_len()];
        let mut argmax = vec![0u32; batch * geom.output_len()];
        let ms =
            pool.install(|| time(|| max_pool2d_forward(&geom, batch, black_box(&x), &mut out, &mut argmax)));
        println!("{:48} {ms:7.3}", format!("max, {name}"));
    }
    for (name, geom) in [
        ("CIFAR-10 CNN pool 1 (32 × 32 × 32)", geometry(32, 32, 2)),
        ("CIFAR-10 CNN pool 2 (64 × 16 × 16)", geometry(64, 16, 2)),
    ] {
        let x = values(batch * geom.input_len());
        let g = values(batch * geom.output_len());
        let mut out = vec![0.0; batch * geom.output_len()];
        let mut dx = vec![0.0; batch * geom.input_len()];
        let forward = pool.install(|| time(|| avg_pool2d_forward(&geom, batch, black_box(&x), &mut out)));
        let backward = pool.install(|| time(|| avg_pool2d_backward(&geom, batch, black_box(&g), &mut dx)));
        println!("{:48} {forward:7.3}", format!("average, {name}"));
        println!("{:48} {backward:7.3}", format!("average backward, {name}"));
    }
}
