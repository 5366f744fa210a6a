//! A conv's passes over one chunk of examples (`chunk_examples` of a batch of 128), one product per
//! example against the chunk folded into one product per group (`conv_folded`), on the built-in
//! models' convs with few positions. Run with `cargo bench -p dp-kernels --bench conv_folded`
//! (`-- 2` for two threads); medians of 9 timings, microseconds per example. `conv_folded::folds`
//! picks the layers where the folded column wins.

use dp_kernels::conv::{conv2d_backward_input, conv2d_forward_from_patches, im2col};
use dp_kernels::conv_chunks::chunk_examples;
use dp_kernels::gemm_bf16::Precision;
use dp_kernels::{conv_folded, per_example};
use std::hint::black_box;

mod support;

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * seed) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn main() {
    let threads = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let g = support::square_conv;
    let shapes = [
        ("MNIST CNN conv2 (T = 25)", g(16, 13, 32, 4, 2, 0)),
        ("CIFAR-10 CNN conv5 (T = 64)", g(64, 8, 128, 3, 1, 1)),
        ("CIFAR-10 CNN conv6 (T = 64)", g(128, 8, 128, 3, 1, 1)),
        ("CIFAR-10 CNN conv7 (T = 16)", g(128, 4, 256, 3, 1, 1)),
        ("CIFAR-10 CNN conv8 (T = 16)", g(256, 4, 10, 3, 1, 1)),
    ];
    println!("microseconds per example, {threads} thread(s): per example -> folded");
    pool.install(|| {
        for (name, geom) in shapes {
            let len = chunk_examples(&geom, 128);
            let x = values(len * geom.input_len(), 7919);
            let dout = values(len * geom.output_len(), 104_729);
            let w = values(geom.weight_len(), 31);
            let mut patches = vec![0.0f32; len * geom.patches_len()];
            let mut rows = vec![0.0f32; len * geom.output_len()];
            let mut out = vec![0.0f32; len * geom.output_len()];
            let mut dx = vec![0.0f32; len * geom.input_len()];
            let mut gw = vec![0.0f32; geom.weight_len()];
            let layer = geom.layer();
            let time = |f: &mut dyn FnMut()| support::median_seconds_per_call(9, 1, f) * 1e6 / len as f64;
            let forward = (
                time(&mut || {
                    im2col(&geom, len, &x, &mut patches);
                    conv2d_forward_from_patches(&geom, len, &patches, &w, None, black_box(&mut out));
                }),
                time(&mut || {
                    conv_folded::forward(
                        &geom,
                        len,
                        &x,
                        &w,
                        None,
                        &mut patches,
                        &mut rows,
                        black_box(&mut out),
                        Precision::F32,
                    )
                }),
            );
            let input_grad = (
                time(&mut || {
                    conv2d_backward_input(
                        &geom,
                        len,
                        &dout,
                        &w,
                        &mut patches,
                        black_box(&mut dx),
                        Precision::F32,
                    )
                }),
                time(&mut || {
                    conv_folded::backward_input(
                        &geom,
                        len,
                        &dout,
                        &w,
                        &mut patches,
                        &mut rows,
                        black_box(&mut dx),
                        Precision::F32,
                    )
                }),
            );
            let weight_grad = (
                time(&mut || {
                    im2col(&geom, len, &x, &mut patches);
                    per_example::sum_outer(&layer, len, &patches, &dout, black_box(&mut gw));
                }),
                time(&mut || {
                    let (p, r) = (&mut patches, &mut rows);
                    conv_folded::weight_gradient(&geom, len, &x, &dout, None, p, r, black_box(&mut gw), None);
                }),
            );
            let cell = |(a, b): (f64, f64)| format!("{a:7.1} -> {b:7.1}");
            println!(
                "{name:28} chunk {len:3}  forward {}  input gradient {}  weight gradient {}{}",
                cell(forward),
                cell(input_grad),
                cell(weight_grad),
                if conv_folded::folds(&geom) { "  (folds)" } else { "" }
            );
        }
    });
}
