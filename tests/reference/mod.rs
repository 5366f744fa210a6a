//! An f64 reference for every op the compiler knows, written from PyTorch's definitions and run one
//! example at a time, with no batch axis anywhere: forward and analytic backward of each op (one file
//! per op family), the losses, a small network interpreter that reads parameters by their PyTorch
//! names out of a flat buffer laid out by a model's `PARAMS`, and the comparison helpers the tests
//! share (relative closeness, central finite differences).
//!
//! Nothing here calls our kernels: the point is an independent second implementation.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub mod attention;
pub mod conv;
pub mod dense;
pub mod embedding;
pub mod harness;
pub mod loss;
pub mod lstm;
pub mod net;
pub mod norm;
pub mod pool;

use rand::Rng;

/// `(a, b) ↦ Σ a_k b_k`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Widens `f32` values to `f64`.
pub fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// The largest error of `got` against `want`, relative to `max(|want_k|, floor)`.
pub fn max_relative_error(got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs() / w.abs().max(floor)).fold(0.0, f64::max)
}

/// A floor for relative comparisons: `fraction` of the largest magnitude in `want` (and never 0).
///
/// f32 results carry an absolute error of about ε·(magnitude of the terms summed), so entries that
/// cancel to nearly 0 are compared against the vector's scale, not their own.
pub fn scale_floor(want: &[f64], fraction: f64) -> f64 {
    fraction * want.iter().fold(0.0f64, |m, v| m.max(v.abs())) + 1e-30
}

/// Asserts `|got_k − want_k| ≤ tol · max(|want_k|, floor)` for every k and returns the largest
/// relative error seen (for the report), naming the first failing entry otherwise.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, floor: f64, what: &str) -> f64 {
    assert_close_with_floors(got, want, tol, &vec![floor; want.len()], what)
}

/// [`assert_close`] with one floor per entry: `|got_k − want_k| ≤ tol · max(|want_k|, floors_k)`.
pub fn assert_close_with_floors(got: &[f32], want: &[f64], tol: f64, floors: &[f64], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (k, ((&g, &w), &floor)) in got.iter().zip(want).zip(floors).enumerate() {
        let (err, scale) = ((f64::from(g) - w).abs(), w.abs().max(floor));
        assert!(
            err <= tol * scale,
            "{what}[{k}]: got {g}, want {w} (error {err:.3e}, allowed {:.3e})",
            tol * scale
        );
        worst = worst.max(err / scale);
    }
    worst
}

/// Central finite differences of a scalar function at `x` along every coordinate in `coords`.
pub fn finite_differences(f: impl Fn(&[f64]) -> f64, x: &[f64], coords: &[usize], h: f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    coords
        .iter()
        .map(|&k| {
            probe[k] = x[k] + h;
            let plus = f(&probe);
            probe[k] = x[k] - h;
            let minus = f(&probe);
            probe[k] = x[k];
            (plus - minus) / (2.0 * h)
        })
        .collect()
}

/// Asserts that an analytic gradient agrees with central finite differences of `f` at `x`, on
/// `coords` (every coordinate of small tensors, a sample of large ones): `|fd − g| ≤ 1e-6 + 1e-5·|g|`.
pub fn assert_matches_finite_differences(
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    coords: &[usize],
    what: &str,
) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let numeric = finite_differences(f, x, coords, 1e-6);
    for (&k, fd) in coords.iter().zip(numeric) {
        let g = analytic[k];
        assert!(
            (fd - g).abs() <= 1e-6 + 1e-5 * g.abs(),
            "{what}[{k}]: finite differences {fd}, analytic {g}"
        );
    }
}

/// Every coordinate of a tensor of `len` values when it is small, else about `samples` of them spread
/// over it (always including the first and the last).
pub fn sample_coords(len: usize, samples: usize) -> Vec<usize> {
    if len <= samples {
        return (0..len).collect();
    }
    let mut coords: Vec<usize> = (0..samples).map(|k| k * (len - 1) / (samples - 1)).collect();
    coords.dedup();
    coords
}

/// Uniform values on `[-scale, scale)`.
pub fn uniform(rng: &mut impl Rng, len: usize, scale: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}
