//! Max pooling forward over a batch of 128, one thread, on the pools of the MNIST CNN (2×2 windows,
//! stride 1, after each conv). Run with `cargo bench -p dp-kernels --bench pooling`; medians of 9
//! timings of 20 calls.

use dp_kernels::pool::{max_pool2d_forward, Pool2dGeometry};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let batch = 128;
    let geometry = |channels, side| Pool2dGeometry {
        channels,
        in_h: side,
        in_w: side,
        kernel: 2,
        stride: 1,
        padding: 0,
    };
    println!("milliseconds per batch of {batch}, one thread (median of 9)");
    for (name, geom) in [
        ("MNIST CNN pool 1 (16 × 14 × 14)", geometry(16, 14)),
        ("MNIST CNN pool 2 (32 × 5 × 5)", geometry(32, 5)),
    ] {
        let x: Vec<f32> = (0..batch * geom.input_len()).map(|k| (k * 7919 % 1000) as f32 / 1000.0).collect();
        let mut out = vec![0.0; batch * geom.output_len()];
        let mut argmax = vec![0u32; batch * geom.output_len()];
        let mut ms: Vec<f64> = pool.install(|| {
            for _ in 0..3 {
                max_pool2d_forward(&geom, batch, &x, &mut out, &mut argmax);
            }
            (0..9)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..20 {
                        max_pool2d_forward(&geom, batch, black_box(&x), &mut out, &mut argmax);
                    }
                    start.elapsed().as_secs_f64() * 1e3 / 20.0
                })
                .collect()
        });
        ms.sort_by(f64::total_cmp);
        println!("{name:34} {:7.3}", ms[4]);
    }
}
