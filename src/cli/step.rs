//! `dp step`: exactly one DP-SGD step on exactly the given examples, in PyTorch's conventions, so that
//! users (and our tests) can compare with PyTorch or JAX.
//!
//! For the N examples of `--inputs`/`--labels` and the weights W of `--init` (a safetensors state
//! dict): per-example gradients g_i of the per-example loss (not divided by N), norms ‖g_i‖ over all
//! parameters together, factors min(1, C/‖g_i‖), the clipped sum Σ_i c_i·g_i, plus N(0, (S·C)²) noise
//! per coordinate (none when S = 0), divided by N, and W − LR·g written to `--out` as exactly the
//! tensors of `--init` (LSTM biases as `bias_ih_l0` with `bias_hh_l0` zero; see
//! `dp_runtime::pytorch`). `--norms-out` writes the norms before clipping, f32 `[N]`.
//!
//! Nothing is written unless everything succeeded: outputs are computed first, then written through
//! temporary files renamed into place.

use std::path::PathBuf;

use clap::Args;
use dp_runtime::clipping::{clip_factors, ClipMode};
use dp_runtime::data::npy;
use dp_runtime::noise::GaussianNoise;
use dp_runtime::optim::{NoisyGradient, Optimizer, Sgd, StepInfo};
use dp_runtime::pytorch::{self, Layout};
use dp_runtime::{rng, Batch, DpModel, Error, Precision, Result, Workspace};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::datasets::{DataSource, NpyInput};
use super::paths::{self, InputPath, OutputPath};
use super::registry::{self, ModelEntry, ModelVisitor};

/// Arguments of `dp step`.
#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    /// The model's command-line name (see `dp models`).
    #[arg(long)]
    pub model: String,
    /// Initial weights: a safetensors file with the model's PyTorch state-dict tensors (F32).
    #[arg(long)]
    pub init: PathBuf,
    /// Inputs, `.npy`: f32 [N, C, H, W] images, f32 [N, features], or i64/i32 [N, T] token ids.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Labels, `.npy` of shape `[N]`: f32 0/1 for logreg, i64 class indices otherwise.
    #[arg(long)]
    pub labels: PathBuf,
    /// Clip norm C.
    #[arg(long, allow_hyphen_values = true)]
    pub clip_norm: f64,
    /// Learning rate of the plain SGD update W − LR·g.
    #[arg(long, allow_hyphen_values = true)]
    pub lr: f64,
    /// Noise multiplier S: N(0, (S·C)²) noise on the clipped sum. Required: write 0 for a step without
    /// noise (not private), so that no step is silently noiseless.
    #[arg(long, allow_hyphen_values = true)]
    pub noise_multiplier: f64,
    /// Seed of the noise (reproducible, NOT private); fresh randomness from the OS without it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to write the updated weights (safetensors, the tensors of --init).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the per-example gradient norms before clipping (f32 .npy of shape `[N]`).
    #[arg(long)]
    pub norms_out: Option<PathBuf>,
    /// The precision of the forward's and backward's products: f32, or bf16 (operands rounded to
    /// bf16, f32 accumulation; the norms, the clipped sum and the update stay f32).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    pub precision: Precision,
}

impl StepArgs {
    fn check(&self) -> Result<()> {
        if !(self.clip_norm > 0.0 && self.clip_norm.is_finite()) {
            return Err(Error::invalid(
                "clip_norm",
                format!("{} must be positive and finite", self.clip_norm),
            ));
        }
        if !self.lr.is_finite() {
            return Err(Error::invalid("lr", format!("{} must be finite", self.lr)));
        }
        if !(self.noise_multiplier >= 0.0 && self.noise_multiplier.is_finite()) {
            return Err(Error::invalid(
                "noise_multiplier",
                format!("{} must be zero or positive and finite", self.noise_multiplier),
            ));
        }
        let mut outputs = vec![OutputPath { flag: "out", path: self.out.clone() }];
        if let Some(path) = &self.norms_out {
            outputs.push(OutputPath { flag: "norms_out", path: path.clone() });
        }
        let inputs = [
            InputPath { flag: "init", path: self.init.clone() },
            InputPath { flag: "inputs", path: self.inputs.clone() },
            InputPath { flag: "labels", path: self.labels.clone() },
        ];
        paths::check_outputs(&outputs, &inputs)
    }
}

/// The results of one step, before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The updated flat parameter buffer.
    pub params: Vec<f32>,
    /// ‖g_i‖ before clipping, one per example.
    pub norms: Vec<f32>,
}

/// One DP-SGD step of model `M` at `params` on `inputs`/`labels` (`size` examples), as described in
/// the module docs. A non-finite gradient norm is an error naming the example.
pub fn dp_step<M: DpModel>(
    params: Vec<f32>,
    inputs: &[M::Input],
    labels: &[f32],
    size: usize,
    args: &StepArgs,
) -> Result<StepResult> {
    let model = M::from_params(params);
    let groups = M::GROUPS.len();
    let mut workspace = Workspace::new::<M>(size).with_precision(args.precision);
    let batch = Batch { inputs, labels, size };
    let mut losses = vec![0.0f32; size];
    let mut sq_norms = vec![0.0f32; size * groups];
    model.per_example_norms(&mut workspace, batch, &mut losses, &mut sq_norms);
    let norms: Vec<f32> = sq_norms
        .chunks_exact(groups)
        .map(|g| g.iter().map(|&s| s as f64).sum::<f64>().sqrt() as f32)
        .collect();
    if let Some(i) = norms.iter().position(|n| !n.is_finite()) {
        return Err(Error::Mismatch {
            model: M::NAME.to_string(),
            message: format!("example {i}: the gradient norm is {} (weights or inputs too large)", norms[i]),
        });
    }
    let mut factors = vec![0.0f32; size * groups];
    clip_factors(ClipMode::Flat, args.clip_norm, groups, &sq_norms, &mut factors)?;
    let mut sum = vec![0.0f32; M::TRAINED_PARAM_COUNT];
    model.clipped_sum(&mut workspace, batch, &factors, &mut sum);

    let mut params = model.params().to_vec();
    let mut noise = if args.noise_multiplier > 0.0 {
        let stream = match args.seed {
            // The noise domain of the seed, as in a seeded training run (not private either way).
            Some(seed) => ChaCha20Rng::from_seed(rng::derive_key(seed, rng::Domain::Noise, 0)),
            None => rng::from_os()?,
        };
        Some(GaussianNoise::new(stream))
    } else {
        None
    };
    let gradient =
        NoisyGradient::new(&sum, noise.as_mut(), args.noise_multiplier * args.clip_norm, size as f64);
    // Frozen parameters (after the trained prefix) are written back unchanged.
    Sgd::new(args.lr).step(
        &mut params[..M::TRAINED_PARAM_COUNT],
        gradient,
        StepInfo { step: 0, total_steps: 1 },
    );
    if let Some(i) = params.iter().position(|p| !p.is_finite()) {
        let spec = M::PARAMS.iter().find(|s| i >= s.offset && i < s.offset + s.len).map_or("?", |s| s.name);
        return Err(Error::invalid(
            "lr",
            format!("the update overflowed in {spec}: lower the learning rate"),
        ));
    }
    Ok(StepResult { params, norms })
}

struct Step(StepArgs);

impl ModelVisitor for Step {
    type Output = Result<()>;
    fn visit<M, D>(self, _entry: ModelEntry) -> Result<()>
    where
        M: DpModel,
        M::Input: NpyInput,
        D: DataSource<Input = M::Input>,
    {
        let args = self.0;
        let (params, dict) = pytorch::load::<M>(&args.init)?;
        let inputs = npy::read(&args.inputs)?;
        let labels = npy::read(&args.labels)?;
        let data = M::Input::dataset::<M>((&inputs, &args.inputs), (&labels, &args.labels))?;
        let result = dp_step::<M>(params, &data.inputs, &data.labels, data.len(), &args)?;

        let keys: Vec<String> = dict.tensors.iter().map(|t| t.name.clone()).collect();
        let tensors = Layout::of::<M>().export_keys(&result.params, &keys)?;
        if let Some(path) = &args.norms_out {
            npy::write_f32(path, &[result.norms.len()], &result.norms)?;
        }
        if let Err(error) = pytorch::write(&args.out, &tensors, &dict.metadata) {
            if let Some(path) = &args.norms_out {
                // Nothing half-written: the norms go with the weights or not at all.
                let _ = std::fs::remove_file(path);
            }
            return Err(error);
        }
        Ok(())
    }
}

/// Runs `dp step`.
pub fn run(args: StepArgs) -> Result<()> {
    args.check()?;
    super::warn_if_bf16_is_emulated(args.precision, super::DeviceArg::Cpu);
    let model = args.model.clone();
    let noiseless = args.noise_multiplier == 0.0;
    registry::dispatch(&model, Step(args))??;
    if noiseless {
        eprintln!(
            "warning: --noise-multiplier 0: this step added no noise and is NOT differentially private"
        );
    }
    Ok(())
}
