//! One distributed step, and how the ranks agree that one of them failed.
//!
//! A step: every rank keeps the part of the global batch in its shard and computes its clipped sum;
//! one reduce brings the sums to rank 0, which adds the noise it alone draws and broadcasts the
//! released vector R = S + σC·z (f64); every rank then applies the same update. One extra value rides
//! on the reduce (this rank failed) and on the broadcast (some rank failed), so a failure costs no
//! message while none happens. On a device (`DistributedRun::device_step`) the clipped sum comes
//! from the rank's device and the rest is the same code.

use rand::RngCore;

use super::group::Group;
use super::{indices_in_shard, Shard};
use crate::clipping::ClipMode;
use crate::data::Dataset;
use crate::device::DeviceTraining;
use crate::error::{Error, Result};
use crate::model::DpModel;
use crate::noise::GaussianNoise;
use crate::sampling::Sampler;
use crate::trainer::device_steps::{device_error, DeviceSteps};
use crate::trainer::step::{BatchStats, StepEngine};

/// A distributed run's group, shard and step buffers.
pub struct DistributedRun<'g> {
    group: Box<dyn Group + 'g>,
    shard: Shard,
    shard_len: usize,
    local_indices: Vec<usize>,
    /// This rank's clipped sum, then its failure flag.
    local: Vec<f32>,
    /// Rank 0: the sum over ranks, then the number of ranks that failed.
    total: Vec<f32>,
    /// R = S + σC·z, then 1.0 when some rank failed.
    released: Vec<f64>,
    /// Rank 0 of a device run: the step's normals, drawn on the host.
    drawn_noise: Vec<f64>,
}

/// How a distributed step on a device (`DistributedRun::device_step`) clips, and the noise rank 0 adds.
#[derive(Debug, Clone, Copy)]
pub struct DeviceStepSettings {
    pub clip_mode: ClipMode,
    /// C.
    pub clip_norm: f64,
    /// σ·C, the standard deviation of the noise on the summed clipped sums.
    pub noise_std: f64,
}

fn no_noise_stream() -> Error {
    Error::invalid("noise", "rank 0 draws the noise but was given no noise stream")
}

impl<'g> DistributedRun<'g> {
    /// The run of this rank of `group`, holding `shard_len` examples at `shard`, for a model of
    /// `params` parameters.
    pub fn new(group: Box<dyn Group + 'g>, shard: Shard, shard_len: usize, params: usize) -> Result<Self> {
        let end = shard.offset.checked_add(shard_len).filter(|&end| end <= shard.global_examples);
        if end.is_none() || group.rank() >= group.size() {
            return Err(Error::invalid(
                "shard",
                format!(
                    "rank {} of {}: examples {}..{}+{} are not within the {} examples of the whole dataset",
                    group.rank(),
                    group.size(),
                    shard.offset,
                    shard.offset,
                    shard_len,
                    shard.global_examples
                ),
            ));
        }
        Ok(DistributedRun {
            group,
            shard,
            shard_len,
            local_indices: Vec::new(),
            local: vec![0.0; params + 1],
            total: vec![0.0; params + 1],
            released: vec![0.0; params + 1],
            drawn_noise: Vec::new(),
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// K.
    pub fn size(&self) -> usize {
        self.group.size()
    }

    /// Whether this rank is rank 0, the one that draws the noise, evaluates, reports and checkpoints.
    pub fn is_root(&self) -> bool {
        self.group.rank() == 0
    }

    /// N, the examples of the whole dataset.
    pub fn global_examples(&self) -> usize {
        self.shard.global_examples
    }

    /// One step on the global batch `global_indices` (ascending): this rank's clipped sum of the
    /// indices in its shard, the reduce, rank 0's noise (`noise`, given on rank 0 only, with standard
    /// deviation `noise_std` = σC), the broadcast. On success every rank's [`released`](Self::released)
    /// holds R; the stats are this rank's. If any rank failed, every rank returns
    /// [`Error::RankFailed`] naming the lowest failing rank, with its message.
    pub fn step<M: DpModel>(
        &mut self,
        engine: &mut StepEngine<M>,
        model: &M,
        shard_data: &Dataset<M::Input>,
        global_indices: &[usize],
        noise: Option<&mut GaussianNoise>,
        noise_std: f64,
    ) -> Result<BatchStats> {
        self.keep_local(global_indices);
        let outcome = match (self.is_root(), noise) {
            (true, Some(noise)) => {
                engine.clipped_sum_and_noise(model, shard_data, &self.local_indices, noise)
            }
            (true, None) => Err(no_noise_stream()),
            (false, _) => engine.clipped_sum(model, shard_data, &self.local_indices),
        };
        if outcome.is_ok() {
            // The trained prefix: frozen parameters have no gradient to reduce.
            self.local[..M::TRAINED_PARAM_COUNT].copy_from_slice(&engine.clipped_sum);
        }
        self.release(outcome, engine.drawn_noise(), noise_std)
    }

    /// [`step`](Self::step) with this rank's clipped sum computed on `device`
    /// ([`DeviceTraining::queue_clipped_sum`] and [`DeviceTraining::finish_clipped_sum`], clipping as
    /// `settings` say) from the examples of its shard, gathered into `steps`' batch and staged unless
    /// `staged` says the last step staged them already (with augmentation multiplicity their views,
    /// drawn by `engine` as the CPU's step draws them, and
    /// [`DeviceTraining::clipped_sum_with_views_to_host`]). While the sum runs, rank 0 draws the noise
    /// on the host exactly as the CPU's step does ([`GaussianNoise::fill`]: the same stream, the same
    /// chunks), so a seeded run releases the CPU's R; and, without views, when `next` gives the
    /// sampler (a step follows this one), every rank samples the next global batch and gathers and
    /// stages its part of it ([`DeviceSteps::overlapped`] with the rank's shard: the same draws in the
    /// same order as at the top of the next step). A part larger than the physical batch
    /// (`Trainer::max_physical_batch`) is summed in chunks ([`DeviceSteps::clipped_sum_in_chunks`]).
    /// The update is the caller's ([`DeviceTraining::released_update`]). A
    /// device error on any rank is every rank's [`Error::RankFailed`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn device_step<M: DpModel>(
        &mut self,
        device: &mut dyn DeviceTraining<M>,
        engine: &mut StepEngine<M>,
        shard_data: &Dataset<M::Input>,
        (global_indices, staged): (&[usize], bool),
        next: Option<(&mut Sampler, &mut dyn RngCore)>,
        noise: Option<&mut GaussianNoise>,
        settings: DeviceStepSettings,
        steps: &mut DeviceSteps<M>,
    ) -> Result<BatchStats> {
        self.keep_local(global_indices);
        let (n, params, is_root) = (self.local_indices.len(), M::TRAINED_PARAM_COUNT, self.is_root());
        let (mode, norm) = (settings.clip_mode, settings.clip_norm);
        let (inputs, labels) = &mut steps.batch;
        // With augmentation multiplicity the engine draws this rank's views as the CPU's step does.
        let views = engine.gather_views(shard_data, &self.local_indices, inputs, labels);
        let mut drawn = std::mem::take(&mut self.drawn_noise);
        // Rank 0's normals for this step, on the host.
        let draw = || match (is_root, noise) {
            (true, Some(noise)) => {
                drawn.resize(params, 0.0);
                noise.fill(&mut drawn);
                Ok(())
            }
            (true, None) => Err(no_noise_stream()),
            (false, _) => Ok(()),
        };
        let shard = self.shard_range();
        let sum = &mut self.local[..params];
        let computed = match views {
            Some(views) => draw().and_then(|()| {
                let (inputs, labels) = &steps.batch;
                let computed =
                    device.clipped_sum_with_views_to_host(inputs, labels, n, views, mode, norm, sum);
                computed.map_err(device_error::<M>)
            }),
            // A part larger than the physical batch: its chunks' sums added up (in f64), rank 0
            // drawing the noise while the first chunk runs.
            None if steps.in_chunks(n) => {
                let mut noise_drawn = Ok(());
                let summed = steps.clipped_sum_in_chunks(
                    device,
                    shard_data,
                    (&self.local_indices, staged),
                    (next, Some(shard)),
                    (mode, norm),
                    None,
                    || noise_drawn = draw(),
                );
                let summed = summed.inspect(|_| {
                    for (s, &chunks) in sum.iter_mut().zip(steps.chunks_sum()) {
                        *s = chunks as f32;
                    }
                });
                noise_drawn.and(summed.map_err(device_error::<M>))
            }
            // The clipped sum is queued first, so that the device computes it while rank 0 draws the
            // step's noise (whether or not it was queued) and every rank stages its part of the next
            // batch; a queued sum is always awaited, whatever the draw or the staging did.
            None => {
                let mut noise_drawn = Ok(());
                let summed = steps.overlapped(
                    device,
                    shard_data,
                    (&self.local_indices, staged),
                    next,
                    Some(shard),
                    |dev| {
                        let queued = dev.queue_clipped_sum(mode, norm);
                        noise_drawn = draw();
                        queued
                    },
                    |dev| dev.finish_clipped_sum(sum),
                );
                noise_drawn.and(summed.map_err(device_error::<M>))
            }
        };
        let outcome =
            computed.map(|non_finite| BatchStats { non_finite, examples: n, ..BatchStats::default() });
        let released = self.release(outcome, &drawn, settings.noise_std);
        self.drawn_noise = drawn;
        released
    }

    /// The indices of `global_indices` in this rank's shard, into `local_indices`.
    fn keep_local(&mut self, global_indices: &[usize]) {
        indices_in_shard(global_indices, self.shard_range(), &mut self.local_indices);
    }

    /// The global indices of this rank's shard.
    fn shard_range(&self) -> std::ops::Range<usize> {
        self.shard.offset..self.shard.offset + self.shard_len
    }

    /// The exchange every step ends with, whoever computed this rank's clipped sum (in `local` when
    /// `outcome` is `Ok`): the reduce with this rank's failure flag, rank 0's R = S + σC·z from its
    /// normals `z` (`noise_std` = σC; ignored on the other ranks), the broadcast with the flag that
    /// some rank failed, and then every rank's agreed error or `outcome`.
    fn release(&mut self, outcome: Result<BatchStats>, z: &[f64], noise_std: f64) -> Result<BatchStats> {
        let params = self.local.len() - 1;
        let failed_here = outcome.is_err();
        if failed_here {
            self.local[..params].fill(0.0);
        }
        self.local[params] = f32::from(u8::from(failed_here));
        self.group.sum_to_root(&self.local, &mut self.total);
        if self.is_root() {
            let any_failed = self.total[params] != 0.0;
            self.released[params] = f64::from(u8::from(any_failed));
            if !any_failed {
                // As one process forms it inside the optimizer: (s as f64 + σC·z), then / B.
                for ((r, &s), &z) in self.released[..params].iter_mut().zip(&self.total[..params]).zip(z) {
                    *r = s as f64 + noise_std * z;
                }
            }
        }
        self.group.broadcast_from_root(&mut self.released);
        if self.released[params] != 0.0 {
            return Err(self.failure(outcome.err()));
        }
        outcome
    }

    /// R = S + σC·z of the last successful [`step`](Self::step), one value per parameter.
    pub fn released(&self) -> &[f64] {
        &self.released[..self.released.len() - 1]
    }

    /// Every rank passes its own outcome of the same work (e.g. rank 0's checkpoint write); every
    /// rank gets `Ok` when all succeeded and otherwise the same [`Error::RankFailed`].
    pub fn agree(&mut self, outcome: Result<()>) -> Result<()> {
        match self.group.lowest_failed(outcome.is_err()) {
            None => Ok(()),
            Some(failed) => Err(self.message_of(failed, outcome.err())),
        }
    }

    /// The error every rank returns once the broadcast said some rank failed.
    fn failure(&mut self, own: Option<Error>) -> Error {
        match self.group.lowest_failed(own.is_some()) {
            Some(failed) => self.message_of(failed, own),
            // Rank 0 flagged a failure that no rank owns: the flags disagree, which the collectives
            // above rule out; still an error, never a silent step.
            None => Error::RankFailed {
                rank: 0,
                ranks: self.size(),
                message: "a failure was signalled but no rank reported one".into(),
            },
        }
    }

    /// [`Error::RankFailed`] with rank `failed`'s message, broadcast from it.
    fn message_of(&mut self, failed: usize, own: Option<Error>) -> Error {
        let mut message = match (self.rank() == failed, own) {
            (true, Some(error)) => error.to_string().into_bytes(),
            _ => Vec::new(),
        };
        let mut length = (message.len() as u64).to_le_bytes();
        self.group.broadcast_bytes(failed, &mut length);
        message.resize(u64::from_le_bytes(length) as usize, 0);
        self.group.broadcast_bytes(failed, &mut message);
        Error::RankFailed {
            rank: failed,
            ranks: self.size(),
            message: String::from_utf8_lossy(&message).into_owned(),
        }
    }
}
