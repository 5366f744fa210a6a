//! Noise: moments and a Kolmogorov–Smirnov test of the Gaussian noise as the optimizer sees it,
//! N(0, σ²C²)/B_expected; the exact discrete Gaussian against its pmf (χ²); secure aggregation.

use dp_runtime::noise::discrete_gaussian::{discrete_laplace, pmf};
use dp_runtime::noise::gaussian::FILL_CHUNK;
use dp_runtime::noise::{DiscreteGaussian, GaussianNoise, SecureAggregator};
use dp_runtime::optim::NoisyGradient;
use dp_runtime::rng::seeded;

/// Φ(x) via erfc (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The KS statistic of `samples` against N(0, std²).
fn ks_statistic(mut samples: Vec<f64>, std: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = samples.len() as f64;
    samples.iter().enumerate().fold(0.0f64, |d, (i, &x)| {
        let f = normal_cdf(x / std);
        d.max((f - i as f64 / n).abs()).max((f - (i + 1) as f64 / n).abs())
    })
}

/// The noise exactly as an optimizer receives it for a zero clipped sum.
fn optimizer_noise(n: usize, noise_std: f64, expected_batch: f64, seed: u64) -> Vec<f64> {
    let sum = vec![0.0f32; n];
    let mut noise = GaussianNoise::new(seeded(seed));
    NoisyGradient::new(&sum, Some(&mut noise), noise_std, expected_batch).values().collect()
}

#[test]
fn gaussian_noise_has_the_right_moments() {
    let (sigma, clip) = (1.3, 2.0);
    let std = sigma * clip;
    let z = optimizer_noise(200_000, std, 1.0, 4);
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let kurtosis = z.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n / (var * var);
    assert!(mean.abs() < 5.0 * std / n.sqrt(), "mean {mean}");
    assert!((var / (std * std) - 1.0).abs() < 0.02, "variance {var} vs {}", std * std);
    assert!((kurtosis - 3.0).abs() < 0.1, "kurtosis {kurtosis}");
    // Divided by the expected batch size.
    let scaled = optimizer_noise(200_000, std, 4.0, 4);
    assert!((scaled[17] * 4.0 - z[17]).abs() < 1e-12);
}

#[test]
fn gaussian_noise_passes_kolmogorov_smirnov_and_a_wrong_scale_fails() {
    let std = 0.8 * 1.5;
    let n = 20_000;
    let samples = optimizer_noise(n, std, 1.0, 8);
    let critical = 1.95 / (n as f64).sqrt(); // α = 0.001
    let d = ks_statistic(samples.clone(), std);
    assert!(d < critical, "KS {d} >= {critical}");
    let wrong = ks_statistic(samples, std * 1.1);
    assert!(wrong > critical, "a 10% wrong scale was accepted: KS {wrong}");
}

#[test]
fn both_gaussian_methods_pass_kolmogorov_smirnov() {
    let mut noise = GaussianNoise::new(seeded(5));
    let mut buf = vec![0.0; 20_001];
    noise.fill(&mut buf);
    let d = ks_statistic(buf.clone(), 1.0);
    assert!(d < 1.95 / (20_001f64).sqrt(), "ziggurat KS {d}");
    noise.fill_box_muller(&mut buf);
    let d = ks_statistic(buf, 1.0);
    assert!(d < 1.95 / (20_001f64).sqrt(), "Box-Muller KS {d}");
}

#[test]
fn ziggurat_tails_have_the_normal_mass() {
    // Beyond 2, beyond the ziggurat's tail start R ≈ 3.6542, and beyond 4: the rare paths are exact.
    let mut noise = GaussianNoise::new(seeded(17));
    let n = 1_000_000;
    let mut beyond = [0usize; 3];
    let limits = [2.0, 3.654152885361009, 4.0];
    for _ in 0..n {
        let z = noise.standard_normal().abs();
        for (count, &limit) in beyond.iter_mut().zip(&limits) {
            *count += (z > limit) as usize;
        }
    }
    for (&count, &limit) in beyond.iter().zip(&limits) {
        let p = 2.0 * (1.0 - normal_cdf(limit));
        let expected = p * n as f64;
        let se = (expected * (1.0 - p)).sqrt();
        assert!((count as f64 - expected).abs() < 5.0 * se, "beyond {limit}: {count} vs {expected:.1}");
    }
}

/// `n` values of one bulk [`GaussianNoise::fill`] (chunked, on the test pool's threads).
fn bulk_noise(n: usize, seed: u64) -> Vec<f64> {
    let mut out = vec![0.0; n];
    GaussianNoise::new(seeded(seed)).fill(&mut out);
    out
}

#[test]
fn bulk_noise_has_the_right_moments_and_passes_kolmogorov_smirnov_in_every_chunk() {
    let n = 12 * FILL_CHUNK + 777;
    let z = bulk_noise(n, 21);
    let count = n as f64;
    let mean = z.iter().sum::<f64>() / count;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / count;
    let kurtosis = z.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / count / (var * var);
    assert!(mean.abs() < 5.0 / count.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "variance {var}");
    assert!((kurtosis - 3.0).abs() < 0.1, "kurtosis {kurtosis}");
    let d = ks_statistic(z.clone(), 1.0);
    assert!(d < 1.95 / count.sqrt(), "KS of the whole vector {d}");
    for (j, chunk) in z.chunks(FILL_CHUNK).take(3).enumerate() {
        let d = ks_statistic(chunk.to_vec(), 1.0);
        assert!(d < 1.95 / (chunk.len() as f64).sqrt(), "KS of chunk {j}: {d}");
    }
}

/// Pearson correlation of two equally long samples.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn bulk_noise_coordinates_are_uncorrelated_within_and_across_chunks() {
    let z = bulk_noise(3 * FILL_CHUNK, 22);
    let limit = 4.5 / (FILL_CHUNK as f64).sqrt();
    let (c0, c1, c2) = (&z[..FILL_CHUNK], &z[FILL_CHUNK..2 * FILL_CHUNK], &z[2 * FILL_CHUNK..]);
    // The same offset in two chunks (their keystreams differ only in the stream number).
    for (a, b) in [(c0, c1), (c1, c2), (c0, c2)] {
        let r = correlation(a, b);
        assert!(r.abs() < limit, "across chunks: r = {r}");
    }
    // Neighbours, and coordinates 16 and 128 apart (the keystream's block and call strides).
    for lag in [1, 16, 128] {
        let r = correlation(&c0[..FILL_CHUNK - lag], &c0[lag..]);
        assert!(r.abs() < limit, "lag {lag}: r = {r}");
    }
    // Squares too: a dependence of magnitudes would not show in the plain correlation.
    let squares: Vec<f64> = c0.iter().map(|x| x * x).collect();
    let r = correlation(&squares[..FILL_CHUNK - 1], &squares[1..]);
    assert!(r.abs() < limit, "lag 1 of squares: r = {r}");
}

#[test]
fn bulk_noise_tails_have_the_normal_mass() {
    let n = 1_000_000;
    let z = bulk_noise(n, 23);
    let limits = [2.0, 3.654152885361009, 4.0, 4.5];
    for &limit in &limits {
        let count = z.iter().filter(|x| x.abs() > limit).count();
        let p = 2.0 * (1.0 - normal_cdf(limit));
        let expected = p * n as f64;
        let se = (expected * (1.0 - p)).sqrt();
        assert!((count as f64 - expected).abs() < 5.0 * se, "beyond {limit}: {count} vs {expected:.1}");
    }
}

/// χ² of discrete samples against the N_Z(0, σ²) pmf with bins expecting ≥ 5 (tails merged).
fn discrete_chi_square(samples: &[i64], sigma: f64) -> (f64, usize) {
    let n = samples.len() as f64;
    let reach = (sigma * 8.0).ceil() as i64;
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let (mut observed, mut expected) = (0.0, 0.0);
    let count = |lo: i64, hi: i64| samples.iter().filter(|&&x| x >= lo && x <= hi).count() as f64;
    // Lower tail first, then each value, then the upper tail joins the last bin.
    let lower_tail: f64 = (-(reach * 5)..-reach).map(|x| pmf(sigma, x)).sum();
    observed += count(i64::MIN, -reach - 1);
    expected += lower_tail * n;
    for x in -reach..=reach {
        observed += count(x, x);
        expected += pmf(sigma, x) * n;
        if expected >= 5.0 {
            bins.push((observed, expected));
            observed = 0.0;
            expected = 0.0;
        }
    }
    let upper_tail: f64 = (reach + 1..reach * 5).map(|x| pmf(sigma, x)).sum();
    let last = bins.last_mut().unwrap();
    last.0 += observed + count(reach + 1, i64::MAX);
    last.1 += expected + upper_tail * n;
    (bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum(), bins.len() - 1)
}

fn chi_square_critical(df: usize) -> f64 {
    let d = df as f64;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + 3.09 * a.sqrt()).powi(3)
}

#[test]
fn discrete_gaussian_matches_its_pmf_and_a_wrong_sigma_fails() {
    let mut rng = seeded(21);
    for &sigma in &[0.7, 3.3, 12.0] {
        let sampler = DiscreteGaussian::new(sigma).unwrap();
        let samples: Vec<i64> = (0..40_000).map(|_| sampler.sample(&mut rng)).collect();
        let (stat, df) = discrete_chi_square(&samples, sampler.sigma());
        assert!(stat < chi_square_critical(df), "sigma {sigma}: chi2 {stat:.1} (df {df})");
        if sigma == 3.3 {
            let (wrong, df) = discrete_chi_square(&samples, 3.3 * 1.05);
            assert!(wrong > chi_square_critical(df), "wrong sigma accepted: chi2 {wrong:.1}");
        }
    }
}

#[test]
fn discrete_laplace_is_symmetric_with_the_right_mean_magnitude() {
    let mut rng = seeded(2);
    let t = 3u128;
    let n = 40_000;
    let samples: Vec<i64> = (0..n).map(|_| discrete_laplace(&mut rng, t)).collect();
    let mean = samples.iter().sum::<i64>() as f64 / n as f64;
    // E|X| for P(x) ∝ exp(−|x|/t): 2p/((1−p)(1+p)) with p = exp(−1/t).
    let p = (-1.0f64 / 3.0).exp();
    let expected_abs = 2.0 * p / ((1.0 - p) * (1.0 + p));
    let mean_abs = samples.iter().map(|x| x.abs()).sum::<i64>() as f64 / n as f64;
    assert!(mean.abs() < 0.1, "{mean}");
    assert!((mean_abs / expected_abs - 1.0).abs() < 0.03, "{mean_abs} vs {expected_abs}");
}

#[test]
fn secure_release_is_the_exact_sum_plus_grid_noise() {
    let (dimension, clip, sigma) = (1000, 1.0, 0.5);
    let mut agg = SecureAggregator::new(dimension, clip, sigma).unwrap();
    let levels = 50.0 * (dimension as f64).sqrt();
    assert!((agg.l2_sensitivity() - (levels + (dimension as f64).sqrt() / 2.0)).abs() < 1e-9);
    assert!(agg.sigma() >= sigma * agg.l2_sensitivity());
    // Zero examples: the release is pure noise with std σ·Δ·γ ≈ σ·C·(1 + 1%).
    let mut out = vec![0.0f32; dimension];
    let mut rng = seeded(6);
    let mut all = Vec::new();
    for _ in 0..20 {
        agg.reset();
        agg.release(&mut rng, &mut out);
        all.extend(out.iter().map(|&v| v as f64));
    }
    let std = agg.sigma() * agg.grid_step();
    let var = all.iter().map(|x| x * x).sum::<f64>() / all.len() as f64;
    assert!((var / (std * std) - 1.0).abs() < 0.03, "{var} vs {}", std * std);
    assert!(std > sigma * clip && std < sigma * clip * 1.011);
    let d = ks_statistic(all, std);
    assert!(d < 1.95 / (20_000f64).sqrt(), "KS {d}");
}

#[test]
fn discrete_gaussian_at_secure_mode_scales_has_the_right_variance() {
    let mut rng = seeded(31);
    for &sigma in &[200.0, 9000.0] {
        let sampler = DiscreteGaussian::new(sigma).unwrap();
        let n = 40_000;
        let samples: Vec<f64> = (0..n).map(|_| sampler.sample(&mut rng) as f64).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|x| x * x).sum::<f64>() / n as f64;
        assert!(mean.abs() < 5.0 * sigma / (n as f64).sqrt(), "sigma {sigma}: mean {mean}");
        // For σ ≫ 1 the discrete Gaussian's variance is σ² to within e^(−2π²σ²).
        assert!(
            (var / (sigma * sigma) - 1.0).abs() < 0.035,
            "sigma {sigma}: variance ratio {}",
            var / (sigma * sigma)
        );
        let d = ks_statistic(samples, sigma);
        assert!(d < 1.95 / (n as f64).sqrt(), "sigma {sigma}: KS {d}");
    }
}
