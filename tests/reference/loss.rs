//! The per-example losses, from PyTorch's definitions: softmax cross-entropy over logits with a class
//! index, binary cross-entropy with one logit (`BCEWithLogitsLoss`), and half the squared error.

/// A per-example loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefLoss {
    CrossEntropy,
    BinaryCrossEntropy,
    /// `½‖y − ŷ‖²`.
    HalfSquaredError,
}

impl RefLoss {
    /// The same loss as the model contract's [`dp::Loss`].
    pub fn of(loss: dp::Loss) -> Self {
        match loss {
            dp::Loss::CrossEntropy { .. } => RefLoss::CrossEntropy,
            dp::Loss::BinaryCrossEntropy => RefLoss::BinaryCrossEntropy,
            dp::Loss::MeanSquaredError { .. } => RefLoss::HalfSquaredError,
        }
    }

    /// The loss of one example and its gradient with respect to the outputs.
    pub fn value_and_gradient(self, out: &[f64], label: &[f64]) -> (f64, Vec<f64>) {
        match self {
            RefLoss::CrossEntropy => cross_entropy(out, label[0] as usize),
            RefLoss::BinaryCrossEntropy => {
                assert_eq!(out.len(), 1, "binary cross-entropy takes one logit");
                binary_cross_entropy_with_logits(out[0], label[0])
            }
            RefLoss::HalfSquaredError => half_squared_error(out, label),
        }
    }
}

/// `log Σ_j e^{z_j} − z_y` and its gradient `softmax(z) − e_y`.
pub fn cross_entropy(z: &[f64], class: usize) -> (f64, Vec<f64>) {
    assert!(class < z.len(), "class {class} of {} logits", z.len());
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
    let grad =
        z.iter().enumerate().map(|(j, v)| (v - max).exp() / sum - f64::from(u8::from(j == class))).collect();
    (sum.ln() + max - z[class], grad)
}

/// `−[y log σ(z) + (1 − y) log(1 − σ(z))]`, computed as `max(z, 0) − z y + log(1 + e^{−|z|})`, and
/// its gradient `σ(z) − y`.
pub fn binary_cross_entropy_with_logits(z: f64, y: f64) -> (f64, Vec<f64>) {
    let loss = z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
    (loss, vec![super::dense::sigmoid(z) - y])
}

/// `½ Σ (ŷ − y)²` and its gradient `ŷ − y`.
pub fn half_squared_error(out: &[f64], label: &[f64]) -> (f64, Vec<f64>) {
    assert_eq!(out.len(), label.len(), "squared error: output and label lengths");
    let diff: Vec<f64> = out.iter().zip(label).map(|(o, l)| o - l).collect();
    (0.5 * diff.iter().map(|d| d * d).sum::<f64>(), diff)
}
