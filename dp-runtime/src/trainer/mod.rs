//! The trainer: drives any [`DpModel`] through DP-SGD with a [`PrivacyPlan`].
//!
//! A step: Poisson-sample a batch (sampling stream), compute per-example norms and clip factors,
//! accumulate the clipped sum chunk by chunk, then in one pass over the parameters add N(0, σ²C²)
//! noise (noise stream), divide by the expected batch size and apply the optimizer; account the step.
//! Empty batches go through the same path (the sum is 0, the noise is not).

mod builder;
pub(crate) mod device_steps;
pub mod ema;
pub mod progress;
pub mod report;
pub mod step;
mod views;

use std::path::{Path, PathBuf};
use std::sync::Once;

pub use report::{Diagnostics, EpochReport, Report, RunDiagnostics, SecureReport};

use crate::accounting::{AccountantKind, Ledger};
use crate::checkpoint::{self, Checkpoint, RunIdentity};
use crate::clipping::ClipMode;
use crate::data::augment::Augmentation;
use crate::data::Dataset;
use crate::device::{DevicePrivateStep, DeviceTraining};
use crate::distributed::step::{DeviceStepSettings, DistributedRun};
use crate::distributed::{Group, Shard};
use crate::error::{Error, Result};
use crate::model::{DpModel, Loss, Precision, Workspace};
use crate::noise::{GaussianNoise, SecureAggregator};
use crate::optim::{NoisyGradient, Optimizer, StepInfo};
use crate::plan::{self, Length, NoiseSpec, PlanConfig, PrivacyPlan, SecureGrid};
use crate::rng::{KeySource, Streams};
use crate::sampling::{Sampler, SamplingMode};
use device_steps::{device_error, DeviceSteps};
use ema::Ema;
use progress::Progress;
use step::StepEngine;

/// δ when none is given.
pub const DEFAULT_DELTA: f64 = 1e-5;
/// Bytes for one physical chunk when no memory budget is given.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

static SEED_WARNING: Once = Once::new();

/// The warning of a seeded run.
pub const SEEDED_WARNING: &str =
    "WARNING: seeded randomness: this run is NOT differentially private (anyone with the seed can remove the noise); use it for tests only";

/// The DP-SGD trainer of one model; see the crate docs for an example.
pub struct Trainer<'m, M: DpModel> {
    model: &'m mut M,
    optimizer: Option<Box<dyn Optimizer>>,
    clip_norm: Option<f64>,
    clip_mode: ClipMode,
    noise: Option<NoiseSpec>,
    delta: Option<f64>,
    expected_batch_size: Option<usize>,
    length: Option<Length>,
    seed: Option<u64>,
    accountant: AccountantKind,
    budget: Option<f64>,
    stop_at_budget: bool,
    sampling: SamplingMode,
    secure_noise: bool,
    precision: Precision,
    memory_budget: usize,
    /// At most this many examples through the model at once (`None`: as the memory budget allows).
    max_physical_batch: Option<usize>,
    quiet: bool,
    checkpoint: Option<PathBuf>,
    resume: Option<PathBuf>,
    max_steps: Option<u64>,
    on_epoch: Option<Box<EpochCallback<'m>>>,
    non_private_diagnostics: bool,
    allow_large_delta: bool,
    ema: Option<f64>,
    /// Augmentation multiplicity: views per example and how they are drawn.
    views: Option<(usize, Augmentation)>,
    /// This rank's group and shard in a distributed run (`docs/DISTRIBUTED.md`).
    distributed: Option<(Box<dyn Group + 'm>, Shard)>,
    /// Where the private steps run when not on the CPU (`docs/GPU.md`).
    device: Option<Box<dyn DeviceTraining<M> + 'm>>,
    conflicts: Vec<Error>,
}

/// Called with each epoch's report as soon as the epoch ends (e.g. to stream it as JSON).
pub type EpochCallback<'m> = dyn FnMut(&EpochReport) + 'm;

impl<'m, M: DpModel> Trainer<'m, M> {
    /// A trainer for `model`, with defaults: flat clipping, Poisson sampling, RDP accountant, δ = 1e-5
    /// (refused when ≥ 1/N), keys from the operating system, no non-private diagnostics.
    pub fn new(model: &'m mut M) -> Self {
        Trainer {
            model,
            optimizer: None,
            clip_norm: None,
            clip_mode: ClipMode::Flat,
            noise: None,
            delta: None,
            expected_batch_size: None,
            length: None,
            seed: None,
            accountant: AccountantKind::Rdp,
            budget: None,
            stop_at_budget: false,
            sampling: SamplingMode::Poisson,
            secure_noise: false,
            precision: Precision::F32,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            max_physical_batch: None,
            quiet: false,
            checkpoint: None,
            resume: None,
            max_steps: None,
            on_epoch: None,
            non_private_diagnostics: false,
            allow_large_delta: false,
            ema: None,
            views: None,
            distributed: None,
            device: None,
            conflicts: Vec::new(),
        }
    }

    /// Trains on `train` and, when `eval` is given, evaluates on it after every epoch (there is no
    /// evaluation on the training set: its metrics would not be private; see
    /// [`non_private_diagnostics`](Self::non_private_diagnostics)).
    ///
    /// Errors before the first step (settings, data, checkpoint, δ ≥ 1/N) are returned as they are.
    /// A failure after privacy was spent (an overflowing update, an I/O error writing a checkpoint, ...)
    /// is an [`Error::Interrupted`] with the steps accounted, the ε spent and what the model holds.
    pub fn fit(self, train: &Dataset<M::Input>, eval: Option<&Dataset<M::Input>>) -> Result<Report> {
        let Trainer {
            model,
            optimizer,
            clip_norm,
            clip_mode,
            noise,
            delta,
            expected_batch_size,
            length,
            mut on_epoch,
            non_private_diagnostics,
            mut device,
            ..
        } = self;
        if let Some(conflict) = self.conflicts.into_iter().next() {
            return Err(conflict);
        }
        let mut optimizer = optimizer.ok_or_else(|| Error::invalid("optimizer", "not set"))?;
        let clip_norm = clip_norm.ok_or_else(|| Error::invalid("clip_norm", "not set"))?;
        if !(clip_norm > 0.0 && clip_norm.is_finite()) {
            return Err(Error::invalid("clip_norm", format!("{clip_norm} must be positive and finite")));
        }
        let noise = noise
            .ok_or_else(|| Error::invalid("noise_multiplier", "set noise_multiplier or target_privacy"))?;
        let expected_batch_size =
            expected_batch_size.ok_or_else(|| Error::invalid("expected_batch_size", "not set"))?;
        let length = length.ok_or_else(|| Error::invalid("epochs", "set epochs or steps"))?;
        if self.memory_budget == 0 {
            return Err(Error::invalid("memory_budget", "must be positive"));
        }
        if self.max_physical_batch == Some(0) {
            return Err(Error::invalid("max_physical_batch", "must be at least 1"));
        }
        if let Some(b) = self.budget {
            if !(b > 0.0 && b.is_finite()) {
                return Err(Error::invalid("budget", format!("{b} must be positive and finite")));
            }
        }
        check_dataset::<M>("train", train)?;
        let device_error = device_error::<M>;
        if device.is_some() {
            let unsupported = [(self.secure_noise, "secure noise")];
            if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
                return Err(Error::invalid(
                    "device",
                    format!("{what} on a device is not built yet (docs/GPU.md)"),
                ));
            }
            if optimizer.on_device(StepInfo { step: 0, total_steps: 1 }).is_none() {
                return Err(Error::invalid(
                    "device",
                    format!("the {} optimizer has no device update (SGD and Adam only)", optimizer.kind()),
                ));
            }
            // Each epoch is evaluated by the device's forward: refused now, not after privacy is spent.
            check_device_outputs::<M>()?;
        }
        // Distributed: `train` is this rank's shard; N, the plan and the batches are the whole dataset's.
        let mut distributed = match self.distributed {
            Some((group, shard)) => {
                if self.secure_noise {
                    return Err(Error::invalid("secure_noise", "is not supported in a distributed run"));
                }
                if non_private_diagnostics {
                    return Err(Error::invalid(
                        "non_private_diagnostics",
                        "is not supported in a distributed run",
                    ));
                }
                Some(DistributedRun::new(group, shard, train.len(), M::TRAINED_PARAM_COUNT)?)
            }
            None => None,
        };
        let examples = distributed.as_ref().map_or(train.len(), DistributedRun::global_examples);
        let ranks = distributed.as_ref().map_or(1, DistributedRun::size);
        // Only rank 0 evaluates, reports and writes checkpoints.
        let is_root = distributed.as_ref().is_none_or(DistributedRun::is_root);
        let eval = eval.filter(|_| is_root);
        if let Some(eval) = eval {
            check_dataset::<M>("eval", eval)?;
        }

        // Resumed state.
        let resumed = match &self.resume {
            Some(path) => Some((path.as_path(), checkpoint::load::<M>(path)?)),
            None => None,
        };
        let secure_grid = self.secure_noise.then(|| SecureGrid {
            l2_sensitivity: SecureAggregator::grid_sensitivity(M::TRAINED_PARAM_COUNT),
            dimension: M::TRAINED_PARAM_COUNT,
        });
        let config = PlanConfig {
            examples,
            expected_batch_size,
            length,
            noise,
            delta: delta.unwrap_or(DEFAULT_DELTA),
            accountant: self.accountant,
            sampling: self.sampling,
            secure: secure_grid,
        };
        let ledger = resumed.as_ref().map(|(_, c)| c.ledger.clone()).unwrap_or_else(Ledger::new);
        let mut plan = PrivacyPlan::new(&config, ledger)?;
        if !self.allow_large_delta {
            plan::check_delta_for_examples(plan.delta(), plan.examples())?;
        }
        if let Some((path, c)) = resumed {
            let differences = c.identity.differences(&RunIdentity::of_plan::<M>(&plan).with_ranks(ranks));
            if !differences.is_empty() {
                return Err(Error::Mismatch {
                    model: M::NAME.to_string(),
                    message: format!(
                        "cannot resume from {}: it was written by another run ({}); resume with the \
                         settings of the run that wrote it",
                        path.display(),
                        differences.join("; ")
                    ),
                });
            }
            // The optimizer first: if its state does not fit, the model is left untouched.
            if let Some(dev) = device.as_mut() {
                let checked = c.optimizer.clone();
                optimizer.load_state(c.optimizer, M::TRAINED_PARAM_COUNT)?;
                dev.load_optimizer_state(&checked).map_err(device_error)?;
            } else {
                optimizer.load_state(c.optimizer, M::TRAINED_PARAM_COUNT)?;
            }
            model.params_mut().copy_from_slice(&c.params);
        } else if let Some(dev) = device.as_mut() {
            // A fresh run: the device's state starts as the host optimizer's (its kind, no buffers).
            dev.load_optimizer_state(&optimizer.state()).map_err(device_error)?;
        }
        // The average starts at the parameters training starts from (a resumed run's included).
        let mut ema = self.ema.map(|decay| Ema::new(decay, model.params())).transpose()?;
        let mut aggregator = match self.secure_noise {
            true => {
                let agg = SecureAggregator::new(M::TRAINED_PARAM_COUNT, clip_norm, plan.noise_multiplier())?;
                plan.set_discrete_sigma(agg.sigma());
                Some(agg)
            }
            false => None,
        };

        // The budget: refuse to start, or find the last step within it.
        let start_step = plan.steps_taken();
        let mut last_step = plan.total_steps().max(start_step);
        let mut stopped_at_budget = false;
        if let Some(budget) = self.budget {
            let planned = plan.planned_epsilon()?.epsilon;
            if planned > budget {
                if !self.stop_at_budget {
                    return Err(Error::Budget(format!(
                        "the plan spends epsilon {planned:.4} > budget {budget} ({} steps, noise multiplier {:.4}, \
                         sampling rate {:.3e}); add noise, train fewer steps, or set stop_at_budget",
                        plan.total_steps(),
                        plan.noise_multiplier(),
                        plan.sampling_rate()
                    )));
                }
                let fits = plan.steps_within_budget(budget)?;
                if fits == 0 {
                    return Err(Error::Budget(format!(
                        "epsilon {:.4} already spent leaves no step within budget {budget}",
                        plan.epsilon()?.epsilon
                    )));
                }
                last_step = start_step + fits;
                stopped_at_budget = true;
            }
        }

        // A cut run keeps the whole plan's noise multiplier; it only stops early.
        let mut stopped_at_max_steps = false;
        if let Some(max) = self.max_steps {
            if max == 0 {
                return Err(Error::invalid("max_steps", "must be at least 1"));
            }
            if max < last_step {
                last_step = max.max(start_step);
                stopped_at_max_steps = true;
            }
        }

        let mut warnings = Vec::new();
        if self.seed.is_some() {
            SEED_WARNING.call_once(|| eprintln!("{SEEDED_WARNING}"));
            warnings.push(SEEDED_WARNING.to_string());
        }
        if self.sampling == SamplingMode::Shuffled {
            warnings.push(
                "shuffled fixed-size batches: the reported epsilon assumes Poisson sampling, which this run \
                 did not use"
                    .to_string(),
            );
        }
        if non_private_diagnostics {
            warnings.push(NON_PRIVATE_DIAGNOSTICS_WARNING.to_string());
        }

        let source = self.seed.map_or(KeySource::Os, KeySource::Seed);
        let streams = Streams::new(source, start_step)?;
        // Distributed: a seeded run's ranks derive the same sampling key and draw the single-process
        // batches; in a private run each rank's key is its own, so no rank learns another shard's batch
        // membership (docs/DISTRIBUTED.md). Only rank 0 draws from the noise stream.
        let mut sampling_rng = streams.sampling;
        let mut noise_stream = GaussianNoise::new(streams.noise);
        let mut sampler = Sampler::new(self.sampling, examples, expected_batch_size);
        let bytes_per_example = (M::WORKSPACE_PER_EXAMPLE.max(1) * 4) as u64;
        let room = (self.memory_budget as u64).saturating_sub(Workspace::fixed_len::<M>() as u64 * 4);
        let max_chunk = (room / bytes_per_example).clamp(1, usize::MAX as u64) as usize;
        let max_chunk = max_chunk.min(self.max_physical_batch.unwrap_or(usize::MAX));
        // Room for a Poisson batch up to B + 5√B without growing the workspace.
        let typical_batch = expected_batch_size + 5 * (expected_batch_size as f64).sqrt().ceil() as usize;
        let mut engine = StepEngine::<M>::new(clip_norm, clip_mode, max_chunk, typical_batch);
        if let Some((count, augmentation)) = self.views {
            engine = engine.with_views(count, augmentation, streams.augment)?;
        }
        engine = engine.with_precision(self.precision);
        let noise_std = plan.noise_multiplier() * clip_norm;
        let progress = Progress::new(last_step, start_step, self.quiet || !is_root);
        let checkpoint_path = self.checkpoint.as_deref().filter(|_| is_root);

        if let Some(dev) = device.as_mut() {
            dev.set_precision(self.precision).map_err(device_error)?;
            dev.upload(model.params()).map_err(device_error)?;
            if ema.is_some() {
                dev.start_average().map_err(device_error)?;
            }
        }
        let mut device_steps = DeviceSteps::<M>::new(self.max_physical_batch.unwrap_or(usize::MAX));
        let mut epochs = Vec::new();
        let mut indices = Vec::new();
        let mut previous = model.params().to_vec();
        let mut step = start_step;
        let mut total_non_finite = 0u64;
        let mut last_checkpoint: Option<u64> = None;
        let mut epoch = (1..).find(|&e| plan.epoch_end(e) > step || e >= plan.epochs()).unwrap_or(1);
        // The loop is a closure so that any error it returns, after privacy was spent, can be reported
        // with the steps and ε it cost (below).
        let mut train_remaining_steps = || -> Result<()> {
            while step < last_step {
                let epoch_stop = plan.epoch_end(epoch).min(last_step);
                let (mut loss_sum, mut loss_count, mut non_finite, mut examples, mut steps_in_epoch) =
                    (0.0, 0usize, 0u64, 0usize, 0u64);
                while step < epoch_stop {
                    // On a device, the batch may have been sampled and staged during the last step.
                    let staged = device_steps.take_batch(&mut sampler, &mut sampling_rng, &mut indices);
                    let at = StepInfo { step, total_steps: plan.total_steps() };
                    // On a device the host's parameters are those of the last epoch's end: the device
                    // keeps its own and restores them after an overflowing update.
                    let on_device = device.is_some();
                    if !on_device {
                        previous.copy_from_slice(model.params());
                    }
                    let mut overflowed = false;
                    // Secure mode is refused for distributed runs above, and both for device runs.
                    let stats = match (aggregator.as_mut(), distributed.as_mut()) {
                        (None, None) if on_device => {
                            let dev = device.as_mut().expect("matched on is_some");
                            // The key the CPU's chunked draw would take from the noise stream: a seeded
                            // run draws the same noise on either.
                            let mut key = [0u8; 32];
                            rand::RngCore::fill_bytes(noise_stream.rng(), &mut key);
                            let settings = DevicePrivateStep {
                                clip_mode,
                                clip_norm,
                                noise_std,
                                normaliser: plan.normaliser(),
                                key,
                                optimizer: optimizer.on_device(at).expect("checked before the first step"),
                                keep_losses: non_private_diagnostics,
                            };
                            let next = (step + 1 < last_step)
                                .then_some((&mut sampler, &mut sampling_rng as &mut dyn rand::RngCore));
                            let (stats, overflow) = device_steps.private_step(
                                dev.as_mut(),
                                &mut engine,
                                train,
                                (&indices, staged),
                                next,
                                &settings,
                                non_private_diagnostics,
                            )?;
                            overflowed = overflow;
                            stats
                        }
                        (None, Some(run)) if on_device => {
                            let dev = device.as_mut().expect("matched on is_some");
                            let settings = DeviceStepSettings { clip_mode, clip_norm, noise_std };
                            let next = (step + 1 < last_step)
                                .then_some((&mut sampler, &mut sampling_rng as &mut dyn rand::RngCore));
                            let stats = run.device_step(
                                dev.as_mut(),
                                &mut engine,
                                train,
                                (&indices, staged),
                                next,
                                Some(&mut noise_stream),
                                settings,
                                &mut device_steps,
                            )?;
                            let update = optimizer.on_device(at).expect("checked before the first step");
                            let updated = dev
                                .released_update(run.released(), plan.normaliser(), update)
                                .map_err(device_error);
                            overflowed = matches!(updated, Ok(true));
                            // Before anything that might return: a rank whose device failed stops every rank.
                            run.agree(updated.map(drop))?;
                            stats
                        }
                        (None, Some(run)) => {
                            let stats = run.step(
                                &mut engine,
                                model,
                                train,
                                &indices,
                                Some(&mut noise_stream),
                                noise_std,
                            )?;
                            let gradient = NoisyGradient::released(run.released(), plan.normaliser());
                            optimizer.step(model.trained_params_mut(), gradient, at);
                            stats
                        }
                        (None, None) => {
                            let stats =
                                engine.clipped_sum_and_noise(model, train, &indices, &mut noise_stream)?;
                            let gradient = NoisyGradient::with_drawn_noise(
                                &engine.clipped_sum,
                                engine.drawn_noise(),
                                noise_std,
                                plan.normaliser(),
                            );
                            optimizer.step(model.trained_params_mut(), gradient, at);
                            stats
                        }
                        (Some(agg), _) => {
                            let stats = engine.secure_sum(model, train, &indices, agg)?;
                            agg.release(noise_stream.rng(), &mut engine.clipped_sum);
                            let gradient =
                                NoisyGradient::new(&engine.clipped_sum, None, 0.0, plan.normaliser());
                            optimizer.step(model.trained_params_mut(), gradient, at);
                            stats
                        }
                    };
                    // The noisy gradient was computed from the data: the step is spent even if its
                    // update is discarded below.
                    plan.record_step();
                    let failed =
                        if on_device { overflowed } else { model.params().iter().any(|p| !p.is_finite()) };
                    if failed {
                        // Keep the model as it was before the failing update: parameters never become NaN.
                        if !on_device {
                            model.params_mut().copy_from_slice(&previous);
                        }
                        return Err(Error::invalid(
                            "optimizer",
                            format!("the update of step {} overflowed: lower the learning rate", step + 1),
                        ));
                    }
                    if let Some(ema) = ema.as_mut() {
                        match device.as_mut() {
                            Some(dev) => {
                                let folded = dev.fold_average(ema.advance()).map_err(device_error);
                                agreed(distributed.as_mut(), folded)?
                            }
                            None => ema.update(model.params()),
                        }
                    }
                    step += 1;
                    steps_in_epoch += 1;
                    loss_sum += stats.loss_sum;
                    loss_count += stats.loss_count;
                    non_finite += stats.non_finite as u64;
                    examples += stats.examples;
                    progress.step(non_private_diagnostics.then(|| loss_sum / loss_count.max(1) as f64));
                }
                total_non_finite += non_finite;
                if let Some(dev) = device.as_mut() {
                    // Every rank: each returns its trained model, and their devices hold the same one.
                    let mut downloaded = dev.download(model.params_mut());
                    if let (Ok(()), Some(ema)) = (&downloaded, ema.as_mut()) {
                        downloaded = dev.download_average(ema.average_mut());
                    }
                    agreed(distributed.as_mut(), downloaded.map_err(device_error))?;
                }
                let spent = plan.epsilon()?;
                let evaluated = match device.as_mut() {
                    // On the device, under the average when there is one. Only rank 0 evaluates;
                    // every rank agrees on whether it failed.
                    Some(dev) => {
                        let average = ema.as_ref().map(Ema::average);
                        let evaluated = eval
                            .map(|eval| {
                                evaluate_epoch_on_device(
                                    dev.as_mut(),
                                    model.params(),
                                    average,
                                    (eval, max_chunk),
                                )
                            })
                            .transpose();
                        agreed_value(distributed.as_mut(), evaluated)?
                    }
                    None => eval.map(|eval| {
                        ema::with_average(ema.as_mut(), model, |model| {
                            report::evaluate(model, engine.workspace(), eval, max_chunk)
                        })
                    }),
                };
                let (eval_loss, accuracy) = match evaluated {
                    Some((loss, accuracy)) => (Some(loss), accuracy),
                    None => (None, None),
                };
                let train_accuracy = match (non_private_diagnostics, eval, device.as_mut()) {
                    (false, _, _) | (true, Some(_), _) => None,
                    (true, None, Some(dev)) => {
                        let evaluated =
                            evaluate_epoch_on_device(dev.as_mut(), model.params(), None, (train, max_chunk));
                        agreed_value(distributed.as_mut(), evaluated)?.1
                    }
                    (true, None, None) => report::evaluate(model, engine.workspace(), train, max_chunk).1,
                };
                let diagnostics = non_private_diagnostics.then(|| Diagnostics {
                    train_loss: loss_sum / loss_count.max(1) as f64,
                    train_accuracy,
                    non_finite_examples: non_finite,
                    mean_batch_size: examples as f64 / steps_in_epoch.max(1) as f64,
                });
                let record = EpochReport {
                    epoch,
                    steps: step,
                    epsilon: spent.epsilon,
                    eval_loss,
                    accuracy,
                    diagnostics,
                };
                // Saved before it is reported: an epoch anyone has seen reported is never lost to a crash.
                let mut written = Ok(());
                if let Some(path) = checkpoint_path {
                    // A device that cannot give its state fails the write, which every rank agrees on.
                    let state = match device.as_mut() {
                        Some(dev) => dev.optimizer_state().map_err(device_error),
                        None => Ok(optimizer.state()),
                    };
                    written = state.and_then(|optimizer| {
                        let saved = Checkpoint {
                            params: model.params().to_vec(),
                            optimizer,
                            steps: step,
                            ledger: plan.ledger().clone(),
                            identity: RunIdentity::of_plan::<M>(&plan).with_ranks(ranks),
                        };
                        checkpoint::save::<M>(path, &saved)
                    });
                    if written.is_ok() {
                        last_checkpoint = Some(step);
                    }
                }
                if let Some(run) = distributed.as_mut() {
                    // Every rank stops if rank 0 could not write the checkpoint.
                    written = run.agree(written);
                }
                written?;
                progress.epoch(&record);
                if let Some(callback) = on_epoch.as_mut().filter(|_| is_root) {
                    callback(&record);
                }
                epochs.push(record);
                epoch += 1;
            }
            Ok(())
        };
        let outcome = train_remaining_steps();
        progress.finish();
        if let (Err(_), Some(dev)) = (&outcome, device.as_mut()) {
            // The model holds the last update the device completed (the device restores the parameters
            // before an overflowing update); a device that cannot be read leaves the last epoch's.
            let _ = dev.download(model.params_mut());
        }
        if let Err(cause) = outcome {
            let saved = checkpoint_path.zip(last_checkpoint);
            return Err(interrupted(cause, &mut plan, step, saved));
        }

        if let Some(ema) = &ema {
            model.params_mut().copy_from_slice(ema.average());
        }
        let spent = plan.epsilon()?;
        let accuracy = match eval {
            None => None,
            Some(eval) => match epochs.last() {
                Some(last) => last.accuracy,
                // A resumed run that had no step left: evaluate the checkpoint's parameters.
                None => report::evaluate(model, engine.workspace(), eval, max_chunk).1,
            },
        };
        let diagnostics = non_private_diagnostics.then(|| RunDiagnostics {
            non_finite_examples: total_non_finite,
            train_accuracy: match (eval, epochs.last().and_then(|e| e.diagnostics.as_ref())) {
                (Some(_), _) => None,
                (None, Some(last)) => last.train_accuracy,
                (None, None) => report::evaluate(model, engine.workspace(), train, max_chunk).1,
            },
        });
        let secure = aggregator.as_ref().map(|a| SecureReport {
            grid_step: a.grid_step(),
            l2_sensitivity: a.l2_sensitivity(),
            sigma: a.sigma(),
        });
        Ok(Report {
            epochs,
            accuracy: accuracy.unwrap_or(f64::NAN),
            epsilon: spent.epsilon,
            order: spent.order,
            delta: plan.delta(),
            steps: step,
            planned_steps: plan.total_steps(),
            noise_multiplier: plan.noise_multiplier(),
            trained_parameters: M::TRAINED_PARAM_COUNT,
            sampling_rate: plan.sampling_rate(),
            expected_batch_size: plan.expected_batch_size(),
            sampling: plan.sampling(),
            accountant: plan.accountant(),
            secure,
            stopped_at_budget: stopped_at_budget && step < plan.total_steps(),
            stopped_at_max_steps,
            warnings,
            diagnostics,
        })
    }
}

/// A device call's `outcome`, agreed by every rank of a distributed run (a device error on one rank
/// becomes every rank's [`Error::RankFailed`], so no rank waits on one that stopped); as it is in one
/// process.
fn agreed(distributed: Option<&mut DistributedRun<'_>>, outcome: Result<()>) -> Result<()> {
    match distributed {
        Some(run) => run.agree(outcome),
        None => outcome,
    }
}

/// [`agreed`] for an outcome with a value: every rank's value, or the same error on every rank.
fn agreed_value<T>(distributed: Option<&mut DistributedRun<'_>>, outcome: Result<T>) -> Result<T> {
    let (value, outcome) = match outcome {
        Ok(value) => (Some(value), Ok(())),
        Err(e) => (None, Err(e)),
    };
    agreed(distributed, outcome)?;
    Ok(value.expect("agreed that no rank failed"))
}

/// That `M`'s device program says where its forward leaves the outputs, `output_len` per example.
pub(crate) fn check_device_outputs<M: DpModel>() -> Result<()> {
    match M::device_outputs(1) {
        Ok(span) if span.len == M::LOSS.output_len() => Ok(()),
        Ok(span) => Err(Error::invalid(
            "device",
            format!(
                "{}: its device outputs are {} values per example, not {}",
                M::NAME,
                span.len,
                M::LOSS.output_len()
            ),
        )),
        Err(e) => {
            Err(Error::invalid("device", format!("{}: no device forward to evaluate with: {e}", M::NAME)))
        }
    }
}

/// Mean loss and accuracy of `data` by the device's forward (`report::evaluate_on_device`), under
/// the parameters it holds (`params`, the model's) or, given `average`, under the moving average:
/// uploaded for the evaluation and the parameters uploaded back after it, whatever it did.
fn evaluate_epoch_on_device<M: DpModel>(
    device: &mut dyn DeviceTraining<M>,
    params: &[f32],
    average: Option<&[f32]>,
    (data, chunk): (&Dataset<M::Input>, usize),
) -> Result<(f64, Option<f64>)> {
    // The host holds `chunk` examples' outputs at a time; the device chunks them by its own room.
    let evaluated = match average {
        None => report::evaluate_on_device(device, data, chunk),
        Some(average) => device.upload(average).and_then(|()| {
            let evaluated = report::evaluate_on_device(device, data, chunk);
            let restored = device.upload(params);
            evaluated.and_then(|e| restored.map(|()| e))
        }),
    };
    evaluated.map_err(device_error::<M>)
}

/// The warning of a run with non-private diagnostics.
pub const NON_PRIVATE_DIAGNOSTICS_WARNING: &str =
    "non-private diagnostics: the training loss, training accuracy, non-finite counts and batch sizes \
     reported are computed on the training data without noise and are NOT covered by epsilon";

/// The error of a run that failed after `plan` accounted at least one step (the cause itself
/// otherwise): the steps accounted, the ε spent at δ, and what the model and the last checkpoint
/// hold. `completed` is the number of steps whose update the model holds.
fn interrupted(cause: Error, plan: &mut PrivacyPlan, completed: u64, saved: Option<(&Path, u64)>) -> Error {
    let accounted = plan.steps_taken();
    if accounted == 0 {
        return cause;
    }
    let delta = plan.delta();
    // The chosen accountant can fail (e.g. δ below the PLD resolution); RDP bounds the same ledger,
    // and without any bound nothing is claimed (ε = ∞).
    let epsilon = match plan.epsilon() {
        Ok(spent) => spent.epsilon,
        Err(_) => plan.ledger().epsilon(AccountantKind::Rdp, delta).map_or(f64::INFINITY, |e| e.epsilon),
    };
    let mut holds = if accounted > completed {
        format!(
            "the model holds the parameters after step {completed}, before the failing update of step {} \
             (its noisy gradient was computed, so that step is accounted)",
            completed + 1
        )
    } else {
        format!("the model holds the parameters after step {completed}")
    };
    if let Some((path, steps)) = saved {
        holds.push_str(&format!(
            "; the checkpoint {} holds step {steps} and can be resumed with the same settings",
            path.display()
        ));
    }
    Error::Interrupted { steps: accounted, epsilon, delta, holds, source: Box::new(cause) }
}

/// Checks that `data` fits model `M`: example shape, label length, label values, token ids.
fn check_dataset<M: DpModel>(name: &str, data: &Dataset<M::Input>) -> Result<()> {
    let mismatch = |message: String| Error::Mismatch {
        model: M::NAME.to_string(),
        message: format!("{name}: {message}"),
    };
    if data.example_shape != M::INPUT_SHAPE {
        return Err(mismatch(format!(
            "examples have shape {:?}, the model takes {:?}",
            data.example_shape,
            M::INPUT_SHAPE
        )));
    }
    if data.label_len != M::LOSS.label_len() {
        return Err(mismatch(format!(
            "{} label values per example, the model needs {}",
            data.label_len,
            M::LOSS.label_len()
        )));
    }
    if data.is_empty() {
        return Err(Error::invalid(name, "the dataset is empty"));
    }
    for (i, &label) in data.labels.iter().enumerate() {
        let ok = match M::LOSS {
            Loss::CrossEntropy { classes } => {
                label >= 0.0 && label.fract() == 0.0 && (label as usize) < classes
            }
            Loss::BinaryCrossEntropy => (0.0..=1.0).contains(&label),
            Loss::MeanSquaredError { .. } => label.is_finite(),
        };
        if !ok {
            return Err(mismatch(format!(
                "label {label} of example {} is invalid for {:?}",
                i / data.label_len,
                M::LOSS
            )));
        }
    }
    if let Some(tokens) = (&data.inputs as &dyn std::any::Any).downcast_ref::<Vec<u32>>() {
        if let Some(i) = tokens.iter().position(|&t| t as usize >= M::VOCAB) {
            return Err(mismatch(format!(
                "token {} at example {} is outside the vocabulary of {}",
                tokens[i],
                i / data.example_len(),
                M::VOCAB
            )));
        }
    }
    Ok(())
}
