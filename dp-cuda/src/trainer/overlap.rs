//! Overlapping the host's work with a step (docs/GPU.md, "Overlapping the host's work with a step").
//! A private step is queued ([`GpuModel::queue_private_step`]) and awaited
//! ([`GpuModel::await_step`]) apart, and so is a non-private one
//! ([`GpuModel::queue_non_private_step`], [`GpuModel::await_non_private_step`]) and a distributed
//! rank's clipped sum ([`GpuModel::queue_clipped_sum`], [`GpuModel::await_clipped_sum`]: rank 0 draws
//! the step's noise on the host meanwhile). Between the two the trainer samples and gathers the next batch
//! and writes it into the other pinned buffer ([`GpuModel::stage_batch`]), whose copies in run beside
//! the step, into the landing words (`crate::landing`; or are queued behind it). The host's sampling,
//! gather and pinned write thus run while the device computes, and so do the copies in.

use std::sync::Arc;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result as drv, CudaEvent, CudaStream, DevicePtr, PinnedHostSlice};
use dp_runtime::device::{DeviceStepOutcome, Region, Span};
use dp_runtime::DpModel;

use super::{inputs_of, program, Clipping, GpuModel, Inputs};
use crate::device::{driver, Gpu};
use crate::error::{CudaError, Result};
use crate::graphs::BeforeUpdate;
use crate::staging::Piece;
use crate::update::UpdateStep;

/// A batch written into the current pinned buffer for the next step.
#[derive(Debug, Clone, Copy)]
pub(super) struct StagedBatch {
    n: usize,
    /// The pinned buffer it was written into (of the pair).
    slot: usize,
    /// Where its inputs go: dense features, or token ids.
    region: Region,
    inputs: Piece,
    labels: Piece,
    pub(super) copies: Copies,
}

/// Where a staged batch's copies in stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Copies {
    /// Not queued: the arena must first grow for it (the regions it would land in are reallocated),
    /// or an evaluation overwrote the regions they were queued to.
    NotQueued,
    /// Queued on the landing stream into the landing words, beside the step in flight
    /// (`crate::landing`): moved into the regions when the step that takes the batch is queued.
    Landing,
    /// Queued on the GPU's stream into the regions.
    Queued,
}

impl Copies {
    /// Where the copies of a batch of `n` staged now go, on a model with room for `room` examples:
    /// nowhere yet if the arena must grow for it; into the landing words if a step is `in_flight`
    /// and copies go `beside` it (the regions are that step's); else into the regions.
    pub(super) fn when_staged(n: usize, room: usize, beside: bool, in_flight: bool) -> Copies {
        if n > room {
            Copies::NotQueued
        } else if beside && in_flight {
            Copies::Landing
        } else {
            Copies::Queued
        }
    }
}

/// What is queued and not yet awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    /// A step with its update (private or not): its await may restore the parameters.
    Step,
    /// A distributed rank's clipped sum: no update, nothing to restore.
    ClippedSum,
}

/// The end of a queued step: its two counts (and a non-private step's losses, or a rank's clipped
/// sum) copied into pinned memory, and the event after them.
pub(super) struct StepEnd {
    counts: PinnedHostSlice<u32>,
    /// A non-private step's losses, room for the arena's batch.
    pub(super) losses: Option<PinnedHostSlice<f32>>,
    /// The losses the queued step copies out (0: a private step, which copies none).
    losses_out: usize,
    /// A distributed rank's clipped sum, allocated at the first.
    sum: Option<PinnedHostSlice<f32>>,
    done: CudaEvent,
    queued: Option<Queued>,
}

impl StepEnd {
    /// Room for the losses of `max_batch` examples.
    pub(super) fn new(gpu: &Gpu, max_batch: usize) -> Result<Self> {
        let context = gpu.stream.context();
        // Not write-combined: the host reads these.
        // SAFETY: the counts are written by the copy before they are read (after `done`).
        let counts = unsafe { context.alloc_pinned_with_flags::<u32>(2, 0) }
            .map_err(driver("allocating pinned memory for the counts"))?;
        let done = context.new_event(None).map_err(driver("creating the step's event"))?;
        let mut losses = None;
        reserve_pinned(&gpu.stream, &mut losses, max_batch)?;
        Ok(StepEnd { counts, losses, losses_out: 0, sum: None, done, queued: None })
    }
}

/// Queues the copy of `view` into the pinned buffer `pinned`, allocated (or grown) to hold it first
/// (not write-combined: the host reads it, after the step's event).
/// (Exactly `len` values: cudarc's `memcpy_dtoh` would copy the whole buffer, which may be longer.)
fn copy_to_pinned(
    s: &Arc<CudaStream>,
    src: CUdeviceptr,
    len: usize,
    pinned: &mut Option<PinnedHostSlice<f32>>,
) -> Result<()> {
    reserve_pinned(s, pinned, len)?;
    let pinned = pinned.as_mut().expect("reserved above");
    let ptr = pinned.as_mut_ptr().map_err(driver("reaching pinned memory"))?;
    // SAFETY: the buffer holds at least `len` values (reserved above), and no one reads them before
    // the step's event; `src` holds `len` values (the caller's span, checked against its region).
    let dst = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    unsafe { drv::memcpy_dtoh_async(dst, src, s.cu_stream()) }
        .map_err(driver("copying back into pinned memory"))
}

/// That `sum` has room for a clipped sum of `M` (`TRAINED_PARAM_COUNT` values).
pub(super) fn check_clipped_sum<M: DpModel>(sum: &[f32]) -> Result<()> {
    let len = M::TRAINED_PARAM_COUNT;
    if sum.len() != len {
        return Err(CudaError::Mismatch(format!("a clipped sum of {} values for {len}", sum.len())));
    }
    Ok(())
}

/// Room for `len` values in `pinned` (allocated again if it has less). Freeing pinned memory may wait
/// for the device: called ahead, when nothing is queued (`GpuModel::new` and `resize`), it is not
/// reached while a step runs.
pub(super) fn reserve_pinned(
    s: &Arc<CudaStream>,
    pinned: &mut Option<PinnedHostSlice<f32>>,
    len: usize,
) -> Result<()> {
    if pinned.as_ref().is_none_or(|pinned| pinned.len() < len) {
        // SAFETY: every value is written by a copy before it is read.
        let grown = unsafe { s.context().alloc_pinned_with_flags::<f32>(len.max(1), 0) }
            .map_err(driver("allocating pinned memory"))?;
        *pinned = Some(grown);
    }
    Ok(())
}

impl<M: DpModel> GpuModel<M> {
    /// Writes the next step's batch (`n` examples' inputs and labels) into the other pinned buffer,
    /// and queues its copies in: while a step is in flight, beside it into the landing words (moved
    /// into the regions when the next step is queued), or behind it on the GPU's stream with
    /// [`copy_in_beside`](Self::copy_in_beside) off (a step in flight reads its own batch first: the
    /// stream runs in order); with none in flight, into the regions. If the arena must grow for it,
    /// the copies wait for the step that grows it. The host does not wait for the device here,
    /// except for the copies out of that buffer two steps ago.
    pub fn stage_batch(&mut self, inputs: &[M::Input], labels: &[f32], n: usize) -> Result<()> {
        if inputs.len() != n * M::input_len() || labels.len() != n * M::LOSS.label_len() {
            return Err(CudaError::Mismatch(format!("{}: inputs or labels of {n} examples", M::NAME)));
        }
        self.staged = None;
        let slot = self.staging.next(&self.gpu, Self::staging_words(n))?;
        let (region, inputs) = match inputs_of::<M>(inputs)? {
            Inputs::Dense(values) => (Region::Inputs, slot.write(values)?),
            Inputs::Tokens(ids) => (Region::Tokens, slot.write(ids)?),
        };
        let labels = slot.write(labels)?;
        let slot = self.staging.current_slot();
        self.staged = Some(StagedBatch { n, slot, region, inputs, labels, copies: Copies::NotQueued });
        match Copies::when_staged(n, self.max_batch, self.copies_beside, self.step_end.queued.is_some()) {
            Copies::NotQueued => Ok(()),
            Copies::Landing => self.land_staged(),
            Copies::Queued => self.copy_staged(),
        }
    }

    /// Whether the next batch staged while a step is in flight is copied in beside that step, into the
    /// landing words on a stream of their own, then moved into the regions on the device when the
    /// next step is queued (`on`, the default: docs/GPU.md, "The copies in beside the step"), or its
    /// copies are queued behind the step on the GPU's stream. The same values either way; the bench
    /// times both.
    pub fn copy_in_beside(&mut self, on: bool) {
        self.copies_beside = on;
    }

    /// Queues the staged batch's copies into the landing words, on the landing stream, once the
    /// batch landed there before has been moved out; the step in flight runs meanwhile.
    fn land_staged(&mut self) -> Result<()> {
        let Some(staged) = self.staged else {
            return Err(CudaError::Mismatch("no batch staged".into()));
        };
        if staged.n > 0 {
            let stream = self.landing.stream_for_copies()?;
            let slot = self.staging.slot(staged.slot);
            for piece in [staged.inputs, staged.labels] {
                slot.queue_copy_beside(stream, piece, self.landing.address(piece)?)?;
            }
            self.landing.mark_landed()?;
            self.transfers.to_device += 2;
        }
        self.mark_staged(Copies::Landing);
        Ok(())
    }

    /// Queues on the GPU's stream, after the landed batch's copies, its move into the regions of
    /// inputs (or token ids) and labels.
    fn move_landed(&mut self) -> Result<()> {
        let (staged, [to_inputs, to_labels]) = self.staged_into_regions()?;
        if staged.n > 0 {
            self.landing.await_landed(&self.gpu)?;
            let moved = self
                .landing
                .queue_move(&self.gpu, staged.inputs, to_inputs)
                .and_then(|()| self.landing.queue_move(&self.gpu, staged.labels, to_labels));
            // Recorded whatever failed above: the next landing waits for it, and a move queued before
            // a failure still reads the words.
            let marked = self.landing.mark_moved(&self.gpu);
            moved.and(marked)?;
        }
        self.mark_staged(Copies::Queued);
        Ok(())
    }

    /// Queues the staged batch's copies into the regions of inputs (or token ids) and labels.
    fn copy_staged(&mut self) -> Result<()> {
        let (staged, [to_inputs, to_labels]) = self.staged_into_regions()?;
        if staged.n > 0 {
            let slot = self.staging.slot(staged.slot);
            slot.queue_copy(&self.gpu, staged.inputs, to_inputs)?;
            slot.queue_copy(&self.gpu, staged.labels, to_labels)?;
            self.transfers.to_device += 2;
        }
        self.mark_staged(Copies::Queued);
        Ok(())
    }

    /// The staged batch and where its inputs (or token ids) and labels go in the regions: refused if
    /// none is staged or the arena does not hold it.
    fn staged_into_regions(&self) -> Result<(StagedBatch, [CUdeviceptr; 2])> {
        let Some(staged) = self.staged else {
            return Err(CudaError::Mismatch("no batch staged".into()));
        };
        if staged.n > self.max_batch {
            return Err(CudaError::Mismatch(format!(
                "a batch of {} on a model sized for {}",
                staged.n, self.max_batch
            )));
        }
        let (n, region) = (staged.n, staged.region);
        let inputs = self.memory.ptr(Span::new(region, 0, n * M::input_len())).map_err(program)?;
        let labels =
            self.memory.ptr(Span::new(Region::Labels, 0, n * M::LOSS.label_len())).map_err(program)?;
        Ok((staged, [inputs, labels]))
    }

    /// Where the staged batch's copies in now stand.
    fn mark_staged(&mut self, copies: Copies) {
        if let Some(staged) = &mut self.staged {
            staged.copies = copies;
        }
    }

    /// The staged batch taken for a step: its copies queued, or its landed words moved, if they were
    /// not; its size.
    pub(super) fn load_staged(&mut self) -> Result<usize> {
        let copies = self.staged.as_ref().map(|staged| staged.copies);
        match copies {
            None => return Err(CudaError::Mismatch("a step with no batch staged".into())),
            Some(Copies::NotQueued) => self.copy_staged()?,
            Some(Copies::Landing) => self.move_landed()?,
            Some(Copies::Queued) => {}
        }
        Ok(self.staged.take().expect("matched on Some").n)
    }

    /// The examples of the staged batch, if one is staged (the arena must hold them before the step).
    pub fn staged_examples(&self) -> Option<usize> {
        self.staged.as_ref().map(|staged| staged.n)
    }

    /// Queues a private step (that of [`private_step`](Self::private_step)) on the staged batch and
    /// returns without waiting for it; [`await_step`](Self::await_step) gives its outcome.
    pub fn queue_private_step(
        &mut self,
        clipping: Clipping,
        key: &[u8; 32],
        step: impl Into<UpdateStep>,
    ) -> Result<()> {
        self.refuse_in_flight()?;
        self.last_views = None;
        let n = self.load_staged()?;
        self.load_key(key)?;
        self.queue_before_update(BeforeUpdate::PrivateStep(clipping), n)?;
        self.queue_step_end(step.into())
    }

    /// Queues a non-private step (that of [`non_private_step`](Self::non_private_step)) on the staged
    /// batch, its update `step` (noise_std 0, inverse_batch 1/n), and its losses' copy into pinned
    /// memory; [`await_non_private_step`](Self::await_non_private_step) gives them.
    pub fn queue_non_private_step(&mut self, step: impl Into<UpdateStep>) -> Result<()> {
        self.refuse_in_flight()?;
        self.last_views = None;
        let n = self.load_staged()?;
        self.queue_before_update(BeforeUpdate::GradientSum, n)?;
        // The losses are final before the update, which does not touch them: copied out first, so
        // that the step end's event covers them and nothing can fail once the step is marked queued.
        if n > 0 {
            let src = self.memory.ptr(Span::new(Region::Losses, 0, n)).map_err(program)?;
            copy_to_pinned(&self.gpu.stream, src, n, &mut self.step_end.losses)?;
            self.transfers.to_host += 1;
        }
        self.queue_step_end(step.into())?;
        self.step_end.losses_out = n;
        Ok(())
    }

    /// Waits for the queued non-private step and copies its `n` losses into `losses` (`n` values).
    pub fn await_non_private_step(&mut self, losses: &mut [f32]) -> Result<DeviceStepOutcome> {
        let n = self.step_end.losses_out;
        // Awaited whatever the caller passed, so that the model is not left with a step queued.
        let outcome = self.await_step()?;
        if losses.len() != n {
            return Err(CudaError::Mismatch(format!("{} losses asked of a batch of {n}", losses.len())));
        }
        if let (Some(pinned), true) = (&self.step_end.losses, n > 0) {
            losses.copy_from_slice(&pinned.as_slice().map_err(driver("reading the losses"))?[..n]);
        }
        Ok(outcome)
    }

    /// Queues a distributed rank's clipped sum (that of [`clipped_sum_out`](Self::clipped_sum_out))
    /// on the staged batch, and its copy with the counts into pinned memory;
    /// [`await_clipped_sum`](Self::await_clipped_sum) gives it.
    pub fn queue_clipped_sum(&mut self, clipping: Clipping) -> Result<()> {
        self.refuse_in_flight()?;
        self.last_views = None;
        let n = self.load_staged()?;
        self.queue_before_update(BeforeUpdate::ClippedSum(clipping), n)?;
        self.queue_clipped_sum_out()
    }

    /// The clipped sum in `Grad` and the counts copied into pinned memory after the launches so far
    /// (a rank's plain or views clipped sum), and the event [`await_clipped_sum`](Self::await_clipped_sum)
    /// waits on.
    pub(super) fn queue_clipped_sum_out(&mut self) -> Result<()> {
        let len = M::TRAINED_PARAM_COUNT;
        if len > 0 {
            let src = self.memory.ptr(Span::new(Region::Grad, 0, len)).map_err(program)?;
            copy_to_pinned(&self.gpu.stream, src, len, &mut self.step_end.sum)?;
            self.transfers.to_host += 1;
        }
        self.queue_counts_out(Queued::ClippedSum)
    }

    /// Waits for the queued clipped sum, copies it into `sum` (`TRAINED_PARAM_COUNT` values) and
    /// returns the count of examples whose norm was not finite.
    pub fn await_clipped_sum(&mut self, sum: &mut [f32]) -> Result<usize> {
        if self.step_end.queued != Some(Queued::ClippedSum) {
            return Err(CudaError::Mismatch("no clipped sum is queued".into()));
        }
        self.step_end.queued = None;
        self.step_end.done.synchronize().map_err(driver("finishing the clipped sum"))?;
        check_clipped_sum::<M>(sum)?;
        let len = sum.len();
        if let Some(pinned) = &self.step_end.sum {
            sum.copy_from_slice(&pinned.as_slice().map_err(driver("reading the clipped sum"))?[..len]);
        }
        let counts = self.step_end.counts.as_slice().map_err(driver("reading the counts"))?;
        Ok(counts[0] as usize)
    }

    /// A second step may not be queued before the first is awaited: its restore on overflow would
    /// come after the second's update.
    pub(super) fn refuse_in_flight(&self) -> Result<()> {
        if self.step_end.queued.is_some() {
            return Err(CudaError::Mismatch("a step is queued and was not awaited".into()));
        }
        Ok(())
    }

    /// After the sum in `Grad` and the parameters kept: queues the update, the count of the
    /// parameters it made non-finite, the copy of both counts into pinned memory, and the event the
    /// host waits on.
    pub(super) fn queue_step_end(&mut self, step: UpdateStep) -> Result<()> {
        self.refuse_in_flight()?;
        self.step_end.losses_out = 0;
        let s = self.gpu.stream.clone();
        let trained = Span::new(Region::Params, 0, M::TRAINED_PARAM_COUNT);
        self.queue_update(step)?;
        let params_count = self.non_finite.device_ptr(&s).0 + std::mem::size_of::<u32>() as u64;
        self.ops().count_non_finite(trained, params_count).map_err(program)?;
        self.queue_counts_out(Queued::Step)
    }

    /// The counts' copy into pinned memory and the event the host waits on, ending what is `queued`.
    fn queue_counts_out(&mut self, queued: Queued) -> Result<()> {
        let s = self.gpu.stream.clone();
        s.memcpy_dtoh(&self.non_finite, &mut self.step_end.counts)
            .map_err(driver("copying the counts back"))?;
        self.transfers.to_host += 1;
        self.step_end.done.record(&s).map_err(driver("recording the step's end"))?;
        self.step_end.queued = Some(queued);
        Ok(())
    }

    /// Waits for the queued step (not for copies staged behind it), reads its counts, and restores
    /// the parameters before it if its update overflowed.
    pub fn await_step(&mut self) -> Result<DeviceStepOutcome> {
        if self.step_end.queued != Some(Queued::Step) {
            return Err(CudaError::Mismatch("no step is queued".into()));
        }
        self.step_end.queued = None;
        self.step_end.done.synchronize().map_err(driver("finishing the step"))?;
        let counts = self.step_end.counts.as_slice().map_err(driver("reading the counts"))?;
        let (non_finite_examples, overflowed) = (counts[0] as usize, counts[1] > 0);
        if overflowed {
            let s = self.gpu.stream.clone();
            let len = M::TRAINED_PARAM_COUNT;
            let mut params = self.memory.slice_mut(Region::Params).slice_mut(..len);
            s.memcpy_dtod(&self.previous, &mut params).map_err(driver("restoring the parameters"))?;
            s.synchronize().map_err(driver("restoring the parameters"))?;
        }
        Ok(DeviceStepOutcome { non_finite_examples, overflowed })
    }
}

#[cfg(test)]
mod tests {
    use super::Copies;

    #[test]
    fn a_batch_lands_beside_only_a_step_in_flight_and_only_if_the_arena_holds_it() {
        assert_eq!(Copies::when_staged(7, 7, true, true), Copies::Landing);
        // Nothing in flight: straight into the regions, no move after.
        assert_eq!(Copies::when_staged(7, 7, true, false), Copies::Queued);
        // Copies behind the step: queued on the GPU's stream, behind it.
        assert_eq!(Copies::when_staged(7, 7, false, true), Copies::Queued);
        // Larger than the arena: nowhere before it grows (neither the regions nor the landing words
        // hold it), in flight or not.
        for (beside, in_flight) in [(true, true), (true, false), (false, true), (false, false)] {
            assert_eq!(Copies::when_staged(8, 7, beside, in_flight), Copies::NotQueued);
        }
        assert_eq!(Copies::when_staged(0, 7, true, true), Copies::Landing);
    }
}
