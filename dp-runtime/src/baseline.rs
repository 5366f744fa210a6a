//! Non-private training, for comparison with DP-SGD on the same model and data.
//!
//! Ordinary minibatch SGD: shuffled fixed-size batches (slices of a random permutation), the summed
//! gradient of the batch from `DpModel::loss_and_gradient` (no clipping, no noise) divided by the
//! batch's own size, and the same optimizers as private training. The result is a [`Report`] like
//! the private trainer's, with ε = ∞ and noise multiplier 0, so the two can be shown side by side.
//! Nothing here is private, so every report carries its training statistics in `diagnostics` (marked
//! `not_private`, like the private trainer's with non-private diagnostics on); there is no clipping,
//! so its non-finite examples are those whose loss is not finite. With a device
//! ([`fit_non_private_on_device`]) each step runs there (the batch in, its losses out) and the
//! parameters come back at each epoch's end for evaluation.

use crate::accounting::AccountantKind;
use crate::data::Dataset;
use crate::device::DeviceTraining;
use crate::error::{Error, Result};
use crate::model::{Batch, DpModel, Precision, Workspace};
use crate::optim::{NoisyGradient, Optimizer, StepInfo};
use crate::rng::{self, KeySource, Streams};
use crate::sampling::{Sampler, SamplingMode};
use crate::trainer::device_steps::{device_error, DeviceSteps};
use crate::trainer::progress::Progress;
use crate::trainer::report::{self, Diagnostics, EpochReport, Report, RunDiagnostics};
use crate::trainer::DEFAULT_MEMORY_BUDGET;

/// The warning every non-private report carries.
pub const NON_PRIVATE_WARNING: &str = "non-private training: no clipping, no noise; epsilon is infinite";

/// Settings of a non-private run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineConfig {
    /// Examples per batch (the last batch of a permutation is never short: see `SamplingMode::Shuffled`).
    pub batch_size: usize,
    /// Epochs: T = round(epochs · N / B) steps.
    pub epochs: f64,
    /// Stop after this many steps (a short run), if set.
    pub max_steps: Option<u64>,
    /// Reproducible shuffling from a seed; from the operating system otherwise.
    pub seed: Option<u64>,
    /// No progress output.
    pub quiet: bool,
    /// The precision of the forward's and backward's products.
    pub precision: Precision,
}

/// Trains `model` without privacy on `train`, evaluating on `eval` after every epoch (and calling
/// `on_epoch` with each epoch's report).
pub fn fit_non_private<M: DpModel>(
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    train: &Dataset<M::Input>,
    eval: &Dataset<M::Input>,
    config: BaselineConfig,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Report> {
    fit(model, optimizer, None, train, eval, config, on_epoch)
}

/// [`fit_non_private`] with every step on `device` (a GPU through `dp::cuda::trainer::GpuModel`):
/// the batch goes in, its losses come out; the parameters come back at the end of each epoch for
/// the report and at the end (evaluation runs the device's forward, `DeviceTraining::outputs`), and the device's optimizer state is loaded into
/// `optimizer` at the end. SGD, Adam and AdamW (other optimizers are refused). An error leaves the
/// model at the last epoch's end.
pub fn fit_non_private_on_device<M: DpModel>(
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    device: &mut dyn DeviceTraining<M>,
    train: &Dataset<M::Input>,
    eval: &Dataset<M::Input>,
    config: BaselineConfig,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Report> {
    fit(model, optimizer, Some(device), train, eval, config, on_epoch)
}

fn fit<M: DpModel>(
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    mut device: Option<&mut dyn DeviceTraining<M>>,
    train: &Dataset<M::Input>,
    eval: &Dataset<M::Input>,
    config: BaselineConfig,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Report> {
    let n = train.len();
    let b = config.batch_size;
    if n == 0 {
        return Err(Error::invalid("train", "the training set is empty"));
    }
    if eval.is_empty() {
        return Err(Error::invalid("eval", "the evaluation set is empty"));
    }
    if b == 0 || b > n {
        return Err(Error::invalid("batch_size", format!("{b} must be between 1 and {n}")));
    }
    if !(config.epochs > 0.0 && config.epochs.is_finite()) {
        return Err(Error::invalid("epochs", format!("{} must be positive and finite", config.epochs)));
    }
    for (name, data) in [("train", train), ("eval", eval)] {
        if data.example_shape != M::INPUT_SHAPE || data.label_len != M::LOSS.label_len() {
            return Err(Error::Mismatch {
                model: M::NAME.to_string(),
                message: format!(
                    "{name}: examples of shape {:?} with {} label values, the model takes {:?} and {}",
                    data.example_shape,
                    data.label_len,
                    M::INPUT_SHAPE,
                    M::LOSS.label_len()
                ),
            });
        }
    }
    let steps_per_epoch = n as f64 / b as f64;
    let epoch_end = |e: f64| ((e * steps_per_epoch + 0.5).floor() as u64).max(1);
    let total_steps = epoch_end(config.epochs);
    let last_step = config.max_steps.map_or(total_steps, |m| m.min(total_steps));
    if last_step == 0 {
        return Err(Error::invalid("max_steps", "must be at least 1"));
    }

    let mut sampling_rng = match config.seed {
        Some(seed) => Streams::new(KeySource::Seed(seed), 0)?.sampling,
        None => rng::from_os()?,
    };
    let mut sampler = Sampler::new(SamplingMode::Shuffled, n, b);
    let room = (DEFAULT_MEMORY_BUDGET as u64).saturating_sub(Workspace::fixed_len::<M>() as u64 * 4);
    let max_chunk = (room / (M::WORKSPACE_PER_EXAMPLE.max(1) as u64 * 4)).clamp(1, b as u64) as usize;
    let mut workspace = Workspace::new::<M>(max_chunk).with_precision(config.precision);
    let (mut inputs, mut labels, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    let mut gradient = vec![0.0f32; M::TRAINED_PARAM_COUNT];
    let mut indices = Vec::new();
    // On a device, the next batch is sampled, gathered and staged while a step runs, as the private
    // trainer's (docs/GPU.md). Its batches go to the device whole.
    let mut device_steps = DeviceSteps::<M>::new(usize::MAX);
    let device_error = device_error::<M>;
    if let Some(dev) = device.as_mut() {
        if optimizer.on_device(StepInfo { step: 0, total_steps }).is_none() {
            return Err(Error::invalid(
                "device",
                format!("the {} optimizer has no device update (SGD and Adam only)", optimizer.kind()),
            ));
        }
        crate::trainer::check_device_outputs::<M>()?;
        dev.load_optimizer_state(&optimizer.state()).map_err(device_error)?;
        dev.set_precision(config.precision).map_err(device_error)?;
        dev.upload(model.params()).map_err(device_error)?;
    }
    let progress = Progress::new(last_step, 0, config.quiet);

    let mut epochs = Vec::new();
    let mut step = 0u64;
    let mut epoch = 1usize;
    let mut total_non_finite = 0u64;
    while step < last_step {
        let stop = epoch_end(epoch as f64).min(last_step);
        let (mut loss_sum, mut loss_count, mut non_finite, mut examples, mut steps_in_epoch) =
            (0.0f64, 0usize, 0u64, 0usize, 0u64);
        while step < stop {
            let staged = device_steps.take_batch(&mut sampler, &mut sampling_rng, &mut indices);
            // Like the private trainer's mean, over the examples whose loss is finite.
            let mut count = |losses: &[f32]| {
                for &loss in losses {
                    if loss.is_finite() {
                        loss_sum += loss as f64;
                        loss_count += 1;
                    } else {
                        non_finite += 1;
                    }
                }
            };
            let at = StepInfo { step, total_steps };
            let overflowed = match device.as_mut() {
                Some(dev) => {
                    losses.resize(indices.len(), 0.0);
                    let update = optimizer.on_device(at).expect("checked before the first step");
                    let next = (step + 1 < last_step)
                        .then_some((&mut sampler, &mut sampling_rng as &mut dyn rand::RngCore));
                    let outcome = device_steps
                        .overlapped(
                            &mut **dev,
                            train,
                            (&indices, staged),
                            next,
                            None,
                            |dev| dev.queue_non_private_step(&update),
                            |dev| dev.finish_non_private_step(&mut losses),
                        )
                        .map_err(device_error)?;
                    count(&losses);
                    outcome.overflowed
                }
                None => {
                    gradient.fill(0.0);
                    for chunk in indices.chunks(max_chunk) {
                        train.gather(chunk, &mut inputs, &mut labels);
                        losses.resize(chunk.len(), 0.0);
                        let batch = Batch { inputs: &inputs, labels: &labels, size: chunk.len() };
                        model.loss_and_gradient(&mut workspace, batch, &mut losses, &mut gradient);
                        count(&losses);
                    }
                    let noiseless = NoisyGradient::new(&gradient, None, 0.0, indices.len() as f64);
                    optimizer.step(model.trained_params_mut(), noiseless, at);
                    model.params().iter().any(|p| !p.is_finite())
                }
            };
            if overflowed {
                return Err(Error::invalid(
                    "optimizer",
                    format!("the update of step {} overflowed: lower the learning rate", step + 1),
                ));
            }
            step += 1;
            steps_in_epoch += 1;
            examples += indices.len();
            progress.step(Some(loss_sum / loss_count.max(1) as f64));
        }
        total_non_finite += non_finite;
        if let Some(dev) = device.as_mut() {
            dev.download(model.params_mut()).map_err(device_error)?;
        }
        let (eval_loss, accuracy) = match device.as_mut() {
            Some(dev) => report::evaluate_on_device(&mut **dev, eval, max_chunk).map_err(device_error)?,
            None => report::evaluate(model, &mut workspace, eval, max_chunk),
        };
        let record = EpochReport {
            epoch,
            steps: step,
            epsilon: f64::INFINITY,
            eval_loss: Some(eval_loss),
            accuracy,
            diagnostics: Some(Diagnostics {
                train_loss: loss_sum / loss_count.max(1) as f64,
                // There is always an evaluation set here.
                train_accuracy: None,
                non_finite_examples: non_finite,
                mean_batch_size: examples as f64 / steps_in_epoch.max(1) as f64,
            }),
        };
        progress.epoch(&record);
        on_epoch(&record);
        epochs.push(record);
        epoch += 1;
    }
    progress.finish();
    if let Some(dev) = device.as_mut() {
        let state = dev.optimizer_state().map_err(device_error)?;
        optimizer.load_state(state, M::TRAINED_PARAM_COUNT)?;
    }
    let accuracy = epochs.last().and_then(|e| e.accuracy).unwrap_or(f64::NAN);
    Ok(Report {
        epochs,
        accuracy,
        epsilon: f64::INFINITY,
        order: None,
        delta: 0.0,
        steps: step,
        planned_steps: total_steps,
        noise_multiplier: 0.0,
        trained_parameters: M::TRAINED_PARAM_COUNT,
        sampling_rate: b as f64 / n as f64,
        expected_batch_size: b,
        sampling: SamplingMode::Shuffled,
        accountant: AccountantKind::Rdp,
        secure: None,
        stopped_at_budget: false,
        stopped_at_max_steps: step < total_steps,
        warnings: vec![NON_PRIVATE_WARNING.to_string()],
        diagnostics: Some(RunDiagnostics { non_finite_examples: total_non_finite, train_accuracy: None }),
    })
}
