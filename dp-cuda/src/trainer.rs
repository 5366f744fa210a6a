//! A model's training state on one GPU: parameters, optimizer state, gradient and the workspace arena
//! resident on the device, one allocation each, sized once from the static memory plan. A step copies
//! in the batch (inputs and labels) and the step's noise key, queues the model's device program and
//! the model-independent kernels (clip factors, noise, update), replayed as one CUDA graph per batch
//! size after the first step ([`crate::graphs`]), and copies out two counts: examples with a
//! non-finite norm, parameters the update made non-finite. Poisson sampling and the accountant stay on the host.

use std::any::TypeId;
use std::marker::PhantomData;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use dp_runtime::clipping::ClipMode;
use dp_runtime::device::{
    DeviceError, DeviceOps, DeviceOptimizer, DevicePrivateStep, DeviceStepOutcome, DeviceTraining, Precision,
    Region, Span,
};
use dp_runtime::optim::OptimizerState;
use dp_runtime::DpModel;

use crate::branch::Branch;
use crate::device::{driver, Gpu, NoiseTables, SgdBuffers, SgdStep};
use crate::error::{gib, CudaError, Result};
use crate::graphs::{BeforeUpdate, GraphKey, StepGraphs};
use crate::landing::Landing;
use crate::noise::{key_words, THREADS};
use crate::program::{Bf16Layout, GpuOps, RegionMemory};
use crate::staging::{Staging, StagingPair};
use crate::update::{AdamBuffers, AdamStep, UpdateStep};

mod evaluation;
mod overlap;
mod views;

/// How a private step clips.
#[derive(Debug, Clone, Copy)]
pub struct Clipping {
    pub mode: ClipMode,
    /// C.
    pub norm: f64,
}

/// Copies between host and device so far, counted at every copy a step makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfers {
    pub to_device: u64,
    pub to_host: u64,
}

/// Model `M` on a GPU.
pub struct GpuModel<M: DpModel> {
    transfers: Transfers,
    gpu: Gpu,
    memory: RegionMemory,
    max_batch: usize,
    /// SGD's momentum buffer.
    velocity: CudaSlice<f32>,
    /// Adam's moments, allocated at the first Adam update or when a checkpoint's are loaded (as the
    /// host Adam's buffers exist once it has stepped or loaded them).
    moments: Option<AdamMoments>,
    /// The optimizer the state on the device belongs to: the last update's, or the loaded state's.
    optimizer: OptimizerKind,
    normals: CudaSlice<f64>,
    first_words: CudaSlice<u64>,
    key: CudaSlice<u32>,
    /// [examples with a non-finite norm, non-finite parameters after the update].
    non_finite: CudaSlice<u32>,
    /// The trained parameters before the update, restored if it overflows.
    previous: CudaSlice<f32>,
    /// The moving average of all the parameters (`Trainer::ema`), once started.
    average: Option<CudaSlice<f32>>,
    tables: NoiseTables,
    /// The stream a private step draws its noise on, beside the program (`crate::branch`).
    noise_branch: Branch,
    /// Whether an LSTM's recurrence runs as one kernel each way ([`fuse_lstm_recurrence`](Self::fuse_lstm_recurrence)).
    fused_lstm: bool,
    /// Whether a private step draws its noise on [`noise_branch`](Self::noise_branch) (the default)
    /// or on the main stream after the clipped sum ([`draw_noise_beside`](Self::draw_noise_beside)).
    noise_beside: bool,
    /// Whether the next update is the first (momentum starts at the gradient).
    first_update: bool,
    /// Updates applied, as the host optimizer counts them (for checkpoints and Adam's bias corrections).
    updates: u64,
    /// The step's launches before the update, captured per batch size.
    graphs: StepGraphs,
    /// Pinned host memory the batch and the key are copied in through: two buffers used in turn, so
    /// the next batch is written while a step is in flight (`trainer/overlap.rs`).
    staging: StagingPair,
    /// The batch written for the next step, if any ([`stage_batch`](Self::stage_batch)).
    staged: Option<overlap::StagedBatch>,
    /// The device words and stream the next batch is copied into beside a step in flight
    /// (`crate::landing`).
    landing: Landing,
    /// Whether a batch staged while a step is in flight lands beside it (the default) or is copied in
    /// behind it ([`copy_in_beside`](Self::copy_in_beside)).
    copies_beside: bool,
    /// The counts a step copies out, and whether a queued step has not yet been awaited.
    step_end: overlap::StepEnd,
    /// Pinned host memory a distributed step's released vector R (f64) is copied in through,
    /// allocated at the first [`released_update`](Self::released_update).
    released_staging: Option<Staging>,
    /// The precision of the products the program marks `Operands::OfPrecision`.
    precision: Precision,
    /// Whether, in bf16, the arena buffers the program marks `Stored::OfPrecision` are stored in bf16
    /// (the default; off: bf16 products on f32 buffers).
    bf16_storage: bool,
    /// Augmentation multiplicity's buffers, from its first step on (`trainer/views.rs`).
    views: Option<views::ViewsBuffers>,
    /// The last step's views per example and whether it kept their losses (`None`: a step without
    /// views, whose losses and factors are in their regions).
    last_views: Option<(usize, bool)>,
    model: PhantomData<M>,
}

/// Adam's first and second moments on the device, one value per trained parameter.
struct AdamMoments {
    exp_avg: CudaSlice<f32>,
    exp_avg_sq: CudaSlice<f32>,
}

/// The host optimizers whose state a [`GpuModel`] holds, by their checkpoint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

impl OptimizerKind {
    fn of(described: &DeviceOptimizer) -> Self {
        match described {
            DeviceOptimizer::Sgd(_) => OptimizerKind::Sgd,
            DeviceOptimizer::Adam(adam) if adam.decoupled => OptimizerKind::AdamW,
            DeviceOptimizer::Adam(_) => OptimizerKind::Adam,
        }
    }

    /// The kind a checkpoint names, if the device has its update.
    fn named(name: &str) -> Option<Self> {
        [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::AdamW].into_iter().find(|k| k.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }
}

/// Copies in and out of pinned memory may still be queued (a step queued and never awaited, a batch
/// staged beside or behind it): the memory is freed only after they ran, on either stream.
impl<M: DpModel> Drop for GpuModel<M> {
    fn drop(&mut self) {
        // An error here (a failed context) leaves nothing to wait for.
        let _ = self.gpu.stream.synchronize();
        let _ = self.landing.synchronize();
    }
}

impl<M: DpModel> std::fmt::Debug for GpuModel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel").field("model", &M::NAME).field("gpu", &self.gpu).finish()
    }
}

/// A driver error during `during`, as the training state's error.
fn backend(during: &'static str) -> impl Fn(cudarc::driver::DriverError) -> DeviceError {
    move |e| DeviceError::Backend(format!("{during}: {e}"))
}

fn program(e: dp_runtime::device::DeviceError) -> CudaError {
    CudaError::Mismatch(e.to_string())
}

/// A batch's inputs by their type: dense features, or token ids.
enum Inputs<'a> {
    Dense(&'a [f32]),
    Tokens(&'a [u32]),
}

fn inputs_of<M: DpModel>(inputs: &[M::Input]) -> Result<Inputs<'_>> {
    let (ptr, len) = (inputs.as_ptr(), inputs.len());
    if TypeId::of::<M::Input>() == TypeId::of::<f32>() {
        // SAFETY: M::Input is f32 (checked above), so the slice is a slice of f32.
        Ok(Inputs::Dense(unsafe { std::slice::from_raw_parts(ptr.cast::<f32>(), len) }))
    } else if TypeId::of::<M::Input>() == TypeId::of::<u32>() {
        // SAFETY: M::Input is u32 (checked above).
        Ok(Inputs::Tokens(unsafe { std::slice::from_raw_parts(ptr.cast::<u32>(), len) }))
    } else {
        Err(CudaError::Mismatch(format!("{}: an input type with no device region", M::NAME)))
    }
}

impl<M: DpModel> GpuModel<M> {
    /// `M` with `params` on `gpu`, for batches of up to `max_batch` examples, in f32.
    pub fn new(gpu: Gpu, params: &[f32], max_batch: usize) -> Result<Self> {
        Self::with_precision(gpu, params, max_batch, Precision::F32)
    }

    /// [`new`](Self::new) in `precision`: in bf16 the regions are allocated storing in bf16 from the
    /// start (`set_precision` after `new` would first allocate them at the f32 size, which a batch
    /// that fits only in bf16 does not have).
    pub fn with_precision(gpu: Gpu, params: &[f32], max_batch: usize, precision: Precision) -> Result<Self> {
        if let Some(reason) = M::DEVICE_UNSUPPORTED {
            return Err(CudaError::Mismatch(format!("{} has no device program: {reason}", M::NAME)));
        }
        if params.len() != M::PARAM_COUNT {
            return Err(CudaError::Mismatch(format!("{} parameters for {}", params.len(), M::PARAM_COUNT)));
        }
        let b = max_batch.max(1);
        if precision == Precision::Bf16 {
            Self::check_bf16(&gpu)?;
        }
        // Storing in bf16 is the default in bf16 (`bf16_storage` below).
        let bf16 = precision == Precision::Bf16;
        let mut memory = Self::regions(&gpu, b, bf16)?;
        memory.store_bf16(&gpu, bf16.then_some(Self::bf16_layout(b)))?;
        let s = gpu.stream.clone();
        s.memcpy_htod(params, memory.slice_mut(Region::Params)).map_err(driver("copying the parameters"))?;
        let trained = M::TRAINED_PARAM_COUNT.max(1);
        let velocity = s.alloc_zeros::<f32>(trained).map_err(driver("allocating the velocity"))?;
        let normals = s.alloc_zeros::<f64>(trained).map_err(driver("allocating the noise"))?;
        let first_words = s.alloc_zeros::<u64>(trained).map_err(driver("allocating the noise"))?;
        let key = s.alloc_zeros::<u32>(8).map_err(driver("allocating the key"))?;
        let non_finite = s.alloc_zeros::<u32>(2).map_err(driver("allocating the counts"))?;
        let previous = s.alloc_zeros::<f32>(trained).map_err(driver("allocating the previous parameters"))?;
        let tables = NoiseTables::upload(&gpu)?;
        let noise_branch = Branch::new(&gpu)?;
        let staging = StagingPair::new(&gpu, Self::staging_words(b))?;
        let landing = Landing::new(&gpu, Self::staging_words(b))?;
        let step_end = overlap::StepEnd::new(&gpu, b)?;
        Ok(GpuModel {
            transfers: Transfers::default(),
            gpu,
            memory,
            max_batch: b,
            velocity,
            moments: None,
            average: None,
            optimizer: OptimizerKind::Sgd,
            normals,
            first_words,
            key,
            non_finite,
            previous,
            tables,
            noise_branch,
            noise_beside: true,
            fused_lstm: true,
            first_update: true,
            updates: 0,
            graphs: StepGraphs::default(),
            precision,
            bf16_storage: true,
            staging,
            staged: None,
            landing,
            copies_beside: true,
            step_end,
            views: None,
            last_views: None,
            released_staging: None,
            model: PhantomData,
        })
    }

    /// The values of region `r` in the static memory plan for batches of up to `b` examples.
    pub fn region_len(r: Region, b: usize) -> usize {
        let groups = M::GROUPS.len();
        match r {
            Region::Params => M::PARAM_COUNT,
            Region::Grad => M::TRAINED_PARAM_COUNT,
            Region::Arena => M::DEVICE_ARENA_PER_EXAMPLE * b,
            Region::Inputs if M::VOCAB == 0 => M::input_len() * b,
            Region::Inputs => 0,
            Region::Labels => M::LOSS.label_len() * b,
            Region::Losses => b,
            Region::SqNorms | Region::Factors => groups * b,
            Region::Tokens if M::VOCAB > 0 => M::input_len() * b,
            Region::Tokens => 0,
        }
    }

    /// The device memory, in bytes, of the regions for batches of up to `b` examples, with the bf16
    /// stores when `bf16` (docs/GPU.md, "bf16 storage"): what grows with the batch but for the
    /// buffers of a step with views (`trainer/views.rs`). Besides them a model holds a few vectors
    /// of the trained parameters' length, and cuBLAS its workspace.
    pub fn regions_bytes(b: usize, bf16: bool) -> u64 {
        crate::program::region_bytes(|r| Self::region_len(r, b), bf16.then_some(Self::bf16_layout(b)))
    }

    /// How the memory for batches of up to `b` examples stores in bf16: the f32 arena cut to the
    /// `F32` buffers, which the compiler lays out first, and conversion slots of the largest buffer
    /// stored in bf16.
    pub fn bf16_layout(b: usize) -> Bf16Layout {
        Bf16Layout {
            arena_f32: M::DEVICE_ARENA_F32_PER_EXAMPLE * b,
            conversion_slot: M::DEVICE_CONVERSION_SLOT_PER_EXAMPLE * b,
        }
    }

    /// The regions of the static memory plan for batches of up to `b` examples, after checking that
    /// the device has the memory free for them (and for the bf16 stores when `bf16`): a batch too
    /// large is an error that says so, not the driver's out-of-memory error.
    fn regions(gpu: &Gpu, b: usize, bf16: bool) -> Result<RegionMemory> {
        // And the landing words, which grow with them (`resize` reserves them after the regions).
        let landing = (Self::staging_words(b) * std::mem::size_of::<u32>()) as u64;
        Self::ensure_free(gpu, Self::regions_bytes(b, bf16) + landing, b, bf16)?;
        // Storing in bf16, the f32 arena is allocated cut from the start (`store_bf16` then keeps it).
        let arena_f32 = bf16.then_some(Self::bf16_layout(b).arena_f32);
        RegionMemory::with_arena_f32(gpu, |r| Self::region_len(r, b), arena_f32)
    }

    /// That `needed` bytes, for the regions of batches of up to `b` examples (`bf16`: storing in
    /// bf16), are free on the device.
    fn ensure_free(gpu: &Gpu, needed: u64, b: usize, bf16: bool) -> Result<()> {
        let (free, total) = gpu.memory()?;
        if needed <= free {
            return Ok(());
        }
        Err(CudaError::OutOfMemory {
            model: M::NAME,
            batch: b,
            bf16,
            device: gpu.describe(),
            needed,
            free,
            total,
        })
    }

    /// The pinned words a step of up to `b` examples copies in: inputs, labels, key.
    fn staging_words(b: usize) -> usize {
        b * (M::input_len() + M::LOSS.label_len()) + 8
    }

    /// Room for batches of up to `b` examples: the regions allocated again, `params` copied in. A
    /// staged batch is copied in again from its pinned buffer (the pinned memory grows by itself).
    pub fn resize(&mut self, b: usize, params: &[f32]) -> Result<()> {
        // The old regions stay allocated until the new ones are: the free memory must hold them all.
        let mut memory = Self::regions(&self.gpu, b, self.stores_bf16())?;
        let s = self.gpu.stream.clone();
        s.memcpy_htod(params, memory.slice_mut(Region::Params)).map_err(driver("copying the parameters"))?;
        // Copied in again from its pinned buffer into the new regions (a landed batch too: the landing
        // words may be allocated again below).
        if let Some(staged) = &mut self.staged {
            staged.copies = overlap::Copies::NotQueued;
        }
        // Grown now, between steps: growing them later, while a step runs, would wait for it.
        self.staging.reserve_other(&self.gpu, Self::staging_words(b))?;
        self.landing.reserve(Self::staging_words(b))?;
        overlap::reserve_pinned(&self.gpu.stream, &mut self.step_end.losses, b)?;
        memory.store_bf16(&self.gpu, self.stores_bf16().then_some(Self::bf16_layout(b)))?;
        self.memory = memory;
        self.max_batch = b;
        self.graphs.invalidate();
        Ok(())
    }

    /// The copies between host and device so far, counted at every copy a step makes (a private step
    /// makes four: inputs, labels and key in, the two counts out).
    pub fn transfers(&self) -> Transfers {
        self.transfers
    }

    /// Waits on the host for everything queued on the device for this model: its stream, and the
    /// landing stream's copies of a staged batch (a bench drains a model so before timing another).
    pub fn synchronize(&self) -> Result<()> {
        self.gpu.stream.synchronize().map_err(driver("waiting for the device"))?;
        self.landing.synchronize()
    }

    /// The GPU.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Runs the products the device program marks `Operands::OfPrecision` in `precision` (in bf16:
    /// on the tensor cores with bf16 operands and f32 accumulation, `program/products.rs`); the others
    /// stay f32. In bf16 the arena buffers the program marks `Stored::OfPrecision` are also stored in
    /// bf16, unless [`set_bf16_storage`](Self::set_bf16_storage) turned that off (docs/GPU.md, "bf16
    /// storage"). Drops the captured step graphs, whose products were recorded in the previous
    /// precision. bf16 on a GPU without bf16 tensor cores (before compute capability 8.0) is an
    /// error, rather than f32 under another name.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision == Precision::Bf16 {
            Self::check_bf16(&self.gpu)?;
        }
        if precision != self.precision {
            let before = std::mem::replace(&mut self.precision, precision);
            if let Err(e) = self.apply_storage() {
                // Refused (the bf16 stores do not fit): the model stays as it was.
                self.precision = before;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether, in bf16, activations and output gradients are stored in bf16 (`on`, the default) or
    /// in f32 with only the products in bf16. The buffers' values do not carry over: set it before a
    /// step, as the trainer sets the precision.
    pub fn set_bf16_storage(&mut self, on: bool) -> Result<()> {
        let before = std::mem::replace(&mut self.bf16_storage, on);
        let applied = self.apply_storage();
        if applied.is_err() {
            // Refused (the bf16 stores do not fit): the model stays as it was.
            self.bf16_storage = before;
        }
        applied
    }

    /// That `gpu` runs bf16 products (on tensor cores).
    fn check_bf16(gpu: &Gpu) -> Result<()> {
        if !gpu.has_bf16_tensor_cores() {
            return Err(CudaError::Mismatch(format!(
                "bf16 needs bf16 tensor cores (compute capability 8.0 or newer); {} has none: use f32",
                gpu.describe()
            )));
        }
        Ok(())
    }

    /// Whether the arena's `OfPrecision` buffers are to be stored in bf16 now.
    fn stores_bf16(&self) -> bool {
        self.bf16_storage && self.precision == Precision::Bf16
    }

    /// Allocates or frees the bf16 stores as the precision and storage say, dropping the captured
    /// graphs (their products and addresses changed) so that the next step runs eagerly.
    fn apply_storage(&mut self) -> Result<()> {
        // Before the allocation: a graph of the old products must not replay even if it fails.
        self.graphs.restart();
        let (b, on) = (self.max_batch, self.stores_bf16());
        // What the change needs beyond what it frees: storing in bf16 cuts the f32 arena before it
        // allocates the stores; storing in f32 frees them and grows the arena back.
        let (from, to) = (Self::regions_bytes(b, !on), Self::regions_bytes(b, on));
        if on != self.memory.storing_bf16() {
            Self::ensure_free(&self.gpu, to.saturating_sub(from), b, on)?;
        }
        self.memory.store_bf16(&self.gpu, on.then_some(Self::bf16_layout(b)))
    }

    /// Whether the arena's `OfPrecision` buffers are stored in bf16.
    pub fn storing_bf16(&self) -> bool {
        self.memory.storing_bf16()
    }

    fn ops(&self) -> GpuOps<'_> {
        GpuOps::new(&self.gpu, &self.memory, self.precision).fuse_lstm(self.fused_lstm)
    }

    /// Whether an LSTM's recurrence runs as one kernel each way (`on`, the default: docs/GPU.md, "The
    /// LSTM's recurrence as one kernel") or step by step, a cuBLAS product and a launch of the gates
    /// per time step. The same values to rounding; the GPU tests compare the two. Drops the captured
    /// graphs.
    pub fn fuse_lstm_recurrence(&mut self, on: bool) {
        if on != self.fused_lstm {
            self.fused_lstm = on;
            self.graphs.invalidate();
        }
    }

    /// Copies a batch in for a step other than the trainer's private step: `n` examples' inputs and
    /// labels (the arena must hold `n`). Not while a step is queued: the batch would replace the one
    /// staged for the next step, and the parameters kept for the queued step's restore.
    fn load_batch(&mut self, inputs: &[M::Input], labels: &[f32], n: usize) -> Result<()> {
        self.refuse_in_flight()?;
        self.last_views = None;
        self.stage_batch(inputs, labels, n)?;
        self.load_staged().map(drop)
    }

    fn zero_grad(&mut self) -> Result<()> {
        let len = M::TRAINED_PARAM_COUNT;
        self.ops().zero(Span::new(Region::Grad, 0, len), len).map_err(program)
    }

    /// Queues the clip factors of the norms in `SqNorms` into `Factors` and counts the examples with
    /// a non-finite norm.
    fn queue_clip_factors(&mut self, clipping: Clipping, n: usize) -> Result<()> {
        let s = self.gpu.stream.clone();
        s.memset_zeros(&mut self.non_finite).map_err(driver("zeroing the count"))?;
        self.queue_clip_factors_counted(clipping, n)
    }

    /// [`queue_clip_factors`](Self::queue_clip_factors) ADDING to the count of non-finite examples.
    fn queue_clip_factors_counted(&mut self, clipping: Clipping, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let s = self.gpu.stream.clone();
        let groups = M::GROUPS.len() as u64;
        let norms = self.memory.slice(Region::SqNorms).slice(..n * groups as usize);
        let factors = self.memory.slice(Region::Factors).slice(..n * groups as usize);
        let per_layer = i32::from(matches!(clipping.mode, ClipMode::PerLayer));
        let batch = n as u64;
        let grid = batch.div_ceil(u64::from(THREADS)) as u32;
        let config = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match dp_clip_factors; the views hold n·groups norms and factors. The
        // factors view is written through a shared view: no other reference to it is alive.
        unsafe {
            s.launch_builder(&self.gpu.clip_factors)
                .arg(&per_layer)
                .arg(&clipping.norm)
                .arg(&groups)
                .arg(&batch)
                .arg(&norms)
                .arg(&factors)
                .arg(&mut self.non_finite)
                .launch(config)
                .map_err(driver("launching dp_clip_factors"))?;
        }
        Ok(())
    }

    /// Copies in the step's key (into the address the noise's launches, and their graphs, read),
    /// after the batch's [`load_batch`](Self::load_batch) through the same staging.
    fn load_key(&mut self, key: &[u8; 32]) -> Result<()> {
        let dst = self.key.device_ptr(&self.gpu.stream).0;
        self.staging.current().copy_in(&self.gpu, &key_words(key), dst)?;
        self.transfers.to_device += 1;
        Ok(())
    }

    /// Queues the draw of one normal per trained parameter under the loaded key.
    fn queue_noise_draw(&mut self) -> Result<()> {
        let len = M::TRAINED_PARAM_COUNT;
        let s = &self.gpu.stream;
        self.gpu.draw_normals(s, &self.key, &self.tables, &mut self.normals, &mut self.first_words, len)
    }

    /// Queues the draw of [`queue_noise_draw`](Self::queue_noise_draw) on the noise's branch, forked
    /// here from the main stream (after the key's copy): it runs beside what the main stream runs
    /// next, until [`join_noise`](Self::join_noise).
    fn fork_noise_draw(&mut self) -> Result<()> {
        let len = M::TRAINED_PARAM_COUNT;
        let s = self.noise_branch.fork(&self.gpu)?;
        self.gpu.draw_normals(s, &self.key, &self.tables, &mut self.normals, &mut self.first_words, len)
    }

    /// The main stream waits, from here on, for the noise drawn on the branch: before the update
    /// reads it.
    fn join_noise(&self) -> Result<()> {
        self.noise_branch.join(&self.gpu)
    }

    /// Whether a private step draws its noise beside the program, on a stream of its own forked
    /// after the key's copy and joined before the update (`on`, the default: docs/GPU.md, "The noise
    /// beside the program"), or on the main stream after the clipped sum. The same values either
    /// way; the bench times both. Drops the captured graphs.
    pub fn draw_noise_beside(&mut self, on: bool) {
        if on != self.noise_beside {
            self.noise_beside = on;
            self.graphs.invalidate();
        }
    }

    /// Copies in the step's key and queues the draw of one normal per trained parameter under it.
    fn queue_noise(&mut self, key: &[u8; 32]) -> Result<()> {
        self.staging.next(&self.gpu, 8)?;
        self.load_key(key)?;
        self.queue_noise_draw()
    }

    /// Queues the noisy update from the sum in `Grad` and the drawn normals (noise_std 0: none): SGD's
    /// (its momentum starting at the first update with momentum, whatever `first` says) or Adam's
    /// (update number `updates + 1`, its moments allocated at zero on the first).
    fn queue_update(&mut self, step: UpdateStep) -> Result<()> {
        let len = M::TRAINED_PARAM_COUNT;
        if len == 0 {
            return Ok(());
        }
        let s = self.gpu.stream.clone();
        let params = self.memory.ptr(Span::new(Region::Params, 0, len)).map_err(program)?;
        let sum = self.memory.ptr(Span::new(Region::Grad, 0, len)).map_err(program)?;
        let z = self.normals.device_ptr(&s).0;
        match step {
            UpdateStep::Sgd(step) => {
                let buffers = SgdBuffers { params, velocity: self.velocity.device_ptr(&s).0, sum, z };
                // SAFETY: the trained prefix of the parameters, the gradient, the velocity and the
                // normals each hold `len` values.
                unsafe {
                    self.gpu.queue_sgd_update(buffers, len, SgdStep { first: self.first_update, ..step })
                }?;
                if step.momentum != 0.0 {
                    self.first_update = false;
                }
                self.optimizer = OptimizerKind::Sgd;
            }
            UpdateStep::Adam(step) => {
                let moments = match self.moments.take() {
                    Some(moments) => moments,
                    None => AdamMoments {
                        exp_avg: s.alloc_zeros::<f32>(len).map_err(driver("allocating the first moment"))?,
                        exp_avg_sq: s
                            .alloc_zeros::<f32>(len)
                            .map_err(driver("allocating the second moment"))?,
                    },
                };
                let buffers = AdamBuffers {
                    params,
                    exp_avg: moments.exp_avg.device_ptr(&s).0,
                    exp_avg_sq: moments.exp_avg_sq.device_ptr(&s).0,
                    sum,
                    z,
                };
                self.moments = Some(moments);
                // SAFETY: the trained prefix of the parameters, the gradient, the moments and the
                // normals each hold `len` values.
                unsafe { self.gpu.queue_adam_update(buffers, len, step, self.updates + 1) }?;
                self.optimizer = OptimizerKind::of(&DeviceOptimizer::Adam(step.adam));
            }
        }
        self.updates += 1;
        Ok(())
    }

    /// One DP-SGD step on a sampled batch of `n` examples: norms, clip factors, clipped sum, noise of
    /// std `step.noise_std` under `key` (a fresh key per step from the host's CSPRNG), update (SGD's or
    /// Adam's: an [`SgdStep`] or an [`AdamStep`]). Copies
    /// in the batch and the key, and out two counts: the examples whose norm was not finite (they
    /// contributed nothing) and the parameters the update made non-finite (then the parameters before
    /// it are restored, and the outcome says it overflowed). [`stage_batch`](Self::stage_batch),
    /// [`queue_private_step`](Self::queue_private_step) and [`await_step`](Self::await_step) in one;
    /// the trainer calls them apart, to write the next batch while this step runs.
    pub fn private_step(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        clipping: Clipping,
        key: &[u8; 32],
        step: impl Into<UpdateStep>,
    ) -> Result<DeviceStepOutcome> {
        // Before staging: a queued step's staged batch is not replaced.
        self.refuse_in_flight()?;
        self.stage_batch(inputs, labels, n)?;
        self.queue_private_step(clipping, key, step)?;
        self.await_step()
    }

    /// A distributed rank's part of a private step (`docs/DISTRIBUTED.md`): the norms, clip factors
    /// and clipped sum of `n` examples, the sum copied out into `sum` (`TRAINED_PARAM_COUNT` values:
    /// the one vector a step sends to the host, for the reduce over ranks). No noise and no update:
    /// [`released_update`](Self::released_update) follows with rank 0's R. Copies in the batch, out
    /// the sum and the counts; returns the examples whose norm was not finite.
    pub fn clipped_sum_out(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        clipping: Clipping,
        sum: &mut [f32],
    ) -> Result<usize> {
        overlap::check_clipped_sum::<M>(sum)?;
        self.refuse_in_flight()?;
        self.stage_batch(inputs, labels, n)?;
        self.queue_clipped_sum(clipping)?;
        self.await_clipped_sum(sum)
    }

    /// A distributed step's update from R = S + σC·z (`TRAINED_PARAM_COUNT` values, f64), copied in
    /// through pinned memory into the normals buffer: the update kernels' gradient
    /// `(sum + noise_std·z)·(1/B)` with a zero sum and `noise_std` = 1 is `(0 + R)·(1/B)`, exactly
    /// `NoisyGradient::released`'s `R·(1/B)`, so no kernel of its own. `step` is built with
    /// `noise_std` 1 ([`released_step`](Self::released_step)). Copies R in and the counts out; the
    /// parameters before an overflowing update are restored. Returns whether it overflowed.
    pub fn released_update(&mut self, released: &[f64], step: impl Into<UpdateStep>) -> Result<bool> {
        let len = M::TRAINED_PARAM_COUNT;
        if released.len() != len {
            return Err(CudaError::Mismatch(format!(
                "a released vector of {} values for {len}",
                released.len()
            )));
        }
        self.refuse_in_flight()?;
        self.last_views = None;
        if self.released_staging.is_none() {
            self.released_staging = Some(Staging::new(&self.gpu, 2 * len)?);
        }
        let staging = self.released_staging.as_mut().expect("allocated above");
        staging.start()?;
        let s = self.gpu.stream.clone();
        s.memset_zeros(&mut self.non_finite).map_err(driver("zeroing the counts"))?;
        if len > 0 {
            let dst = self.normals.device_ptr(&s).0;
            staging.copy_in(&self.gpu, released, dst)?;
            self.transfers.to_device += 1;
            self.zero_grad()?;
            self.keep_params()?;
        }
        Ok(self.finish_step(step.into())?.overflowed)
    }

    /// The update step of `optimizer` for a released vector R: noise standard deviation 1 on the
    /// normals buffer that holds R, and 1 / `normaliser`.
    pub fn released_step(&self, optimizer: DeviceOptimizer, normaliser: f64) -> UpdateStep {
        self.update_step(optimizer, 1.0, 1.0 / normaliser)
    }

    /// After the sum in `Grad` (clipped, with the normals drawn; or plain) and the parameters kept:
    /// the update, the counts copied out, and the parameters restored if the update overflowed.
    fn finish_step(&mut self, step: UpdateStep) -> Result<DeviceStepOutcome> {
        self.queue_step_end(step)?;
        self.await_step()
    }

    /// Queues everything of a step between its copies in and its update (`before`: a private step's,
    /// a distributed rank's or a non-private one's): replayed from the graph of this batch size and
    /// kind, captured now if there is none, or launched one by one.
    fn queue_before_update(&mut self, before: BeforeUpdate, n: usize) -> Result<()> {
        if self.graphs.usable() {
            let key = GraphKey::new(n, before);
            if let Some(graph) = self.graphs.get(&key) {
                graph.launch().map_err(driver("replaying a step's graph"))?;
                self.graphs.count_replay();
                return Ok(());
            }
            match self.capture_before_update(before, n) {
                Ok(graph) => {
                    self.graphs.insert(key, graph).launch().map_err(driver("launching a step's graph"))?;
                    self.graphs.count_replay();
                    return Ok(());
                }
                // Nothing captured ran: the launches follow one by one.
                Err(why) => self.graphs.turn_off(why),
            }
        }
        self.launch_before_update(before, n)?;
        self.graphs.count_eager();
        Ok(())
    }

    /// The launches of [`queue_before_update`](Self::queue_before_update): the gradient zeroed, the
    /// forward and backward, the norms, the clip factors, the clipped sum, the noise under the loaded
    /// key (a distributed rank's stops at the clipped sum, which is copied out); a non-private step's
    /// the forward and backward, the plain gradient sum and the counts zeroed; then a copy of the
    /// trained parameters to restore should the update overflow.
    fn launch_before_update(&mut self, before: BeforeUpdate, n: usize) -> Result<()> {
        let private = matches!(before, BeforeUpdate::PrivateStep(_));
        if private && self.noise_beside {
            // The draw reads the key and writes the normals only: nothing the program launches
            // touches either.
            let launched = self.fork_noise_draw().and_then(|()| self.launch_program(before, n));
            // Joined whatever failed above: a capture cannot end with a branch unjoined, and an
            // eager draw left unjoined would run unordered with everything queued after it (the
            // next key's copy, a released update's normals, the buffers' release).
            let joined = self.join_noise();
            launched.and(joined)?;
        } else {
            self.launch_program(before, n)?;
            if private {
                self.queue_noise_draw()?;
            }
        }
        match before {
            BeforeUpdate::GradientSum | BeforeUpdate::PrivateStep(_) => self.keep_params(),
            // The sum is copied out for the reduce; R comes back with the noise in it, and
            // `released_update` keeps the parameters.
            BeforeUpdate::ClippedSum(_) => Ok(()),
            // One example of many: its step's noise and kept parameters come after the last.
            BeforeUpdate::ExampleOfViews(_) => Ok(()),
        }
    }

    /// The model's launches of [`launch_before_update`](Self::launch_before_update), without the
    /// noise and the kept parameters.
    fn launch_program(&mut self, before: BeforeUpdate, n: usize) -> Result<()> {
        self.zero_grad()?;
        match before {
            BeforeUpdate::GradientSum => {
                if n > 0 {
                    let mut ops = self.ops().rounding_each_weight_once();
                    M::device_forward_backward(&mut ops, n).map_err(program)?;
                    M::device_gradient_sum(&mut ops, n).map_err(program)?;
                }
                let s = self.gpu.stream.clone();
                s.memset_zeros(&mut self.non_finite).map_err(driver("zeroing the counts"))
            }
            BeforeUpdate::PrivateStep(clipping) | BeforeUpdate::ClippedSum(clipping) => {
                if n > 0 {
                    let mut ops = self.ops().rounding_each_weight_once();
                    M::device_forward_backward(&mut ops, n).map_err(program)?;
                    M::device_norms(&mut ops, n).map_err(program)?;
                }
                self.queue_clip_factors(clipping, n)?;
                if n > 0 {
                    M::device_clipped_sum(&mut self.ops(), n).map_err(program)?;
                }
                Ok(())
            }
            BeforeUpdate::ExampleOfViews(clipping) => self.launch_example_of_views(clipping, n),
        }
    }

    /// A device copy of the trained parameters, restored should the update overflow.
    fn keep_params(&mut self) -> Result<()> {
        let len = M::TRAINED_PARAM_COUNT;
        if len > 0 {
            let s = self.gpu.stream.clone();
            let params = self.memory.slice(Region::Params).slice(..len);
            s.memcpy_dtod(&params, &mut self.previous).map_err(driver("keeping the parameters"))?;
        }
        Ok(())
    }

    /// Captures [`launch_before_update`](Self::launch_before_update) into a graph (nothing runs), or
    /// says why it could not.
    fn capture_before_update(
        &mut self,
        before: BeforeUpdate,
        n: usize,
    ) -> std::result::Result<CudaGraph, String> {
        let s = self.gpu.stream.clone();
        s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| format!("beginning a capture: {e}"))?;
        let queued = self.launch_before_update(before, n);
        // The capture always ends, so that the stream leaves capture mode whatever failed.
        let ended = s.end_capture(CUgraphInstantiate_flags(0));
        queued.map_err(|e| format!("capturing a step: {e}"))?;
        match ended {
            Ok(Some(graph)) => Ok(graph),
            Ok(None) => Err("capturing a step: the driver returned no graph".into()),
            Err(e) => Err(format!("ending a capture: {e}")),
        }
    }

    /// Steps replayed from a CUDA graph so far ([`crate::graphs`]).
    pub fn graph_replays(&self) -> u64 {
        self.graphs.replayed()
    }

    /// Why this model's steps no longer use CUDA graphs, if a capture failed.
    pub fn graphs_off(&self) -> Option<&str> {
        self.graphs.off()
    }

    /// Where a private step's time goes: each phase of [`private_step`](Self::private_step) run
    /// alone `reps` times, the device synchronised after each, the median milliseconds of each (the
    /// phases' sum exceeds a step's time by the synchronisations the step does not do).
    #[allow(clippy::too_many_arguments)]
    pub fn phase_timings(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        clipping: Clipping,
        key: &[u8; 32],
        step: SgdStep,
        reps: usize,
    ) -> Result<Vec<(&'static str, f64)>> {
        type Phase<'a, M> = (&'static str, Box<dyn FnMut(&mut GpuModel<M>) -> Result<()> + 'a>);
        let mut phases: Vec<Phase<'_, M>> = vec![
            ("batch in", Box::new(|m: &mut Self| m.load_batch(inputs, labels, n))),
            (
                "forward + backward",
                Box::new(|m: &mut Self| {
                    let mut ops = m.ops().rounding_each_weight_once();
                    M::device_forward_backward(&mut ops, n).map_err(program)
                }),
            ),
            ("norms", Box::new(|m: &mut Self| M::device_norms(&mut m.ops(), n).map_err(program))),
            ("clip factors", Box::new(|m: &mut Self| m.queue_clip_factors(clipping, n))),
            (
                "clipped sum",
                Box::new(|m: &mut Self| {
                    m.zero_grad()?;
                    M::device_clipped_sum(&mut m.ops(), n).map_err(program)
                }),
            ),
            ("noise", Box::new(|m: &mut Self| m.queue_noise(key))),
            ("update", Box::new(|m: &mut Self| m.queue_update(UpdateStep::Sgd(SgdStep { lr: 0.0, ..step })))),
        ];
        let mut out = Vec::new();
        for (name, phase) in &mut phases {
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps.max(1) {
                self.gpu.stream.synchronize().map_err(driver("synchronising"))?;
                let start = std::time::Instant::now();
                phase(self)?;
                self.gpu.stream.synchronize().map_err(driver("synchronising"))?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            out.push((*name, times[times.len() / 2]));
        }
        Ok(out)
    }

    /// One non-private step (`dp train --non-private`, and the bench's comparison): the gradient of
    /// the summed loss of the `n` examples (no clipping, no noise), divided by `n`, and the update
    /// `step` (its `noise_std` must be 0 and its `inverse_batch` 1/n). Copies in the batch, and out
    /// each example's loss into `losses` (`n` values) and the count of parameters the update made
    /// non-finite (then the parameters before it are restored, and the outcome says it overflowed).
    pub fn non_private_step(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        step: impl Into<UpdateStep>,
        losses: &mut [f32],
    ) -> Result<DeviceStepOutcome> {
        if losses.len() != n {
            return Err(CudaError::Mismatch(format!("{} losses asked of a batch of {n}", losses.len())));
        }
        self.refuse_in_flight()?;
        self.stage_batch(inputs, labels, n)?;
        self.queue_non_private_step(step)?;
        self.await_non_private_step(losses)
    }

    /// Forward, loss and backward on a batch, then every example's loss and squared norms, copied out.
    pub fn per_example_norms(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.load_batch(inputs, labels, n)?;
        let mut ops = self.ops().rounding_each_weight_once();
        M::device_forward_backward(&mut ops, n).map_err(program)?;
        M::device_norms(&mut ops, n).map_err(program)?;
        let losses = self.read(Region::Losses, n)?;
        let norms = self.read(Region::SqNorms, n * M::GROUPS.len())?;
        Ok((losses, norms))
    }

    /// The plain gradient sum Σ_i g_i of a batch, copied out (the non-private path).
    pub fn gradient_sum(&mut self, inputs: &[M::Input], labels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.load_batch(inputs, labels, n)?;
        self.zero_grad()?;
        let mut ops = self.ops().rounding_each_weight_once();
        M::device_forward_backward(&mut ops, n).map_err(program)?;
        M::device_gradient_sum(&mut ops, n).map_err(program)?;
        self.read(Region::Grad, M::TRAINED_PARAM_COUNT)
    }

    /// After [`per_example_norms`](Self::per_example_norms) on `n` examples: the clipped sum with the
    /// given factors, copied out.
    pub fn clipped_sum(&mut self, factors: &[f32], n: usize) -> Result<Vec<f32>> {
        let s = self.gpu.stream.clone();
        let mut view = self.memory.slice_mut(Region::Factors).slice_mut(..factors.len());
        s.memcpy_htod(factors, &mut view).map_err(driver("copying the factors"))?;
        self.zero_grad()?;
        M::device_clipped_sum(&mut self.ops(), n).map_err(program)?;
        self.read(Region::Grad, M::TRAINED_PARAM_COUNT)
    }

    /// The clip factors the device computes from the norms it holds, and the non-finite count.
    pub fn clip_factors(&mut self, clipping: Clipping, n: usize) -> Result<(Vec<f32>, usize)> {
        self.queue_clip_factors(clipping, n)?;
        let factors = self.read(Region::Factors, n * M::GROUPS.len())?;
        let mut counts = [0u32; 2];
        self.gpu
            .stream
            .memcpy_dtoh(&self.non_finite, &mut counts)
            .map_err(driver("copying the count back"))?;
        Ok((factors, counts[0] as usize))
    }

    /// The parameters, copied back.
    pub fn params(&self) -> Result<Vec<f32>> {
        self.read(Region::Params, M::PARAM_COUNT)
    }

    /// The first `TRAINED_PARAM_COUNT` values of an optimizer buffer, copied back.
    fn copy_out(&self, buffer: &CudaSlice<f32>, what: &str) -> std::result::Result<Vec<f32>, DeviceError> {
        let mut out = vec![0.0f32; M::TRAINED_PARAM_COUNT];
        if !out.is_empty() {
            let s = &self.gpu.stream;
            s.memcpy_dtoh(&buffer.slice(..out.len()), &mut out)
                .map_err(|e| DeviceError::Backend(format!("copying {what}: {e}")))?;
            s.synchronize().map_err(|e| DeviceError::Backend(format!("copying {what}: {e}")))?;
        }
        Ok(out)
    }

    fn read(&self, region: Region, len: usize) -> Result<Vec<f32>> {
        // A queued step's parameters may yet be restored by its await.
        self.refuse_in_flight()?;
        let s = &self.gpu.stream;
        let mut out = vec![0.0f32; len];
        if len > 0 {
            let view = self.memory.slice(region).slice(..len);
            s.memcpy_dtoh(&view, &mut out).map_err(driver("copying back"))?;
        }
        s.synchronize().map_err(driver("synchronising"))?;
        Ok(out)
    }
}

impl<M: DpModel> GpuModel<M> {
    /// Grows the arena for a batch of `n` larger than any before (a Poisson batch's tail: the one
    /// reallocation of a run).
    fn make_room(&mut self, n: usize) -> std::result::Result<(), DeviceError> {
        if n > self.max_batch {
            let params =
                self.read(Region::Params, M::PARAM_COUNT).map_err(|e| DeviceError::Backend(e.to_string()))?;
            self.resize(n, &params).map_err(|e| match e {
                // A sampled batch's size depends on the private data (the trainer says batch sizes
                // only among its labelled non-private diagnostics): the error does not say it.
                CudaError::OutOfMemory { model, device, free, total, .. } => DeviceError::Backend(format!(
                    "{model}: a Poisson batch larger than the {} examples the device holds room for needs \
                     more memory than {device} has free ({:.2} of {:.2} GiB; the batch's size is not said: \
                     it depends on the private data): run fewer examples at once (--max-physical-batch, \
                     `Trainer::max_physical_batch`: the batch in chunks, the step unchanged) or use a smaller \
                     batch (--batch-size)",
                    self.max_batch,
                    gib(free),
                    gib(total)
                )),
                other => DeviceError::Backend(other.to_string()),
            })?;
        }
        Ok(())
    }

    /// The arena grown for the staged batch, if it is larger than any before, once the step before it
    /// was awaited (nothing is queued); the staged batch's size.
    fn make_room_for_staged(&mut self) -> std::result::Result<usize, DeviceError> {
        self.refuse_in_flight().map_err(|e| DeviceError::Backend(e.to_string()))?;
        let n = self.staged_examples().unwrap_or(0);
        self.make_room(n)?;
        Ok(n)
    }

    /// A private step's clipping and update.
    fn settings_of(&self, step: &DevicePrivateStep) -> (Clipping, UpdateStep) {
        let clipping = Clipping { mode: step.clip_mode, norm: step.clip_norm };
        (clipping, self.update_step(step.optimizer, step.noise_std, 1.0 / step.normaliser))
    }

    /// The update kernel's settings for the host optimizer's `optimizer` at one step, the gradient
    /// being (sum + noise_std·z)·inverse_batch.
    fn update_step(&self, optimizer: DeviceOptimizer, noise_std: f64, inverse_batch: f64) -> UpdateStep {
        match optimizer {
            DeviceOptimizer::Sgd(sgd) => UpdateStep::Sgd(SgdStep {
                noise_std,
                inverse_batch,
                lr: sgd.lr,
                momentum: sgd.momentum,
                weight_decay: sgd.weight_decay,
                first: self.first_update,
                nesterov: sgd.nesterov,
            }),
            DeviceOptimizer::Adam(adam) => UpdateStep::Adam(AdamStep { noise_std, inverse_batch, adam }),
        }
    }
}

impl<M: DpModel> DeviceTraining<M> for GpuModel<M> {
    fn describe(&self) -> String {
        self.gpu.describe()
    }

    fn set_precision(&mut self, precision: Precision) -> std::result::Result<(), DeviceError> {
        GpuModel::set_precision(self, precision).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn upload(&mut self, params: &[f32]) -> std::result::Result<(), DeviceError> {
        if params.len() != M::PARAM_COUNT {
            return Err(DeviceError::Mismatch(format!("{} parameters for {}", params.len(), M::PARAM_COUNT)));
        }
        let s = self.gpu.stream.clone();
        let mut view = self.memory.slice_mut(Region::Params).slice_mut(..params.len());
        s.memcpy_htod(params, &mut view)
            .map_err(|e| DeviceError::Backend(format!("copying the parameters: {e}")))?;
        s.synchronize().map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn start_average(&mut self) -> std::result::Result<(), DeviceError> {
        let s = self.gpu.stream.clone();
        let mut average =
            s.alloc_zeros::<f32>(M::PARAM_COUNT.max(1)).map_err(backend("allocating the average"))?;
        if M::PARAM_COUNT > 0 {
            let params = self.memory.slice(Region::Params).slice(..M::PARAM_COUNT);
            s.memcpy_dtod(&params, &mut average.slice_mut(..M::PARAM_COUNT))
                .map_err(backend("starting the average"))?;
        }
        self.average = Some(average);
        Ok(())
    }

    fn fold_average(&mut self, decay: f64) -> std::result::Result<(), DeviceError> {
        let Some(average) = &self.average else {
            return Err(DeviceError::Mismatch("an average folded before it was started".into()));
        };
        if M::PARAM_COUNT == 0 {
            return Ok(());
        }
        let s = self.gpu.stream.clone();
        let params = self.memory.ptr(Span::new(Region::Params, 0, M::PARAM_COUNT))?;
        let average = average.device_ptr(&s).0;
        // SAFETY: the parameters and the average each hold `PARAM_COUNT` values.
        unsafe { self.gpu.queue_ema_fold(average, params, M::PARAM_COUNT, decay) }
            .map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn download_average(&mut self, out: &mut [f32]) -> std::result::Result<(), DeviceError> {
        let Some(average) = &self.average else {
            return Err(DeviceError::Mismatch("an average read before it was started".into()));
        };
        if out.len() != M::PARAM_COUNT {
            return Err(DeviceError::Mismatch(format!(
                "{} values for an average of {}",
                out.len(),
                M::PARAM_COUNT
            )));
        }
        if !out.is_empty() {
            let s = &self.gpu.stream;
            s.memcpy_dtoh(&average.slice(..out.len()), out).map_err(backend("copying the average"))?;
            s.synchronize().map_err(backend("copying the average"))?;
        }
        Ok(())
    }

    fn last_losses_and_factors(
        &mut self,
        n: usize,
        views: usize,
        losses: &mut [f32],
        factors: &mut [f32],
    ) -> std::result::Result<(), DeviceError> {
        let groups = M::GROUPS.len();
        if losses.len() != n * views || factors.len() != n * groups {
            return Err(DeviceError::Mismatch(format!(
                "{} losses and {} factors asked of a step on {n} examples of {views} views ({groups} groups)",
                losses.len(),
                factors.len(),
            )));
        }
        let s = self.gpu.stream.clone();
        // A step without views leaves them in their regions; one with views kept them if asked.
        let (kept_losses, kept_factors) = match (self.last_views, &self.views) {
            (None, _) if views == 1 && n <= self.max_batch => {
                (self.memory.slice(Region::Losses), self.memory.slice(Region::Factors))
            }
            (Some((last, true)), Some(buffers)) if last == views && n * views <= buffers.capacity() => {
                buffers.kept_losses_and_factors()
            }
            _ => {
                return Err(DeviceError::Mismatch(format!(
                    "no losses of {n} examples of {views} views kept by the last step"
                )))
            }
        };
        for (kept, out) in [(kept_losses, losses), (kept_factors, factors)] {
            if !out.is_empty() {
                s.memcpy_dtoh(&kept.slice(..out.len()), out).map_err(backend("copying the losses back"))?;
                self.transfers.to_host += 1;
            }
        }
        s.synchronize().map_err(backend("copying the losses back"))
    }

    fn download(&mut self, params: &mut [f32]) -> std::result::Result<(), DeviceError> {
        let values =
            self.read(Region::Params, M::PARAM_COUNT).map_err(|e| DeviceError::Backend(e.to_string()))?;
        if params.len() != values.len() {
            return Err(DeviceError::Mismatch(format!("{} parameters for {}", params.len(), values.len())));
        }
        params.copy_from_slice(&values);
        Ok(())
    }

    fn optimizer_state(&mut self) -> std::result::Result<OptimizerState, DeviceError> {
        let buffers = match self.optimizer {
            // The momentum buffer exists once an update with momentum ran (the host SGD's rule).
            OptimizerKind::Sgd => match self.first_update {
                true => Vec::new(),
                false => vec![("momentum".to_string(), self.copy_out(&self.velocity, "the momentum")?)],
            },
            // The moments exist once an Adam update ran or a checkpoint's were loaded (the host Adam's rule).
            OptimizerKind::Adam | OptimizerKind::AdamW => match &self.moments {
                None => Vec::new(),
                Some(moments) => vec![
                    ("exp_avg".to_string(), self.copy_out(&moments.exp_avg, "the first moment")?),
                    ("exp_avg_sq".to_string(), self.copy_out(&moments.exp_avg_sq, "the second moment")?),
                ],
            },
        };
        Ok(OptimizerState { kind: self.optimizer.name().into(), updates: self.updates, buffers })
    }

    fn load_optimizer_state(&mut self, state: &OptimizerState) -> std::result::Result<(), DeviceError> {
        let Some(kind) = OptimizerKind::named(&state.kind) else {
            return Err(DeviceError::Mismatch(format!("no device update for the {} optimizer", state.kind)));
        };
        let len = M::TRAINED_PARAM_COUNT;
        let buffer = |name: &str| -> std::result::Result<Option<&Vec<f32>>, DeviceError> {
            match state.buffers.iter().find(|(n, _)| n == name) {
                Some((_, values)) if values.len() == len => Ok(Some(values)),
                Some((_, values)) => Err(DeviceError::Mismatch(format!(
                    "a {name} buffer of {} values for {len} parameters",
                    values.len()
                ))),
                None => Ok(None),
            }
        };
        match kind {
            OptimizerKind::Sgd => match buffer("momentum")? {
                Some(velocity) => {
                    let s = self.gpu.stream.clone();
                    if !velocity.is_empty() {
                        let mut view = self.velocity.slice_mut(..velocity.len());
                        s.memcpy_htod(velocity, &mut view).map_err(backend("copying the momentum"))?;
                    }
                    s.synchronize().map_err(backend("copying the momentum"))?;
                    self.first_update = false;
                }
                None => self.first_update = true,
            },
            OptimizerKind::Adam | OptimizerKind::AdamW => match (buffer("exp_avg")?, buffer("exp_avg_sq")?) {
                (Some(exp_avg), Some(exp_avg_sq)) => {
                    let s = self.gpu.stream.clone();
                    let cells = len.max(1);
                    let mut moments = AdamMoments {
                        exp_avg: s
                            .alloc_zeros::<f32>(cells)
                            .map_err(backend("allocating the first moment"))?,
                        exp_avg_sq: s
                            .alloc_zeros::<f32>(cells)
                            .map_err(backend("allocating the second moment"))?,
                    };
                    if len > 0 {
                        let mut view = moments.exp_avg.slice_mut(..len);
                        s.memcpy_htod(exp_avg, &mut view).map_err(backend("copying the first moment"))?;
                        let mut view = moments.exp_avg_sq.slice_mut(..len);
                        s.memcpy_htod(exp_avg_sq, &mut view).map_err(backend("copying the second moment"))?;
                    }
                    s.synchronize().map_err(backend("copying the moments"))?;
                    self.moments = Some(moments);
                }
                (None, None) => self.moments = None,
                (Some(_), None) | (None, Some(_)) => {
                    return Err(DeviceError::Mismatch("Adam's state with one of its two moments".into()))
                }
            },
        }
        self.optimizer = kind;
        self.updates = state.updates;
        Ok(())
    }

    fn stage_batch(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
    ) -> std::result::Result<(), DeviceError> {
        GpuModel::stage_batch(self, inputs, labels, n).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn outputs(
        &mut self,
        inputs: &[M::Input],
        n: usize,
        outputs: &mut [f32],
    ) -> std::result::Result<(), DeviceError> {
        GpuModel::outputs(self, inputs, n, outputs).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn queue_private_step(&mut self, step: &DevicePrivateStep) -> std::result::Result<(), DeviceError> {
        self.make_room_for_staged()?;
        let (clipping, update) = self.settings_of(step);
        GpuModel::queue_private_step(self, clipping, &step.key, update)
            .map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn finish_private_step(&mut self) -> std::result::Result<DeviceStepOutcome, DeviceError> {
        self.await_step().map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn private_step_with_views(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        step: &DevicePrivateStep,
    ) -> std::result::Result<DeviceStepOutcome, DeviceError> {
        // The device program runs on one example's views at a time.
        self.make_room(views)?;
        let (clipping, update) = self.settings_of(step);
        let keep = step.keep_losses;
        GpuModel::private_step_with_views(self, (inputs, labels), n, views, clipping, &step.key, update, keep)
            .map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn queue_non_private_step(
        &mut self,
        optimizer: &DeviceOptimizer,
    ) -> std::result::Result<(), DeviceError> {
        let n = self.make_room_for_staged()?;
        let update = self.update_step(*optimizer, 0.0, 1.0 / n.max(1) as f64);
        GpuModel::queue_non_private_step(self, update).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn finish_non_private_step(
        &mut self,
        losses: &mut [f32],
    ) -> std::result::Result<DeviceStepOutcome, DeviceError> {
        self.await_non_private_step(losses).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn queue_clipped_sum(
        &mut self,
        clip_mode: ClipMode,
        clip_norm: f64,
    ) -> std::result::Result<(), DeviceError> {
        self.make_room_for_staged()?;
        let clipping = Clipping { mode: clip_mode, norm: clip_norm };
        GpuModel::queue_clipped_sum(self, clipping).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn finish_clipped_sum(&mut self, sum: &mut [f32]) -> std::result::Result<usize, DeviceError> {
        self.await_clipped_sum(sum).map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn clipped_sum_with_views_to_host(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        clip_mode: ClipMode,
        clip_norm: f64,
        sum: &mut [f32],
    ) -> std::result::Result<usize, DeviceError> {
        // The device program runs on one example's views at a time.
        self.make_room(views)?;
        let clipping = Clipping { mode: clip_mode, norm: clip_norm };
        self.clipped_sum_with_views_out((inputs, labels), n, views, clipping, sum)
            .map_err(|e| DeviceError::Backend(e.to_string()))
    }

    fn released_update(
        &mut self,
        released: &[f64],
        normaliser: f64,
        optimizer: DeviceOptimizer,
    ) -> std::result::Result<bool, DeviceError> {
        let step = self.released_step(optimizer, normaliser);
        GpuModel::released_update(self, released, step).map_err(|e| DeviceError::Backend(e.to_string()))
    }
}
