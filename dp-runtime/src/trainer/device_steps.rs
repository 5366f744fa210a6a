//! The host's side of one process's steps on a device (`Trainer::device`'s private steps, and the
//! non-private baseline's): the batch (or its views) gathered and handed to the device, and, without
//! views, the next step's batch sampled, gathered and staged while a step runs (a distributed rank's
//! part of it, during its clipped sum: `DistributedRun::device_step`; docs/GPU.md,
//! "Overlapping the host's work with a step"). The draws are those of sampling at the top of each
//! step, in the same order, so a seeded run on a device takes the CPU's batches.

use std::ops::Range;

use rand::RngCore;

use super::step::{BatchStats, StepEngine};
use crate::clipping::ClipMode;
use crate::data::Dataset;
use crate::device::{DeviceError, DevicePrivateStep, DeviceTraining};
use crate::distributed::indices_in_shard;
use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::noise::gaussian::fill_under_key;
use crate::sampling::Sampler;

/// The sampler and its generator, when a step follows this one.
type NextSample<'s, 'r> = Option<(&'s mut Sampler, &'r mut dyn RngCore)>;

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
    /// The most examples the device runs at once (`Trainer::max_physical_batch`; `usize::MAX`: no
    /// bound). A larger batch is run in chunks; only a batch's first chunk is staged ahead.
    physical: usize,
    /// A chunked step's sum of its chunks' clipped sums, and one chunk's.
    chunks_sum: Vec<f64>,
    chunk_sum: Vec<f32>,
    /// A chunked step's normals, drawn on the host from the step's key, and its released R.
    normals: Vec<f64>,
    released: Vec<f64>,
}

impl<M: DpModel> DeviceSteps<M> {
    /// Host buffers for device steps of at most `physical` examples at once.
    pub(crate) fn new(physical: usize) -> Self {
        DeviceSteps {
            batch: (Vec::new(), Vec::new()),
            next: Vec::new(),
            next_local: Vec::new(),
            staged_ahead: false,
            losses: Vec::new(),
            factors: Vec::new(),
            physical: physical.max(1),
            chunks_sum: Vec::new(),
            chunk_sum: Vec::new(),
            normals: Vec::new(),
            released: Vec::new(),
        }
    }

    /// The sum of the last [`clipped_sum_in_chunks`](Self::clipped_sum_in_chunks), in f64.
    pub(crate) fn chunks_sum(&self) -> &[f64] {
        &self.chunks_sum
    }

    /// Whether a batch of `n` examples runs in physical chunks.
    pub(crate) fn in_chunks(&self, n: usize) -> bool {
        n > self.physical
    }

    /// This step's indices: those of the batch staged during the last step, or a fresh sample.
    /// Returns whether the batch (its first chunk, for a batch run in chunks) is staged already.
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
        let (n, chunked) = (indices.len(), self.in_chunks(indices.len()));
        let (inputs, labels) = &mut self.batch;
        // With views, they are drawn and augmented here as the CPU draws them.
        let views = engine.gather_views(train, indices, inputs, labels);
        if views.is_none() && chunked {
            return self.private_step_in_chunks(dev, train, (indices, staged), next, settings, diagnostics);
        }
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
            self.read_losses(dev, n, views.unwrap_or(1), &mut stats).map_err(device_error::<M>)?;
        }
        Ok((stats, outcome.overflowed))
    }

    /// A private step on a batch larger than the physical batch: its clipped sum formed chunk by
    /// chunk on the device ([`clipped_sum_in_chunks`](Self::clipped_sum_in_chunks)) and added up on
    /// the host in f64, the normals drawn on the host from the step's key (those the device would
    /// draw from it, `fill_under_key`) while the first chunk runs, and R = S + σC·z handed back for
    /// the update, as a distributed step's is (`DeviceTraining::released_update`). With
    /// `diagnostics`, each chunk's losses and clip factors are read back into the statistics.
    fn private_step_in_chunks(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        train: &Dataset<M::Input>,
        (indices, staged): (&[usize], bool),
        next: Option<(&mut Sampler, &mut dyn RngCore)>,
        settings: &DevicePrivateStep,
        diagnostics: bool,
    ) -> Result<(BatchStats, bool)> {
        let params = M::TRAINED_PARAM_COUNT;
        let mut normals = std::mem::take(&mut self.normals);
        normals.resize(params, 0.0);
        let mut stats = BatchStats { examples: indices.len(), ..BatchStats::default() };
        let clipping = (settings.clip_mode, settings.clip_norm);
        let summed = self.clipped_sum_in_chunks(
            dev,
            train,
            (indices, staged),
            (next, None),
            clipping,
            diagnostics.then_some(&mut stats),
            || fill_under_key(&settings.key, &mut normals),
        );
        let mut released = std::mem::take(&mut self.released);
        released.clear();
        // As one process forms it inside the optimizer: (s + σC·z), then / B.
        released.extend(self.chunks_sum.iter().zip(&normals).map(|(&s, &z)| s + settings.noise_std * z));
        self.normals = normals;
        let outcome = summed.and_then(|non_finite| {
            stats.non_finite = non_finite;
            dev.released_update(&released, settings.normaliser, settings.optimizer)
        });
        self.released = released;
        let overflowed = outcome.map_err(device_error::<M>)?;
        Ok((stats, overflowed))
    }

    /// The clipped sum of the examples at `indices` of `data` into `chunks_sum` (f64), formed on the
    /// device in chunks of at most the physical batch, each chunk's sum copied out and added: the
    /// first chunk staged first unless `staged`, then per chunk its clipped sum queued, `during_first`
    /// run on the host while the first runs, the following chunk (after the last, the next step's
    /// batch, `next`, and its part in `shard`) gathered and staged, the chunk's sum finished,
    /// whatever staging did, the following chunk queued, and the finished sum added while that one
    /// runs. With `stats` (non-private diagnostics), each chunk's losses and clip factors are read
    /// back into it before the following chunk is queued. Returns the examples whose norm was not
    /// finite.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn clipped_sum_in_chunks(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        data: &Dataset<M::Input>,
        (indices, staged): (&[usize], bool),
        (mut next, shard): (NextSample<'_, '_>, Option<Range<usize>>),
        (clip_mode, clip_norm): (ClipMode, f64),
        mut stats: Option<&mut BatchStats>,
        during_first: impl FnOnce(),
    ) -> std::result::Result<usize, DeviceError> {
        let params = M::TRAINED_PARAM_COUNT;
        self.chunks_sum.clear();
        self.chunks_sum.resize(params, 0.0);
        self.chunk_sum.resize(params, 0.0);
        let chunks: Vec<&[usize]> = indices.chunks(self.physical).collect();
        if !staged {
            if let Some(first) = chunks.first() {
                self.stage(dev, data, first)?;
            }
        }
        let mut during_first = Some(during_first);
        let mut non_finite = 0;
        if !chunks.is_empty() {
            dev.queue_clipped_sum(clip_mode, clip_norm)?;
        }
        for (k, chunk) in chunks.iter().enumerate() {
            if let Some(during) = during_first.take() {
                during();
            }
            let staging = match chunks.get(k + 1) {
                Some(following) => self.stage(dev, data, following),
                None => self.stage_next(dev, data, next.take(), shard.clone()),
            };
            let mut part = std::mem::take(&mut self.chunk_sum);
            let finished = dev.finish_clipped_sum(&mut part);
            let bad = finished.and_then(|bad| staging.map(|()| bad));
            let read = match (bad, stats.as_deref_mut()) {
                (Ok(bad), Some(stats)) => self.read_losses(dev, chunk.len(), 1, stats).map(|()| bad),
                (bad, _) => bad,
            };
            // The following chunk is queued before this one's sum is added up here, so that the add
            // (O(parameters) on the host) runs while the device computes (its losses read first:
            // the following chunk overwrites them).
            let queued = match (read, k + 1 < chunks.len()) {
                (Ok(bad), true) => dev.queue_clipped_sum(clip_mode, clip_norm).map(|()| bad),
                (read, _) => read,
            };
            for (total, &s) in self.chunks_sum.iter_mut().zip(&part) {
                *total += f64::from(s);
            }
            self.chunk_sum = part;
            non_finite += queued?;
        }
        // A batch of no chunk (none reaches here: it runs in one piece) still runs it.
        if let Some(during) = during_first.take() {
            during();
        }
        Ok(non_finite)
    }

    /// The last step's (or chunk's) losses and clip factors of `n` examples seen as `views` views
    /// each, copied back and counted into `stats` (non-private diagnostics).
    fn read_losses(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        n: usize,
        views: usize,
        stats: &mut BatchStats,
    ) -> std::result::Result<(), DeviceError> {
        let groups = M::GROUPS.len();
        self.losses.resize(n * views, 0.0);
        self.factors.resize(n * groups, 0.0);
        dev.last_losses_and_factors(n, views, &mut self.losses, &mut self.factors)?;
        stats.add_losses(&self.losses, views, &self.factors, groups);
        Ok(())
    }

    /// The examples at `indices` of `data` gathered and staged.
    fn stage(
        &mut self,
        dev: &mut dyn DeviceTraining<M>,
        data: &Dataset<M::Input>,
        indices: &[usize],
    ) -> std::result::Result<(), DeviceError> {
        let (inputs, labels) = &mut self.batch;
        data.gather(indices, inputs, labels);
        dev.stage_batch(inputs, labels, indices.len())
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
        // A batch run in chunks has its first chunk staged.
        let first = &indices[..indices.len().min(self.physical)];
        let (inputs, labels) = &mut self.batch;
        data.gather(first, inputs, labels);
        self.staged_ahead = true;
        dev.stage_batch(inputs, labels, first.len())
    }
}
