//! The host's side of one process's steps on a device (`Trainer::device`'s private steps, and the
//! non-private baseline's): the batch (or its views) gathered and handed to the device, and, without
//! views, the next step's batch sampled, gathered and staged while a step runs (a distributed rank's
//! part of it, during its clipped sum: `DistributedRun::device_step`; docs/GPU.md,
//! "Overlapping the host's work with a step"). The draws are those of sampling at the top of each
//! step, in the same order, so a seeded run on a device takes the CPU's batches.

use std::ops::Range;

use rand::RngCore;

use super::step::{BatchStats, StepEngine};
use crate::data::Dataset;
use crate::device::{DeviceError, DevicePrivateStep, DeviceTraining};
use crate::distributed::indices_in_shard;
use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::sampling::Sampler;

/// A device's error, named by the model.
pub(crate) fn device_error<M: DpModel>(e: DeviceError) -> Error {
    Error::Mismatch { model: M::NAME.into(), message: e.to_string() }
}

/// The host buffers of device steps, and the batch staged ahead.
pub(crate) struct DeviceSteps<M: DpModel> {
    /// A step's batch gathered on the host (in a distributed run, this rank's part of it; with
    /// views, the views of it).
    pub(crate) batch: (Vec<M::Input>, Vec<f32>),
    /// The next step's indices, once its batch is staged (global ones in a distributed run).
    next: Vec<usize>,
    /// In a distributed run, the next step's indices in this rank's shard.
    next_local: Vec<usize>,
    staged_ahead: bool,
    /// With non-private diagnostics: the last step's losses and clip factors, copied back.
    losses: Vec<f32>,
    factors: Vec<f32>,
}

impl<M: DpModel> DeviceSteps<M> {
    pub(crate) fn new() -> Self {
        DeviceSteps {
            batch: (Vec::new(), Vec::new()),
            next: Vec::new(),
            next_local: Vec::new(),
            staged_ahead: false,
            losses: Vec::new(),
            factors: Vec::new(),
        }
    }

    /// This step's indices: those of the batch staged during the last step, or a fresh sample.
    /// Returns whether the batch is staged already.
    pub(crate) fn take_batch(
        &mut self,
        sampler: &mut Sampler,
        rng: &mut dyn RngCore,
        indices: &mut Vec<usize>,
    ) -> bool {
        let staged = std::mem::take(&mut self.staged_ahead);
        match staged {
            true => std::mem::swap(indices, &mut self.next),
            false => sampler.sample(rng, indices),
        }
        staged
    }

    /// One private step on the batch at `indices` (`staged`: as [`take_batch`](Self::take_batch)
    /// said). Without views, when `next` gives the sampler (a step follows this one), the next
    /// batch is sampled, gathered and staged between queueing this step and finishing it. With
    /// `diagnostics`, the step's losses and clip factors are read back into the statistics.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn private_step(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        engine: &mut StepEngine<M>,
        train: &Dataset<M::Input>,
        (indices, staged): (&[usize], bool),
        next: Option<(&mut Sampler, &mut dyn RngCore)>,
        settings: &DevicePrivateStep,
        diagnostics: bool,
    ) -> Result<(BatchStats, bool)> {
        let n = indices.len();
        let (inputs, labels) = &mut self.batch;
        // With views, they are drawn and augmented here as the CPU draws them.
        let views = engine.gather_views(train, indices, inputs, labels);
        let outcome = match views {
            Some(views) => dev.private_step_with_views(inputs, labels, n, views, settings),
            None => self.overlapped(
                dev,
                train,
                (indices, staged),
                next,
                None,
                |dev| dev.queue_private_step(settings),
                |dev| dev.finish_private_step(),
            ),
        }
        .map_err(device_error::<M>)?;
        let mut stats =
            BatchStats { non_finite: outcome.non_finite_examples, examples: n, ..BatchStats::default() };
        if diagnostics {
            let (groups, views) = (M::GROUPS.len(), views.unwrap_or(1));
            self.losses.resize(n * views, 0.0);
            self.factors.resize(n * groups, 0.0);
            dev.last_losses_and_factors(n, views, &mut self.losses, &mut self.factors)
                .map_err(device_error::<M>)?;
            stats.add_losses(&self.losses, views, &self.factors, groups);
        }
        Ok((stats, outcome.overflowed))
    }

    /// A step on the batch at `indices` of `data` (staged first unless `staged`) queued by `queue`;
    /// while it runs, when `next` gives the sampler (a step follows this one), the next batch sampled
    /// and its part in `shard` gathered and staged ([`stage_next`](Self::stage_next)); then the step
    /// finished by `finish`, whatever staging did (its error comes first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn overlapped<T>(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        data: &Dataset<M::Input>,
        (indices, staged): (&[usize], bool),
        next: Option<(&mut Sampler, &mut dyn RngCore)>,
        shard: Option<Range<usize>>,
        queue: impl FnOnce(&mut dyn DeviceTraining<M>) -> std::result::Result<(), DeviceError>,
        finish: impl FnOnce(&mut dyn DeviceTraining<M>) -> std::result::Result<T, DeviceError>,
    ) -> std::result::Result<T, DeviceError> {
        let (inputs, labels) = &mut self.batch;
        if !staged {
            data.gather(indices, inputs, labels);
            dev.stage_batch(inputs, labels, indices.len())?;
        }
        queue(&mut *dev)?;
        let staging = self.stage_next(dev, data, next, shard);
        finish(dev).and_then(|outcome| staging.map(|()| outcome))
    }

    /// While a step runs, when `next` gives the sampler (a step follows this one): the next step's
    /// batch sampled, its indices kept for [`take_batch`](Self::take_batch), and the examples of it
    /// in `shard` (a distributed rank's, as indices into `data`; every one without) gathered from
    /// `data` and staged.
    fn stage_next(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        data: &Dataset<M::Input>,
        next: Option<(&mut Sampler, &mut dyn RngCore)>,
        shard: Option<Range<usize>>,
    ) -> std::result::Result<(), DeviceError> {
        let Some((sampler, rng)) = next else {
            return Ok(());
        };
        sampler.sample(rng, &mut self.next);
        let indices = match shard {
            Some(shard) => {
                indices_in_shard(&self.next, shard, &mut self.next_local);
                &self.next_local
            }
            None => &self.next,
        };
        let (inputs, labels) = &mut self.batch;
        data.gather(indices, inputs, labels);
        self.staged_ahead = true;
        dev.stage_batch(inputs, labels, indices.len())
    }
}
