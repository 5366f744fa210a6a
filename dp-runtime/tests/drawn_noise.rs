//! Noise drawn in bulk ([`GaussianNoise::fill`], alongside the clipped sum): the update it gives, and
//! that the values depend only on the seed and the coordinate, never on the number of threads or the
//! vector's length.

use dp_runtime::noise::gaussian::FILL_CHUNK;
use dp_runtime::noise::GaussianNoise;
use dp_runtime::optim::{NoisyGradient, Optimizer, Sgd, StepInfo};
use dp_runtime::rng::seeded;

const AT: StepInfo = StepInfo { step: 0, total_steps: 1 };

#[test]
fn drawn_noise_gives_exactly_the_update_of_its_normals() {
    let sum: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin()).collect();
    let start: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.11).cos()).collect();
    let (lr, noise_std, batch) = (0.5, 1.3, 64.0);

    let mut z = vec![0.0f64; sum.len()];
    GaussianNoise::new(seeded(9)).fill(&mut z);
    let mut drawn = start.clone();
    Sgd::new(lr).step(&mut drawn, NoisyGradient::with_drawn_noise(&sum, &z, noise_std, batch), AT);

    // The same arithmetic by hand, coordinate by coordinate: p − lr·(s + σC·z)/B.
    let expected: Vec<f32> = start
        .iter()
        .zip(&sum)
        .zip(&z)
        .map(|((&p, &s), &z)| (p as f64 - lr * ((s as f64 + noise_std * z) * (1.0 / batch))) as f32)
        .collect();
    assert_eq!(drawn, expected);
    assert_ne!(drawn, start, "the update moved the parameters");
    // And the noise is really there: without it the result differs.
    let mut silent = start.clone();
    Sgd::new(lr).step(&mut silent, NoisyGradient::new(&sum, None, 0.0, batch), AT);
    assert_ne!(silent, drawn);
}

/// `fill` of `len` values from `seed` on a pool of `threads` threads.
fn filled(seed: u64, len: usize, threads: usize) -> Vec<f64> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let mut out = vec![0.0f64; len];
    pool.install(|| GaussianNoise::new(seeded(seed)).fill(&mut out));
    out
}

#[test]
fn filled_noise_depends_only_on_the_seed_and_the_coordinate() {
    let len = 2 * FILL_CHUNK + FILL_CHUNK / 2 + 3;
    let one = filled(11, len, 1);
    assert_eq!(one, filled(11, len, 4), "independent of the number of threads");
    assert_eq!(one, filled(11, len, 3));
    // A shorter vector is a prefix: a coordinate does not depend on the length.
    assert_eq!(filled(11, FILL_CHUNK + 100, 2), one[..FILL_CHUNK + 100]);
    assert_eq!(filled(11, 105, 2), one[..105]);
    // Another seed, or the next step of the same stream, gives other values everywhere.
    let other = filled(12, len, 2);
    assert!(one.iter().zip(&other).all(|(a, b)| a != b));
    let mut noise = GaussianNoise::new(seeded(11));
    let mut first = vec![0.0f64; len];
    let mut second = vec![0.0f64; len];
    noise.fill(&mut first);
    noise.fill(&mut second);
    assert_eq!(first, one);
    assert!(first.iter().zip(&second).all(|(a, b)| a != b), "each fill draws a fresh key");
}

#[test]
#[should_panic(expected = "one drawn normal per gradient coordinate")]
fn drawn_noise_must_cover_every_coordinate() {
    let _ = NoisyGradient::with_drawn_noise(&[1.0, 2.0], &[0.5], 1.0, 1.0);
}
