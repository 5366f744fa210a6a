//! Poisson sampling: batch sizes follow Binomial(N, q), every example is drawn, empty batches occur
//! and are fine, a step costs O(qN); shuffled batches have the fixed size and cover each epoch.

use dp_runtime::rng::seeded;
use dp_runtime::sampling::{PoissonSampler, Sampler, SamplingMode, ShuffledSampler};

/// Binomial(n, q) probabilities of 0..=n, by the ratio recurrence in f64.
fn binomial_pmf(n: usize, q: f64) -> Vec<f64> {
    let mut pmf = vec![0.0; n + 1];
    pmf[0] = (n as f64 * (-q).ln_1p()).exp();
    for k in 0..n {
        pmf[k + 1] = pmf[k] * (n - k) as f64 / (k + 1) as f64 * q / (1.0 - q);
    }
    pmf
}

/// Upper quantile of χ²(df) at the standard normal quantile z (Wilson–Hilferty).
fn chi_square_critical(df: usize, z: f64) -> f64 {
    let d = df as f64;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Pearson χ² of observed batch sizes against Binomial(n, q), bins merged until each expects ≥ 5.
/// Returns (statistic, degrees of freedom).
fn chi_square_batch_sizes(sizes: &[usize], n: usize, q: f64) -> (f64, usize) {
    let pmf = binomial_pmf(n, q);
    let draws = sizes.len() as f64;
    let mut counts = vec![0usize; n + 1];
    for &s in sizes {
        counts[s] += 1;
    }
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let (mut expected, mut observed) = (0.0, 0.0);
    for k in 0..=n {
        expected += pmf[k] * draws;
        observed += counts[k] as f64;
        if expected >= 5.0 {
            bins.push((observed, expected));
            expected = 0.0;
            observed = 0.0;
        }
    }
    // The leftover upper tail joins the last bin.
    let last = bins.last_mut().unwrap();
    last.0 += observed;
    last.1 += expected;
    let stat = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    (stat, bins.len() - 1)
}

fn draw_sizes(n: usize, q: f64, draws: usize, seed: u64) -> Vec<usize> {
    let sampler = PoissonSampler::new(n, q);
    let mut rng = seeded(seed);
    let mut batch = Vec::new();
    (0..draws)
        .map(|_| {
            sampler.sample(&mut rng, &mut batch);
            assert!(batch.windows(2).all(|w| w[0] < w[1]), "indices ascending and distinct");
            assert!(batch.iter().all(|&i| i < n));
            batch.len()
        })
        .collect()
}

#[test]
fn batch_sizes_follow_the_binomial_and_a_wrong_rate_fails() {
    let (n, q) = (1000, 0.05);
    let sizes = draw_sizes(n, q, 5000, 11);
    let (stat, df) = chi_square_batch_sizes(&sizes, n, q);
    let critical = chi_square_critical(df, 3.09); // α = 0.001
    assert!(stat < critical, "correct rate rejected: chi2 {stat:.1} >= {critical:.1} (df {df})");

    // The same test must reject a sampler whose rate is 10% off.
    let wrong = draw_sizes(n, q * 1.1, 5000, 12);
    let (stat, df) = chi_square_batch_sizes(&wrong, n, q);
    assert!(stat > chi_square_critical(df, 3.09), "wrong rate accepted: chi2 {stat:.1} (df {df})");
}

#[test]
fn every_example_is_drawn_eventually() {
    let (n, q) = (300, 0.05);
    let sampler = PoissonSampler::new(n, q);
    let mut rng = seeded(5);
    let mut seen = vec![false; n];
    let mut batch = Vec::new();
    for _ in 0..600 {
        sampler.sample(&mut rng, &mut batch);
        for &i in &batch {
            seen[i] = true;
        }
    }
    assert!(seen.iter().all(|&s| s), "{} examples never drawn", seen.iter().filter(|&&s| !s).count());
    // Each index is kept with probability q: the last and first are not special.
    let counts = (0..2000).fold([0usize; 2], |mut c, _| {
        sampler.sample(&mut rng, &mut batch);
        c[0] += batch.first().is_some_and(|&i| i == 0) as usize;
        c[1] += batch.last().is_some_and(|&i| i == n - 1) as usize;
        c
    });
    for c in counts {
        assert!((c as f64 - 100.0).abs() < 45.0, "{counts:?}");
    }
}

#[test]
fn empty_batches_happen_and_are_empty() {
    let sampler = PoissonSampler::new(100, 0.002);
    let mut rng = seeded(9);
    let mut batch = vec![7];
    let mut empty = 0;
    for _ in 0..1000 {
        sampler.sample(&mut rng, &mut batch);
        empty += batch.is_empty() as usize;
    }
    // P(empty) = 0.998^100 ≈ 0.82.
    assert!((700..930).contains(&empty), "{empty}");
}

#[test]
fn a_step_costs_order_qn_not_n() {
    // N = 10¹², q = 10⁻¹⁰: an O(N) sampler would never finish.
    let sampler = PoissonSampler::new(1_000_000_000_000, 1e-10);
    let mut rng = seeded(1);
    let mut batch = Vec::new();
    let mut total = 0;
    for _ in 0..200 {
        sampler.sample(&mut rng, &mut batch);
        total += batch.len();
    }
    assert!((total as f64 - 20_000.0).abs() < 600.0, "{total}");
}

#[test]
fn rate_one_takes_everything() {
    let mut rng = seeded(2);
    let mut batch = Vec::new();
    PoissonSampler::new(10, 1.0).sample(&mut rng, &mut batch);
    assert_eq!(batch, (0..10).collect::<Vec<_>>());
}

#[test]
fn shuffled_batches_have_fixed_size_and_cover_each_pass() {
    let mut sampler = ShuffledSampler::new(10, 5);
    let mut rng = seeded(3);
    let mut batch = Vec::new();
    for _ in 0..4 {
        let mut pass = Vec::new();
        for _ in 0..2 {
            sampler.sample(&mut rng, &mut batch);
            assert_eq!(batch.len(), 5);
            pass.extend_from_slice(&batch);
        }
        pass.sort();
        assert_eq!(pass, (0..10).collect::<Vec<_>>());
    }
    let mut either = Sampler::new(SamplingMode::Shuffled, 10, 3);
    either.sample(&mut rng, &mut batch);
    assert_eq!(batch.len(), 3);
    assert!(SamplingMode::Shuffled.to_string().contains("assumes Poisson"));
}
