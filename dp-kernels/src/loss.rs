//! Per-example losses fused with their gradient: one pass over the outputs writes each example's loss
//! and the gradient of that loss with respect to the outputs (losses are summed, never averaged).

use crate::activation::sigmoid;

/// The class index stored in an `f32` label; panics on a label that is not a valid class (the runtime
/// validates labels when a dataset is loaded, so this is an internal invariant).
#[inline]
fn class_index(label: f32, classes: usize) -> usize {
    assert!(
        label >= 0.0 && label.fract() == 0.0 && (label as usize) < classes,
        "cross-entropy label {label} is not a class index below {classes}"
    );
    label as usize
}

/// Softmax cross-entropy over `classes` logits per example, numerically stable (the maximum logit is
/// subtracted): `losses[i] = logsumexp(z_i) − z_i[y_i]`, `grad = softmax(z_i) − onehot(y_i)`.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[f32],
    rows: usize,
    classes: usize,
    losses: &mut [f32],
    grad: &mut [f32],
) {
    assert!(logits.len() >= rows * classes && grad.len() >= rows * classes && classes > 0);
    assert!(labels.len() >= rows && losses.len() >= rows);
    for i in 0..rows {
        let z = &logits[i * classes..(i + 1) * classes];
        let g = &mut grad[i * classes..(i + 1) * classes];
        let y = class_index(labels[i], classes);
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for (gj, &zj) in g.iter_mut().zip(z) {
            let e = (zj - max).exp();
            *gj = e;
            sum += e;
        }
        let inv = 1.0 / sum;
        g.iter_mut().for_each(|gj| *gj *= inv);
        g[y] -= 1.0;
        losses[i] = sum.ln() + max - z[y];
    }
}

/// Binary cross-entropy with one logit per example, stable for large |z|:
/// `losses[i] = max(z,0) − z·y + ln(1 + e^(−|z|))`, `grad = σ(z) − y`.
pub fn binary_cross_entropy_with_logits(
    logits: &[f32],
    labels: &[f32],
    rows: usize,
    losses: &mut [f32],
    grad: &mut [f32],
) {
    assert!(logits.len() >= rows && labels.len() >= rows && losses.len() >= rows && grad.len() >= rows);
    for i in 0..rows {
        let (z, y) = (logits[i], labels[i]);
        losses[i] = z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
        grad[i] = sigmoid(z) - y;
    }
}

/// Squared error with `outputs` values per example: `losses[i] = ½‖ŷ_i − y_i‖²`, `grad = ŷ − y`.
pub fn mean_squared_error(
    predictions: &[f32],
    labels: &[f32],
    rows: usize,
    outputs: usize,
    losses: &mut [f32],
    grad: &mut [f32],
) {
    let n = rows * outputs;
    assert!(predictions.len() >= n && labels.len() >= n && grad.len() >= n && losses.len() >= rows);
    for (i, loss) in losses[..rows].iter_mut().enumerate() {
        let range = i * outputs..(i + 1) * outputs;
        let mut sum = 0.0f32;
        for ((g, &p), &y) in
            grad[range.clone()].iter_mut().zip(&predictions[range.clone()]).zip(&labels[range])
        {
            *g = p - y;
            sum += *g * *g;
        }
        *loss = 0.5 * sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64, tol: f64) -> bool {
        (a as f64 - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn softmax_cross_entropy_matches_f64_and_survives_huge_logits() {
        let logits = [1.0f32, -2.0, 0.5, 300.0, -300.0, 299.0];
        let labels = [2.0f32, 0.0];
        let (mut losses, mut grad) = ([0.0f32; 2], [0.0f32; 6]);
        softmax_cross_entropy(&logits, &labels, 2, 3, &mut losses, &mut grad);
        for i in 0..2 {
            let z: Vec<f64> = logits[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
            let y = labels[i] as usize;
            assert!(close(losses[i], s.ln() + m - z[y], 1e-6));
            for j in 0..3 {
                let want = (z[j] - m).exp() / s - if j == y { 1.0 } else { 0.0 };
                assert!(close(grad[i * 3 + j], want, 1e-6));
            }
        }
        assert!(losses.iter().chain(&grad).all(|v| v.is_finite()));
    }

    #[test]
    #[should_panic(expected = "not a class index")]
    fn softmax_cross_entropy_rejects_an_out_of_range_label() {
        let (mut losses, mut grad) = ([0.0f32; 1], [0.0f32; 2]);
        softmax_cross_entropy(&[0.0, 0.0], &[2.0], 1, 2, &mut losses, &mut grad);
    }

    #[test]
    fn binary_cross_entropy_matches_f64_and_is_stable() {
        let logits = [0.3f32, -1.7, 80.0, -80.0, 0.0];
        let labels = [1.0f32, 0.0, 0.0, 0.0, 1.0];
        let (mut losses, mut grad) = ([0.0f32; 5], [0.0f32; 5]);
        binary_cross_entropy_with_logits(&logits, &labels, 5, &mut losses, &mut grad);
        for i in 0..5 {
            let (z, y) = (logits[i] as f64, labels[i] as f64);
            let p = 1.0 / (1.0 + (-z).exp());
            // −y·ln p − (1−y)·ln(1−p), written with ln(1+e^·) to stay exact at |z| = 80.
            let want = y * (-z).exp().ln_1p() + (1.0 - y) * z.exp().ln_1p();
            assert!(close(losses[i], want, 1e-6), "loss {i}");
            assert!(close(grad[i], p - y, 1e-6), "grad {i}");
        }
    }

    #[test]
    fn mean_squared_error_matches_f64() {
        let pred = [1.0f32, 2.0, -1.0, 0.5];
        let labels = [0.0f32, 2.5, -1.0, -0.5];
        let (mut losses, mut grad) = ([0.0f32; 2], [0.0f32; 4]);
        mean_squared_error(&pred, &labels, 2, 2, &mut losses, &mut grad);
        assert!(close(losses[0], 0.5 * (1.0 + 0.25), 1e-7));
        assert!(close(losses[1], 0.5, 1e-7));
        assert_eq!(grad, [1.0, -0.5, 0.0, 1.0]);
    }
}
