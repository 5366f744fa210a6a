//! [`GpuModel`]'s private step with augmentation multiplicity
//! ([`DeviceTraining::private_step_with_views`](dp_runtime::device::DeviceTraining::private_step_with_views)):
//! the step's `n · K` views (drawn and augmented on the host) and their labels are copied in once, into
//! buffers of their own; then per example its K views are copied on the device into the program's
//! input and label regions, the device program runs forward, backward and its gradient sum at batch
//! size K, and `kernels/views.cu` averages the sum, takes its group norms, `dp_clip_factors` its factors
//! (its non-finite count added up over the examples), and the clipped average is added into a sum of
//! its own. That sum is copied into `Grad`, and the noise and update follow as in a step without views.
//! An example's launches after its views' copies are the same for every example: they are captured
//! once per K and clipping into a CUDA graph (`BeforeUpdate::ExampleOfViews`) and replayed per
//! example, so an example costs its two copies and one graph launch rather than the program's dozens
//! of launches.

use cudarc::driver::{CudaSlice, DevicePtr};
use dp_runtime::device::{DeviceStepOutcome, Region, Span};
use dp_runtime::DpModel;

use super::{inputs_of, program, Clipping, GpuModel, Inputs};
use crate::device::driver;
use crate::error::{CudaError, Result};
use crate::graphs::BeforeUpdate;
use crate::update::UpdateStep;
use crate::views::{blocks_per_range, ViewsRanges};

/// The buffers of a step with views, allocated at the first and grown with the largest batch.
pub(super) struct ViewsBuffers {
    /// The step's views, example-major (`capacity` views).
    inputs: CudaSlice<f32>,
    /// Their labels.
    labels: CudaSlice<f32>,
    /// The views the buffers hold.
    capacity: usize,
    /// The clipped sum of the examples' averages (`TRAINED_PARAM_COUNT`).
    clipped: CudaSlice<f32>,
    /// The trained parameters as ranges of the gradient: offsets, lengths, groups.
    offsets: CudaSlice<u64>,
    lens: CudaSlice<u64>,
    groups: CudaSlice<u64>,
    /// `ranges · blocks` partial sums of an average's squares.
    partials: CudaSlice<f64>,
    ranges: usize,
    blocks: usize,
    /// With `keep_losses`: each view's loss (`capacity`) and each example's clip factors
    /// (`capacity · groups`, room for as many examples as views).
    kept_losses: CudaSlice<f32>,
    kept_factors: CudaSlice<f32>,
}

impl ViewsBuffers {
    /// The views the buffers hold.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The kept losses and factors of the last step that kept them.
    pub(super) fn kept_losses_and_factors(&self) -> (&CudaSlice<f32>, &CudaSlice<f32>) {
        (&self.kept_losses, &self.kept_factors)
    }
}

impl<M: DpModel> GpuModel<M> {
    /// One DP-SGD step on `n` examples seen as `views` views each (`inputs` and `labels` hold the
    /// `n · views` views, example-major): per example the average of its views' gradients clipped as
    /// one vector, their sum, then the noise under `key` and the update, as
    /// [`private_step`](Self::private_step); with `keep_losses`, each view's loss and each example's
    /// clip factors kept on the device (two copies per example) for non-private diagnostics. Copies
    /// in the views, their labels and the key, and out the two counts. The arena must hold `views`
    /// examples (`make_room`).
    #[allow(clippy::too_many_arguments)]
    pub fn private_step_with_views(
        &mut self,
        (inputs, labels): (&[M::Input], &[f32]),
        n: usize,
        views: usize,
        clipping: Clipping,
        key: &[u8; 32],
        step: impl Into<UpdateStep>,
        keep_losses: bool,
    ) -> Result<DeviceStepOutcome> {
        self.queue_clipped_sum_of_views((inputs, labels), n, views, clipping, Some(key), keep_losses)?;
        self.queue_noise_draw()?;
        self.keep_params()?;
        self.finish_step(step.into())
    }

    /// A distributed rank's part of a step with views (`docs/DISTRIBUTED.md`): the clipped sum of
    /// [`private_step_with_views`](Self::private_step_with_views) copied out into `sum`
    /// (`TRAINED_PARAM_COUNT` values), no noise and no update. Copies in the views and their labels,
    /// out the sum and the counts; returns the examples whose norm was not finite.
    pub fn clipped_sum_with_views_out(
        &mut self,
        (inputs, labels): (&[M::Input], &[f32]),
        n: usize,
        views: usize,
        clipping: Clipping,
        sum: &mut [f32],
    ) -> Result<usize> {
        super::overlap::check_clipped_sum::<M>(sum)?;
        self.queue_clipped_sum_of_views((inputs, labels), n, views, clipping, None, false)?;
        self.queue_clipped_sum_out()?;
        self.await_clipped_sum(sum)
    }

    /// The views and labels copied in (and `key`, for a step that draws noise), the counts zeroed,
    /// each example's clipped average added into the views' sum (its views' losses and its factors
    /// kept if `keep_losses`), and that sum copied into `Grad`.
    fn queue_clipped_sum_of_views(
        &mut self,
        (inputs, labels): (&[M::Input], &[f32]),
        n: usize,
        views: usize,
        clipping: Clipping,
        key: Option<&[u8; 32]>,
        keep_losses: bool,
    ) -> Result<()> {
        self.refuse_in_flight()?;
        let (input_len, label_len) = (M::input_len(), M::LOSS.label_len());
        let total = n * views;
        if views == 0 || views > self.max_batch {
            return Err(CudaError::Mismatch(format!(
                "{views} views of an example on a model sized for {}",
                self.max_batch
            )));
        }
        if inputs.len() != total * input_len || labels.len() != total * label_len {
            return Err(CudaError::Mismatch(format!("{}: inputs or labels of {n} × {views} views", M::NAME)));
        }
        let Inputs::Dense(values) = inputs_of::<M>(inputs)? else {
            return Err(CudaError::Mismatch(format!("{}: views of token inputs", M::NAME)));
        };
        self.ensure_views(total)?;
        self.last_views = Some((views, keep_losses));
        self.staged = None;
        let staging = self.staging.next(&self.gpu, total * (input_len + label_len) + 8)?;
        let s = self.gpu.stream.clone();
        let buffers = self.views.as_mut().expect("allocated by ensure_views");
        if total > 0 {
            let dst = buffers.inputs.device_ptr(&s).0;
            staging.copy_in(&self.gpu, values, dst)?;
            let dst = buffers.labels.device_ptr(&s).0;
            staging.copy_in(&self.gpu, labels, dst)?;
            self.transfers.to_device += 2;
        }
        if let Some(key) = key {
            self.load_key(key)?;
        }
        s.memset_zeros(&mut self.non_finite).map_err(driver("zeroing the count"))?;
        let buffers = self.views.as_mut().expect("allocated by ensure_views");
        s.memset_zeros(&mut buffers.clipped).map_err(driver("zeroing the clipped sum"))?;
        for example in 0..n {
            self.queue_clipped_average(example, views, clipping)?;
            if keep_losses {
                self.keep_losses_of(example, views)?;
            }
        }
        let len = M::TRAINED_PARAM_COUNT;
        if len > 0 {
            let buffers = self.views.as_ref().expect("allocated by ensure_views");
            let mut grad = self.memory.slice_mut(Region::Grad).slice_mut(..len);
            s.memcpy_dtod(&buffers.clipped.slice(..len), &mut grad)
                .map_err(driver("copying the clipped sum"))?;
        }
        Ok(())
    }

    /// Example `example`'s views through the program, and its clipped average added into the sum.
    fn queue_clipped_average(&mut self, example: usize, views: usize, clipping: Clipping) -> Result<()> {
        let s = self.gpu.stream.clone();
        let (input_len, label_len) = (M::input_len() * views, M::LOSS.label_len() * views);
        let buffers = self.views.as_ref().expect("allocated by ensure_views");
        let from = example * input_len;
        let mut dst = self.memory.slice_mut(Region::Inputs).slice_mut(..input_len);
        s.memcpy_dtod(&buffers.inputs.slice(from..from + input_len), &mut dst)
            .map_err(driver("copying an example's views"))?;
        let from = example * label_len;
        let mut dst = self.memory.slice_mut(Region::Labels).slice_mut(..label_len);
        s.memcpy_dtod(&buffers.labels.slice(from..from + label_len), &mut dst)
            .map_err(driver("copying an example's labels"))?;
        self.queue_before_update(BeforeUpdate::ExampleOfViews(clipping), views)
    }

    /// The launches of one example of a step with views after the gradient is zeroed (replayed from
    /// a graph, captured, or launched one by one: [`queue_before_update`](Self::queue_before_update)):
    /// the program at `views`, the average's group norms, its clip factors, counted, and the clipped
    /// average added into the views' sum.
    pub(super) fn launch_example_of_views(&mut self, clipping: Clipping, views: usize) -> Result<()> {
        let s = self.gpu.stream.clone();
        let mut ops = self.ops().rounding_each_weight_once();
        M::device_forward_backward(&mut ops, views).map_err(program)?;
        M::device_gradient_sum(&mut ops, views).map_err(program)?;
        let (groups, len) = (M::GROUPS.len(), M::TRAINED_PARAM_COUNT);
        let grad = self.memory.ptr(Span::new(Region::Grad, 0, len)).map_err(program)?;
        let sq_norms = self.memory.ptr(Span::new(Region::SqNorms, 0, groups)).map_err(program)?;
        let factors = self.memory.ptr(Span::new(Region::Factors, 0, groups)).map_err(program)?;
        let buffers = self.views.as_ref().expect("allocated by ensure_views");
        let ranges = ViewsRanges {
            offsets: buffers.offsets.device_ptr(&s).0,
            lens: buffers.lens.device_ptr(&s).0,
            groups: buffers.groups.device_ptr(&s).0,
            count: buffers.ranges,
            blocks: buffers.blocks,
        };
        let (partials, clipped) = (buffers.partials.device_ptr(&s).0, buffers.clipped.device_ptr(&s).0);
        // SAFETY: `Grad` and the clipped sum hold the trained gradient, which every range lies in; the
        // ranges' arrays and the partial sums were allocated for them; the norms' and factors' regions
        // hold at least one example's `groups` values, and every range's group is below `groups`.
        unsafe {
            self.gpu.queue_views_average_squares(grad, 1.0 / views as f32, ranges, partials)?;
            self.gpu.queue_views_group_norms(partials, ranges, groups, sq_norms)?;
        }
        self.queue_clip_factors_counted(clipping, 1)?;
        // SAFETY: as above.
        unsafe { self.gpu.queue_views_accumulate(clipped, grad, factors, ranges) }
    }

    /// Example `example`'s `views` losses (in `Losses`) and its clip factors (in `Factors`) copied, on
    /// the device, into the kept losses and factors.
    fn keep_losses_of(&mut self, example: usize, views: usize) -> Result<()> {
        let s = self.gpu.stream.clone();
        let groups = M::GROUPS.len();
        let buffers = self.views.as_mut().expect("allocated by ensure_views");
        let losses = self.memory.slice(Region::Losses).slice(..views);
        let mut kept = buffers.kept_losses.slice_mut(example * views..(example + 1) * views);
        s.memcpy_dtod(&losses, &mut kept).map_err(driver("keeping an example's losses"))?;
        let factors = self.memory.slice(Region::Factors).slice(..groups);
        let mut kept = buffers.kept_factors.slice_mut(example * groups..(example + 1) * groups);
        s.memcpy_dtod(&factors, &mut kept).map_err(driver("keeping an example's factors"))?;
        Ok(())
    }

    /// The buffers of a step with views, with room for `total` views.
    fn ensure_views(&mut self, total: usize) -> Result<()> {
        let s = self.gpu.stream.clone();
        let (input_len, label_len) = (M::input_len(), M::LOSS.label_len());
        if let Some(buffers) = &self.views {
            if buffers.capacity >= total {
                return Ok(());
            }
        }
        let trained: Vec<_> = M::PARAMS.iter().filter(|p| p.is_trained()).collect();
        let ranges = trained.len();
        if ranges > 65_535 {
            return Err(CudaError::Mismatch(format!("{}: {ranges} trained parameters", M::NAME)));
        }
        let blocks = blocks_per_range(trained.iter().map(|p| p.len).max().unwrap_or(0));
        // One value at least: an allocation of none is refused.
        let words = |mut values: Vec<u64>| {
            values.resize(values.len().max(1), 0);
            s.clone_htod(&values)
        };
        let capacity = total.max(1);
        // The example's graphs hold the addresses of the buffers replaced here.
        self.graphs.invalidate();
        let alloc = |what: &'static str, len: usize| s.alloc_zeros::<f32>(len.max(1)).map_err(driver(what));
        self.views = Some(ViewsBuffers {
            inputs: alloc("allocating the views", capacity * input_len)?,
            labels: alloc("allocating the views' labels", capacity * label_len)?,
            capacity,
            clipped: alloc("allocating the clipped sum", M::TRAINED_PARAM_COUNT)?,
            offsets: words(trained.iter().map(|p| p.offset as u64).collect())
                .map_err(driver("copying the parameters' ranges"))?,
            lens: words(trained.iter().map(|p| p.len as u64).collect())
                .map_err(driver("copying the parameters' ranges"))?,
            groups: words(trained.iter().map(|p| p.group as u64).collect())
                .map_err(driver("copying the parameters' ranges"))?,
            partials: s
                .alloc_zeros::<f64>((ranges * blocks).max(1))
                .map_err(driver("allocating the partial sums"))?,
            ranges,
            blocks,
            kept_losses: alloc("allocating the kept losses", capacity)?,
            kept_factors: alloc("allocating the kept factors", capacity * M::GROUPS.len())?,
        });
        Ok(())
    }
}
