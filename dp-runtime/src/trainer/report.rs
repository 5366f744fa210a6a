//! What a training run reports, and the evaluation of loss and accuracy from model outputs.

use crate::accounting::AccountantKind;
use crate::data::Dataset;
use crate::device::{DeviceError, DeviceTraining};
use crate::model::{DpModel, Loss, Workspace};
use crate::sampling::SamplingMode;

/// One epoch's numbers. Everything but `diagnostics` is covered by the guarantee: `epoch`, `steps`
/// and `epsilon` are data-independent, and `eval_loss`/`accuracy` are computed from the released
/// parameters on the evaluation set, not on the training data (see docs/PRIVACY.md).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Steps taken by the end of this epoch (cumulative, including resumed ones).
    pub steps: u64,
    /// ε spent by the end of this epoch, at the run's δ.
    pub epsilon: f64,
    /// Mean loss on the evaluation set; `None` without one.
    pub eval_loss: Option<f64>,
    /// Accuracy on the evaluation set; `None` without one, and for regression (MSE).
    pub accuracy: Option<f64>,
    /// Statistics of the training data, NOT private: only with
    /// [`Trainer::non_private_diagnostics`](super::Trainer::non_private_diagnostics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
}

/// Statistics of one epoch computed on the training data without noise and without accounting: they
/// are NOT covered by the privacy guarantee (they can reveal whether one example is in the data).
/// Serialised with `"not_private": true`, so that no JSON consumer can mistake them for private values.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    /// Mean training loss over the examples sampled this epoch whose gradient was finite.
    pub train_loss: f64,
    /// Accuracy on the training set after this epoch; only when no evaluation set was given
    /// (`None` then for regression too).
    pub train_accuracy: Option<f64>,
    /// Examples of this epoch whose gradient norm was NaN or infinite (they contributed zero).
    pub non_finite_examples: u64,
    /// Mean realised batch size this epoch (Poisson: about B; its deviation depends on the data size).
    pub mean_batch_size: f64,
}

impl serde::Serialize for Diagnostics {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = serializer.serialize_struct("Diagnostics", 5)?;
        fields.serialize_field("not_private", &true)?;
        fields.serialize_field("train_loss", &self.train_loss)?;
        fields.serialize_field("train_accuracy", &self.train_accuracy)?;
        fields.serialize_field("non_finite_examples", &self.non_finite_examples)?;
        fields.serialize_field("mean_batch_size", &self.mean_batch_size)?;
        fields.end()
    }
}

/// Statistics of a whole run computed on the training data, NOT private (see [`Diagnostics`]);
/// serialised with `"not_private": true`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDiagnostics {
    /// Examples with a non-finite gradient norm in the whole run (this session, for a resumed run).
    pub non_finite_examples: u64,
    /// Final accuracy on the training set; only when no evaluation set was given (`None` then for
    /// regression too).
    pub train_accuracy: Option<f64>,
}

impl serde::Serialize for RunDiagnostics {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = serializer.serialize_struct("RunDiagnostics", 3)?;
        fields.serialize_field("not_private", &true)?;
        fields.serialize_field("non_finite_examples", &self.non_finite_examples)?;
        fields.serialize_field("train_accuracy", &self.train_accuracy)?;
        fields.end()
    }
}

/// Secure-mode parameters, as accounted.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SecureReport {
    /// Grid step γ.
    pub grid_step: f64,
    /// L2 sensitivity of one example on the grid.
    pub l2_sensitivity: f64,
    /// The discrete Gaussian σ in grid units.
    pub sigma: f64,
}

/// The result of [`Trainer::fit`](super::Trainer::fit). Private by default: everything but
/// `diagnostics` is data-independent or computed on the evaluation set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Per-epoch numbers (of this session: a resumed run reports the epochs it trained).
    pub epochs: Vec<EpochReport>,
    /// Final accuracy on the evaluation set. NaN without an evaluation set, and for regression (MSE)
    /// models (whose `epochs[..].accuracy` is `None`).
    pub accuracy: f64,
    /// Final ε at δ (0 if no step was taken).
    pub epsilon: f64,
    /// The RDP order of the final ε (RDP accountant only).
    pub order: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Steps taken in total (including resumed ones).
    pub steps: u64,
    /// Steps the plan asked for.
    pub planned_steps: u64,
    /// σ, the noise multiplier.
    pub noise_multiplier: f64,
    /// The parameters trained: the dimension of the noise and of the clipped gradient
    /// (`DpModel::TRAINED_PARAM_COUNT`; frozen parameters are left as they were).
    pub trained_parameters: usize,
    /// q = B / N.
    pub sampling_rate: f64,
    /// B.
    pub expected_batch_size: usize,
    /// How batches were drawn; ε assumes Poisson sampling in every mode.
    pub sampling: SamplingMode,
    /// The accountant used.
    pub accountant: AccountantKind,
    /// `Some` in secure mode.
    pub secure: Option<SecureReport>,
    /// Whether training stopped early because the privacy budget was reached.
    pub stopped_at_budget: bool,
    /// Whether training stopped at `max_steps`, before the plan's last step.
    pub stopped_at_max_steps: bool,
    /// Warnings: a seeded (not private) run, shuffled sampling accounted as Poisson, ...
    pub warnings: Vec<String>,
    /// Statistics of the training data, NOT private: only with
    /// [`Trainer::non_private_diagnostics`](super::Trainer::non_private_diagnostics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<RunDiagnostics>,
}

/// Mean loss and accuracy (`None` for MSE) of `model` on `data`, in batches of at most `chunk`.
pub fn evaluate<M: DpModel>(
    model: &M,
    ws: &mut Workspace,
    data: &Dataset<M::Input>,
    chunk: usize,
) -> (f64, Option<f64>) {
    let forward = |inputs: &[M::Input], size: usize, outputs: &mut [f32]| {
        ws.ensure::<M>(size);
        model.forward(ws, inputs, size, outputs);
        Ok::<(), std::convert::Infallible>(())
    };
    match evaluate_by::<M, _>(data, chunk, forward) {
        Ok(evaluated) => evaluated,
        Err(never) => match never {},
    }
}

/// [`evaluate`] with the outputs from a device's forward
/// ([`DeviceTraining::outputs`]) under the parameters it
/// holds; the losses and accuracy counted on the host as on the CPU.
pub fn evaluate_on_device<M: DpModel>(
    device: &mut dyn DeviceTraining<M>,
    data: &Dataset<M::Input>,
    chunk: usize,
) -> std::result::Result<(f64, Option<f64>), DeviceError> {
    evaluate_by::<M, _>(data, chunk, |inputs, size, outputs| device.outputs(inputs, size, outputs))
}

/// Mean loss and accuracy of `data`, in batches of at most `chunk` whose outputs `forward` gives.
fn evaluate_by<M: DpModel, E>(
    data: &Dataset<M::Input>,
    chunk: usize,
    mut forward: impl FnMut(&[M::Input], usize, &mut [f32]) -> std::result::Result<(), E>,
) -> std::result::Result<(f64, Option<f64>), E> {
    let outputs_per = M::LOSS.output_len();
    let label_len = M::LOSS.label_len();
    let mut outputs = Vec::new();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let n = data.len();
    let example = data.example_len();
    let mut start = 0;
    while start < n {
        let size = chunk.max(1).min(n - start);
        outputs.resize(size * outputs_per, 0.0);
        forward(&data.inputs[start * example..(start + size) * example], size, &mut outputs)?;
        for i in 0..size {
            let out = &outputs[i * outputs_per..(i + 1) * outputs_per];
            let label = &data.labels[(start + i) * label_len..(start + i + 1) * label_len];
            let (l, ok) = example_loss(M::LOSS, out, label);
            loss += l;
            correct += ok as usize;
        }
        start += size;
    }
    let accuracy = match M::LOSS {
        Loss::MeanSquaredError { .. } => None,
        _ => Some(correct as f64 / n.max(1) as f64),
    };
    Ok((loss / n.max(1) as f64, accuracy))
}

/// One example's loss (as the model defines it) and whether its prediction is correct
/// (cross-entropy: argmax; binary: logit > 0 ⇔ label 1).
pub fn example_loss(loss: Loss, output: &[f32], label: &[f32]) -> (f64, bool) {
    match loss {
        Loss::CrossEntropy { .. } => {
            let class = label[0] as usize;
            let max = output.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let log_total = output.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            let argmax = output
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) })
                .0;
            (log_total - output[class] as f64, argmax == class)
        }
        Loss::BinaryCrossEntropy => {
            let (z, y) = (output[0] as f64, label[0] as f64);
            // log(1 + e^z) − y·z, computed stably.
            let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
            (softplus - y * z, (z > 0.0) == (y > 0.5))
        }
        Loss::MeanSquaredError { .. } => {
            let sq: f64 = output.iter().zip(label).map(|(&o, &y)| (o as f64 - y as f64).powi(2)).sum();
            (0.5 * sq, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_and_correctness_per_loss_kind() {
        let (l, ok) = example_loss(Loss::CrossEntropy { classes: 3 }, &[1.0, 3.0, 0.0], &[1.0]);
        let expected = (1f64.exp() + 3f64.exp() + 1.0).ln() - 3.0;
        assert!((l - expected).abs() < 1e-12 && ok);
        assert!(!example_loss(Loss::CrossEntropy { classes: 3 }, &[1.0, 3.0, 0.0], &[0.0]).1);
        let (l, ok) = example_loss(Loss::BinaryCrossEntropy, &[2.0], &[0.0]);
        assert!((l - (1.0 + 2f64.exp()).ln()).abs() < 1e-12 && !ok);
        assert!(example_loss(Loss::BinaryCrossEntropy, &[-0.5], &[0.0]).1);
        let (l, _) = example_loss(Loss::MeanSquaredError { outputs: 2 }, &[1.0, 2.0], &[0.0, 0.0]);
        assert!((l - 2.5).abs() < 1e-12);
    }
}
