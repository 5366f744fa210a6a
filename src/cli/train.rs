//! `dp train`: DP-SGD (or, with `--non-private`, ordinary SGD for comparison) of a built-in model on
//! its real data, with a progress bar, one line (or with `--json` one JSON object on stdout) per
//! epoch, an optional checkpoint and an SVG plot of test accuracy and ε against epochs.

use std::path::PathBuf;
use std::time::Instant;

use crate::models::recipe::{schedule, Recipe};
use clap::{ArgGroup, Args, ValueEnum};
use dp_runtime::baseline::{self, BaselineConfig};
use dp_runtime::data::augment::Augmentation;
use dp_runtime::distributed::{self, Group, Shard};
use dp_runtime::optim::{Adam, Optimizer, Schedule, Sgd};
use dp_runtime::pretrained::{self, InitOptions, RenameMap};
use dp_runtime::trainer::EpochReport;
use dp_runtime::{checkpoint, lora, rng, DpModel, Error, Precision, Report, Result, Trainer};
use serde_json::json;

use super::datasets::{DataSource, NpyInput};
use super::mpi_world::{self, World};
use super::paths::{self, InputPath, OutputPath};
use super::plot;
use super::registry::{self, ModelEntry, ModelVisitor};

/// The momentum of `--optimizer momentum`: that of the recipes.
pub use crate::models::recipe::MOMENTUM;

/// The optimizers `dp train` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// SGD with momentum 0.9.
    Momentum,
    /// Adam (β = 0.9, 0.999; ε = 1e-8).
    Adam,
}

impl OptimizerKind {
    /// The optimizer with learning rate `lr` on `schedule`.
    pub fn build(self, lr: f64, schedule: Schedule) -> Box<dyn Optimizer> {
        match self {
            OptimizerKind::Sgd => Box::new(Sgd::new(lr).schedule(schedule)),
            OptimizerKind::Momentum => Box::new(Sgd::new(lr).momentum(MOMENTUM).schedule(schedule)),
            OptimizerKind::Adam => Box::new(Adam::new(lr).schedule(schedule)),
        }
    }

    /// `trainer` with this optimizer at learning rate `lr` on `schedule`.
    pub fn set<'m, M: DpModel>(self, trainer: Trainer<'m, M>, lr: f64, schedule: Schedule) -> Trainer<'m, M> {
        match self {
            OptimizerKind::Sgd => trainer.optimizer(Sgd::new(lr).schedule(schedule)),
            OptimizerKind::Momentum => trainer.optimizer(Sgd::new(lr).momentum(MOMENTUM).schedule(schedule)),
            OptimizerKind::Adam => trainer.optimizer(Adam::new(lr).schedule(schedule)),
        }
    }
}

/// Arguments of `dp train`. Hyperparameters not given come from the model's recommended recipe
/// (`dp models` prints them; `dp::models::recipe`).
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("privacy").required(true).args(["target_epsilon", "noise_multiplier", "non_private"])))]
pub struct TrainArgs {
    /// The model's command-line name (see `dp models`) [default: the model recommended for the kind
    /// of data at --data, which the output names].
    #[arg(long)]
    pub model: Option<String>,
    /// The model's data (see `dp models` for what each model reads).
    #[arg(long)]
    pub data: PathBuf,
    /// Train to this ε: the noise multiplier is calibrated for the whole plan.
    #[arg(long, allow_hyphen_values = true)]
    pub target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee; must be below 1/N unless --allow-large-delta.
    #[arg(long, default_value_t = 1e-5, allow_hyphen_values = true)]
    pub delta: f64,
    /// Accept δ ≥ 1/N, a guarantee that allows publishing a whole example.
    #[arg(long)]
    pub allow_large_delta: bool,
    /// Noise multiplier σ (noise standard deviation σ·C) instead of a target ε.
    #[arg(long, allow_hyphen_values = true)]
    pub noise_multiplier: Option<f64>,
    /// No privacy at all (no clipping, no noise, shuffled batches): a baseline for comparison.
    #[arg(long)]
    pub non_private: bool,
    /// Clip norm C of each example's gradient [default: the model's recipe].
    #[arg(long, allow_hyphen_values = true)]
    pub clip_norm: Option<f64>,
    /// Learning rate [default: the model's recipe; required with another --optimizer].
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// The learning rate decays along a cosine to this fraction of --lr (1: constant)
    /// [default: the model's recipe].
    #[arg(long, allow_hyphen_values = true)]
    pub final_lr_fraction: Option<f64>,
    /// Expected batch size B (Poisson sampling with rate B/N); the batch size of a non-private run
    /// [default: the model's recipe].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Epochs (may be fractional): round(epochs · N / B) steps [default: the model's recipe].
    #[arg(long, allow_hyphen_values = true)]
    pub epochs: Option<f64>,
    /// Evaluate and save an exponential moving average of the parameters with this decay, in [0, 1)
    /// (post-processing: no privacy cost; 0 turns it off) [default: the model's recipe].
    #[arg(long, allow_hyphen_values = true)]
    pub ema: Option<f64>,
    /// Augmentation multiplicity: average each example's gradient over this many random views of it
    /// (crops of --augment-crop, flips with --augment-flip) before clipping; the privacy cost is
    /// unchanged and the work per example grows about this many times. Image models only.
    #[arg(long, value_name = "K")]
    pub augment_views: Option<usize>,
    /// With --augment-views: each view is a crop of the image padded with this many zeros on every side.
    #[arg(long, requires = "augment_views", value_name = "PIXELS")]
    pub augment_crop: Option<usize>,
    /// With --augment-views: each view is mirrored left to right with probability 1/2 (for tasks where a
    /// mirrored image has the same label; not digits).
    #[arg(long, requires = "augment_views")]
    pub augment_flip: bool,
    /// The optimizer [default: momentum, as in every recipe].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Reproducible initialisation, sampling and noise. NOT PRIVATE (anyone with the seed can remove
    /// the noise): for tests only.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from pretrained weights: a safetensors file with PyTorch names, loaded strictly (every
    /// parameter present, no other tensor) unless --init-non-strict. The file must not depend on the
    /// training data: the guarantee treats it as public.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// With --init: parameters missing from the file keep their initial values and tensors the model
    /// does not have are ignored (both listed), as PyTorch's `strict=False`.
    #[arg(long, requires = "init")]
    pub init_non_strict: bool,
    /// With --init: rename the file's keys, `FROM=TO` on whole dot-separated components (`FROM=` drops
    /// the prefix); repeatable, the first matching rule wins.
    #[arg(long, requires = "init", value_name = "FROM=TO")]
    pub init_rename: Vec<String>,
    /// Write a checkpoint (safetensors, PyTorch names) here after every epoch; the plot goes beside it.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Continue the interrupted run whose checkpoint this is (same model, data and privacy plan);
    /// checkpoints go on being written to --save, or to this file without --save.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// At the end, also write the trained parameters with every LoRA layer merged into its base
    /// weight (`W + alpha/r · B A`, the adapters left out): what a plain PyTorch model loads. Only for
    /// models with `lora(...)` layers.
    #[arg(long, value_name = "FILE")]
    pub save_merged: Option<PathBuf>,
    /// Write the plot (SVG) here instead of beside the checkpoint.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// One JSON object per epoch on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also report training loss, training accuracy, non-finite gradient counts and realised batch
    /// sizes. These depend on the private data WITHOUT noise and are not covered by ε; every line and
    /// JSON object that carries them says so.
    #[arg(long)]
    pub non_private_diagnostics: bool,
    /// Stop after this many steps (e.g. in CI); the noise is still that of the whole plan.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// The precision of the forward's and backward's products: f32, or bf16 (operands rounded to
    /// bf16, f32 accumulation; on a GPU activations and output gradients are also stored in bf16; the
    /// per-example norms, clipped sums, noise and optimizer stay f32).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    pub precision: Precision,
    /// At most this many examples through the model at once: a larger Poisson batch is processed in
    /// chunks whose clipped sums are added before the noise (the step and its privacy unchanged). On
    /// a GPU this bounds the device arena (the memory that grows with the batch), whatever batch is sampled.
    #[arg(long, value_name = "N", conflicts_with = "non_private")]
    pub max_physical_batch: Option<usize>,
    /// Where the private steps run: cpu, cuda:N, or cuda (under mpirun each rank's
    /// cuda:(local rank mod GPUs on its node); alone, cuda:0) (a build with the `cuda` feature; models
    /// with a device program, SGD or Adam; docs/GPU.md). Evaluation runs the device's forward.
    #[arg(long, default_value = "cpu", value_parser = super::parse_device)]
    pub device: super::DeviceArg,
}

/// The hyperparameters of one run: the recipe, overridden by the flags given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Final fraction of the cosine decay (1: constant).
    pub final_lr_fraction: f64,
    /// Expected batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: f64,
    /// Clip norm.
    pub clip_norm: f64,
    /// Decay of the evaluated and saved parameter average (`None`: the raw parameters).
    pub ema_decay: Option<f64>,
    /// Augmentation multiplicity: views per example and how each is drawn.
    pub views: Option<(usize, Augmentation)>,
}

impl Settings {
    /// The learning-rate schedule: a cosine decay to `final_lr_fraction`, or constant at 1.
    pub fn schedule(&self) -> Schedule {
        schedule(self.final_lr_fraction)
    }
}

impl TrainArgs {
    /// Where the checkpoints go: `--save`, or the resumed checkpoint itself.
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.save.clone().or_else(|| self.resume.clone())
    }

    /// Where the plot goes: `--plot`, or the checkpoint's path with the extension `.svg`.
    pub fn plot_path(&self) -> Option<PathBuf> {
        self.plot.clone().or_else(|| self.checkpoint_path().map(|c| c.with_extension("svg")))
    }

    /// The run's hyperparameters: each flag given, else the model's recipe.
    pub fn settings(&self, recipe: &Recipe) -> Result<Settings> {
        let optimizer = self.optimizer.unwrap_or(OptimizerKind::Momentum);
        if optimizer != OptimizerKind::Momentum && self.lr.is_none() {
            return Err(Error::invalid(
                "lr",
                format!(
                    "is required with --optimizer {}: the recipe's learning rate {} is for SGD with momentum",
                    optimizer.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string()),
                    recipe.lr
                ),
            ));
        }
        let settings = Settings {
            optimizer,
            lr: self.lr.unwrap_or(recipe.lr),
            final_lr_fraction: self.final_lr_fraction.unwrap_or(recipe.final_lr_fraction),
            batch_size: self.batch_size.unwrap_or(recipe.batch_size),
            epochs: self.epochs.unwrap_or(recipe.epochs),
            clip_norm: self.clip_norm.unwrap_or(recipe.clip_norm),
            ema_decay: self.ema.or(recipe.ema_decay).filter(|&decay| decay != 0.0),
            views: self.views(recipe)?,
        };
        if let Some(decay) = settings.ema_decay {
            if !(0.0..1.0).contains(&decay) {
                return Err(Error::invalid("ema", format!("decay {decay} must be in [0, 1)")));
            }
        }
        if !(settings.lr > 0.0 && settings.lr.is_finite()) {
            return Err(Error::invalid("lr", format!("{} must be positive and finite", settings.lr)));
        }
        if !(settings.final_lr_fraction > 0.0 && settings.final_lr_fraction <= 1.0) {
            return Err(Error::invalid(
                "final_lr_fraction",
                format!("{} must be in (0, 1]", settings.final_lr_fraction),
            ));
        }
        if settings.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if !(settings.epochs > 0.0 && settings.epochs.is_finite()) {
            return Err(Error::invalid("epochs", format!("{} must be positive and finite", settings.epochs)));
        }
        let c = settings.clip_norm;
        if !(c > 0.0 && c.is_finite()) {
            return Err(Error::invalid("clip_norm", format!("{c} must be positive and finite")));
        }
        Ok(settings)
    }

    /// Augmentation multiplicity from --augment-views, --augment-crop and --augment-flip.
    /// The padding is black: 0, or for inputs the recipe standardises, black standardised.
    fn views(&self, recipe: &Recipe) -> Result<Option<(usize, Augmentation)>> {
        let Some(views) = self.augment_views else { return Ok(None) };
        let black = recipe.input_standardization.map_or(0.0, |s| (0.0 - s.mean) / s.std);
        let augmentation = Augmentation {
            crop_padding: self.augment_crop.unwrap_or(0),
            horizontal_flip: self.augment_flip,
            padding_value: black,
        };
        if views == 0 {
            return Err(Error::invalid("augment_views", "must be at least 1"));
        }
        if augmentation.crop_padding == 0 && !augmentation.horizontal_flip {
            return Err(Error::invalid(
                "augment_views",
                "without --augment-crop or --augment-flip every view is the image itself",
            ));
        }
        if self.non_private {
            return Err(Error::invalid(
                "augment_views",
                "averages gradients before the private trainer's clipping; --non-private does not clip",
            ));
        }
        Ok(Some((views, augmentation)))
    }

    /// Checks that need no model: step count, and every output path against the others and the inputs.
    fn check(&self) -> Result<()> {
        if self.max_steps == Some(0) {
            return Err(Error::invalid("max_steps", "must be at least 1"));
        }
        if let super::DeviceArg::Cuda(_) = self.device {
            if !cfg!(feature = "cuda") {
                return Err(Error::invalid(
                    "device",
                    "needs a dp built with the `cuda` feature (cargo build --release --features cuda)",
                ));
            }
        }
        if self.init.is_some() && self.resume.is_some() {
            return Err(Error::invalid(
                "init",
                "the resumed checkpoint holds the parameters; --init starts a new run",
            ));
        }
        if self.non_private && self.resume.is_some() {
            return Err(Error::invalid(
                "resume",
                "resumes a private run; --non-private writes no resumable state",
            ));
        }
        if self.non_private && self.ema.is_some() {
            return Err(Error::invalid(
                "ema",
                "averages the private trainer's parameters; --non-private keeps none",
            ));
        }
        let checkpoint_flag = if self.save.is_some() { "save" } else { "resume" };
        let mut outputs = Vec::new();
        if let Some(path) = self.checkpoint_path() {
            outputs.push(OutputPath { flag: checkpoint_flag, path });
        }
        if let Some(path) = self.plot_path() {
            let flag = if self.plot.is_some() { "plot" } else { checkpoint_flag };
            outputs.push(OutputPath { flag, path });
        }
        if let Some(path) = &self.save_merged {
            outputs.push(OutputPath { flag: "save_merged", path: path.clone() });
        }
        // The resumed checkpoint is read once before training and then replaced atomically: writing the
        // continued run's checkpoints over it is the point of --resume, so it is not listed as an input.
        let mut inputs = vec![InputPath { flag: "data", path: self.data.clone() }];
        if let Some(path) = &self.init {
            inputs.push(InputPath { flag: "init", path: path.clone() });
        }
        paths::check_outputs(&outputs, &inputs)
    }

    /// How --init is matched to the model.
    fn init_options(&self) -> Result<InitOptions> {
        let rules = self.init_rename.iter().map(|rule| ("init_rename".to_string(), rule.as_str()));
        Ok(InitOptions { strict: !self.init_non_strict, rename: RenameMap::parse(rules)? })
    }
}

/// The command-line flag of a trainer setting, for error messages.
fn flag_of(field: &str) -> &str {
    match field {
        "expected_batch_size" => "batch_size",
        "target_privacy" => "target_epsilon",
        "train" | "eval" => "data",
        "optimizer" => "lr",
        "checkpoint" => "save",
        "resume_from" => "resume",
        "non_private_diagnostics" => "non_private_diagnostics",
        "augmentation" | "augmentation_multiplicity" => "augment_views",
        other => other,
    }
}

fn with_flag(error: Error) -> Error {
    match error {
        Error::InvalidArgument { name, message } => {
            let flag = flag_of(&name).to_string();
            let message = if flag == name { message } else { format!("({name}) {message}") };
            Error::InvalidArgument { name: flag, message }
        }
        Error::Interrupted { steps, epsilon, delta, holds, source } => {
            Error::Interrupted { steps, epsilon, delta, holds, source: Box::new(with_flag(*source)) }
        }
        other => other,
    }
}

/// One epoch as `dp train --json` prints it: data-independent numbers and test-set metrics; the
/// training statistics only when diagnostics are on, under `diagnostics`, with `"not_private": true`
/// on the object itself as well.
pub fn epoch_json(epoch: &EpochReport, seconds: f64) -> serde_json::Value {
    let mut line = json!({
        "epoch": epoch.epoch,
        "test_loss": epoch.eval_loss,
        "accuracy": epoch.accuracy,
        "epsilon": epoch.epsilon.is_finite().then_some(epoch.epsilon),
        "steps": epoch.steps,
        "seconds": seconds,
    });
    if let Some(diagnostics) = &epoch.diagnostics {
        line["diagnostics"] = json!(diagnostics);
        line["not_private"] = json!(true);
    }
    line
}

struct Train(TrainArgs);

impl ModelVisitor for Train {
    type Output = Result<()>;
    fn visit<M, D>(self, entry: ModelEntry) -> Result<()>
    where
        M: DpModel,
        M::Input: NpyInput,
        D: DataSource<Input = M::Input>,
    {
        let args = self.0;
        let mut world = mpi_world::join()?;
        let outcome = train_model::<M, D>(&args, entry, world.as_mut());
        match (outcome, world) {
            (Ok(()), _) => Ok(()),
            (Err(error), None) => Err(error),
            (Err(error), Some(world)) => fail_rank(error, world),
        }
    }
}

/// How a rank of a distributed run ends on `error`. A failure every rank agreed on
/// ([`Error::RankFailed`]) is reported once, by rank 0; the other ranks exit with status 1 quietly.
/// Any other error happened on this rank alone (before training, or outside the collectives that
/// carry a failure): it is printed with the rank and the whole job is stopped (`MPI_Abort`), so that no
/// rank waits forever for this one.
fn fail_rank(error: Error, world: World) -> Result<()> {
    if world.size() == 1 {
        return Err(error);
    }
    let (message, code) = super::describe_error(&error);
    match (error.root(), world.rank()) {
        (Error::RankFailed { .. }, 0) => Err(error),
        (Error::RankFailed { .. }, _) => {
            world.finalize();
            std::process::exit(i32::from(code))
        }
        _ => {
            eprintln!("error: {}{}", mpi_world::rank_prefix(Some(&world)), message.replace('\n', " "));
            world.abort(i32::from(code))
        }
    }
}

/// `dp train` of model `M` on data `D`, as one process or, with `world`, as one rank of it.
fn train_model<M, D>(args: &TrainArgs, entry: ModelEntry, mut world: Option<&mut World>) -> Result<()>
where
    M: DpModel,
    M::Input: NpyInput,
    D: DataSource<Input = M::Input>,
{
    {
        mpi_world::refuse_flag(world.as_deref(), "non_private", args.non_private)?;
        if args.save_merged.is_some() && M::LORA.is_empty() {
            return Err(Error::invalid(
                "save_merged",
                format!("{} has no LoRA layers to merge (use --save)", entry.name),
            ));
        }
        let is_root = world.as_deref().is_none_or(|w| w.rank() == 0);
        let settings = args.settings(&entry.recipe)?;
        if let Some((_, augmentation)) = settings.views {
            augmentation.check_input(M::INPUT_SHAPE, M::VOCAB).map_err(with_flag)?;
        }
        let init_options = args.init_options()?;
        let started = Instant::now();
        let (mut train, mut test) = D::load::<M>(&args.data)?;
        if let Some(standardization) = entry.recipe.input_standardization {
            standardization.apply(&mut train)?;
            standardization.apply(&mut test)?;
            if is_root {
                eprintln!(
                    "inputs standardised with the public constants mean {} and std {} ({})",
                    standardization.mean, standardization.std, standardization.source
                );
            }
        }
        // Each rank keeps its contiguous shard of the training data; the test split is rank 0's.
        let (train, shard) = match world.as_deref() {
            Some(w) => {
                let range = distributed::shard_range(train.len(), w.rank(), w.size());
                let shard = Shard::of_rank(train.len(), w.rank(), w.size());
                (distributed::take_shard(&train, range)?, Some(shard))
            }
            None => (train, None),
        };
        let mut model = match args.seed {
            Some(seed) => M::init(&mut rng::seeded_init(seed)),
            None => M::init(&mut rng::from_os()?),
        };
        if let Some(path) = &args.init {
            let loaded = pretrained::init_from_file(&mut model, path, &init_options)?;
            if is_root {
                eprintln!("initialised from {}: {}", path.display(), loaded.summary());
            }
        }
        if is_root {
            eprintln!(
                "{} ({}, {}): {} training and {} test examples from {}{}",
                entry.name,
                M::NAME,
                dp_runtime::describe::parameter_summary(M::PARAM_COUNT, M::TRAINED_PARAM_COUNT),
                shard.map_or(train.len(), |s| s.global_examples),
                test.len(),
                args.data.display(),
                world.as_deref().map_or_else(String::new, |w| format!(", on {} MPI ranks", w.size()))
            );
        }
        let json = args.json;
        let print_epoch = |epoch: &EpochReport| {
            if json {
                println!("{}", epoch_json(epoch, started.elapsed().as_secs_f64()));
            }
        };
        let schedule = settings.schedule();
        let report = if args.non_private {
            let mut optimizer = settings.optimizer.build(settings.lr, schedule);
            let config = BaselineConfig {
                batch_size: settings.batch_size,
                epochs: settings.epochs,
                max_steps: args.max_steps,
                seed: args.seed,
                quiet: false,
                precision: args.precision,
            };
            let report = match args.device {
                super::DeviceArg::Cuda(ordinal) => non_private_on_gpu(
                    &mut model,
                    optimizer.as_mut(),
                    (&train, &test),
                    config,
                    print_epoch,
                    ordinal,
                ),
                super::DeviceArg::Cpu => baseline::fit_non_private(
                    &mut model,
                    optimizer.as_mut(),
                    &train,
                    &test,
                    config,
                    print_epoch,
                ),
            }
            .map_err(with_flag)?;
            if let Some(path) = &args.save {
                checkpoint::save_params(path, &model)?;
            }
            report
        } else {
            let trainer = settings.optimizer.set(Trainer::new(&mut model), settings.lr, schedule);
            let mut trainer = trainer
                .clip_norm(settings.clip_norm)
                .expected_batch_size(settings.batch_size)
                .epochs(settings.epochs)
                .delta(args.delta)
                .allow_large_delta(args.allow_large_delta)
                .non_private_diagnostics(args.non_private_diagnostics)
                .precision(args.precision)
                .on_epoch(print_epoch);
            trainer = match (args.target_epsilon, args.noise_multiplier) {
                (Some(epsilon), _) => trainer.target_privacy(epsilon, args.delta),
                (None, Some(sigma)) => trainer.noise_multiplier(sigma),
                (None, None) => {
                    return Err(Error::invalid(
                        "target_epsilon",
                        "give --target-epsilon or --noise-multiplier",
                    ))
                }
            };
            if let Some(seed) = args.seed {
                trainer = trainer.seed(seed);
            }
            if let Some(decay) = settings.ema_decay {
                trainer = trainer.ema(decay);
            }
            if let Some((views, augmentation)) = settings.views {
                if is_root {
                    eprintln!(
                        "augmentation multiplicity: {views} views per example (crop padding {} of value {}, {}), \
                         averaged before clipping",
                        augmentation.crop_padding,
                        augmentation.padding_value,
                        if augmentation.horizontal_flip { "horizontal flips" } else { "no flips" }
                    );
                }
                trainer = trainer.augmentation_multiplicity(views, augmentation);
            }
            if let Some(max) = args.max_steps {
                trainer = trainer.max_steps(max);
            }
            if let Some(examples) = args.max_physical_batch {
                trainer = trainer.max_physical_batch(examples);
            }
            if let Some(path) = &args.resume {
                trainer = trainer.resume_from(path);
            }
            if let Some(path) = args.checkpoint_path() {
                trainer = trainer.checkpoint(path);
            }
            if let (Some(w), Some(shard)) = (world.take(), shard) {
                trainer = trainer.distributed(w, shard);
            }
            if let super::DeviceArg::Cuda(ordinal) = args.device {
                // Poisson batches up to the expected size plus five standard deviations allocated
                // ahead; a larger one grows the device arena, up to the physical batch.
                let room = settings.batch_size + 5 * (settings.batch_size as f64).sqrt().ceil() as usize;
                let room = room.min(args.max_physical_batch.unwrap_or(usize::MAX)).max(1);
                trainer = on_gpu(trainer, ordinal, (room, args.precision))?;
            }
            trainer.fit(&train, Some(&test)).map_err(with_flag)?
        };
        if !is_root {
            // Rank 0 reports the run, which every rank trained.
            return Ok(());
        }
        let seconds = started.elapsed().as_secs_f64();
        if report.stopped_at_max_steps {
            eprintln!(
                "stopped after {} of {} planned steps (--max-steps {}); epsilon is that of the steps taken",
                report.steps,
                report.planned_steps,
                args.max_steps.unwrap_or(report.steps)
            );
        }
        if let Some(path) = &args.save_merged {
            lora::save_merged(path, &model)?;
            eprintln!("LoRA adapters merged into their base weights: {}", path.display());
        }
        if let Some(path) = args.plot_path() {
            plot::write_accuracy_epsilon(&path, &format!("{} ({})", entry.name, M::NAME), &report.epochs)?;
            eprintln!("plot written to {}", path.display());
        }
        if !args.json {
            println!("{}", summary(&report, seconds));
        }
        Ok(())
    }
}

/// The trainer with its private steps on GPU `ordinal` (see [`gpu_model`]), with room for batches of
/// `batch` examples in `precision`.
#[cfg(feature = "cuda")]
fn on_gpu<'m, M: DpModel>(
    trainer: Trainer<'m, M>,
    ordinal: Option<usize>,
    room: (usize, Precision),
) -> Result<Trainer<'m, M>> {
    Ok(trainer.device(gpu_model::<M>(ordinal, room, "private steps")?))
}

/// The non-private baseline with its steps on GPU `ordinal` (see [`gpu_model`]).
#[cfg(feature = "cuda")]
fn non_private_on_gpu<M: DpModel>(
    model: &mut M,
    optimizer: &mut dyn dp_runtime::optim::Optimizer,
    (train, test): (&dp_runtime::Dataset<M::Input>, &dp_runtime::Dataset<M::Input>),
    config: BaselineConfig,
    on_epoch: impl FnMut(&EpochReport),
    ordinal: Option<usize>,
) -> dp_runtime::Result<Report> {
    let mut device = gpu_model::<M>(ordinal, (config.batch_size, config.precision), "non-private steps")?;
    baseline::fit_non_private_on_device(model, optimizer, &mut device, train, test, config, on_epoch)
}

/// Model `M`'s training state on GPU `ordinal`, or for `None` this rank's
/// ([`gpu_of_local_rank`](super::gpu_of_local_rank)), with room for batches of `batch` examples in
/// `precision` (its memory allocated at that precision's size), for `what` (said on standard error
/// with the device).
#[cfg(feature = "cuda")]
fn gpu_model<M: DpModel>(
    ordinal: Option<usize>,
    (batch, precision): (usize, Precision),
    what: &str,
) -> Result<dp_cuda::trainer::GpuModel<M>> {
    use dp_cuda::device::{device_count, Gpu};
    use dp_cuda::trainer::GpuModel;
    let ordinal = ordinal
        .unwrap_or_else(|| super::gpu_of_local_rank(distributed::launcher_local_rank(), device_count()));
    let gpu = Gpu::open(ordinal).map_err(|e| Error::invalid("device", e.to_string()))?;
    // Placeholder values: the trainer uploads the model's parameters before the first step.
    let device = GpuModel::<M>::with_precision(gpu, &vec![0.0; M::PARAM_COUNT], batch, precision)
        .map_err(|e| Error::invalid("device", e.to_string()))?;
    eprintln!("{what} on cuda:{ordinal} {}", dp_runtime::device::DeviceTraining::<M>::describe(&device));
    Ok(device)
}

/// `--device cuda` without the `cuda` feature (`check` refuses it first).
#[cfg(not(feature = "cuda"))]
fn no_cuda() -> Error {
    Error::invalid(
        "device",
        "needs a dp built with the `cuda` feature (cargo build --release --features cuda)",
    )
}

#[cfg(not(feature = "cuda"))]
fn on_gpu<'m, M: DpModel>(
    _: Trainer<'m, M>,
    _: Option<usize>,
    _: (usize, Precision),
) -> Result<Trainer<'m, M>> {
    Err(no_cuda())
}

#[cfg(not(feature = "cuda"))]
fn non_private_on_gpu<M: DpModel>(
    _: &mut M,
    _: &mut dyn dp_runtime::optim::Optimizer,
    _: (&dp_runtime::Dataset<M::Input>, &dp_runtime::Dataset<M::Input>),
    _: BaselineConfig,
    _: impl FnMut(&EpochReport),
    _: Option<usize>,
) -> dp_runtime::Result<Report> {
    Err(no_cuda())
}

/// The closing line of `dp train`.
pub fn summary(report: &Report, seconds: f64) -> String {
    let privacy = if report.epsilon.is_finite() {
        format!(
            "epsilon {:.3} at delta {:e} (noise multiplier {:.4}, sampling rate {:.3e})",
            report.epsilon, report.delta, report.noise_multiplier, report.sampling_rate
        )
    } else {
        "no privacy (epsilon infinite)".to_string()
    };
    format!(
        "test accuracy {:.2}%, {privacy}, {} steps in {seconds:.1} s",
        report.accuracy * 100.0,
        report.steps
    )
}

/// Runs `dp train`.
pub fn run(args: TrainArgs) -> Result<()> {
    args.check()?;
    super::warn_if_bf16_is_emulated(args.precision, args.device);
    let model = match &args.model {
        Some(model) => model.clone(),
        None => {
            let recognised = registry::recommended_model(&args.data)?;
            eprintln!(
                "no --model: {} is {}, training the recommended model {} with its recipe",
                args.data.display(),
                recognised.kind,
                recognised.model
            );
            recognised.model.to_string()
        }
    };
    registry::dispatch(&model, Train(args))?
}
