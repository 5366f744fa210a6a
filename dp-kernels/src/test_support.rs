//! Shared helpers of the kernels' unit tests: seeded random data, tolerant comparisons and conv shapes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator, so every test is reproducible.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in [-1, 1).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Widens to f64 for the references.
pub fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Asserts `|got - want| <= tol·(1 + |want|)` element-wise, naming the first mismatch.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{k}]: got {g}, want {w} (tolerance {tol})"
        );
    }
}

/// Relative agreement of two values: `|got - want| <= tol·max(|want|, floor)`.
pub fn assert_rel(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1e-6),
        "{what}: got {got}, want {want} (relative {tol})"
    );
}

/// Central finite differences of `f` at `x` (f64, step `h`), one partial derivative per coordinate.
pub fn finite_difference(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|k| {
            let keep = x[k];
            x[k] = keep + h;
            let up = f(&x);
            x[k] = keep - h;
            let down = f(&x);
            x[k] = keep;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// `Σ_k a_k b_k` in f64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A conv geometry with a square kernel of side `k`, for the conv tests' lists of shapes.
#[allow(clippy::too_many_arguments)]
pub fn conv_geometry(
    in_c: usize,
    in_h: usize,
    in_w: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> crate::conv::Conv2dGeometry {
    crate::conv::Conv2dGeometry { in_c, in_h, in_w, out_c, kh: k, kw: k, stride, padding, dilation, groups }
}
