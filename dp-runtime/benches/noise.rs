//! The bulk noise draw, single-threaded: the ChaCha20 keystream alone, one chunk of ziggurat
//! normals ([`fill_chunk`]), and a whole vector of the embedding model's and the CIFAR-10 CNN's
//! parameter counts through [`GaussianNoise::fill`]. Run with
//! `cargo bench -p dp-runtime --bench noise`; medians of 9 timings, nanoseconds per value.

use dp_runtime::noise::chacha::{ChaCha20Blocks, WORDS_PER_CALL};
use dp_runtime::noise::gaussian::{fill_chunk, FILL_CHUNK};
use dp_runtime::noise::GaussianNoise;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;
use std::time::Instant;

/// Median nanoseconds per value of `f`, which produces `values` values, over 9 timings of `reps`
/// calls after 3 warm-up calls.
fn time(values: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut ns: Vec<f64> = (0..9)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() * 1e9 / (reps * values) as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[4]
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let key = [7u8; 32];
    println!("nanoseconds per value, one thread (median of 9)");

    let mut blocks = ChaCha20Blocks::new(&key, 0, 0);
    let mut words = [0u64; WORDS_PER_CALL];
    let keystream = time(WORDS_PER_CALL, 2000, || blocks.next_words(black_box(&mut words)));
    println!("{:42} {keystream:6.2}", "ChaCha20 keystream (one u64 per value)");

    let mut chunk = vec![0.0f64; FILL_CHUNK];
    let normals = time(FILL_CHUNK, 20, || fill_chunk(&key, 3, black_box(&mut chunk)));
    println!("{:42} {normals:6.2}", "fill_chunk (2^14 ziggurat normals)");

    let mut noise = GaussianNoise::new(ChaCha20Rng::seed_from_u64(1));
    for (name, len) in [("embedding model", 160_098), ("CIFAR-10 CNN", 605_226)] {
        let mut out = vec![0.0f64; len];
        let per_value = pool.install(|| time(len, 5, || noise.fill(black_box(&mut out))));
        println!("{:42} {per_value:6.2}", format!("GaussianNoise::fill, {name} ({len})"));
    }
}
