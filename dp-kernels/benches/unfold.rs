//! Unfolding (`im2col`) one chunk of examples as the conv passes do (`chunk_examples` of a batch of
//! 128: about 2 MiB of patches), one thread, on the conv shapes of the built-in models. Run with
//! `cargo bench -p dp-kernels --bench unfold`; medians of 9 timings, nanoseconds per value written.
//! Then the backward to the input (the patch gradients' product and their fold back onto the input),
//! milliseconds per batch of 128, one thread; and the forward as the step runs it (unfolding and
//! the product), milliseconds per batch of 128 on one thread and on two.

use dp_kernels::conv::{backward_input_scratch_len, conv2d_backward_input, im2col};
use dp_kernels::conv_chunks::{chunk_examples, conv2d_forward};
use dp_kernels::gemm_bf16::Precision;
use std::hint::black_box;

mod support;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let pool_of_two = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a two-thread pool");
    let g = support::square_conv;
    let shapes = [
        ("MNIST CNN conv1 (8×8, stride 2)", g(1, 28, 16, 8, 2, 3)),
        ("MNIST CNN conv2 (4×4, stride 2)", g(16, 13, 32, 4, 2, 0)),
        ("CIFAR-10 CNN conv1 (3 → 32, 32×32)", g(3, 32, 32, 3, 1, 1)),
        ("CIFAR-10 CNN conv2 (32 → 32, 32×32)", g(32, 32, 32, 3, 1, 1)),
        ("CIFAR-10 CNN conv4 (64 → 64, 16×16)", g(64, 16, 64, 3, 1, 1)),
        ("CIFAR-10 CNN conv6 (128 → 128, 8×8)", g(128, 8, 128, 3, 1, 1)),
        ("residual CNN conv (16 → 16, 32×32)", g(16, 32, 16, 3, 1, 1)),
    ];
    println!("nanoseconds per patch value, one chunk, one thread (median of 9)");
    for (name, geom) in shapes {
        let batch = pool.install(|| chunk_examples(&geom, 128));
        let x: Vec<f32> = (0..batch * geom.input_len()).map(|k| (k % 1000) as f32).collect();
        let mut patches = vec![0.0f32; batch * geom.patches_len()];
        let values = (batch * geom.patches_len()) as f64;
        let reps = (2e7 / values).max(1.0) as usize;
        let ns = pool.install(|| {
            let call = || im2col(&geom, batch, black_box(&x), &mut patches);
            support::median_seconds_per_call(9, reps, call) * 1e9 / values
        });
        println!("{:48} {:6.3}", format!("{name}, {batch} examples"), ns);
    }
    println!("milliseconds per batch of 128 of the backward to the input, one thread (median of 9)");
    for (name, geom) in shapes {
        let batch = 128;
        let dout: Vec<f32> = (0..batch * geom.output_len()).map(|k| (k % 1000) as f32 / 1000.0).collect();
        let weight: Vec<f32> = (0..geom.weight_len()).map(|k| (k % 100) as f32 / 100.0).collect();
        let mut scratch = vec![0.0f32; backward_input_scratch_len(&geom)];
        let mut dx = vec![0.0f32; batch * geom.input_len()];
        let ms = pool.install(|| {
            let call = || {
                conv2d_backward_input(
                    &geom,
                    batch,
                    black_box(&dout),
                    &weight,
                    &mut scratch,
                    &mut dx,
                    Precision::F32,
                )
            };
            support::median_seconds_per_call(9, 2, call) * 1e3
        });
        println!("{name:48} {ms:7.3}");
    }
    println!("milliseconds per batch of 128 of the forward, one thread and two (median of 9)");
    for (name, geom) in shapes {
        let batch = 128;
        let x: Vec<f32> = (0..batch * geom.input_len()).map(|k| (k % 1000) as f32 / 1000.0).collect();
        let weight: Vec<f32> = (0..geom.weight_len()).map(|k| (k % 100) as f32 / 100.0).collect();
        let bias = vec![0.5f32; geom.out_c];
        let mut patches = vec![0.0f32; batch * geom.patches_len()];
        let mut rows = vec![0.0f32; batch * geom.output_len()];
        let mut out = vec![0.0f32; batch * geom.output_len()];
        let mut call = || {
            conv2d_forward(
                &geom,
                batch,
                black_box(&x),
                &weight,
                Some(&bias),
                &mut patches,
                &mut rows,
                &mut out,
                Precision::F32,
            )
        };
        let one = pool.install(|| support::median_seconds_per_call(9, 2, &mut call) * 1e3);
        let two = pool_of_two.install(|| support::median_seconds_per_call(9, 2, &mut call) * 1e3);
        println!("{name:48} {one:7.3} {two:7.3}");
    }
}
