//! `dp bench`: how fast the compiled models train, privately and not, and how close that is to the machine.
//!
//! - `dp bench --model NAME [--batch-size B] [--steps N] [--warmup W] [--mode private|non-private|both]
//!   [--threads T] [--json]`: per-step milliseconds (median, min, max over N timed steps after W warm-up
//!   steps), examples per second, FLOPs per step from the static plan and the GFLOP/s achieved, bytes per
//!   example from the memory plan, and the peak resident memory.
//! - `dp bench --all [--batch-size B]`: every built-in model at batch sizes 16, 32, 64, 128 and 256 (or B),
//!   as a Markdown table (or one JSON object per model and batch size).
//! - `dp bench --max-batch [--memory-budget 8GiB] [--model NAME]`: the largest batch whose private step
//!   fits the budget, from the static plan, confirmed by running one step at that size.
//! - `dp bench --peak`: the GEMM crate's f32 throughput on large square products, the ceiling against
//!   which a model's GFLOP/s can be read.
//!
//! A private step is the trainer's whole DP-SGD step on a fixed batch (sampling excluded): gathering the
//! batch, per-example norms, clip factors, clipped sum with the noise drawn alongside
//! ([`StepEngine::clipped_sum_and_noise`]), then noise added, division by
//! the batch size and the SGD update in one pass ([`NoisyGradient`] into [`Sgd`]). A non-private step
//! gathers the same batch, runs `loss_and_gradient` and applies the same update without noise. Inputs are
//! synthetic, of the model's exact shapes (token ids below the model's vocabulary).

use std::any::{Any, TypeId};
use std::time::Instant;

use clap::{Args, ValueEnum};
use dp_kernels::gemm::{sgemm, Op};
use dp_runtime::clipping::ClipMode;
use dp_runtime::noise::GaussianNoise;
use dp_runtime::optim::{NoisyGradient, Optimizer, Sgd, StepInfo};
use dp_runtime::trainer::step::StepEngine;
use dp_runtime::{Batch, Dataset, DpModel, Error, InputElem, Loss, Precision, Result, Workspace};
use rand::{Rng, RngCore};
use serde_json::json;

use super::datasets::{DataSource, NpyInput};
use super::registry::{self, ModelEntry, ModelVisitor};

/// Batch sizes of `--all` when no `--batch-size` is given (the founding paper's figures).
pub const ALL_BATCH_SIZES: [usize; 5] = [16, 32, 64, 128, 256];
/// Batch size of `--model` when no `--batch-size` is given (the reference table).
pub const DEFAULT_BATCH_SIZE: usize = 128;
/// Memory budget of `--max-batch` when none is given: 8 GiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 8 << 30;
/// Square sizes `--peak` multiplies.
pub const PEAK_SIZES: [usize; 3] = [512, 1024, 2048];

/// Clip norm, noise multiplier and learning rate of the measured steps. The work of a step does not
/// depend on them; a small learning rate keeps the parameters finite over any number of steps.
const CLIP_NORM: f64 = 1.0;
const NOISE_MULTIPLIER: f64 = 1.0;
const LEARNING_RATE: f64 = 1e-3;
/// Distinct synthetic examples: batches larger than this repeat them (as `--max-batch` needs).
const MAX_DISTINCT_EXAMPLES: usize = 4096;
/// Distinct synthetic examples behind a `--max-batch` step (their bytes count as fixed).
const MAX_BATCH_DISTINCT_EXAMPLES: usize = 64;

/// Which steps to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The DP-SGD step only.
    Private,
    /// The non-private step only.
    NonPrivate,
    /// Both, one after the other.
    Both,
}

impl Mode {
    fn private(self) -> bool {
        self != Mode::NonPrivate
    }

    fn non_private(self) -> bool {
        self != Mode::Private
    }
}

/// Arguments of `dp bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model to measure (see `dp models`).
    #[arg(long)]
    pub model: Option<String>,
    /// Every built-in model, at batch sizes 16, 32, 64, 128, 256 unless --batch-size is given.
    #[arg(long, conflicts_with_all = ["model", "peak"])]
    pub all: bool,
    /// Examples per step (default 128 with --model).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Timed steps per measurement; the median, min and max are reported.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Untimed steps before the timed ones (default: a fifth of --steps, at least 2).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Which steps to time.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Threads of the pool the kernels run on (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The precision of the forward's and backward's products: f32, or bf16 (operands rounded to
    /// bf16, f32 accumulation; on a GPU activations and output gradients are also stored in bf16;
    /// norms, clipped sums, noise and the update stay f32).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    pub precision: Precision,
    /// Where the steps run: cpu, or cuda:N (a build with the `cuda` feature; models with a device
    /// program).
    #[arg(long, default_value = "cpu", value_parser = super::parse_device)]
    pub device: super::DeviceArg,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// The largest batch that fits --memory-budget, per model (all models unless --model is given).
    #[arg(long, conflicts_with_all = ["all", "peak"])]
    pub max_batch: bool,
    /// Bytes a step may use with --max-batch: a number with an optional KiB, MiB, GiB (or K, M, G) suffix.
    #[arg(long, requires = "max_batch", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// The GEMM crate's f32 throughput on large square products.
    #[arg(long, conflicts_with = "model")]
    pub peak: bool,
    /// The square sizes --peak multiplies, comma-separated (default 512,1024,2048).
    #[arg(long, requires = "peak", value_delimiter = ',')]
    pub peak_sizes: Option<Vec<usize>>,
}

/// Parses `8GiB`, `512MiB`, `64K`, `1000` into bytes.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("must be a size such as 8GiB, got {text:?}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use KiB, MiB or GiB)")),
    };
    let bytes = value * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("must be at least one byte, got {text:?}"));
    }
    Ok(bytes as u64)
}

/// Runs `dp bench`, printing its results on stdout.
pub fn run(args: BenchArgs) -> Result<()> {
    validate(&args)?;
    super::warn_if_bf16_is_emulated(args.precision, args.device);
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = args.threads {
        builder = builder.num_threads(threads);
    }
    let pool = builder.build().map_err(|e| Error::invalid("threads", format!("no thread pool: {e}")))?;
    pool.install(|| {
        if args.peak {
            peak(&args)
        } else if args.max_batch {
            max_batch(&args)
        } else {
            timings(&args)
        }
    })
}

fn validate(args: &BenchArgs) -> Result<()> {
    if args.steps == 0 {
        return Err(Error::invalid("steps", "must be at least 1"));
    }
    if args.batch_size == Some(0) {
        return Err(Error::invalid("batch_size", "must be at least 1"));
    }
    if args.peak_sizes.as_ref().is_some_and(|sizes| sizes.contains(&0)) {
        return Err(Error::invalid("peak_sizes", "must all be at least 1"));
    }
    if args.threads == Some(0) {
        return Err(Error::invalid("threads", "must be at least 1"));
    }
    if let Some(name) = &args.model {
        if !MODEL_NAMES.contains(&name.as_str()) {
            return Err(Error::invalid(
                "model",
                format!("{name:?} is not a built-in model (one of {})", MODEL_NAMES.join(", ")),
            ));
        }
    }
    if let super::DeviceArg::Cuda(_) = args.device {
        if !cfg!(feature = "cuda") {
            return Err(Error::invalid(
                "device",
                "needs a dp built with the `cuda` feature (cargo build --release --features cuda)",
            ));
        }
        if args.peak || args.max_batch {
            return Err(Error::invalid("device", "cuda times steps only (not --peak or --max-batch)"));
        }
    }
    if !(args.peak || args.max_batch || args.all || args.model.is_some()) {
        return Err(Error::invalid(
            "model",
            "is required: name a model, or give --all, --max-batch or --peak",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Models

/// The built-in models `dp bench` measures, by command-line name (the CLI's registry).
pub use super::registry::NAMES as MODEL_NAMES;

/// Something done with one model type: the generic half of dispatching on a name.
trait ModelTask {
    type Output;
    fn run<M: DpModel>(self, name: &'static str) -> Result<Self::Output>;
}

/// Adapts a [`ModelTask`] to the registry's visitor.
struct Visit<T>(T);

impl<T: ModelTask> ModelVisitor for Visit<T> {
    type Output = Result<T::Output>;

    fn visit<M, D>(self, entry: ModelEntry) -> Self::Output
    where
        M: DpModel,
        M::Input: NpyInput,
        D: DataSource<Input = M::Input>,
    {
        self.0.run::<M>(entry.name)
    }
}

/// Runs `task` with the model registered as `name`.
fn with_model<T: ModelTask>(name: &str, task: T) -> Result<T::Output> {
    registry::dispatch(name, Visit(task))?
}

/// `count · len` synthetic input values: uniform on [0, 1) for `f32` inputs, token ids below `vocab`
/// for `u32` inputs.
fn synthetic_inputs<T: InputElem>(rng: &mut dyn RngCore, len: usize, vocab: usize) -> Option<Vec<T>> {
    let values: Box<dyn Any> = if TypeId::of::<T>() == TypeId::of::<u32>() {
        if vocab == 0 {
            return None;
        }
        Box::new((0..len).map(|_| rng.random_range(0..vocab as u32)).collect::<Vec<u32>>())
    } else if TypeId::of::<T>() == TypeId::of::<f32>() {
        Box::new((0..len).map(|_| rng.random::<f32>()).collect::<Vec<f32>>())
    } else {
        return None;
    };
    values.downcast::<Vec<T>>().ok().map(|v| *v)
}

/// `count` synthetic examples of model `M` with valid labels for its loss.
fn synthetic_data<M: DpModel>(count: usize) -> Result<Dataset<M::Input>> {
    let mut rng = dp_runtime::rng::seeded(0x0bec4);
    let inputs =
        synthetic_inputs::<M::Input>(&mut rng, count * M::input_len(), M::VOCAB).ok_or_else(|| {
            Error::Mismatch {
                model: M::NAME.into(),
                message: "no synthetic inputs for this input type (f32, or u32 tokens with a vocabulary)"
                    .into(),
            }
        })?;
    let labels = (0..count * M::LOSS.label_len())
        .map(|_| match M::LOSS {
            Loss::CrossEntropy { classes } => rng.random_range(0..classes) as f32,
            Loss::BinaryCrossEntropy => f32::from(rng.random_bool(0.5)),
            Loss::MeanSquaredError { .. } => rng.random_range(-1.0..1.0),
        })
        .collect();
    Dataset::new(inputs, labels, M::INPUT_SHAPE.to_vec(), M::LOSS.label_len())
}

/// Indices of a batch of `batch` examples over a dataset of `count` (repeating when larger).
fn batch_indices(batch: usize, count: usize) -> Vec<usize> {
    (0..batch).map(|i| i % count).collect()
}

// ---------------------------------------------------------------------------------------------------
// Timing

/// Median, minimum and maximum of the timed steps, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Runs `step` `warmup` times, then times `steps` runs one by one.
fn time_steps(warmup: usize, steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        step()?;
    }
    let mut samples = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        step()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarize(samples))
}

/// Two variants of a step timed in turn (`step` on `a`, then on `b`, `steps` times after `warmup` of
/// each), so that drifting clocks or a busy machine weigh on both alike.
#[cfg(any(feature = "cuda", test))]
fn time_steps_in_turn<T>(
    warmup: usize,
    steps: usize,
    a: &mut T,
    b: &mut T,
    step: &mut impl FnMut(&mut T) -> Result<()>,
) -> Result<(Timing, Timing)> {
    for _ in 0..warmup {
        step(a)?;
        step(b)?;
    }
    let (mut first, mut second) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for _ in 0..steps {
        for (model, samples) in [(&mut *a, &mut first), (&mut *b, &mut second)] {
            let start = Instant::now();
            step(model)?;
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok((summarize(first), summarize(second)))
}

/// Two variants of a step timed in alternating blocks of `block` consecutive steps (`steps` of each
/// after `warmup`), each drained by `settle`, untimed, before the other's block: what a step leaves
/// queued behind it (the next batch's copies in) then weighs on its own next step, not on the other
/// variant's, and the clocks' drift still on both alike.
#[cfg(any(feature = "cuda", test))]
fn time_blocks_in_turn<T>(
    (warmup, steps, block): (usize, usize, usize),
    a: &mut T,
    b: &mut T,
    step: &mut impl FnMut(&mut T) -> Result<()>,
    settle: &mut impl FnMut(&mut T) -> Result<()>,
) -> Result<(Timing, Timing)> {
    for model in [&mut *a, &mut *b] {
        for _ in 0..warmup {
            step(model)?;
        }
        settle(model)?;
    }
    let (mut first, mut second) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    while first.len() < steps {
        for (model, samples) in [(&mut *a, &mut first), (&mut *b, &mut second)] {
            for _ in 0..block.max(1).min(steps - samples.len()) {
                let start = Instant::now();
                step(model)?;
                samples.push(start.elapsed().as_secs_f64() * 1e3);
            }
            settle(model)?;
        }
    }
    Ok((summarize(first), summarize(second)))
}

/// Median (the mean of the middle two for an even count), minimum and maximum of non-empty `samples`.
fn summarize(mut samples: Vec<f64>) -> Timing {
    samples.sort_by(f64::total_cmp);
    let middle = samples.len() / 2;
    let median =
        if samples.len() % 2 == 1 { samples[middle] } else { 0.5 * (samples[middle - 1] + samples[middle]) };
    Timing { median, min: samples[0], max: samples[samples.len() - 1] }
}

/// The private DP-SGD step of the trainer on a fixed batch: everything but the sampling.
struct PrivateStep<M: DpModel> {
    model: M,
    engine: StepEngine<M>,
    noise: GaussianNoise,
    optimizer: Sgd,
    step: u64,
}

impl<M: DpModel> PrivateStep<M> {
    fn new(model: M, batch: usize, precision: Precision) -> Self {
        PrivateStep {
            model,
            engine: StepEngine::new(CLIP_NORM, ClipMode::Flat, batch, batch).with_precision(precision),
            noise: GaussianNoise::new(dp_runtime::rng::seeded(1)),
            optimizer: Sgd::new(LEARNING_RATE),
            step: 0,
        }
    }

    fn run(&mut self, data: &Dataset<M::Input>, indices: &[usize]) -> Result<()> {
        self.engine.clipped_sum_and_noise(&self.model, data, indices, &mut self.noise)?;
        let gradient = NoisyGradient::with_drawn_noise(
            &self.engine.clipped_sum,
            self.engine.drawn_noise(),
            NOISE_MULTIPLIER * CLIP_NORM,
            indices.len() as f64,
        );
        self.optimizer.step(
            self.model.trained_params_mut(),
            gradient,
            StepInfo { step: self.step, total_steps: u64::MAX },
        );
        self.step += 1;
        Ok(())
    }
}

/// The non-private step: the same batch, forward and backward, the same update without noise.
struct NonPrivateStep<M: DpModel> {
    model: M,
    workspace: Workspace,
    inputs: Vec<M::Input>,
    labels: Vec<f32>,
    losses: Vec<f32>,
    gradient: Vec<f32>,
    optimizer: Sgd,
    step: u64,
}

impl<M: DpModel> NonPrivateStep<M> {
    fn new(model: M, batch: usize, precision: Precision) -> Self {
        NonPrivateStep {
            model,
            workspace: Workspace::new::<M>(batch).with_precision(precision),
            inputs: Vec::new(),
            labels: Vec::new(),
            losses: vec![0.0; batch],
            gradient: vec![0.0; M::TRAINED_PARAM_COUNT],
            optimizer: Sgd::new(LEARNING_RATE),
            step: 0,
        }
    }

    fn run(&mut self, data: &Dataset<M::Input>, indices: &[usize]) -> Result<()> {
        data.gather(indices, &mut self.inputs, &mut self.labels);
        let batch = Batch { inputs: &self.inputs, labels: &self.labels, size: indices.len() };
        self.gradient.fill(0.0);
        self.model.loss_and_gradient(&mut self.workspace, batch, &mut self.losses, &mut self.gradient);
        let gradient = NoisyGradient::new(&self.gradient, None, 0.0, indices.len() as f64);
        self.optimizer.step(
            self.model.trained_params_mut(),
            gradient,
            StepInfo { step: self.step, total_steps: u64::MAX },
        );
        self.step += 1;
        Ok(())
    }
}

/// Fails if a run left non-finite parameters (the timings would then be of NaN arithmetic).
fn check_finite<M: DpModel>(model: &M, what: &str) -> Result<()> {
    match model.params().iter().all(|p| p.is_finite()) {
        true => Ok(()),
        false => Err(Error::Mismatch {
            model: M::NAME.into(),
            message: format!("the {what} steps made the parameters non-finite"),
        }),
    }
}

/// FLOPs of one step of `batch` examples from the static plan (forward, backward and norms).
fn plan_flops<M: DpModel>(batch: usize) -> u64 {
    M::LAYERS.iter().map(|l| l.flops_per_example).sum::<u64>() * batch as u64
}

/// One model at one batch size.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub model: &'static str,
    /// `cpu`, or the GPU's ordinal and name.
    pub device: String,
    pub model_type: &'static str,
    pub parameters: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub precision: Precision,
    pub steps: usize,
    pub warmup: usize,
    pub private: Option<Timing>,
    /// On a GPU: the private step as the trainer runs it, the next batch gathered and staged while
    /// the step runs (docs/GPU.md, "Overlapping the host's work with a step").
    pub private_overlapped: Option<Timing>,
    /// On a GPU: the private step with its noise drawn after the program, on the one stream, instead
    /// of beside it (docs/GPU.md, "The noise beside the program").
    pub private_noise_after: Option<Timing>,
    /// On a GPU: the overlapped step with the next batch's copies in queued behind the step on its
    /// stream, instead of beside it (docs/GPU.md, "The copies in beside the step").
    pub private_copies_behind: Option<Timing>,
    pub non_private: Option<Timing>,
    pub flops_per_step: u64,
    pub bytes_per_example: u64,
    pub workspace_fixed_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
}

impl Measurement {
    fn examples_per_s(&self, t: Option<Timing>) -> Option<f64> {
        t.map(|t| self.batch_size as f64 / (t.median * 1e-3))
    }

    fn gflops_per_s(&self, t: Option<Timing>) -> Option<f64> {
        t.map(|t| self.flops_per_step as f64 / (t.median * 1e-3) / 1e9)
    }

    /// The `--json` object.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "model_type": self.model_type,
            "device": self.device,
            "parameters": self.parameters,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "precision": self.precision.name(),
            "steps": self.steps,
            "warmup": self.warmup,
            "private_ms_median": self.private.map(|t| t.median),
            "private_ms_min": self.private.map(|t| t.min),
            "private_ms_max": self.private.map(|t| t.max),
            "private_overlapped_ms_median": self.private_overlapped.map(|t| t.median),
            "private_overlapped_ms_min": self.private_overlapped.map(|t| t.min),
            "private_overlapped_ms_max": self.private_overlapped.map(|t| t.max),
            "private_noise_after_ms_median": self.private_noise_after.map(|t| t.median),
            "private_noise_after_ms_min": self.private_noise_after.map(|t| t.min),
            "private_noise_after_ms_max": self.private_noise_after.map(|t| t.max),
            "private_copies_behind_ms_median": self.private_copies_behind.map(|t| t.median),
            "private_copies_behind_ms_min": self.private_copies_behind.map(|t| t.min),
            "private_copies_behind_ms_max": self.private_copies_behind.map(|t| t.max),
            "nonprivate_ms_median": self.non_private.map(|t| t.median),
            "nonprivate_ms_min": self.non_private.map(|t| t.min),
            "nonprivate_ms_max": self.non_private.map(|t| t.max),
            "private_examples_per_s": self.examples_per_s(self.private),
            "nonprivate_examples_per_s": self.examples_per_s(self.non_private),
            "flops_per_step": self.flops_per_step,
            "gflops_per_step": self.flops_per_step as f64 / 1e9,
            "private_gflops_per_s": self.gflops_per_s(self.private),
            "nonprivate_gflops_per_s": self.gflops_per_s(self.non_private),
            "bytes_per_example": self.bytes_per_example,
            "workspace_fixed_bytes": self.workspace_fixed_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
        })
    }

    /// The text report of `--model`.
    fn to_text(&self) -> String {
        let mut out = format!(
            "{} ({}, {} parameters): batch {}, {}, median of {} steps after {} warm-up\n",
            self.model,
            self.model_type,
            self.parameters,
            self.batch_size,
            match self.device.as_str() {
                "cpu" => format!("{} threads", self.threads),
                gpu => gpu.to_string(),
            },
            self.steps,
            self.warmup
        );
        out += &format!(
            "  {:<12} {:>10} {:>10} {:>10} {:>12} {:>9}\n",
            "step", "median ms", "min ms", "max ms", "examples/s", "GFLOP/s"
        );
        let rows = [
            ("private", self.private),
            ("overlapped", self.private_overlapped),
            ("noise after", self.private_noise_after),
            ("copies behind", self.private_copies_behind),
            ("non-private", self.non_private),
        ];
        for (label, t) in rows {
            if let Some(t) = t {
                out += &format!(
                    "  {:<12} {:>10.4} {:>10.4} {:>10.4} {:>12.0} {:>9.2}\n",
                    label,
                    t.median,
                    t.min,
                    t.max,
                    self.examples_per_s(Some(t)).unwrap_or(0.0),
                    self.gflops_per_s(Some(t)).unwrap_or(0.0)
                );
            }
        }
        if let (Some(p), Some(n)) = (self.private, self.non_private) {
            out += &format!("  private / non-private: {:.2}x\n", p.median / n.median);
        }
        if self.private_overlapped.is_some() {
            out += "  overlapped: the private step with the next batch gathered and staged while it runs, as the trainer runs it\n";
        }
        if self.private_noise_after.is_some() {
            out += "  noise after: the private step with its noise drawn after the program instead of beside it\n";
        }
        if self.private_copies_behind.is_some() {
            out += "  copies behind: overlapped, the next batch copied in behind the step instead of beside it\n";
        }
        out += &format!(
            "  plan: {:.4} GFLOP per step, {} bytes per example, {} bytes fixed workspace\n",
            self.flops_per_step as f64 / 1e9,
            self.bytes_per_example,
            self.workspace_fixed_bytes
        );
        if let Some(peak) = self.peak_rss_bytes {
            out += &format!("  peak resident memory: {:.1} MiB\n", peak as f64 / (1 << 20) as f64);
        }
        out
    }

    /// One row of the `--all` Markdown table.
    fn to_row(&self) -> String {
        let ms = |t: Option<Timing>| t.map_or("-".to_string(), |t| format!("{:.4}", t.median));
        let ratio = match (self.private, self.non_private) {
            (Some(p), Some(n)) => format!("{:.2}", p.median / n.median),
            _ => "-".into(),
        };
        let per_s = self.examples_per_s(self.private).map_or("-".into(), |v| format!("{v:.0}"));
        let gflops = self.gflops_per_s(self.private).map_or("-".into(), |v| format!("{v:.2}"));
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.model,
            self.batch_size,
            ms(self.private),
            ms(self.non_private),
            ratio,
            per_s,
            gflops,
            self.bytes_per_example
        )
    }
}

const TABLE_HEADER: &str = "| model | batch | private ms | non-private ms | private / non-private | private examples/s | private GFLOP/s | bytes/example |\n|---|---:|---:|---:|---:|---:|---:|---:|";

/// Measures one model at one batch size.
struct Measure<'a> {
    args: &'a BenchArgs,
    batch: usize,
}

impl ModelTask for Measure<'_> {
    type Output = Measurement;

    fn run<M: DpModel>(self, name: &'static str) -> Result<Measurement> {
        let (args, batch) = (self.args, self.batch);
        let warmup = args.warmup.unwrap_or((args.steps / 5).max(2));
        let data = synthetic_data::<M>(batch.min(MAX_DISTINCT_EXAMPLES))?;
        let indices = batch_indices(batch, data.len());
        let initial = M::init(&mut dp_runtime::rng::seeded(2));
        reset_peak_rss();
        let timings = match args.device {
            super::DeviceArg::Cpu => {
                let (private, non_private) = cpu_timings(args, &initial, &data, &indices, batch, warmup)?;
                DeviceTimings {
                    private,
                    private_overlapped: None,
                    private_noise_after: None,
                    private_copies_behind: None,
                    non_private,
                    device: "cpu".to_string(),
                }
            }
            super::DeviceArg::Cuda(ordinal) => {
                // One process: `cuda` alone is local rank 0's, cuda:0.
                gpu_timings::<M>(args, ordinal.unwrap_or(0), &initial, &data, &indices, warmup)?
            }
        };
        let DeviceTimings {
            private,
            private_overlapped,
            private_noise_after,
            private_copies_behind,
            non_private,
            device,
        } = timings;
        Ok(Measurement {
            model: name,
            device,
            model_type: M::NAME,
            parameters: M::PARAM_COUNT,
            batch_size: batch,
            threads: rayon::current_num_threads(),
            precision: args.precision,
            steps: args.steps,
            warmup,
            private,
            private_overlapped,
            private_noise_after,
            private_copies_behind,
            non_private,
            flops_per_step: plan_flops::<M>(batch),
            bytes_per_example: (M::WORKSPACE_PER_EXAMPLE * 4) as u64,
            workspace_fixed_bytes: (Workspace::fixed_len::<M>() * 4) as u64,
            peak_rss_bytes: peak_rss(),
        })
    }
}

/// The CPU's private and non-private timings, as `--mode` asks.
fn cpu_timings<M: DpModel>(
    args: &BenchArgs,
    initial: &M,
    data: &Dataset<M::Input>,
    indices: &[usize],
    batch: usize,
    warmup: usize,
) -> Result<(Option<Timing>, Option<Timing>)> {
    let private = match args.mode.private() {
        true => {
            let mut step = PrivateStep::new(M::from_params(initial.params().to_vec()), batch, args.precision);
            let timing = time_steps(warmup, args.steps, || step.run(data, indices))?;
            check_finite(&step.model, "private")?;
            Some(timing)
        }
        false => None,
    };
    let non_private = match args.mode.non_private() {
        true => {
            let mut step =
                NonPrivateStep::new(M::from_params(initial.params().to_vec()), batch, args.precision);
            let timing = time_steps(warmup, args.steps, || step.run(data, indices))?;
            check_finite(&step.model, "non-private")?;
            Some(timing)
        }
        false => None,
    };
    Ok((private, non_private))
}

#[cfg(not(feature = "cuda"))]
fn gpu_timings<M: DpModel>(
    _: &BenchArgs,
    _: usize,
    _: &M,
    _: &Dataset<M::Input>,
    _: &[usize],
    _: usize,
) -> Result<DeviceTimings> {
    unreachable!("validate refuses --device cuda without the cuda feature")
}

/// The GPU's private and non-private timings (each step ends when the device has finished it): the
/// same batch gathered on the host and copied in, the model's device program, clip factors, noise drawn
/// on the device under a fresh key from a ChaCha20 stream, the update.
#[cfg(feature = "cuda")]
fn gpu_timings<M: DpModel>(
    args: &BenchArgs,
    ordinal: usize,
    initial: &M,
    data: &Dataset<M::Input>,
    indices: &[usize],
    warmup: usize,
) -> Result<DeviceTimings> {
    use dp_cuda::device::{Gpu, SgdStep};
    use dp_cuda::trainer::{Clipping, GpuModel};
    let gpu_error = |e: dp_cuda::CudaError| Error::Mismatch { model: M::NAME.into(), message: e.to_string() };
    let n = indices.len();
    let (mut inputs, mut labels) = (Vec::new(), Vec::new());
    let open = || -> Result<GpuModel<M>> {
        let gpu = Gpu::open(ordinal).map_err(gpu_error)?;
        GpuModel::<M>::with_precision(gpu, initial.params(), n, args.precision).map_err(gpu_error)
    };
    let finite = |model: &GpuModel<M>, what: &str| -> Result<()> {
        let params = model.params().map_err(gpu_error)?;
        check_finite(&M::from_params(params), what)
    };
    let mut name = String::new();
    // Plain SGD on the batch's mean; the private step adds its noise (n ≥ 1: batches are not empty).
    let sgd = SgdStep {
        noise_std: 0.0,
        inverse_batch: 1.0 / n as f64,
        lr: LEARNING_RATE,
        momentum: 0.0,
        weight_decay: 0.0,
        first: true,
        nesterov: false,
    };
    let clipping = Clipping { mode: ClipMode::Flat, norm: CLIP_NORM };
    let step = SgdStep { noise_std: NOISE_MULTIPLIER * CLIP_NORM, ..sgd };
    // The private step alone, its noise drawn beside the program (the default) and after it: two
    // models stepped in turn, so that both see the same clocks.
    let (private, private_noise_after) = match args.mode.private() {
        true => {
            let (mut beside, mut after) = (open()?, open()?);
            after.draw_noise_beside(false);
            name = format!("cuda:{ordinal} {}", beside.gpu().describe());
            let mut keys = dp_runtime::rng::seeded(1);
            let mut step_of = |model: &mut GpuModel<M>| -> Result<()> {
                data.gather(indices, &mut inputs, &mut labels);
                let mut key = [0u8; 32];
                keys.fill_bytes(&mut key);
                model.private_step(&inputs, &labels, n, clipping, &key, step).map_err(gpu_error)?;
                Ok(())
            };
            let (a, b) = time_steps_in_turn(warmup, args.steps, &mut beside, &mut after, &mut step_of)?;
            finite(&beside, "private")?;
            finite(&after, "private, noise after")?;
            (Some(a), Some(b))
        }
        false => (None, None),
    };
    // As the trainer runs it: step t queued, step t + 1's batch gathered and staged, step t awaited;
    // the next batch copied in beside the step (the default) and behind it, two models in turn.
    let (private_overlapped, private_copies_behind) = match args.mode.private() {
        true => {
            let (mut beside, mut behind) = (open()?, open()?);
            behind.copy_in_beside(false);
            let mut keys = dp_runtime::rng::seeded(1);
            data.gather(indices, &mut inputs, &mut labels);
            beside.stage_batch(&inputs, &labels, n).map_err(gpu_error)?;
            behind.stage_batch(&inputs, &labels, n).map_err(gpu_error)?;
            let mut step_of = |model: &mut GpuModel<M>| -> Result<()> {
                let mut key = [0u8; 32];
                keys.fill_bytes(&mut key);
                model.queue_private_step(clipping, &key, step).map_err(gpu_error)?;
                data.gather(indices, &mut inputs, &mut labels);
                let staged = model.stage_batch(&inputs, &labels, n).map_err(gpu_error);
                model.await_step().map_err(gpu_error)?;
                staged
            };
            // In blocks: behind, a step's copies in run after its await, so they are timed in the
            // model's next step; stepped in turn with the other model they would run in its step.
            let mut settle = |model: &mut GpuModel<M>| model.synchronize().map_err(gpu_error);
            let blocks = (warmup, args.steps, OVERLAP_BLOCK);
            let (a, b) = time_blocks_in_turn(blocks, &mut beside, &mut behind, &mut step_of, &mut settle)?;
            finite(&beside, "private, overlapped")?;
            finite(&behind, "private, overlapped, copies behind")?;
            (Some(a), Some(b))
        }
        false => (None, None),
    };
    let non_private = match args.mode.non_private() {
        true => {
            let mut model = open()?;
            name = format!("cuda:{ordinal} {}", model.gpu().describe());
            let mut losses = vec![0.0; n];
            let timing = time_steps(warmup, args.steps, || {
                data.gather(indices, &mut inputs, &mut labels);
                model.non_private_step(&inputs, &labels, n, sgd, &mut losses).map_err(gpu_error)?;
                Ok(())
            })?;
            finite(&model, "non-private")?;
            Some(timing)
        }
        false => None,
    };
    Ok(DeviceTimings {
        private,
        private_overlapped,
        private_noise_after,
        private_copies_behind,
        non_private,
        device: name,
    })
}

/// Consecutive steps of one model in `time_blocks_in_turn`'s blocks: each block's first step has no
/// copies queued behind a step before it, one step in this many.
#[cfg(feature = "cuda")]
const OVERLAP_BLOCK: usize = 10;

/// A device's timings, and the device's name.
struct DeviceTimings {
    private: Option<Timing>,
    private_overlapped: Option<Timing>,
    /// On a GPU: the private step with its noise drawn after the program on the one stream.
    private_noise_after: Option<Timing>,
    /// On a GPU: the overlapped step with the next batch copied in behind it.
    private_copies_behind: Option<Timing>,
    non_private: Option<Timing>,
    device: String,
}

/// Why model `M` has no device program, if it has none.
struct DeviceSupport;

impl ModelTask for DeviceSupport {
    type Output = Option<&'static str>;

    fn run<M: DpModel>(self, _: &'static str) -> Result<Option<&'static str>> {
        Ok(M::DEVICE_UNSUPPORTED)
    }
}

fn timings(args: &BenchArgs) -> Result<()> {
    let (names, batches): (Vec<&str>, Vec<usize>) = match &args.model {
        Some(name) => (vec![name.as_str()], vec![args.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)]),
        None => (MODEL_NAMES.to_vec(), args.batch_size.map_or(ALL_BATCH_SIZES.to_vec(), |b| vec![b])),
    };
    if args.all && !args.json {
        println!("{TABLE_HEADER}");
    }
    for name in names {
        if let (super::DeviceArg::Cuda(_), Some(reason)) = (args.device, with_model(name, DeviceSupport)?) {
            // A model without a device program is named with the reason, not measured on the CPU.
            if args.json {
                println!("{}", json!({"model": name, "device": args.device.name(), "skipped": reason}));
            } else if args.model.is_some() {
                return Err(Error::invalid("device", format!("{name} has no device program: {reason}")));
            } else {
                println!("| {name} | no device program: {reason} | | | | | | |");
            }
            continue;
        }
        for &batch in &batches {
            let measured = with_model(name, Measure { args, batch })?;
            if args.json {
                println!("{}", measured.to_json());
            } else if args.all {
                println!("{}", measured.to_row());
            } else {
                print!("{}", measured.to_text());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Largest batch for a memory budget

/// The memory a private step of model `M` needs, from the static plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepMemory {
    /// Bytes that grow with the batch: the workspace's per-example arena, the gathered inputs and labels,
    /// the loss, the squared norms and clip factors of each group, the batch index.
    pub per_example: u64,
    /// Bytes independent of the batch: the fixed arena and the per-task scratch of the current pool,
    /// parameters, clipped sum, synthetic examples.
    pub fixed: u64,
}

impl StepMemory {
    fn of<M: DpModel>(distinct_examples: usize) -> Self {
        let input = (M::input_len() * std::mem::size_of::<M::Input>()) as u64;
        let label = (M::LOSS.label_len() * 4) as u64;
        let per_example = (M::WORKSPACE_PER_EXAMPLE * 4) as u64
            + input
            + label
            + 4
            + (2 * M::GROUPS.len() * 4) as u64
            + std::mem::size_of::<usize>() as u64;
        let fixed = (Workspace::fixed_len::<M>() * 4) as u64
            + ((M::PARAM_COUNT + M::TRAINED_PARAM_COUNT) * 4) as u64
            + distinct_examples as u64 * (input + label);
        StepMemory { per_example, fixed }
    }

    /// The largest batch whose step fits `budget` bytes (0 when not even one example does).
    pub fn max_batch(self, budget: u64) -> u64 {
        budget.saturating_sub(self.fixed) / self.per_example.max(1)
    }
}

/// The largest batch that fits, and what one step at that size measured.
#[derive(Debug, Clone)]
pub struct MaxBatch {
    pub model: &'static str,
    pub budget: u64,
    pub memory: StepMemory,
    pub batch_size: u64,
    pub step_ms: f64,
    /// Growth of the resident set from before the step's buffers existed to the peak during the step.
    pub measured_bytes: Option<u64>,
}

struct FindMaxBatch {
    budget: u64,
}

impl ModelTask for FindMaxBatch {
    type Output = MaxBatch;

    fn run<M: DpModel>(self, name: &'static str) -> Result<MaxBatch> {
        let distinct = MAX_BATCH_DISTINCT_EXAMPLES;
        let memory = StepMemory::of::<M>(distinct);
        let batch = memory.max_batch(self.budget);
        if batch == 0 {
            return Err(Error::invalid(
                "memory_budget",
                format!(
                    "{} bytes do not hold one example of {name} ({} bytes fixed, {} per example)",
                    self.budget, memory.fixed, memory.per_example
                ),
            ));
        }
        let batch_usize = usize::try_from(batch).map_err(|_| Error::invalid("memory_budget", "too large"))?;
        // A small step first, so that code pages, thread stacks and the GEMM's scratch are resident
        // before the measured step and do not count against its budget.
        let warmup = synthetic_data::<M>(1)?;
        PrivateStep::new(M::init(&mut dp_runtime::rng::seeded(2)), 1, Precision::F32).run(&warmup, &[0])?;
        drop(warmup);
        reset_peak_rss();
        let before = resident_bytes();
        let data = synthetic_data::<M>(distinct.min(batch_usize))?;
        let indices = batch_indices(batch_usize, data.len());
        let mut step =
            PrivateStep::new(M::init(&mut dp_runtime::rng::seeded(2)), batch_usize, Precision::F32);
        let start = Instant::now();
        step.run(&data, &indices)?;
        let step_ms = start.elapsed().as_secs_f64() * 1e3;
        check_finite(&step.model, "private")?;
        let measured_bytes = match (before, peak_rss()) {
            (Some(b), Some(p)) => Some(p.saturating_sub(b)),
            _ => None,
        };
        Ok(MaxBatch { model: name, budget: self.budget, memory, batch_size: batch, step_ms, measured_bytes })
    }
}

fn max_batch(args: &BenchArgs) -> Result<()> {
    let budget = args.memory_budget.unwrap_or(DEFAULT_MEMORY_BUDGET);
    let names: Vec<&str> = args.model.as_deref().map_or(MODEL_NAMES.to_vec(), |n| vec![n]);
    for (i, name) in names.into_iter().enumerate() {
        let found = with_model(name, FindMaxBatch { budget })?;
        if i == 0 && !args.json {
            println!(
                "| model | memory budget | bytes/example | fixed bytes | largest batch | step ms | measured bytes |\n|---|---:|---:|---:|---:|---:|---:|"
            );
        }
        if args.json {
            let object = json!({
                "model": found.model,
                "memory_budget_bytes": found.budget,
                "bytes_per_example": found.memory.per_example,
                "fixed_bytes": found.memory.fixed,
                "max_batch_size": found.batch_size,
                "step_ms": found.step_ms,
                "measured_bytes": found.measured_bytes,
                "confirmed": found.measured_bytes.is_none_or(|m| m <= found.budget),
            });
            println!("{object}");
        } else {
            let measured = found.measured_bytes.map_or("-".to_string(), |m| m.to_string());
            println!(
                "| {} | {} | {} | {} | {} | {:.1} | {} |",
                found.model,
                found.budget,
                found.memory.per_example,
                found.memory.fixed,
                found.batch_size,
                found.step_ms,
                measured
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Peak GEMM throughput

/// Median GFLOP/s of `c = a·b` for square `n×n` f32 matrices through the project's GEMM wrapper.
pub fn gemm_gflops(n: usize, repeats: usize) -> f64 {
    let mut rng = dp_runtime::rng::seeded(3);
    let a: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut c = vec![0.0f32; n * n];
    sgemm(Op::N, Op::N, n, n, n, 1.0, &a, &b, 0.0, &mut c);
    let mut samples: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            sgemm(Op::N, Op::N, n, n, n, 1.0, &a, &b, 0.0, &mut c);
            start.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    2.0 * (n as f64).powi(3) / samples[samples.len() / 2] / 1e9
}

fn peak(args: &BenchArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    for &n in args.peak_sizes.as_deref().unwrap_or(&PEAK_SIZES) {
        // About a second of work per size at 100 GFLOP/s, at least three products.
        let repeats = ((1e11 / (2.0 * (n as f64).powi(3))) as usize).clamp(3, 200);
        let gflops = gemm_gflops(n, repeats);
        if args.json {
            println!(
                "{}",
                json!({ "gemm": "f32", "n": n, "threads": threads, "repeats": repeats, "gflops_per_s": gflops })
            );
        } else {
            println!("f32 GEMM {n}x{n}x{n}, {threads} threads: {gflops:.1} GFLOP/s (median of {repeats})");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Resident memory (Linux /proc; None elsewhere)

fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The peak resident set (VmHWM) since the last [`reset_peak_rss`].
fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

fn resident_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// Resets VmHWM to the current resident set, so each measurement reports its own peak (Linux ≥ 4.0;
/// where it fails the peak is the process's).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("8 parsecs").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn odd_and_even_medians() {
        assert_eq!(summarize(vec![3.0, 1.0, 2.0]), Timing { median: 2.0, min: 1.0, max: 3.0 });
        assert_eq!(summarize(vec![4.0, 1.0, 2.0, 10.0]), Timing { median: 3.0, min: 1.0, max: 10.0 });
        assert_eq!(summarize(vec![5.0]), Timing { median: 5.0, min: 5.0, max: 5.0 });
    }

    #[test]
    fn every_step_runs_and_errors_stop_the_timing() {
        let mut calls = 0;
        time_steps(2, 5, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 7);
        let failed = time_steps(1, 5, || Err(Error::invalid("x", "stop")));
        assert!(failed.is_err());
    }

    #[test]
    fn steps_in_turn_alternate_and_time_each_variant_apart() {
        // Each variant is a counter and a log of who stepped; b's steps take 2 ms longer.
        let order = std::cell::RefCell::new(Vec::new());
        let (mut a, mut b) = (('a', 0u32), ('b', 0u32));
        let mut step = |v: &mut (char, u32)| -> Result<()> {
            v.1 += 1;
            order.borrow_mut().push(v.0);
            if v.0 == 'b' {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(())
        };
        let (ta, tb) = time_steps_in_turn(2, 5, &mut a, &mut b, &mut step).unwrap();
        assert_eq!((a.1, b.1), (7, 7), "warm-up and timed steps of each");
        assert_eq!(order.borrow().iter().collect::<String>(), "ab".repeat(7));
        assert!(tb.min >= 2.0 && ta.median < tb.median, "each variant's own times: {ta:?} {tb:?}");
    }

    #[test]
    fn blocks_in_turn_alternate_blocks_and_settle_each_variant_after_its_block() {
        // A log of steps ('a', 'b') and settles ('A', 'B'); b's steps take 2 ms longer.
        let order = std::cell::RefCell::new(String::new());
        let (mut a, mut b) = ('a', 'b');
        let mut step = |v: &mut char| -> Result<()> {
            order.borrow_mut().push(*v);
            if *v == 'b' {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(())
        };
        let mut settle = |v: &mut char| -> Result<()> {
            order.borrow_mut().push(v.to_ascii_uppercase());
            Ok(())
        };
        let (ta, tb) = time_blocks_in_turn((2, 7, 3), &mut a, &mut b, &mut step, &mut settle).unwrap();
        // Warm-up of each, settled; then blocks of 3, 3 and the last 1 of each, each settled.
        assert_eq!(*order.borrow(), "aaAbbBaaaAbbbBaaaAbbbBaAbB");
        assert!(tb.min >= 2.0 && ta.median < tb.median, "each variant's own times: {ta:?} {tb:?}");
    }

    #[test]
    fn max_batch_is_the_largest_that_fits() {
        let memory = StepMemory { per_example: 100, fixed: 1000 };
        assert_eq!(memory.max_batch(1000), 0);
        assert_eq!(memory.max_batch(1099), 0);
        assert_eq!(memory.max_batch(1100), 1);
        assert_eq!(memory.max_batch(1_000_999), 9_999);
    }
}
