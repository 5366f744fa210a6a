//! The embedding kernels over a batch of 128 sequences of 256 tokens (the paper's IMDb models): the
//! gather forward, the non-private scatter-add backward, the per-example norms and the clipped sum, for
//! the embedding model's table (10,004 × 16) and the LSTM's (10,004 × 100), with tokens drawn uniformly
//! and by a Zipf law (real text: a few ids take most positions). One and two threads.
//! Then the same four passes of an embedding averaged over the sequence (`embedding_mean`, the
//! embedding model's fused pair), whose output gradient is one row per example.
//! Run with `cargo bench -p dp-kernels --bench embedding`; medians of 9 timings of 10 calls.
//! `cargo bench -p dp-kernels --bench embedding -- norms` times only the kernels whose name contains
//! `norms` (for a profiler).

use dp_kernels::embedding::{
    embedding_backward, embedding_clipped_sum, embedding_forward, embedding_norms_sq, norm_scratch_len,
};
use dp_kernels::embedding_mean::{
    self, embedding_mean_backward, embedding_mean_clipped_sum, embedding_mean_forward,
    embedding_mean_norms_sq,
};
use std::hint::black_box;

mod support;

/// Median milliseconds per call of `f` (9 timings of 10 calls after 3 warm-up calls).
fn time(f: impl FnMut()) -> f64 {
    support::median_seconds_per_call(9, 10, f) * 1e3
}

/// A fixed pseudo-random sequence (a 64-bit LCG's high bits), so every run times the same tokens.
fn uniforms(len: usize) -> impl Iterator<Item = f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len).map(move |_| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Token ids below `vocab`: uniform, or Zipf with exponent 1 (id k drawn with weight 1 / (k + 1)).
fn tokens(len: usize, vocab: usize, zipf: bool) -> Vec<u32> {
    if !zipf {
        return uniforms(len).map(|u| (u * vocab as f64) as u32).collect();
    }
    let mut cumulative = Vec::with_capacity(vocab);
    let mut total = 0.0;
    for k in 0..vocab {
        total += 1.0 / (k + 1) as f64;
        cumulative.push(total);
    }
    uniforms(len).map(|u| cumulative.partition_point(|&c| c < u * total).min(vocab - 1) as u32).collect()
}

fn main() {
    let (batch, steps, vocab) = (128, 256, 10_004);
    // `cargo bench` passes `--bench`; the first other argument filters the kernels by name.
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_default();
    let timed =
        |name: &str, f: &mut dyn FnMut()| if name.contains(only.as_str()) { time(f) } else { f64::NAN };
    println!("milliseconds per batch of {batch} × {steps} tokens (median of 9)");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        for dim in [16, 100] {
            for zipf in [false, true] {
                let ids = tokens(batch * steps, vocab, zipf);
                let table: Vec<f32> = uniforms(vocab * dim).map(|u| u as f32 - 0.5).collect();
                let delta: Vec<f32> = uniforms(batch * steps * dim).map(|u| u as f32 - 0.5).collect();
                let factors: Vec<f32> = uniforms(batch).map(|u| u as f32).collect();
                let mut out = vec![0.0; batch * steps * dim];
                let mut grad = vec![0.0; vocab * dim];
                let mut norms = vec![0.0; batch];
                let mut scratch = vec![0.0; threads * norm_scratch_len(steps, dim)];
                let (v, d, b, s) = (vocab, dim, batch, steps);
                let forward = pool.install(|| {
                    timed("forward", &mut || embedding_forward(v, d, black_box(&ids), &table, &mut out))
                });
                let backward = pool.install(|| {
                    timed("backward", &mut || {
                        embedding_backward(v, d, b, s, black_box(&ids), &delta, &mut grad)
                    })
                });
                let norm = pool.install(|| {
                    timed("norms", &mut || {
                        embedding_norms_sq(v, d, b, s, black_box(&ids), &delta, &mut scratch, &mut norms, 1)
                    })
                });
                let clipped = pool.install(|| {
                    timed("clipped sum", &mut || {
                        embedding_clipped_sum(v, d, b, s, black_box(&ids), &delta, &factors, 1, &mut grad)
                    })
                });
                let tokens = if zipf { "Zipf" } else { "uniform" };
                println!(
                    "{threads} thread(s), dim {dim:3}, {tokens:7} tokens: forward {forward:6.3}  backward {backward:6.3}  \
                     norms {norm:6.3}  clipped sum {clipped:6.3}"
                );
                let out_grad = &delta[..batch * dim];
                let mut mean = vec![0.0; batch * dim];
                let mut mean_scratch = vec![0.0; threads * embedding_mean::norm_scratch_len(steps, dim)];
                let mean_forward = pool.install(|| {
                    timed("mean forward", &mut || {
                        embedding_mean_forward(v, d, b, s, black_box(&ids), &table, &mut mean)
                    })
                });
                let mean_backward = pool.install(|| {
                    timed("mean backward", &mut || {
                        embedding_mean_backward(v, d, b, s, black_box(&ids), out_grad, &mut grad)
                    })
                });
                let mean_norms = pool.install(|| {
                    timed("mean norms", &mut || {
                        embedding_mean_norms_sq(
                            v,
                            d,
                            b,
                            s,
                            black_box(&ids),
                            out_grad,
                            &mut mean_scratch,
                            &mut norms,
                            1,
                        )
                    })
                });
                let mean_clipped = pool.install(|| {
                    timed("mean clipped sum", &mut || {
                        embedding_mean_clipped_sum(
                            v,
                            d,
                            b,
                            s,
                            black_box(&ids),
                            out_grad,
                            &factors,
                            1,
                            &mut grad,
                        )
                    })
                });
                println!(
                    "{:37} mean: forward {mean_forward:6.3}  backward {mean_backward:6.3}  \
                     norms {mean_norms:6.3}  clipped sum {mean_clipped:6.3}",
                    ""
                );
            }
        }
    }
}
