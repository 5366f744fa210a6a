//! The products of the conv and LSTM passes in f32 (the `gemm` crate) and in bf16 (`gemm_bf16`:
//! AVX512-BF16 dot products where the CPU has them), one thread, on the shapes of the built-in models.
//! Run with `cargo bench -p dp-kernels --bench bf16_products`; medians of 9 timings, GFLOP/s and the
//! ratio bf16 over f32 in time.

use dp_kernels::gemm::{sgemm_serial, Op};
use dp_kernels::gemm_bf16::{bf16_gemm, has_bf16_dot_products};
use std::hint::black_box;

mod support;

/// A product as a pass runs it: (name, op(a), op(b), m, n, k).
type Shape = (&'static str, Op, Op, usize, usize, usize);

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    println!("AVX512-BF16 dot products on this CPU: {}", has_bf16_dot_products());
    // A conv's per-example products, with T positions and d = in_c·9 patch values: the forward
    // W[out_c×d]·P[d×T], the patch gradients Wᵀ·δ[out_c×T], the weight gradient P·δᵀ.
    let conv = |name: &'static str, in_c: usize, side: usize, out_c: usize| -> [Shape; 3] {
        let (t, d) = (side * side, in_c * 9);
        [
            (name, Op::N, Op::N, out_c, t, d),
            (name, Op::T, Op::N, d, t, out_c),
            (name, Op::N, Op::T, d, out_c, t),
        ]
    };
    let mut shapes: Vec<Shape> = Vec::new();
    shapes.extend(conv("CIFAR-10 conv2 (32→32, 32×32)", 32, 32, 32));
    shapes.extend(conv("CIFAR-10 conv4 (64→64, 16×16)", 64, 16, 64));
    shapes.extend(conv("CIFAR-10 conv6 (128→128, 8×8)", 128, 8, 128));
    shapes.extend(conv("CIFAR-10 conv7 (128→256, 4×4)", 128, 4, 256));
    shapes.extend(conv("residual CNN conv (16→16, 32×32)", 16, 32, 16));
    // The LSTM (d = h = 100, 4h = 400): input gates of 8 examples' 256 steps, one recurrent step of a
    // batch of 128, one example's input weight gradient.
    shapes.push(("LSTM input gates, 8×256 rows", Op::N, Op::T, 2048, 400, 100));
    shapes.push(("LSTM recurrent step, 128 rows", Op::N, Op::T, 128, 400, 100));
    shapes.push(("LSTM weight gradient, 256 steps", Op::T, Op::N, 400, 100, 256));
    println!("{:40} {:>4} {:>20} {:>9} {:>9} {:>6}", "product", "ops", "m×n×k", "f32", "bf16", "ratio");
    for (name, op_a, op_b, m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32 - 44.0) / 45.0).collect();
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let reps = (1e8 / flops).max(1.0) as usize;
        let (f32_s, bf16_s) = pool.install(|| {
            let f32_s = support::median_seconds_per_call(9, reps, || {
                sgemm_serial(op_a, op_b, m, n, k, 1.0, black_box(&a), &b, 0.0, &mut c)
            });
            let bf16_s = support::median_seconds_per_call(9, reps, || {
                bf16_gemm(false, op_a, op_b, (m, n, k), 1.0, black_box(&a), &b, 0.0, &mut c)
            });
            (f32_s, bf16_s)
        });
        println!(
            "{name:40} {:>4} {:>20} {:>9.1} {:>9.1} {:>6.2}",
            format!("{op_a:?}{op_b:?}"),
            format!("{m}×{n}×{k}"),
            flops / f32_s / 1e9,
            flops / bf16_s / 1e9,
            bf16_s / f32_s
        );
    }
}
