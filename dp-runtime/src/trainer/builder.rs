//! The builder methods of [`Trainer`]: each sets one field; conflicting or invalid settings are
//! reported by `fit`, naming the field.

use std::path::PathBuf;

use super::{EpochReport, Trainer};
use crate::accounting::AccountantKind;
use crate::clipping::ClipMode;
use crate::data::augment::Augmentation;
use crate::device::DeviceTraining;
use crate::distributed::{Group, Shard};
use crate::error::Error;
use crate::model::{DpModel, Precision};
use crate::optim::Optimizer;
use crate::plan::{Length, NoiseSpec};
use crate::sampling::SamplingMode;

impl<'m, M: DpModel> Trainer<'m, M> {
    /// Trains as one rank of `group`, whose data passed to `fit` is the shard at `shard`: every rank
    /// draws the same Poisson batches of the whole dataset and keeps its own examples; rank 0 sums the
    /// clipped sums, adds the noise once, and every rank applies the released update; rank 0 alone
    /// evaluates, reports and writes checkpoints (`docs/DISTRIBUTED.md`).
    pub fn distributed(mut self, group: impl Group + 'm, shard: Shard) -> Self {
        self.distributed = Some((Box::new(group), shard));
        self
    }

    /// Runs every private step on a device that holds the model's training state (a GPU through
    /// `dp::cuda::trainer::GpuModel`): the batch's inputs and labels and each step's noise key go in,
    /// two counts come out; sampling, the keys and the accountant stay here. Each epoch is evaluated
    /// by the device's forward (`DeviceTraining::outputs`), and the parameters come back at its end
    /// (for the report and checkpoints, whose optimizer state comes from the device). SGD, Adam and AdamW (other optimizers are refused), and an
    /// [`ema`](Self::ema) the device keeps, [`augmentation_multiplicity`](Self::augmentation_multiplicity)
    /// (the views drawn and augmented here, as the CPU draws them, then averaged and clipped on the
    /// device), and [non-private diagnostics](Self::non_private_diagnostics) (each step's losses and
    /// clip factors then come back too; as on the CPU, not in a distributed run); secure noise is
    /// refused on a device for now (docs/GPU.md). The device runs its products in the trainer's
    /// [`precision`](Self::precision). With [`distributed`](Self::distributed) every rank has its own
    /// device: each step its clipped sum comes out for the reduce and rank 0's released vector goes
    /// back in for the update (docs/DISTRIBUTED.md, "On devices"); a device error on any rank stops
    /// every rank with the same [`Error::RankFailed`].
    pub fn device(mut self, device: impl DeviceTraining<M> + 'm) -> Self {
        self.device = Some(Box::new(device));
        self
    }

    /// The optimizer (required), e.g. `Sgd::new(0.1).momentum(0.9)` or `Adam::new(1e-3)`.
    pub fn optimizer(mut self, optimizer: impl Optimizer + 'static) -> Self {
        self.optimizer = Some(Box::new(optimizer));
        self
    }

    /// The clip norm C (required, > 0).
    pub fn clip_norm(mut self, clip_norm: f64) -> Self {
        self.clip_norm = Some(clip_norm);
        self
    }

    /// Per-layer clipping: each of the G parameter groups is clipped to C/√G (total still ≤ C).
    pub fn per_layer_clipping(mut self, per_layer: bool) -> Self {
        self.clip_mode = if per_layer { ClipMode::PerLayer } else { ClipMode::Flat };
        self
    }

    /// The noise multiplier σ (noise std σ·C); excludes `target_privacy`.
    pub fn noise_multiplier(mut self, sigma: f64) -> Self {
        self.set_noise(NoiseSpec::Multiplier(sigma), "noise_multiplier");
        self
    }

    /// A target (ε, δ): σ is calibrated by the accountant; excludes `noise_multiplier`.
    pub fn target_privacy(mut self, epsilon: f64, delta: f64) -> Self {
        self.set_noise(NoiseSpec::TargetEpsilon(epsilon), "target_privacy");
        self.delta = Some(delta);
        self
    }

    /// δ for reporting ε (default 1e-5; set by `target_privacy` too).
    pub fn delta(mut self, delta: f64) -> Self {
        self.delta = Some(delta);
        self
    }

    /// The expected batch size B (required): Poisson sampling with q = B / N.
    pub fn expected_batch_size(mut self, batch: usize) -> Self {
        self.expected_batch_size = Some(batch);
        self
    }

    /// Train for this many epochs (T = round(epochs · N / B)); excludes `steps`.
    pub fn epochs(mut self, epochs: impl Into<f64>) -> Self {
        self.set_length(Length::Epochs(epochs.into()), "epochs");
        self
    }

    /// Train for this many steps; excludes `epochs`.
    pub fn steps(mut self, steps: u64) -> Self {
        self.set_length(Length::Steps(steps), "steps");
        self
    }

    /// Reproducible randomness from a seed. NOT PRIVATE: the noise becomes predictable to anyone who
    /// knows the seed; a warning is printed once and recorded in the report. For tests only.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The accountant (default RDP).
    pub fn accountant(mut self, kind: AccountantKind) -> Self {
        self.accountant = kind;
        self
    }

    /// A privacy budget ε: `fit` refuses to start when the plan would exceed it (or, with
    /// [`stop_at_budget`](Self::stop_at_budget), trains as far as the budget allows and stops cleanly).
    pub fn budget(mut self, epsilon: f64) -> Self {
        self.budget = Some(epsilon);
        self
    }

    /// With a budget: stop cleanly at the last step that keeps ε within it instead of refusing to start.
    pub fn stop_at_budget(mut self, stop: bool) -> Self {
        self.stop_at_budget = stop;
        self
    }

    /// How batches are drawn (default Poisson). `Shuffled` is an explicit, weaker choice: the
    /// reported ε still assumes Poisson sampling, and the report says so.
    pub fn sampling(mut self, mode: SamplingMode) -> Self {
        self.sampling = mode;
        self
    }

    /// Secure noise against floating-point attacks: integer grid, exact sum, exact discrete Gaussian
    /// noise (see `noise::secure`). Costs one model call per example.
    pub fn secure_noise(mut self, secure: bool) -> Self {
        self.secure_noise = secure;
        self
    }

    /// The precision of the model's forward and backward products (default f32; see
    /// [`crate::Workspace::with_precision`]). With [`Precision::Bf16`] the per-example norms, the clip
    /// factors, the clipped sum, the noise and the optimizer stay f32, and so does the privacy
    /// guarantee: each example's contribution is clipped to the norm that was measured.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Memory for one physical chunk of a batch, in bytes (default 1 GiB): a larger Poisson batch is
    /// processed in chunks whose clipped sums are added before the noise.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// At most `examples` examples through the model at once: a larger Poisson batch is processed in
    /// physical chunks of at most `examples` whose clipped sums are added before the one draw of
    /// noise, so the step, its noise and its privacy are those of the whole batch. On the CPU the
    /// chunks are also bounded by the [`memory_budget`](Self::memory_budget); on a device
    /// ([`device`](Self::device)) this is what bounds the device's arena (the memory that grows with
    /// the batch), which otherwise grows to hold the largest batch sampled (size its training state
    /// for `examples`). Default: no bound
    /// beyond the memory budget's. Must be at least 1, and at least the views per example of
    /// [`augmentation_multiplicity`](Self::augmentation_multiplicity) (one example's views run at once).
    pub fn max_physical_batch(mut self, examples: usize) -> Self {
        self.max_physical_batch = Some(examples);
        self
    }

    /// No progress output at all.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Write a checkpoint to `path` at the end of every epoch (atomically).
    pub fn checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }

    /// Resume from a checkpoint: parameters, optimizer state, step count, epoch and ledger; the plan's
    /// remaining steps are trained with fresh noise. `fit` refuses (`Error::Mismatch`, naming each
    /// differing field with both values) a checkpoint whose run identity — model, N, q, σ, δ, B,
    /// planned steps — differs from this run's plan, so the run ends with the ε of an uninterrupted one.
    pub fn resume_from(mut self, path: impl Into<PathBuf>) -> Self {
        self.resume = Some(path.into());
        self
    }

    /// Stop after this many steps in total, before the plan ends (e.g. a short CI run). The plan —
    /// its length and a calibrated noise multiplier — stays that of the whole run; ε is reported for
    /// the steps actually taken, and `report.stopped_at_max_steps` says the run was cut.
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = Some(steps);
        self
    }

    /// Also compute and show statistics of the training data: training loss, training accuracy (only
    /// without an evaluation set), non-finite example counts and realised batch sizes, in
    /// `EpochReport::diagnostics`, `Report::diagnostics` and the progress display. They are NOT
    /// private — computed on the training data without noise and not accounted — and each is marked
    /// `not_private` (`(not private)` in the display). Default false: reports carry only
    /// data-independent values and evaluation-set metrics.
    pub fn non_private_diagnostics(mut self, on: bool) -> Self {
        self.non_private_diagnostics = on;
        self
    }

    /// Accept δ ≥ 1/N (N training examples), which `fit` refuses by default: at such a δ the
    /// guarantee allows publishing one example outright (see `plan::check_delta_for_examples`).
    pub fn allow_large_delta(mut self, allow: bool) -> Self {
        self.allow_large_delta = allow;
        self
    }

    /// Keep an exponential moving average of the parameters with this decay (in [0, 1), e.g. 0.999;
    /// see [`Ema`](super::ema::Ema)): evaluations use it, and at the end of `fit` the model holds it
    /// instead of the raw parameters. Post-processing: no privacy cost, and the steps are exactly
    /// those of a run without it. Checkpoints keep the raw parameters (what a resumed run continues
    /// from); a resumed run starts its average afresh at them.
    pub fn ema(mut self, decay: f64) -> Self {
        self.ema = Some(decay);
        self
    }

    /// Augmentation multiplicity (De et al. 2022): each example's gradient is the average of its
    /// gradients over `views` random views drawn by `augmentation` (a crop after zero padding, a
    /// horizontal flip where the task allows), formed before clipping. Each example still contributes
    /// one clipped vector of norm ≤ C, so the privacy cost is that of a run without it; the work per
    /// example grows about `views` times. Image inputs only (`[channels, height, width]`).
    pub fn augmentation_multiplicity(mut self, views: usize, augmentation: Augmentation) -> Self {
        self.views = Some((views, augmentation));
        self
    }

    /// Calls `callback` with each epoch's report as soon as the epoch ends.
    pub fn on_epoch(mut self, callback: impl FnMut(&EpochReport) + 'm) -> Self {
        self.on_epoch = Some(Box::new(callback));
        self
    }

    fn set_noise(&mut self, noise: NoiseSpec, field: &str) {
        if self.noise.is_some() {
            self.conflicts
                .push(Error::invalid(field, "noise_multiplier and target_privacy exclude each other"));
        }
        self.noise = Some(noise);
    }

    fn set_length(&mut self, length: Length, field: &str) {
        if self.length.is_some() {
            self.conflicts.push(Error::invalid(field, "epochs and steps exclude each other"));
        }
        self.length = Some(length);
    }
}
