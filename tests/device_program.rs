//! The generated device programs, run on the host reference backend (`HostDevice`), against the CPU
//! program of the same model: losses, per-example squared norms, the clipped sum (an example with a
//! non-finite input and factor 0 contributing exactly nothing) and the plain gradient sum. This tests
//! the launch sequence the macro emits (offsets, shapes, transposes, pass order) on every run, with no
//! GPU; `tests/gpu_programs.rs` runs the same programs on a GPU.

use dp::clipping::{clip_factors, ClipMode};
use dp::device::host::HostDevice;
use dp::device::{
    DeviceError, DeviceOptimizer, DevicePrivateStep, DeviceStepOutcome, DeviceTraining, Region,
};
use dp::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, ResidualCnn, ScatterCnn,
    TextTransformer, TextTransformerLora,
};
use dp::noise::gaussian::{fill_chunk, FILL_CHUNK};
use dp::optim::{Adam, NoisyGradient, Optimizer, OptimizerState, Sgd, StepInfo};
use dp::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod dense_models;

use dense_models::activations_from_input::ActivationsFromInput;
use dense_models::image_activations_from_input::ImageActivationsFromInput;
use dense_models::norm_residual::NormResidual;
use dense_models::token_lora::TokenLora;
use dense_models::{
    batch, close, close_sum, cpu_reference, private_pass_on_host, token_batch, ActivatedOutput,
    CausalAttention, Deep, DenseAttention, DenseLstm, DepthwiseSeparable, GroupedConvs, LstmSequence,
    PatchFirst, PooledConv, SequenceLinear, SequenceNormGelu, SigmoidBce, SmallConv, SmallLstm,
    SmallLstmDirect, SmallLstmGhost, StackedAttention, TanhMse, TestInput, TokenBag, TokenMlp, TokenSeq,
    TokenSequenceLinear,
};

/// Batch sizes, each with or without a poisoned (NaN) first example.
const SIZES: &[(usize, bool)] = &[(1, false), (7, true), (33, false), (256, true)];

fn device_matches_cpu<M: DpModel>(seed: u64, sizes: &[(usize, bool)])
where
    M::Input: TestInput,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    for &(n, poison) in sizes {
        let poison = poison && M::Input::POISONS;
        let (inputs, labels) = batch::<M>(&mut rng, n, poison);
        batch_matches_cpu(&model, &inputs, &labels, n, poison);
    }
}

/// A model over a token sequence, its ids repeating within every example and, in a poisoned batch,
/// a NaN example though token ids cannot be NaN ([`token_batch`]).
fn token_sequence_matches_cpu<M: DpModel<Input = u32>>(seed: u64, sizes: &[(usize, bool)]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    for &(n, poison) in sizes {
        let (params, inputs, labels) = token_batch::<M>(&mut rng, model.params(), n, poison);
        batch_matches_cpu(&M::from_params(params), &inputs, &labels, n, poison);
    }
}

/// One batch through the device program on the host reference and through the CPU program.
fn batch_matches_cpu<M: DpModel>(model: &M, inputs: &[M::Input], labels: &[f32], n: usize, poison: bool)
where
    M::Input: TestInput,
{
    assert_eq!(M::DEVICE_UNSUPPORTED, None, "{} should have a device program", M::NAME);
    let groups = M::GROUPS.len();
    let cpu = cpu_reference(model, inputs, labels, n, 0.5);

    let mut dev = private_pass_on_host(model, Precision::F32, inputs, labels, &cpu.factors, n);
    let tag = |what: &str| format!("{} n={n} {what}", M::NAME);
    if poison {
        assert!(dev.get(Region::SqNorms)[..groups].iter().all(|v| v.is_nan()), "{}", tag("poisoned norm"));
        assert!(cpu.factors[..groups].iter().all(|&f| f == 0.0));
    }
    let finite = if poison { groups.. } else { 0.. };
    close(
        &tag("losses"),
        &dev.get(Region::Losses)[usize::from(poison)..],
        &cpu.losses[usize::from(poison)..],
        1e-5,
    );
    close(&tag("squared norms"), &dev.get(Region::SqNorms)[finite.clone()], &cpu.sq_norms[finite], 1e-4);
    assert!(dev.get(Region::Grad).iter().all(|v| v.is_finite()), "{}", tag("clipped sum finite"));
    close_sum(&tag("clipped sum"), dev.get(Region::Grad), &cpu.clipped_sum, 1e-4);

    if !poison {
        dev.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
        M::device_forward_backward(&mut dev, n).unwrap();
        M::device_gradient_sum(&mut dev, n).unwrap();
        close_sum(&tag("gradient sum"), dev.get(Region::Grad), &cpu.gradient_sum, 1e-4);
    }

    // The forward alone (evaluation), from an arena of garbage: the outputs where `device_outputs`
    // says, those of the CPU's forward (a poisoned example's NaN on both).
    dev.set(Region::Arena, vec![f32::NAN; M::DEVICE_ARENA_PER_EXAMPLE * n]);
    M::device_forward(&mut dev, n).unwrap();
    let outputs = dev.values(M::device_outputs(n).unwrap()).unwrap();
    let mut ws = dp::Workspace::new::<M>(n);
    let mut want = vec![0.0; n * M::LOSS.output_len()];
    model.forward(&mut ws, inputs, n, &mut want);
    let skip = if poison { M::LOSS.output_len() } else { 0 };
    if poison {
        assert!(outputs[..skip].iter().all(|v| v.is_nan()), "{}", tag("poisoned outputs"));
    }
    close_sum(&tag("outputs"), &outputs[skip..], &want[skip..], 1e-5);
}

#[test]
fn logreg_device_program_matches_the_cpu() {
    device_matches_cpu::<AdultLogReg>(1, SIZES);
}

#[test]
fn ffnn_device_program_matches_the_cpu() {
    device_matches_cpu::<AdultFfnn>(2, SIZES);
}

#[test]
fn flatten_tanh_mse_device_program_matches_the_cpu() {
    device_matches_cpu::<TanhMse>(3, SIZES);
}

#[test]
fn standalone_activations_device_program_matches_the_cpu() {
    device_matches_cpu::<SigmoidBce>(4, SIZES);
}

#[test]
fn deep_device_program_matches_the_cpu() {
    device_matches_cpu::<Deep>(5, SIZES);
}

#[test]
fn token_bag_device_program_matches_the_cpu() {
    device_matches_cpu::<TokenBag>(7, SIZES);
}

#[test]
fn embedding_model_device_program_matches_the_cpu() {
    device_matches_cpu::<EmbeddingNet>(8, SIZES);
}

#[test]
fn activated_output_device_program_matches_the_cpu() {
    device_matches_cpu::<ActivatedOutput>(6, SIZES);
}

#[test]
fn small_conv_device_program_matches_the_cpu() {
    device_matches_cpu::<SmallConv>(9, SIZES);
}

#[test]
fn pooled_conv_device_program_matches_the_cpu() {
    device_matches_cpu::<PooledConv>(10, SIZES);
}

#[test]
fn mnist_cnn_device_program_matches_the_cpu() {
    device_matches_cpu::<MnistCnn>(11, &[(1, false), (5, true), (40, false)]);
}

/// The plain loops of the host backend take about a second per CIFAR-10 example: two small batches.
#[test]
fn cifar10_cnn_device_program_matches_the_cpu() {
    device_matches_cpu::<Cifar10Cnn>(12, &[(1, false), (3, true)]);
}

#[test]
fn norm_residual_device_program_matches_the_cpu() {
    device_matches_cpu::<NormResidual>(13, SIZES);
}

#[test]
fn residual_cnn_device_program_matches_the_cpu() {
    device_matches_cpu::<ResidualCnn>(14, &[(1, false), (3, true)]);
}

#[test]
fn scatter_cnn_device_program_matches_the_cpu() {
    device_matches_cpu::<ScatterCnn>(15, &[(1, false), (5, true), (20, false)]);
}

#[test]
fn token_sequence_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<TokenSeq>(16, SIZES);
}

#[test]
fn small_lstm_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<SmallLstm>(17, SIZES);
}

#[test]
fn small_lstm_with_ghost_norms_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<SmallLstmGhost>(18, &[(1, false), (7, true), (40, false)]);
}

#[test]
fn small_lstm_with_direct_norms_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<SmallLstmDirect>(19, &[(1, false), (7, true), (40, false)]);
}

#[test]
fn lstm_without_a_mean_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<LstmSequence>(20, &[(1, false), (7, true), (40, false)]);
}

#[test]
fn lstm_on_a_dense_sequence_device_program_matches_the_cpu() {
    device_matches_cpu::<DenseLstm>(21, SIZES);
}

/// 256 steps of 100 units: the host loops take a while, so three small batches.
#[test]
fn lstm_model_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<LstmNet>(22, &[(1, false), (7, true), (12, false)]);
}

/// The text transformer (position embedding, two attention layers, layer norms over the sequence,
/// position-wise GELU layers, a mean) on tokens with repeated ids and a NaN example.
#[test]
fn text_transformer_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<TextTransformer>(40, &[(1, false), (3, true), (8, false)]);
}

/// The ViT (patches, position embedding, attention, layer norms, `first`).
#[test]
fn mnist_vit_device_program_matches_the_cpu() {
    device_matches_cpu::<dp::models::MnistVit>(41, &[(1, false), (3, true), (8, false)]);
}

/// The LoRA transformer (frozen embedding, position embedding, attention and layer norms; LoRA MLP
/// layers; a trained head), its B matrices moved off zero so that the adapters reach the output.
#[test]
fn text_transformer_lora_device_program_matches_the_cpu() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let params: Vec<f32> = TextTransformerLora::init(&mut rng)
        .params()
        .iter()
        .map(|p| p + rng.random_range(-0.05..0.05))
        .collect();
    for (n, poison) in [(1, false), (3, true)] {
        let (params, inputs, labels) = token_batch::<TextTransformerLora>(&mut rng, &params, n, poison);
        batch_matches_cpu(&TextTransformerLora::from_params(params), &inputs, &labels, n, poison);
    }
}

/// No step of a built-in model is refused a device program (grouped convs were the last; a GELU or
/// SiLU after a conv, norm or add is planned as its own step).
#[test]
fn every_built_in_model_has_a_device_program() {
    use dp::models::{MnistCnnTanh, MnistVit};
    let refused = [
        (AdultLogReg::NAME, AdultLogReg::DEVICE_UNSUPPORTED),
        (AdultFfnn::NAME, AdultFfnn::DEVICE_UNSUPPORTED),
        (MnistCnn::NAME, MnistCnn::DEVICE_UNSUPPORTED),
        (MnistCnnTanh::NAME, MnistCnnTanh::DEVICE_UNSUPPORTED),
        (Cifar10Cnn::NAME, Cifar10Cnn::DEVICE_UNSUPPORTED),
        (ScatterCnn::NAME, ScatterCnn::DEVICE_UNSUPPORTED),
        (ResidualCnn::NAME, ResidualCnn::DEVICE_UNSUPPORTED),
        (EmbeddingNet::NAME, EmbeddingNet::DEVICE_UNSUPPORTED),
        (LstmNet::NAME, LstmNet::DEVICE_UNSUPPORTED),
        (TextTransformer::NAME, TextTransformer::DEVICE_UNSUPPORTED),
        (TextTransformerLora::NAME, TextTransformerLora::DEVICE_UNSUPPORTED),
        (MnistVit::NAME, MnistVit::DEVICE_UNSUPPORTED),
    ];
    for (name, reason) in refused {
        assert_eq!(reason, None, "{name}");
    }
}

/// A model's training state on the host reference backend: the device program for the model's
/// passes, the CPU's clip factors, chunked noise under the step's key and, for the update, the CPU's
/// optimizer that the step's description names, built with its settings at each step (so a schedule's
/// learning rate is the step's) from the state the last step left. It lets `Trainer::device` be
/// tested end to end without a GPU.
struct HostTraining<M: DpModel> {
    dev: HostDevice,
    /// The optimizer's state between steps, in the checkpoint format.
    state: OptimizerState,
    steps: u64,
    /// The moving average of the parameters, once started.
    average: Vec<f32>,
    /// A device error injected at one step (0-based), to test how a distributed run stops.
    fault: Option<(Fault, u64)>,
    /// The last step's views per example (`None`: a step without views) and, if it kept them
    /// (`keep_losses`), each view's loss and each example's clip factors.
    last_views: Option<(usize, Option<KeptLosses>)>,
    /// The batch staged for the next private step: inputs, labels, examples.
    staged: Option<(Vec<M::Input>, Vec<f32>, usize)>,
    /// The outcome of the queued step, until it is finished, and a non-private step's losses (or a
    /// rank's clipped sum).
    queued: Option<DeviceStepOutcome>,
    queued_values: Vec<f32>,
    /// The staging, queueing and finishing of private steps, in the order the trainer called them
    /// (shared, to be read after the trainer has taken the training state).
    calls: std::sync::Arc<std::sync::Mutex<Vec<Call>>>,
    model: std::marker::PhantomData<M>,
}

/// A call of the split private step, as [`HostTraining`] logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// A batch staged, of this many examples.
    Stage(usize),
    Queue,
    Finish,
    /// Outputs of this many examples asked for (evaluation).
    Evaluate(usize),
}

/// Each view's loss and each example's clip factors, kept by a step with views.
type KeptLosses = (Vec<f32>, Vec<f32>);

/// Where [`HostTraining`] injects a device error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ClippedSum,
    Update,
    /// In the first evaluation after that step.
    Evaluate,
}

impl<M: DpModel> HostTraining<M> {
    /// A step queued: logged, refused while another is queued, on the staged batch.
    #[allow(clippy::type_complexity)]
    fn take_staged(&mut self) -> Result<(Vec<M::Input>, Vec<f32>, usize), DeviceError> {
        self.calls.lock().unwrap().push(Call::Queue);
        if self.queued.is_some() {
            return Err(DeviceError::Mismatch("a step queued before the last was finished".into()));
        }
        self.staged.take().ok_or_else(|| DeviceError::Mismatch("a step with no batch staged".into()))
    }

    /// A queued step finished: logged, its outcome (refused when none is queued).
    fn take_queued(&mut self) -> Result<DeviceStepOutcome, DeviceError> {
        self.calls.lock().unwrap().push(Call::Finish);
        self.queued.take().ok_or_else(|| DeviceError::Mismatch("no step queued".into()))
    }

    /// A training state whose device stores its activations and output gradients in bf16 when the
    /// trainer sets bf16 (`HostDevice::set_bf16_storage`).
    fn storing_bf16() -> Self {
        let mut training = HostTraining::new();
        training.dev.set_bf16_storage(true);
        training
    }

    fn new() -> Self {
        HostTraining {
            dev: HostDevice::new(),
            state: OptimizerState { kind: "sgd".into(), updates: 0, buffers: Vec::new() },
            steps: 0,
            average: Vec::new(),
            fault: None,
            last_views: None,
            staged: None,
            queued: None,
            queued_values: Vec::new(),
            calls: Default::default(),
            model: std::marker::PhantomData,
        }
    }
}

/// The CPU optimizer a device's step describes, with that step's settings.
fn optimizer_of(described: DeviceOptimizer) -> Box<dyn Optimizer> {
    match described {
        DeviceOptimizer::Sgd(s) => {
            Box::new(Sgd::new(s.lr).momentum(s.momentum).nesterov(s.nesterov).weight_decay(s.weight_decay))
        }
        DeviceOptimizer::Adam(a) => {
            let adam = match a.decoupled {
                true => Adam::adamw(a.lr, a.weight_decay),
                false => Adam::new(a.lr).weight_decay(a.weight_decay),
            };
            Box::new(adam.betas(a.beta1, a.beta2).eps(a.eps))
        }
    }
}

impl<M: DpModel> DeviceTraining<M> for HostTraining<M>
where
    M::Input: TestInput,
{
    fn describe(&self) -> String {
        "host reference".into()
    }

    fn set_precision(&mut self, precision: Precision) -> Result<(), DeviceError> {
        self.dev.set_precision(precision);
        Ok(())
    }

    fn upload(&mut self, params: &[f32]) -> Result<(), DeviceError> {
        self.dev.set(Region::Params, params.to_vec());
        Ok(())
    }

    fn download(&mut self, params: &mut [f32]) -> Result<(), DeviceError> {
        params.copy_from_slice(self.dev.get(Region::Params));
        Ok(())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState, DeviceError> {
        Ok(self.state.clone())
    }

    fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), DeviceError> {
        self.state = state.clone();
        Ok(())
    }

    fn start_average(&mut self) -> Result<(), DeviceError> {
        self.average = self.dev.get(Region::Params).to_vec();
        Ok(())
    }

    fn fold_average(&mut self, decay: f64) -> Result<(), DeviceError> {
        for (a, &p) in self.average.iter_mut().zip(self.dev.get(Region::Params)) {
            *a = dp::trainer::ema::fold(*a, p, decay);
        }
        Ok(())
    }

    fn download_average(&mut self, average: &mut [f32]) -> Result<(), DeviceError> {
        average.copy_from_slice(&self.average);
        Ok(())
    }

    fn last_losses_and_factors(
        &mut self,
        n: usize,
        views: usize,
        losses: &mut [f32],
        factors: &mut [f32],
    ) -> Result<(), DeviceError> {
        let groups = M::GROUPS.len();
        match &self.last_views {
            None if views == 1 => {
                losses.copy_from_slice(&self.dev.get(Region::Losses)[..n]);
                factors.copy_from_slice(&self.dev.get(Region::Factors)[..n * groups]);
            }
            Some((last, Some((kept_losses, kept_factors)))) if *last == views => {
                losses.copy_from_slice(&kept_losses[..n * views]);
                factors.copy_from_slice(&kept_factors[..n * groups]);
            }
            _ => return Err(DeviceError::Mismatch(format!("no losses of {views} views kept"))),
        }
        Ok(())
    }

    /// The device program's forward alone, the arena NaN first (it must write what it reads), the
    /// outputs read as stored.
    fn outputs(&mut self, inputs: &[M::Input], n: usize, outputs: &mut [f32]) -> Result<(), DeviceError> {
        self.calls.lock().unwrap().push(Call::Evaluate(n));
        if matches!(self.fault, Some((Fault::Evaluate, step)) if self.steps >= step) {
            return Err(DeviceError::Backend(format!(
                "injected fault in the evaluation after step {}",
                self.steps
            )));
        }
        let d = &mut self.dev;
        d.set(Region::Arena, vec![f32::NAN; M::DEVICE_ARENA_PER_EXAMPLE * n]);
        TestInput::load(d, inputs);
        if n > 0 {
            M::device_forward(d, n)?;
            outputs.copy_from_slice(&d.values(M::device_outputs(n)?)?);
        }
        Ok(())
    }

    /// Kept on the host until the step is queued: the regions keep the last step's losses and
    /// factors, as a GPU's do while the next batch is copied in behind the step.
    fn stage_batch(&mut self, inputs: &[M::Input], labels: &[f32], n: usize) -> Result<(), DeviceError> {
        self.calls.lock().unwrap().push(Call::Stage(n));
        self.staged = Some((inputs.to_vec(), labels.to_vec(), n));
        Ok(())
    }

    fn queue_private_step(&mut self, step: &DevicePrivateStep) -> Result<(), DeviceError> {
        let (inputs, labels, n) = self.take_staged()?;
        self.last_views = None;
        let bad = self.clipped_sum_on_device(&inputs, &labels, n, step.clip_mode, step.clip_norm)?;
        self.queued = Some(self.noisy_update(step, bad)?);
        Ok(())
    }

    fn finish_private_step(&mut self) -> Result<DeviceStepOutcome, DeviceError> {
        self.take_queued()
    }

    fn queue_non_private_step(&mut self, optimizer: &DeviceOptimizer) -> Result<(), DeviceError> {
        let (inputs, labels, n) = self.take_staged()?;
        let d = &mut self.dev;
        Self::load_batch(d, &inputs, &labels, n);
        if n > 0 {
            M::device_forward_backward(d, n)?;
            M::device_gradient_sum(d, n)?;
        }
        self.queued_values = d.get(Region::Losses).to_vec();
        let sum = d.get(Region::Grad).to_vec();
        let overflowed = self.update(NoisyGradient::new(&sum, None, 0.0, n as f64), *optimizer)?;
        self.queued = Some(DeviceStepOutcome { non_finite_examples: 0, overflowed });
        Ok(())
    }

    fn finish_non_private_step(&mut self, losses: &mut [f32]) -> Result<DeviceStepOutcome, DeviceError> {
        let outcome = self.take_queued()?;
        if losses.len() != self.queued_values.len() {
            return Err(DeviceError::Mismatch("losses of another batch size".into()));
        }
        losses.copy_from_slice(&self.queued_values);
        Ok(outcome)
    }

    fn private_step_with_views(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        step: &DevicePrivateStep,
    ) -> Result<DeviceStepOutcome, DeviceError> {
        let bad = self.clipped_sum_of_averages(inputs, labels, n, views, (step.clip_mode, step.clip_norm))?;
        if let Some((_, kept)) = &mut self.last_views {
            if !step.keep_losses {
                *kept = None;
            }
        }
        self.noisy_update(step, bad)
    }

    fn queue_clipped_sum(
        &mut self,
        clip_mode: dp::clipping::ClipMode,
        clip_norm: f64,
    ) -> Result<(), DeviceError> {
        let (inputs, labels, n) = self.take_staged()?;
        if self.fault == Some((Fault::ClippedSum, self.steps)) {
            return Err(DeviceError::Backend(format!(
                "injected fault in the clipped sum of step {}",
                self.steps
            )));
        }
        let bad = self.clipped_sum_on_device(&inputs, &labels, n, clip_mode, clip_norm)?;
        self.queued_values = self.dev.get(Region::Grad).to_vec();
        self.queued = Some(DeviceStepOutcome { non_finite_examples: bad, overflowed: false });
        Ok(())
    }

    fn finish_clipped_sum(&mut self, sum: &mut [f32]) -> Result<usize, DeviceError> {
        let outcome = self.take_queued()?;
        sum.copy_from_slice(&self.queued_values);
        Ok(outcome.non_finite_examples)
    }

    fn clipped_sum_with_views_to_host(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        clip_mode: dp::clipping::ClipMode,
        clip_norm: f64,
        sum: &mut [f32],
    ) -> Result<usize, DeviceError> {
        let bad = self.clipped_sum_of_averages(inputs, labels, n, views, (clip_mode, clip_norm))?;
        sum.copy_from_slice(self.dev.get(Region::Grad));
        Ok(bad)
    }

    fn released_update(
        &mut self,
        released: &[f64],
        normaliser: f64,
        optimizer: DeviceOptimizer,
    ) -> Result<bool, DeviceError> {
        if self.fault == Some((Fault::Update, self.steps)) {
            return Err(DeviceError::Backend(format!("injected fault in the update of step {}", self.steps)));
        }
        self.update(NoisyGradient::released(released, normaliser), optimizer)
    }
}

impl<M: DpModel> HostTraining<M>
where
    M::Input: TestInput,
{
    /// A batch of `n` examples copied in, the arena and the losses NaN (the program must write what it
    /// reads) and the gradient zero.
    fn load_batch(d: &mut HostDevice, inputs: &[M::Input], labels: &[f32], n: usize) {
        d.set(Region::Arena, vec![f32::NAN; M::DEVICE_ARENA_PER_EXAMPLE * n]);
        TestInput::load(d, inputs);
        d.set(Region::Labels, labels.to_vec());
        d.set(Region::Losses, vec![f32::NAN; n]);
        d.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
    }

    /// The device program's norms and clipped sum of `n` examples, with the CPU's clip factors: the
    /// sum in `Region::Grad`; the examples whose norm was not finite.
    fn clipped_sum_on_device(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        clip_mode: dp::clipping::ClipMode,
        clip_norm: f64,
    ) -> Result<usize, DeviceError> {
        let groups = M::GROUPS.len();
        let d = &mut self.dev;
        Self::load_batch(d, inputs, labels, n);
        d.set(Region::SqNorms, vec![0.0; n * groups]);
        let mut factors = vec![0.0; n * groups];
        if n > 0 {
            M::device_forward_backward(d, n)?;
            M::device_norms(d, n)?;
        }
        let bad = clip_factors(clip_mode, clip_norm, groups, d.get(Region::SqNorms), &mut factors).unwrap();
        d.set(Region::Factors, factors);
        if n > 0 {
            M::device_clipped_sum(d, n)?;
        }
        Ok(bad)
    }

    /// The CPU optimizer `described` names, from the state the last update left, applied to the
    /// trained parameters with `gradient`; whether it overflowed (the parameters are then kept).
    fn update(
        &mut self,
        gradient: NoisyGradient<'_>,
        described: DeviceOptimizer,
    ) -> Result<bool, DeviceError> {
        let len = M::TRAINED_PARAM_COUNT;
        let mut optimizer = optimizer_of(described);
        let state = std::mem::take(&mut self.state);
        optimizer.load_state(state, len).map_err(|e| DeviceError::Backend(e.to_string()))?;
        let mut params = self.dev.get(Region::Params).to_vec();
        optimizer.step(&mut params[..len], gradient, StepInfo { step: self.steps, total_steps: u64::MAX });
        self.state = optimizer.state();
        self.steps += 1;
        let overflowed = params.iter().any(|p| !p.is_finite());
        if !overflowed {
            self.dev.set(Region::Params, params);
        }
        Ok(overflowed)
    }
}

/// Trains `Deep` seeded alike on the CPU and on the host training state, each trainer set up further
/// by `configure` (its optimizer and length); the initial model, the two trained models and reports.
/// The first of the 600 examples is NaN: whenever it is sampled it contributes nothing on either.
fn train_on_both(
    seed: u64,
    configure: impl for<'m> Fn(dp::Trainer<'m, Deep>) -> dp::Trainer<'m, Deep>,
) -> (Deep, Deep, Deep, dp::Report, dp::Report) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (inputs, labels) = batch::<Deep>(&mut rng, 600, true);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng);
    let (cpu, dev, cpu_report, dev_report) = fit_on_both(&data, &initial, |t| {
        configure(t.clip_norm(1.0).noise_multiplier(0.8).expected_batch_size(64).seed(3))
    });
    (initial, cpu, dev, cpu_report, dev_report)
}

/// `M` from `initial` trained on `data` (and evaluated on it) by the trainer `configure` sets up, on
/// the CPU and on the host training state: the two trained models and their reports.
fn fit_on_both<M: DpModel>(
    data: &dp::Dataset<M::Input>,
    initial: &M,
    configure: impl for<'m> Fn(dp::Trainer<'m, M>) -> dp::Trainer<'m, M>,
) -> (M, M, dp::Report, dp::Report)
where
    M::Input: TestInput,
{
    let train = |device: bool| {
        let mut model = M::from_params(initial.params().to_vec());
        let trainer = configure(dp::Trainer::new(&mut model).allow_large_delta(true).quiet(true));
        let report = match device {
            true => trainer.device(HostTraining::<M>::new()).fit(data, Some(data)),
            false => trainer.fit(data, Some(data)),
        }
        .unwrap();
        (model, report)
    };
    let (cpu, cpu_report) = train(false);
    let (dev, dev_report) = train(true);
    (cpu, dev, cpu_report, dev_report)
}

/// `Trainer::device` end to end on the host reference backend: seeded alike, it takes the same
/// batches and noise keys as the trainer on the CPU, so it ends at the same parameters (to rounding),
/// ε and accuracy.
#[test]
fn a_trainer_on_a_device_follows_the_trainer_on_the_cpu() {
    let (initial, cpu, dev, cpu_report, dev_report) =
        train_on_both(41, |t| t.optimizer(Sgd::new(0.5).momentum(0.9)).steps(20));
    assert_eq!((dev_report.steps, dev_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
    let diff = largest_difference(dev.params(), cpu.params());
    let moved = largest_difference(cpu.params(), initial.params());
    assert!(moved > 0.01, "training moved the parameters by {moved}");
    assert!(diff <= 1e-4 * moved.max(1.0), "device and CPU trainers differ by {diff} (moved {moved})");
    assert!((dev_report.accuracy - cpu_report.accuracy).abs() <= 0.01);
}

/// The trainer overlaps its own work with a device's step: it queues a step, then samples, gathers
/// and stages the next step's batch, and only then waits for the step; across an epoch's end too,
/// and not past the run's last step (a run stopped mid-epoch included). The batches so drawn are the
/// CPU trainer's: the parameters follow it.
#[test]
fn a_trainer_stages_the_next_batch_while_a_device_step_runs() {
    for max_steps in [None, Some(6)] {
        let mut rng = ChaCha8Rng::seed_from_u64(50);
        let (inputs, labels) = batch::<Deep>(&mut rng, 300, true);
        let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
        let initial = Deep::init(&mut rng);
        fn configure(t: dp::Trainer<'_, Deep>, max_steps: Option<u64>) -> dp::Trainer<'_, Deep> {
            let t = t.clip_norm(1.0).noise_multiplier(0.8).expected_batch_size(64).seed(3);
            let t = t.optimizer(Sgd::new(0.5).momentum(0.9)).epochs(2).allow_large_delta(true).quiet(true);
            match max_steps {
                Some(steps) => t.max_steps(steps),
                None => t,
            }
        }
        let mut cpu = Deep::from_params(initial.params().to_vec());
        let cpu_report = configure(dp::Trainer::new(&mut cpu), max_steps).fit(&data, None).unwrap();
        let training = HostTraining::<Deep>::new();
        let calls = training.calls.clone();
        let mut dev = Deep::from_params(initial.params().to_vec());
        let dev_report =
            configure(dp::Trainer::new(&mut dev), max_steps).device(training).fit(&data, None).unwrap();
        assert_eq!(dev_report.steps, cpu_report.steps);
        let diff = largest_difference(dev.params(), cpu.params());
        assert!(diff <= 1e-5, "{max_steps:?}: the device's trainer differs from the CPU's by {diff}");

        let calls = calls.lock().unwrap().clone();
        // Two epochs of about 4.7 steps: a run stopped at 6 stops in the second.
        assert_eq!(dev_report.steps, max_steps.unwrap_or(9), "steps");
        let sizes = assert_overlapped(&calls, dev_report.steps as usize);
        assert!(sizes.iter().any(|&n| n != sizes[0]), "Poisson batches vary: {sizes:?}");
    }
}

/// That `calls` are `steps` steps each overlapped with staging the next batch: the first batch
/// staged, then per step its queue, the next batch staged (but after the last step), its finish.
/// Returns the staged batches' sizes, in order.
fn assert_overlapped(calls: &[Call], steps: usize) -> Vec<usize> {
    let sizes = assert_pipelined(calls);
    assert_eq!(sizes.len(), steps, "{calls:?}");
    sizes
}

/// That each batch (or chunk) `calls` queue was staged while the one before it ran: the first
/// staged, then per batch its queue, the next staged (but after the last), its finish. Returns the
/// staged sizes, in order, each positive.
fn assert_pipelined(calls: &[Call]) -> Vec<usize> {
    // Evaluations come between steps, never while one is queued; the rest is the steps'.
    let mut queued = false;
    for call in calls {
        match call {
            Call::Queue => queued = true,
            Call::Finish => queued = false,
            Call::Evaluate(_) => assert!(!queued, "an evaluation while a step was queued: {calls:?}"),
            Call::Stage(_) => {}
        }
    }
    let calls: Vec<Call> = calls.iter().filter(|c| !matches!(c, Call::Evaluate(_))).copied().collect();
    let calls = calls.as_slice();
    let sizes: Vec<_> =
        calls.iter().filter_map(|c| if let Call::Stage(n) = c { Some(*n) } else { None }).collect();
    assert!(!sizes.is_empty(), "{calls:?}");
    let mut expected = vec![Call::Stage(sizes[0])];
    for next in sizes.iter().skip(1).map(Some).chain([None]) {
        expected.push(Call::Queue);
        if let Some(&n) = next {
            expected.push(Call::Stage(n));
        }
        expected.push(Call::Finish);
    }
    assert_eq!(calls, expected);
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    sizes
}

/// A Poisson batch larger than `Trainer::max_physical_batch` runs on a device in chunks: none staged
/// larger than the bound, each staged while the one before it runs (the next step's first chunk
/// during a step's last), the same examples as the run in one piece. The chunks' clipped sums are
/// added on the host and the step's normals drawn there from its key, so the run ends where the same
/// run in one piece ends (to rounding: a different noise would move it by far more) and where the
/// CPU's run with the same bound does, with the same ε, and the same diagnostics read back chunk by
/// chunk. A bound of 0, or one below a device's views per example, is refused.
#[test]
fn a_device_runs_batches_larger_than_the_physical_batch_in_chunks() {
    let mut rng = ChaCha8Rng::seed_from_u64(53);
    let (inputs, labels) = batch::<Deep>(&mut rng, 600, true);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng);
    fn configure(t: dp::Trainer<'_, Deep>) -> dp::Trainer<'_, Deep> {
        t.clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(64)
            .seed(3)
            .optimizer(Sgd::new(0.5).momentum(0.9))
            .epochs(2)
            .non_private_diagnostics(true)
            .allow_large_delta(true)
            .quiet(true)
    }
    let on_device = |physical: Option<usize>| {
        let training = HostTraining::<Deep>::new();
        let calls = training.calls.clone();
        let mut model = Deep::from_params(initial.params().to_vec());
        let trainer = configure(dp::Trainer::new(&mut model)).device(training);
        let trainer = match physical {
            Some(examples) => trainer.max_physical_batch(examples),
            None => trainer,
        };
        let report = trainer.fit(&data, None).unwrap();
        let calls = calls.lock().unwrap().clone();
        (model, report, calls)
    };
    let (whole, whole_report, whole_calls) = on_device(None);
    let whole_sizes = assert_overlapped(&whole_calls, whole_report.steps as usize);
    let moved = largest_difference(whole.params(), initial.params());
    assert!(moved > 0.01, "training moved the parameters by {moved}");
    // 66: the batches (about 64) in one piece or in two, in turn.
    for physical in [16, 23, 66] {
        let (chunked, report, calls) = on_device(Some(physical));
        let sizes = assert_pipelined(&calls);
        assert!(sizes.iter().all(|&n| n <= physical), "{physical}: chunks {sizes:?}");
        let chunked_steps = whole_sizes.iter().filter(|&&n| n > physical).count();
        assert!(chunked_steps > 0 && (physical < 64 || chunked_steps < whole_sizes.len()), "{whole_sizes:?}");
        assert_eq!(sizes.len(), whole_sizes.iter().map(|n| n.div_ceil(physical).max(1)).sum::<usize>());
        assert_eq!(sizes.iter().sum::<usize>(), whole_sizes.iter().sum::<usize>(), "{physical}: examples");
        assert_eq!((report.steps, report.epsilon), (whole_report.steps, whole_report.epsilon));
        let diff = largest_difference(chunked.params(), whole.params());
        assert!(
            diff <= 1e-5 * moved.max(1.0),
            "{physical}: chunked and whole differ by {diff} (moved {moved})"
        );
        let mut cpu = Deep::from_params(initial.params().to_vec());
        let cpu_report =
            configure(dp::Trainer::new(&mut cpu)).max_physical_batch(physical).fit(&data, None).unwrap();
        let diff = largest_difference(chunked.params(), cpu.params());
        assert!(diff <= 1e-5 * moved.max(1.0), "{physical}: device and CPU differ by {diff}");
        assert_eq!(cpu_report.epsilon, report.epsilon);
        for (c, w) in report.epochs.iter().zip(&whole_report.epochs) {
            let (c, w) = (c.diagnostics.as_ref().unwrap(), w.diagnostics.as_ref().unwrap());
            assert!((c.train_loss - w.train_loss).abs() <= 1e-5 * w.train_loss, "{c:?} vs {w:?}");
            assert_eq!(
                (c.non_finite_examples, c.mean_batch_size),
                (w.non_finite_examples, w.mean_batch_size)
            );
        }
    }
    let refused = |t: dp::Trainer<'_, Deep>| t.fit(&data, None).unwrap_err().to_string();
    let mut model = Deep::from_params(initial.params().to_vec());
    let error = refused(configure(dp::Trainer::new(&mut model)).max_physical_batch(0));
    assert!(error.contains("max_physical_batch") && error.contains("at least 1"), "{error}");
}

/// A device run is evaluated by the device's forward (`DeviceTraining::outputs`): once per epoch on
/// the whole evaluation set, never while a step is queued, under the moving average when there is one
/// (uploaded for it, the parameters uploaded back after). The epochs' losses and accuracies are the
/// CPU trainer's, and so are the parameters trained after the evaluations.
#[test]
fn a_trainer_on_a_device_evaluates_with_the_devices_forward() {
    let mut rng = ChaCha8Rng::seed_from_u64(67);
    let (inputs, labels) = batch::<Deep>(&mut rng, 400, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng);
    for ema in [None, Some(0.8)] {
        fn configure(t: dp::Trainer<'_, Deep>, ema: Option<f64>) -> dp::Trainer<'_, Deep> {
            let t = t.clip_norm(1.0).noise_multiplier(0.8).expected_batch_size(64).seed(3);
            let t = t.optimizer(Sgd::new(0.5).momentum(0.9)).epochs(3).allow_large_delta(true).quiet(true);
            match ema {
                Some(decay) => t.ema(decay),
                None => t,
            }
        }
        let mut cpu = Deep::from_params(initial.params().to_vec());
        let cpu_report = configure(dp::Trainer::new(&mut cpu), ema).fit(&data, Some(&data)).unwrap();
        let training = HostTraining::<Deep>::new();
        let calls = training.calls.clone();
        let mut dev = Deep::from_params(initial.params().to_vec());
        let dev_report =
            configure(dp::Trainer::new(&mut dev), ema).device(training).fit(&data, Some(&data)).unwrap();
        let calls = calls.lock().unwrap().clone();
        assert_pipelined(&calls);
        let evaluations: Vec<_> = calls.iter().filter(|c| matches!(c, Call::Evaluate(_))).collect();
        assert_eq!(evaluations, vec![&Call::Evaluate(400); 3], "{ema:?}");
        assert_eq!(dev_report.epochs.len(), 3);
        for (d, c) in dev_report.epochs.iter().zip(&cpu_report.epochs) {
            assert_eq!(d.accuracy, c.accuracy, "{ema:?}");
            let (d, c) = (d.eval_loss.unwrap(), c.eval_loss.unwrap());
            assert!((d - c).abs() <= 1e-5 * c.abs(), "{ema:?}: evaluation loss {d} vs {c}");
        }
        let diff = largest_difference(dev.params(), cpu.params());
        assert!(diff <= 1e-5, "{ema:?}: the device's trainer differs from the CPU's by {diff}");
    }
    // Without an evaluation set, non-private diagnostics' training accuracy is the device's too.
    let diagnosed = |device: bool| {
        let mut model = Deep::from_params(initial.params().to_vec());
        let t =
            dp::Trainer::new(&mut model).clip_norm(1.0).noise_multiplier(0.8).expected_batch_size(64).seed(3);
        let t = t
            .optimizer(Sgd::new(0.5))
            .epochs(2)
            .non_private_diagnostics(true)
            .allow_large_delta(true)
            .quiet(true);
        let training = HostTraining::<Deep>::new();
        let calls = training.calls.clone();
        let report = match device {
            true => t.device(training).fit(&data, None),
            false => t.fit(&data, None),
        }
        .unwrap();
        let calls: usize =
            calls.lock().unwrap().iter().map(|c| if let Call::Evaluate(n) = c { *n } else { 0 }).sum();
        let accuracies: Vec<_> =
            report.epochs.iter().map(|e| e.diagnostics.as_ref().unwrap().train_accuracy.unwrap()).collect();
        (accuracies, calls)
    };
    let ((on_device, evaluated), (on_cpu, _)) = (diagnosed(true), diagnosed(false));
    assert_eq!(evaluated, 2 * 400, "the training set evaluated on the device each epoch");
    assert_eq!(on_device, on_cpu);
}

/// Non-private diagnostics on a device: each step's losses and clip factors come back, and the epochs'
/// training loss, non-finite count and mean batch size are the CPU trainer's (the NaN example's loss
/// left out, as its factors are zero).
#[test]
fn a_trainer_on_a_device_reports_the_diagnostics_of_the_cpu() {
    let (_, cpu, dev, cpu_report, dev_report) = train_on_both(49, |t| {
        t.optimizer(Sgd::new(0.5).momentum(0.9)).epochs(2).non_private_diagnostics(true)
    });
    assert!(largest_difference(dev.params(), cpu.params()) <= 1e-5);
    assert_eq!(dev_report.epochs.len(), 2);
    let mut non_finite = 0;
    for (d, c) in dev_report.epochs.iter().zip(&cpu_report.epochs) {
        let (d, c) = (d.diagnostics.as_ref().unwrap(), c.diagnostics.as_ref().unwrap());
        assert!(c.train_loss.is_finite() && c.train_loss > 0.0, "{}", c.train_loss);
        assert!(
            (d.train_loss - c.train_loss).abs() <= 1e-5 * c.train_loss,
            "{} vs {}",
            d.train_loss,
            c.train_loss
        );
        assert_eq!((d.non_finite_examples, d.mean_batch_size), (c.non_finite_examples, c.mean_batch_size));
        non_finite += c.non_finite_examples;
    }
    assert!(non_finite > 0, "the NaN example was never sampled: the test would not see its loss left out");
    let run = |r: &dp::Report| r.diagnostics.as_ref().map(|d| d.non_finite_examples);
    assert_eq!(run(&dev_report), run(&cpu_report));
}

/// With an exponential moving average (`Trainer::ema`) the device holds and folds the average, and the
/// trainer on the host training state follows the CPU trainer: the same average is evaluated after
/// each epoch and returned, also when a run stops mid-epoch (`max_steps`).
#[test]
fn a_trainer_on_a_device_keeps_the_average_like_the_cpu() {
    for max_steps in [None, Some(13)] {
        let (initial, cpu, dev, cpu_report, dev_report) = train_on_both(48, |t| {
            let t = t.optimizer(Sgd::new(0.5).momentum(0.9)).epochs(2).ema(0.8);
            match max_steps {
                Some(steps) => t.max_steps(steps),
                None => t,
            }
        });
        assert_eq!((dev_report.steps, dev_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
        let moved = largest_difference(cpu.params(), initial.params());
        let diff = largest_difference(dev.params(), cpu.params());
        assert!(moved > 0.01, "training moved the average by {moved}");
        assert!(diff <= 1e-5 * moved.max(1.0), "{max_steps:?}: the device's average differs by {diff}");
        let accuracies = |r: &dp::Report| r.epochs.iter().map(|e| e.accuracy).collect::<Vec<_>>();
        assert_eq!(accuracies(&dev_report), accuracies(&cpu_report), "{max_steps:?}");
    }
}

/// An optimizer a device has no update for: SGD's step under another name, without `on_device`.
struct HostOnly(Sgd);

impl Optimizer for HostOnly {
    fn kind(&self) -> &'static str {
        "host-only"
    }
    fn step(&mut self, params: &mut [f32], gradient: NoisyGradient<'_>, at: StepInfo) {
        self.0.step(params, gradient, at)
    }
    fn learning_rate(&self, at: StepInfo) -> f64 {
        self.0.learning_rate(at)
    }
    fn state(&self) -> OptimizerState {
        self.0.state()
    }
    fn load_state(&mut self, state: OptimizerState, params: usize) -> dp::Result<()> {
        self.0.load_state(state, params)
    }
}

#[test]
fn a_device_refuses_what_it_has_no_path_for() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (inputs, labels) = batch::<Deep>(&mut rng, 100, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let mut model = Deep::init(&mut rng);
    let host = HostTraining::<Deep>::new();
    let err = dp::Trainer::new(&mut model)
        .optimizer(HostOnly(Sgd::new(0.1)))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(10)
        .steps(2)
        .allow_large_delta(true)
        .quiet(true)
        .device(host)
        .fit(&data, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid device: the host-only optimizer has no device update (SGD and Adam only)"
    );
}

/// A run of `Deep` with the optimizer `make` builds, cut after 7 steps and resumed from its checkpoint,
/// on the CPU and on the host training state alike: the initial model and, for the CPU then the
/// device, the steps, trained parameters and checkpointed optimizer state at the end. `kind` is the
/// optimizer state's name, which the cut checkpoint must carry with its 7 updates.
fn cut_and_resumed_on_both<O: Optimizer + 'static>(
    seed: u64,
    kind: &str,
    make: impl Fn() -> O,
) -> (Deep, [(u64, Vec<f32>, OptimizerState); 2]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (inputs, labels) = batch::<Deep>(&mut rng, 600, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("device-resume-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |model: &mut Deep, device: bool, path: &std::path::Path, cut: Option<u64>| {
        let mut trainer = dp::Trainer::new(model)
            .optimizer(make())
            .clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(64)
            .epochs(2)
            .seed(5)
            .allow_large_delta(true)
            .quiet(true);
        trainer = match cut {
            Some(steps) => trainer.max_steps(steps).checkpoint(path),
            None => trainer.resume_from(path).checkpoint(path),
        };
        if device {
            trainer = trainer.device(HostTraining::<Deep>::new());
        }
        trainer.fit(&data, Some(&data)).unwrap()
    };
    let finals = [false, true].map(|device| {
        let path = dir.join(format!("run-{device}.safetensors"));
        let mut model = Deep::from_params(initial.params().to_vec());
        assert_eq!(run(&mut model, device, &path, Some(7)).steps, 7);
        let cut = dp::checkpoint::load::<Deep>(&path).unwrap().optimizer;
        assert_eq!((cut.kind.as_str(), cut.updates), (kind, 7), "device {device}");
        let report = run(&mut model, device, &path, None);
        let saved = dp::checkpoint::load::<Deep>(&path).unwrap();
        (report.steps, model.params().to_vec(), saved.optimizer)
    });
    std::fs::remove_dir_all(&dir).unwrap();
    (initial, finals)
}

/// A run on a device writes checkpoints whose optimizer state is the device's, and resumes from them:
/// cut after 7 of 20 steps and resumed, on the device and on the CPU alike, the two end at the same
/// parameters (to rounding) with the same momentum in their checkpoints.
#[test]
fn a_device_run_checkpoints_and_resumes_like_the_cpu() {
    let (_, [(cpu_steps, cpu, cpu_state), (dev_steps, dev, dev_state)]) =
        cut_and_resumed_on_both(43, "sgd", || Sgd::new(0.5).momentum(0.9));
    assert_eq!(cpu_steps, dev_steps);
    let diff = largest_difference(&cpu, &dev);
    assert!(diff <= 1e-4, "device and CPU runs differ by {diff} after resuming");
    assert_eq!((dev_state.kind.as_str(), dev_state.updates), (cpu_state.kind.as_str(), cpu_state.updates));
    let (cpu_m, dev_m) = (&cpu_state.buffers[0].1, &dev_state.buffers[0].1);
    let diff = largest_difference(cpu_m, dev_m);
    assert!(diff <= 1e-4, "the checkpoints' momentum differs by {diff}");
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
}

/// `Trainer::device` with Adam (L2 decay, other betas and ε, a cosine schedule) and with AdamW on the
/// host training state follows the CPU trainer: the device is given every setting of the optimizer
/// and each step's scheduled learning rate, and counts the updates its bias corrections use.
#[test]
fn a_trainer_with_adam_on_a_device_follows_the_trainer_on_the_cpu() {
    let adam = || {
        Adam::new(0.01)
            .betas(0.8, 0.99)
            .eps(1e-6)
            .weight_decay(1e-3)
            .schedule(dp::optim::Schedule::Cosine { final_fraction: 0.1 })
    };
    let adamw = || Adam::adamw(0.02, 0.1);
    for (name, (initial, cpu, dev, cpu_report, dev_report)) in [
        ("adam", train_on_both(44, |t| t.optimizer(adam()).steps(20))),
        ("adamw", train_on_both(45, |t| t.optimizer(adamw()).steps(20))),
    ] {
        assert_eq!((dev_report.steps, dev_report.epsilon), (cpu_report.steps, cpu_report.epsilon), "{name}");
        let diff = largest_difference(dev.params(), cpu.params());
        let moved = largest_difference(cpu.params(), initial.params());
        eprintln!("{name}: device and CPU differ by {diff:.3e}, training moved the parameters by {moved:.3}");
        assert!(moved > 0.01, "{name}: training moved the parameters by {moved}");
        // The update is the CPU's own arithmetic; the passes' rounding (the device program's sums in
        // another order) leaves an ulp or two.
        assert!(diff <= 1e-6, "{name}: device and CPU trainers differ by {diff} (moved {moved})");
        assert!((dev_report.accuracy - cpu_report.accuracy).abs() <= 0.01, "{name}");
    }
}

/// With Adam, a run on a device cut after 7 steps and resumed from its checkpoint ends where the CPU's
/// does, with the same update count and moments in the checkpoints: the device's state holds the
/// moments and the step count the bias corrections need, saves them and loads them back.
#[test]
fn a_device_run_with_adam_checkpoints_and_resumes_like_the_cpu() {
    let (initial, [(cpu_steps, cpu, cpu_state), (dev_steps, dev, dev_state)]) =
        cut_and_resumed_on_both(46, "adam", || Adam::new(0.01).weight_decay(1e-3));
    assert_eq!(cpu_steps, dev_steps);
    let moved = largest_difference(&cpu, initial.params());
    let diff = largest_difference(&cpu, &dev);
    assert!(moved > 0.01, "training moved the parameters by {moved}");
    eprintln!("resumed: device and CPU differ by {diff:.3e}, training moved the parameters by {moved:.3}");
    assert!(diff <= 1e-6, "device and CPU runs differ by {diff} after resuming");
    assert_eq!((dev_state.kind.as_str(), dev_state.updates), (cpu_state.kind.as_str(), cpu_state.updates));
    for name in ["exp_avg", "exp_avg_sq"] {
        let buffer =
            |state: &OptimizerState| state.buffers.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let (cpu_m, dev_m) = (buffer(&cpu_state), buffer(&dev_state));
        let scale = cpu_m.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let diff = largest_difference(&cpu_m, &dev_m);
        eprintln!("{name}: the checkpoints differ by {diff:.3e} (largest value {scale:.3e})");
        assert!(
            scale > 0.0 && diff <= 1e-5 * scale,
            "the checkpoints' {name} differ by {diff} (largest {scale})"
        );
    }
}

#[test]
fn linear_over_a_sequence_device_program_matches_the_cpu() {
    device_matches_cpu::<SequenceLinear>(24, SIZES);
}

#[test]
fn linear_over_a_token_sequence_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<TokenSequenceLinear>(25, SIZES);
}

#[test]
fn activations_from_their_input_device_program_matches_the_cpu() {
    device_matches_cpu::<ActivationsFromInput>(26, SIZES);
}

#[test]
fn token_mlp_with_layer_norm_over_the_sequence_device_program_matches_the_cpu() {
    token_sequence_matches_cpu::<TokenMlp>(27, SIZES);
}

#[test]
fn patches_position_embedding_and_first_device_program_matches_the_cpu() {
    device_matches_cpu::<PatchFirst>(28, SIZES);
}

#[test]
fn attention_device_program_matches_the_cpu() {
    device_matches_cpu::<DenseAttention>(23, SIZES);
}

#[test]
fn causal_attention_device_program_matches_the_cpu() {
    device_matches_cpu::<CausalAttention>(24, SIZES);
}

/// The first layer's input gradient reaches the second; the first is causal with direct norms on the
/// CPU (the device keeps its per-example gradients whatever the CPU chose).
#[test]
fn stacked_attention_device_program_matches_the_cpu() {
    device_matches_cpu::<StackedAttention>(25, SIZES);
}

/// LoRA layers (their B matrices moved off zero, so that the adapter path reaches the output) among
/// frozen ones.
#[test]
fn lora_layers_with_frozen_ones_device_program_matches_the_cpu() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let params: Vec<f32> =
        TokenLora::init(&mut rng).params().iter().map(|p| p + rng.random_range(-0.3..0.3)).collect();
    for &(n, poison) in SIZES {
        let (params, inputs, labels) = token_batch::<TokenLora>(&mut rng, &params, n, poison);
        batch_matches_cpu(&TokenLora::from_params(params), &inputs, &labels, n, poison);
    }
}

/// `TokenLora` trained from `initial` for 12 steps with the optimizer `make` builds, on the CPU or on the
/// host training state.
fn train_frozen<O: Optimizer + 'static>(
    data: &dp::Dataset<u32>,
    initial: &[f32],
    make: impl Fn() -> O,
    device: bool,
) -> (TokenLora, dp::Report) {
    let mut model = TokenLora::from_params(initial.to_vec());
    let trainer = dp::Trainer::new(&mut model)
        .optimizer(make())
        .clip_norm(1.0)
        .noise_multiplier(0.8)
        .expected_batch_size(48)
        .steps(12)
        .seed(3)
        .allow_large_delta(true)
        .quiet(true);
    let report = match device {
        true => trainer.device(HostTraining::<TokenLora>::new()).fit(data, Some(data)),
        false => trainer.fit(data, Some(data)),
    }
    .unwrap();
    (model, report)
}

/// A model with frozen layers (LoRA adapters, a trained head, frozen embedding, position embedding and
/// layer norms) trained by `Trainer::device` on the host training state follows the CPU trainer with
/// SGD and with Adam: the device updates only the trained parameters (its gradient and optimizer state
/// cover `TRAINED_PARAM_COUNT`) and leaves the frozen ones as they were.
#[test]
fn a_trainer_on_a_device_follows_the_cpu_with_frozen_layers() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(47);
    let (inputs, labels) = batch::<TokenLora>(&mut rng, 400, false);
    let data = dp::Dataset::new(inputs, labels, TokenLora::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial: Vec<f32> =
        TokenLora::init(&mut rng).params().iter().map(|p| p + rng.random_range(-0.3..0.3)).collect();
    let trained = TokenLora::TRAINED_PARAM_COUNT;
    assert!(trained < initial.len(), "the model has frozen parameters");
    let runs = [
        ("sgd", train_frozen(&data, &initial, || Sgd::new(0.5).momentum(0.9), false)),
        ("sgd", train_frozen(&data, &initial, || Sgd::new(0.5).momentum(0.9), true)),
        ("adam", train_frozen(&data, &initial, || Adam::new(0.01), false)),
        ("adam", train_frozen(&data, &initial, || Adam::new(0.01), true)),
    ];
    for [(name, (cpu, cpu_report)), (_, (dev, dev_report))] in [[&runs[0], &runs[1]], [&runs[2], &runs[3]]] {
        assert_eq!((dev_report.steps, dev_report.epsilon), (cpu_report.steps, cpu_report.epsilon), "{name}");
        let moved = largest_difference(&cpu.params()[..trained], &initial[..trained]);
        let diff = largest_difference(dev.params(), cpu.params());
        assert!(moved > 0.01, "{name}: training moved the trained parameters by {moved}");
        assert!(
            diff <= 1e-4 * moved.max(1.0),
            "{name}: device and CPU trainers differ by {diff} (moved {moved})"
        );
        assert_eq!(&dev.params()[trained..], &initial[trained..], "{name}: the frozen parameters changed");
    }
}

/// Two grouped convs (stride, padding, with and without bias), the second's input gradient reaching
/// the first: each group's block of patches, output and weight.
#[test]
fn grouped_convs_device_program_matches_the_cpu() {
    device_matches_cpu::<GroupedConvs>(30, SIZES);
}

/// A depthwise conv (a group per channel) between 1×1 convs.
#[test]
fn depthwise_separable_device_program_matches_the_cpu() {
    device_matches_cpu::<DepthwiseSeparable>(31, SIZES);
}

/// GELU, SiLU and exact GELU after a conv, a group norm and a residual add: activation steps of their
/// own, the derivative from their kept input.
#[test]
fn image_activations_from_their_input_device_program_matches_the_cpu() {
    assert_eq!(ImageActivationsFromInput::DEVICE_UNSUPPORTED, None);
    device_matches_cpu::<ImageActivationsFromInput>(30, SIZES);
}

#[test]
fn layer_norm_over_a_sequence_with_gelu_device_program_matches_the_cpu() {
    assert_eq!(SequenceNormGelu::DEVICE_UNSUPPORTED, None);
    device_matches_cpu::<SequenceNormGelu>(31, SIZES);
}

/// The non-private baseline (`dp train --non-private`) with its steps on the host training state: the
/// same shuffled batches, the plain gradient sum over the batch times 1/B and the same update as on
/// the CPU, so the same parameters (to rounding), per-epoch accuracies and training losses; the
/// optimizer's state comes back from the device. SGD with momentum, and AdamW.
#[test]
fn the_non_private_baseline_on_a_device_follows_the_cpu() {
    use dp::baseline::{fit_non_private, fit_non_private_on_device, BaselineConfig};
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let (inputs, labels) = batch::<Deep>(&mut rng, 600, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng);
    let config = BaselineConfig {
        batch_size: 64,
        epochs: 2.0,
        max_steps: None,
        seed: Some(4),
        quiet: true,
        precision: Precision::F32,
    };
    type NewOptimizer = fn() -> Box<dyn Optimizer>;
    let optimizers: [(&str, NewOptimizer); 2] =
        [("sgd", || Box::new(Sgd::new(0.5).momentum(0.9))), ("adamw", || Box::new(Adam::adamw(0.01, 0.1)))];
    for (name, optimizer) in optimizers {
        let mut cpu = Deep::from_params(initial.params().to_vec());
        let mut cpu_optimizer = optimizer();
        let cpu_report =
            fit_non_private(&mut cpu, cpu_optimizer.as_mut(), &data, &data, config, |_| {}).unwrap();
        let mut dev = Deep::from_params(initial.params().to_vec());
        let mut dev_optimizer = optimizer();
        let mut device = HostTraining::<Deep>::new();
        let dev_report = fit_non_private_on_device(
            &mut dev,
            dev_optimizer.as_mut(),
            &mut device,
            &data,
            &data,
            config,
            |_| {},
        )
        .unwrap();
        assert_eq!(dev_report.steps, cpu_report.steps, "{name}");
        // The next batch is staged while a step runs, as in the private trainer; each epoch is
        // evaluated by the device's forward.
        let calls = device.calls.lock().unwrap().clone();
        assert_overlapped(&calls, dev_report.steps as usize);
        let evaluated: usize = calls.iter().map(|c| if let Call::Evaluate(n) = c { *n } else { 0 }).sum();
        assert_eq!(evaluated, 600 * dev_report.epochs.len(), "{name}: {calls:?}");
        for (d, c) in dev_report.epochs.iter().zip(&cpu_report.epochs) {
            let (d, c) = (d.eval_loss.unwrap(), c.eval_loss.unwrap());
            assert!((d - c).abs() <= 1e-5 * c.abs(), "{name}: evaluation loss {d} vs {c}");
        }
        let moved = largest_difference(cpu.params(), initial.params());
        let diff = largest_difference(dev.params(), cpu.params());
        assert!(moved > 0.01, "{name}: training moved the parameters by {moved}");
        assert!(diff <= 1e-5 * moved.max(1.0), "{name}: device and CPU differ by {diff}");
        let epochs = |r: &dp::Report| {
            r.epochs
                .iter()
                .map(|e| (e.accuracy, e.diagnostics.as_ref().unwrap().train_loss))
                .collect::<Vec<_>>()
        };
        for ((da, dl), (ca, cl)) in epochs(&dev_report).into_iter().zip(epochs(&cpu_report)) {
            assert_eq!(da, ca, "{name}");
            assert!((dl - cl).abs() <= 1e-5 * cl, "{name}: training loss {dl} vs {cl}");
        }
        let (d, c) = (dev_optimizer.state(), cpu_optimizer.state());
        assert_eq!((d.kind.as_str(), d.updates), (c.kind.as_str(), c.updates), "{name}");
        assert_eq!(d.buffers.len(), c.buffers.len(), "{name}");
        for ((dn, dv), (cn, cv)) in d.buffers.iter().zip(&c.buffers) {
            assert_eq!(dn, cn);
            assert!(largest_difference(dv, cv) <= 1e-5, "{name}: {dn}");
        }
    }
}

/// A NaN example makes the non-private update overflow on a device as on the CPU: the same error,
/// naming the step; the device's model keeps the parameters of the last epoch's end (here the
/// initial ones), never NaN.
#[test]
fn the_non_private_baseline_on_a_device_stops_at_an_overflow_like_the_cpu() {
    use dp::baseline::{fit_non_private, fit_non_private_on_device, BaselineConfig};
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let (inputs, labels) = batch::<Deep>(&mut rng, 100, true);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng);
    let config = BaselineConfig {
        batch_size: 10,
        epochs: 1.0,
        max_steps: None,
        seed: Some(4),
        quiet: true,
        precision: Precision::F32,
    };
    let mut cpu = Deep::from_params(initial.params().to_vec());
    let cpu_error = fit_non_private(&mut cpu, &mut Sgd::new(0.1), &data, &data, config, |_| {}).unwrap_err();
    let mut dev = Deep::from_params(initial.params().to_vec());
    let mut device = HostTraining::<Deep>::new();
    let dev_error =
        fit_non_private_on_device(&mut dev, &mut Sgd::new(0.1), &mut device, &data, &data, config, |_| {})
            .unwrap_err();
    assert!(cpu_error.to_string().contains("overflowed"), "{cpu_error}");
    assert_eq!(dev_error.to_string(), cpu_error.to_string());
    assert_eq!(dev.params(), initial.params());
}

impl<M: DpModel> HostTraining<M>
where
    M::Input: TestInput,
{
    /// The noise under the step's key and the update from the clipped sum in `Grad`, by the CPU
    /// optimizer the step describes; `bad` examples had a non-finite norm.
    fn noisy_update(
        &mut self,
        step: &DevicePrivateStep,
        bad: usize,
    ) -> Result<DeviceStepOutcome, DeviceError> {
        let mut z = vec![0.0; M::TRAINED_PARAM_COUNT];
        for (chunk, values) in z.chunks_mut(FILL_CHUNK).enumerate() {
            fill_chunk(&step.key, chunk as u64, values);
        }
        let sum = self.dev.get(Region::Grad).to_vec();
        let gradient = NoisyGradient::with_drawn_noise(&sum, &z, step.noise_std, step.normaliser);
        let overflowed = self.update(gradient, step.optimizer)?;
        Ok(DeviceStepOutcome { non_finite_examples: bad, overflowed })
    }

    /// `private_step_with_views`' clipped sum into `Grad`, written from its contract: per example, the
    /// device program's gradient sum over its `views` views, times 1/views (f32), its group norms (f64
    /// per parameter, f32 per group), the CPU's clip factors, and the factor-weighted average added
    /// into the sum unless a norm is not finite. Returns the examples that were not.
    fn clipped_sum_of_averages(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        (clip_mode, clip_norm): (dp::clipping::ClipMode, f64),
    ) -> Result<usize, DeviceError> {
        let (groups, len) = (M::GROUPS.len(), M::TRAINED_PARAM_COUNT);
        let (input_len, label_len) = (M::input_len() * views, M::LOSS.label_len() * views);
        if inputs.len() != n * input_len || labels.len() != n * label_len || views == 0 {
            return Err(DeviceError::Mismatch(format!("{n} examples of {views} views")));
        }
        let trained: Vec<_> = M::PARAMS.iter().filter(|p| p.is_trained()).collect();
        let mut clipped = vec![0.0f32; len];
        let mut bad = 0;
        let (mut kept_losses, mut kept_factors) = (Vec::new(), Vec::new());
        let d = &mut self.dev;
        for (example, labels) in inputs.chunks_exact(input_len).zip(labels.chunks_exact(label_len)) {
            Self::load_batch(d, example, labels, views);
            M::device_forward_backward(d, views)?;
            M::device_gradient_sum(d, views)?;
            kept_losses.extend_from_slice(&d.get(Region::Losses)[..views]);
            let inverse = 1.0 / views as f32;
            let average: Vec<f32> = d.get(Region::Grad).iter().map(|&g| g * inverse).collect();
            let mut sq_norms = vec![0.0f32; groups];
            for p in &trained {
                let squares: f64 =
                    average[p.offset..p.offset + p.len].iter().map(|&g| g as f64 * g as f64).sum();
                sq_norms[p.group] += squares as f32;
            }
            let mut factors = vec![0.0f32; groups];
            let not_finite = clip_factors(clip_mode, clip_norm, groups, &sq_norms, &mut factors).unwrap() > 0;
            kept_factors.extend_from_slice(&factors);
            if not_finite {
                bad += 1;
                continue;
            }
            for p in &trained {
                let range = p.offset..p.offset + p.len;
                for (c, &a) in clipped[range.clone()].iter_mut().zip(&average[range]) {
                    *c += factors[p.group] * a;
                }
            }
        }
        d.set(Region::Grad, clipped);
        self.last_views = Some((views, Some((kept_losses, kept_factors))));
        Ok(bad)
    }
}

/// `SmallConv` trained seeded alike on the CPU and on the host training state with augmentation
/// multiplicity (3 views: crops after padding, flips), flat or per-layer clipping, SGD with momentum,
/// on data whose examples 5 to 7 are all NaN (every view of them is non-finite): the initial model, the two
/// trained models and reports.
fn train_views_on_both(
    seed: u64,
    per_layer: bool,
) -> (SmallConv, SmallConv, SmallConv, dp::Report, dp::Report) {
    use dp::data::augment::Augmentation;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 300, false);
    let len = SmallConv::input_len();
    inputs[5 * len..8 * len].fill(f32::NAN);
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng);
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    let (cpu, dev, cpu_report, dev_report) = fit_on_both(&data, &initial, |t| {
        t.optimizer(Sgd::new(0.5).momentum(0.9))
            .clip_norm(1.0)
            .per_layer_clipping(per_layer)
            .noise_multiplier(0.8)
            .expected_batch_size(48)
            .epochs(2)
            .augmentation_multiplicity(3, augmentation)
            .seed(7)
    });
    (initial, cpu, dev, cpu_report, dev_report)
}

/// One example's views run at once: a physical batch smaller than the views per example is refused
/// before the first step, on a device as on the CPU, naming both.
#[test]
fn a_physical_batch_below_the_views_per_example_is_refused() {
    use dp::data::augment::Augmentation;
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let (inputs, labels) = batch::<SmallConv>(&mut rng, 60, false);
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng);
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    let fit = |device: bool| {
        let mut model = SmallConv::from_params(initial.params().to_vec());
        let trainer = dp::Trainer::new(&mut model)
            .optimizer(Sgd::new(0.5))
            .clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(12)
            .steps(2)
            .augmentation_multiplicity(3, augmentation)
            .max_physical_batch(2)
            .seed(7)
            .allow_large_delta(true)
            .quiet(true);
        match device {
            true => trainer.device(HostTraining::<SmallConv>::new()).fit(&data, None),
            false => trainer.fit(&data, None),
        }
        .map(|report| report.steps)
    };
    for device in [true, false] {
        let error = fit(device).unwrap_err().to_string();
        assert!(error.contains("max_physical_batch") && error.contains("3 views"), "{device}: {error}");
    }
}

/// Augmentation multiplicity on a device: the trainer draws and augments the views as the CPU does
/// (the same stream, in batch order) and the host training state averages, clips and sums them by
/// `private_step_with_views`' contract, so a seeded run ends where the CPU's does (to rounding), with
/// the same accuracy after every epoch, flat and per-layer, a NaN example contributing nothing.
#[test]
fn a_trainer_with_views_on_a_device_follows_the_trainer_on_the_cpu() {
    for per_layer in [false, true] {
        let (initial, cpu, dev, cpu_report, dev_report) = train_views_on_both(49, per_layer);
        assert_eq!((dev_report.steps, dev_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
        let moved = largest_difference(cpu.params(), initial.params());
        let diff = largest_difference(dev.params(), cpu.params());
        eprintln!(
            "per-layer {per_layer}: device and CPU differ by {diff:.3e}, training moved them by {moved:.3}"
        );
        assert!(moved > 0.01, "per-layer {per_layer}: training moved the parameters by {moved}");
        assert!(diff <= 1e-6 * moved.max(1.0), "per-layer {per_layer}: device and CPU differ by {diff}");
        let accuracies = |r: &dp::Report| r.epochs.iter().map(|e| e.accuracy).collect::<Vec<_>>();
        assert_eq!(accuracies(&dev_report), accuracies(&cpu_report), "per-layer {per_layer}");
    }
}

/// One step's clipped sum with views: the host training state's (`private_step_with_views`' contract)
/// against the CPU's step engine, each drawing the views from a stream seeded alike (the device's
/// through `StepEngine::gather_views`, as the trainer does), flat and per-layer: the same sum to
/// rounding, and the one all-NaN example among the indices counted on both and contributing nothing.
#[test]
fn a_step_with_views_on_a_device_sums_what_the_cpu_sums() {
    use dp::data::augment::Augmentation;
    use dp::trainer::step::StepEngine;
    use rand_chacha::ChaCha20Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 40, false);
    let len = SmallConv::input_len();
    inputs[3 * len..4 * len].fill(f32::NAN);
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let model = SmallConv::init(&mut rng);
    let indices: Vec<usize> = (0..40).filter(|i| i % 3 == 0).collect();
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    for clip_mode in [ClipMode::Flat, ClipMode::PerLayer] {
        let engine = || {
            StepEngine::<SmallConv>::new(1.0, clip_mode, 64, 16)
                .with_views(3, augmentation, ChaCha20Rng::seed_from_u64(8))
                .unwrap()
        };
        let mut cpu = engine();
        let stats = cpu.clipped_sum(&model, &data, &indices).unwrap();
        let (mut views, mut view_labels) = (Vec::new(), Vec::new());
        assert_eq!(engine().gather_views(&data, &indices, &mut views, &mut view_labels), Some(3));
        let mut host = HostTraining::<SmallConv>::new();
        host.upload(model.params()).unwrap();
        let bad =
            host.clipped_sum_of_averages(&views, &view_labels, indices.len(), 3, (clip_mode, 1.0)).unwrap();
        assert_eq!((bad, stats.non_finite), (1, 1), "{clip_mode:?}: the NaN example counted");
        let sum = host.dev.get(Region::Grad);
        assert!(sum.iter().all(|v| v.is_finite()), "{clip_mode:?}: the NaN example contributed");
        close_sum(&format!("{clip_mode:?} clipped sum with views"), sum, &cpu.clipped_sum, 1e-5);
    }
}

/// Non-private diagnostics with augmentation multiplicity on a device: the step keeps each view's
/// loss and each example's clip factors (`keep_losses`), and the epochs' training loss (each
/// example's mean over its views) and non-finite counts are the CPU trainer's, flat and per-layer,
/// with examples whose every view is NaN.
#[test]
fn a_trainer_with_views_on_a_device_reports_the_diagnostics_of_the_cpu() {
    use dp::data::augment::Augmentation;
    let mut rng = ChaCha8Rng::seed_from_u64(52);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 200, false);
    let len = SmallConv::input_len();
    inputs[5 * len..8 * len].fill(f32::NAN);
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng);
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    for per_layer in [false, true] {
        let (_, _, cpu_report, dev_report) = fit_on_both(&data, &initial, |t| {
            t.optimizer(Sgd::new(0.5).momentum(0.9))
                .clip_norm(1.0)
                .per_layer_clipping(per_layer)
                .noise_multiplier(0.8)
                .expected_batch_size(48)
                .epochs(2)
                .augmentation_multiplicity(3, augmentation)
                .non_private_diagnostics(true)
                .seed(7)
        });
        let mut non_finite = 0;
        for (d, c) in dev_report.epochs.iter().zip(&cpu_report.epochs) {
            let (d, c) = (d.diagnostics.as_ref().unwrap(), c.diagnostics.as_ref().unwrap());
            assert!(c.train_loss.is_finite() && c.train_loss > 0.0, "{}", c.train_loss);
            let close = (d.train_loss - c.train_loss).abs() <= 1e-5 * c.train_loss;
            assert!(close, "per-layer {per_layer}: {} vs {}", d.train_loss, c.train_loss);
            assert_eq!(
                (d.non_finite_examples, d.mean_batch_size),
                (c.non_finite_examples, c.mean_batch_size)
            );
            non_finite += c.non_finite_examples;
        }
        assert!(non_finite > 0, "no NaN example was sampled: the test would not see its loss left out");
    }
}

// ---------------------------------------------------------------------------------------------
// Distributed training on devices: the ranks of a thread group (`ThreadGroup`), each with its own
// host training state, against the CPU's distributed run and one process.

/// Where the ranks of [`distributed_runs`] train: on the CPU, or each on its own `HostTraining`, the
/// one of rank `.0` failing as `.1` says at step `.2`.
#[derive(Debug, Clone, Copy)]
enum RanksOn {
    Cpu,
    Devices { fault: Option<(usize, Fault, u64)> },
}

/// Every rank's outcome (its model's parameters and report) of `M` trained from `initial` by `ranks`
/// threads of one group, each on its shard of `data` (rank 0 evaluating on all of it), with the
/// settings of [`train_on_both`] and then `configure`'s.
fn distributed_runs<M: DpModel>(
    data: &dp::Dataset<M::Input>,
    initial: &[f32],
    ranks: usize,
    on: RanksOn,
    configure: &(dyn for<'m> Fn(dp::Trainer<'m, M>) -> dp::Trainer<'m, M> + Sync),
) -> Vec<dp::Result<(Vec<f32>, dp::Report)>>
where
    M::Input: TestInput + Sync,
{
    let runs = distributed_runs_logged(data, initial, ranks, on, configure);
    runs.into_iter().map(|(outcome, _)| outcome).collect()
}

/// [`distributed_runs`], with each rank's log of its device's staging, queueing and finishing (empty
/// on the CPU).
#[allow(clippy::type_complexity)]
fn distributed_runs_logged<M: DpModel>(
    data: &dp::Dataset<M::Input>,
    initial: &[f32],
    ranks: usize,
    on: RanksOn,
    configure: &(dyn for<'m> Fn(dp::Trainer<'m, M>) -> dp::Trainer<'m, M> + Sync),
) -> Vec<(dp::Result<(Vec<f32>, dp::Report)>, Vec<Call>)>
where
    M::Input: TestInput + Sync,
{
    use dp::distributed::{shard_range, take_shard, Shard, ThreadGroup};
    let n = data.len();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ThreadGroup::new(ranks)
            .into_iter()
            .enumerate()
            .map(|(rank, group)| {
                scope.spawn(move || {
                    let shard = take_shard(data, shard_range(n, rank, ranks)).unwrap();
                    let mut model = M::from_params(initial.to_vec());
                    let mut trainer = configure(seeded_trainer(&mut model))
                        .distributed(group, Shard::of_rank(n, rank, ranks));
                    let calls = std::sync::Arc::default();
                    if let RanksOn::Devices { fault } = on {
                        let mut device = HostTraining::<M>::new();
                        device.fault = fault.filter(|&(r, _, _)| r == rank).map(|(_, f, step)| (f, step));
                        device.calls = std::sync::Arc::clone(&calls);
                        trainer = trainer.device(device);
                    }
                    let outcome =
                        trainer.fit(&shard, Some(data)).map(|report| (model.params().to_vec(), report));
                    drop(model);
                    let calls: Vec<Call> = calls.lock().unwrap().clone();
                    (outcome, calls)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The seeded settings every run of the distributed device tests shares (those of [`train_on_both`]).
fn seeded_trainer<M: DpModel>(model: &mut M) -> dp::Trainer<'_, M> {
    dp::Trainer::new(model)
        .clip_norm(1.0)
        .noise_multiplier(0.8)
        .expected_batch_size(64)
        .seed(3)
        .allow_large_delta(true)
        .quiet(true)
}

/// `M` trained by K ranks on devices, by K ranks on the CPU and by one process on the CPU, seeded
/// alike: every rank of both distributed runs ends where the one process does (parameters to
/// `tolerance`, frozen ones bit for bit), with its steps, ε, noise multiplier and sampling rate, and
/// rank 0 with its accuracy.
fn distributed_devices_follow_the_cpu<M: DpModel>(
    name: &str,
    data: &dp::Dataset<M::Input>,
    initial: &[f32],
    ranks: usize,
    tolerance: f32,
    configure: &(dyn for<'m> Fn(dp::Trainer<'m, M>) -> dp::Trainer<'m, M> + Sync),
) where
    M::Input: TestInput + Sync,
{
    let mut single = M::from_params(initial.to_vec());
    let single_report = configure(seeded_trainer(&mut single)).fit(data, Some(data)).unwrap();
    let trained = M::TRAINED_PARAM_COUNT;
    let moved = largest_difference(&single.params()[..trained], &initial[..trained]);
    assert!(moved > 0.01, "{name}: training moved the parameters by {moved}");
    let mut on_cpu = Vec::new();
    for on in [RanksOn::Cpu, RanksOn::Devices { fault: None }] {
        for (rank, (outcome, calls)) in
            distributed_runs_logged::<M>(data, initial, ranks, on, configure).into_iter().enumerate()
        {
            let (params, report) = outcome.unwrap_or_else(|e| panic!("{name} {on:?} rank {rank}: {e}"));
            if let RanksOn::Devices { .. } = on {
                // Each rank staged its part of step t + 1's batch while its clipped sum of step t ran.
                assert_overlapped(&calls, report.steps as usize);
            }
            let diff = largest_difference(&params, single.params());
            eprintln!("{name} {on:?} K = {ranks} rank {rank}: differs from one process by {diff:.3e}");
            assert!(diff <= tolerance, "{name} {on:?} rank {rank}: differs from one process by {diff}");
            match on {
                RanksOn::Cpu => on_cpu.push(params.clone()),
                RanksOn::Devices { .. } => {
                    let diff = largest_difference(&params, &on_cpu[rank]);
                    assert!(diff <= tolerance, "{name} rank {rank}: differs from the CPU's rank by {diff}");
                }
            }
            assert_eq!(&params[trained..], &initial[trained..], "{name} {on:?}: frozen parameters changed");
            let fields = |r: &dp::Report| (r.steps, r.epsilon, r.noise_multiplier, r.sampling_rate);
            assert_eq!(fields(&report), fields(&single_report), "{name} {on:?} rank {rank}");
            if rank == 0 {
                assert_eq!(report.accuracy, single_report.accuracy, "{name} {on:?}");
                assert_eq!(report.epochs.len(), single_report.epochs.len(), "{name} {on:?}");
            }
        }
    }
}

/// `Trainer::distributed` with `Trainer::device`: K = 2 and 3 ranks of `Deep`, each with its own host
/// training state, take the single-process batches (a seeded run's shared sampling key), reduce
/// their devices' clipped sums, and apply rank 0's R = S + σC·z, its noise drawn as the CPU's step
/// draws it: every rank ends where the CPU's distributed run and one process do, with SGD (momentum),
/// with Adam, and with a moving average that every rank's device folds.
#[test]
fn distributed_runs_on_devices_follow_the_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(49);
    let (inputs, labels) = batch::<Deep>(&mut rng, 600, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng).params().to_vec();
    for ranks in [2, 3] {
        distributed_devices_follow_the_cpu::<Deep>("sgd", &data, &initial, ranks, 1e-6, &|t| {
            t.optimizer(Sgd::new(0.1).momentum(0.9)).steps(20)
        });
        distributed_devices_follow_the_cpu::<Deep>("adam", &data, &initial, ranks, 1e-6, &|t| {
            t.optimizer(Adam::new(0.01).weight_decay(1e-3)).steps(20)
        });
    }
    distributed_devices_follow_the_cpu::<Deep>("ema", &data, &initial, 2, 1e-6, &|t| {
        t.optimizer(Sgd::new(0.1).momentum(0.9)).epochs(2).ema(0.8)
    });
}

/// A rank's part of the batch larger than `Trainer::max_physical_batch` is summed on its device in
/// chunks, each staged while the one before it runs and none larger than the bound: every rank of
/// K = 2 and 3 ends where one process on the CPU with the same bound does, with its ε.
#[test]
fn distributed_runs_on_devices_sum_their_parts_in_chunks() {
    let mut rng = ChaCha8Rng::seed_from_u64(59);
    let (inputs, labels) = batch::<Deep>(&mut rng, 600, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng).params().to_vec();
    const PHYSICAL: usize = 7;
    fn configure(t: dp::Trainer<'_, Deep>) -> dp::Trainer<'_, Deep> {
        t.optimizer(Sgd::new(0.1).momentum(0.9)).steps(12)
    }
    fn bounded(t: dp::Trainer<'_, Deep>) -> dp::Trainer<'_, Deep> {
        configure(t).max_physical_batch(PHYSICAL)
    }
    let physical = PHYSICAL;
    let mut single = Deep::from_params(initial.clone());
    let single_report = bounded(seeded_trainer(&mut single)).fit(&data, None).unwrap();
    let moved = largest_difference(single.params(), &initial);
    assert!(moved > 0.01, "training moved the parameters by {moved}");
    for ranks in [2, 3] {
        let on = RanksOn::Devices { fault: None };
        for (rank, (outcome, calls)) in
            distributed_runs_logged::<Deep>(&data, &initial, ranks, on, &bounded).into_iter().enumerate()
        {
            let (params, report) = outcome.unwrap_or_else(|e| panic!("K = {ranks} rank {rank}: {e}"));
            let sizes = assert_pipelined(&calls);
            assert!(sizes.iter().all(|&n| n <= physical), "K = {ranks} rank {rank}: {sizes:?}");
            assert!(sizes.len() > report.steps as usize, "K = {ranks} rank {rank}: no part was chunked");
            let diff = largest_difference(&params, single.params());
            assert!(diff <= 1e-5 * moved.max(1.0), "K = {ranks} rank {rank}: differs by {diff}");
            assert_eq!((report.steps, report.epsilon), (single_report.steps, single_report.epsilon));
        }
    }
}

/// Frozen layers in a distributed run on devices: only the trained prefix is reduced, released and
/// updated; the frozen parameters stay as they were on every rank.
#[test]
fn distributed_runs_on_devices_follow_the_cpu_with_frozen_layers() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let (inputs, labels) = batch::<TokenLora>(&mut rng, 400, false);
    let data = dp::Dataset::new(inputs, labels, TokenLora::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial: Vec<f32> =
        TokenLora::init(&mut rng).params().iter().map(|p| p + rng.random_range(-0.3..0.3)).collect();
    assert!(TokenLora::TRAINED_PARAM_COUNT < initial.len(), "the model has frozen parameters");
    distributed_devices_follow_the_cpu::<TokenLora>("frozen", &data, &initial, 2, 1e-6, &|t| {
        t.optimizer(Sgd::new(0.5).momentum(0.9)).steps(12)
    });
}

/// A device error on one rank of a distributed run, in its clipped sum or in its update, stops every
/// rank with the same `RankFailed` naming that rank and carrying its message (no rank waits on it).
#[test]
fn a_device_failing_on_one_rank_stops_every_rank() {
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let (inputs, labels) = batch::<Deep>(&mut rng, 300, false);
    let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = Deep::init(&mut rng).params().to_vec();
    let cases = [
        (1, Fault::ClippedSum, "injected fault in the clipped sum of step 4"),
        (2, Fault::Update, "injected fault in the update of step 4"),
        (0, Fault::Update, "injected fault in the update of step 4"),
        // Rank 0 alone evaluates, at the first epoch's end: the others learn of its failure.
        (0, Fault::Evaluate, "injected fault in the evaluation after step"),
    ];
    for (failing, fault, expected) in cases {
        let on = RanksOn::Devices { fault: Some((failing, fault, 4)) };
        let outcomes =
            distributed_runs::<Deep>(&data, &initial, 3, on, &|t| t.optimizer(Sgd::new(0.1)).epochs(3));
        for (rank, outcome) in outcomes.into_iter().enumerate() {
            let error = outcome.err().unwrap_or_else(|| panic!("{fault:?}: rank {rank} did not fail"));
            match error.root() {
                dp::Error::RankFailed { rank: named, ranks: 3, message } => {
                    assert_eq!(*named, failing, "{fault:?}: rank {rank}");
                    assert!(message.contains(expected), "{fault:?}: rank {rank}: {message}");
                }
                other => panic!("{fault:?}: rank {rank}: expected rank {failing}'s failure, got {other}"),
            }
            // Steps were spent before the failure: the error says so.
            assert!(matches!(error, dp::Error::Interrupted { .. }), "{fault:?}: rank {rank}: {error}");
        }
    }
}

/// A distributed run on devices writes checkpoints (rank 0, its optimizer state from its device) and
/// resumes from them: cut after 7 steps and resumed by both ranks, with SGD (momentum) and Adam, every
/// rank ends where the CPU's distributed run cut and resumed alike does, and the last checkpoints'
/// optimizer states agree.
#[test]
fn a_distributed_run_on_devices_checkpoints_and_resumes_like_the_cpu() {
    fn check<O: Optimizer + 'static>(name: &str, seed: u64, make: impl Fn() -> O + Sync) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (inputs, labels) = batch::<Deep>(&mut rng, 600, false);
        let data = dp::Dataset::new(inputs, labels, Deep::INPUT_SHAPE.to_vec(), 1).unwrap();
        let initial = Deep::init(&mut rng).params().to_vec();
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("distributed-device-resume-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let finals = [RanksOn::Cpu, RanksOn::Devices { fault: None }].map(|on| {
            let path = dir.join(format!("{}.safetensors", matches!(on, RanksOn::Cpu)));
            let cut = distributed_runs::<Deep>(&data, &initial, 2, on, &|t| {
                t.optimizer(make()).epochs(2).max_steps(7).checkpoint(&path)
            });
            let cut_params = cut.into_iter().map(|o| o.unwrap().0).collect::<Vec<_>>();
            let saved = dp::checkpoint::load::<Deep>(&path).unwrap();
            assert_eq!((saved.steps, saved.optimizer.updates, saved.identity.ranks), (7, 7, 2), "{name}");
            assert_eq!(saved.params, cut_params[0], "{name}: the checkpoint holds rank 0's parameters");
            let resumed = distributed_runs::<Deep>(&data, &initial, 2, on, &|t| {
                t.optimizer(make()).epochs(2).resume_from(&path).checkpoint(&path)
            });
            let params = resumed.into_iter().map(|o| o.unwrap().0).collect::<Vec<_>>();
            (params, dp::checkpoint::load::<Deep>(&path).unwrap().optimizer)
        });
        let [(cpu, cpu_state), (dev, dev_state)] = finals;
        let moved = largest_difference(&cpu[0], &initial);
        assert!(moved > 0.01, "{name}: training moved the parameters by {moved}");
        for rank in 0..2 {
            let diff = largest_difference(&dev[rank], &cpu[rank]);
            eprintln!("{name} rank {rank}: resumed on devices and on the CPU, the runs differ by {diff:.3e}");
            assert!(diff <= 1e-6, "{name} rank {rank}: the resumed runs differ by {diff}");
        }
        assert_eq!(
            (dev_state.kind.as_str(), dev_state.updates),
            (cpu_state.kind.as_str(), cpu_state.updates)
        );
        for ((n, c), (_, d)) in cpu_state.buffers.iter().zip(&dev_state.buffers) {
            let scale = c.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            assert!(largest_difference(c, d) <= 1e-5 * scale.max(1.0), "{name}: the checkpoints' {n} differ");
        }
        assert_eq!(cpu_state.buffers.len(), dev_state.buffers.len(), "{name}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    check("sgd", 54, || Sgd::new(0.1).momentum(0.9));
    check("adam", 55, || Adam::new(0.01).weight_decay(1e-3));
}

/// Augmentation multiplicity in a distributed run on devices: each rank's engine draws the views of
/// its own examples as the CPU's distributed step does and its device averages, clips and sums them
/// (`clipped_sum_with_views_to_host`), so every rank ends where the CPU's distributed run with views
/// does (to rounding), flat and per-layer, with examples whose every view is NaN on both ranks.
#[test]
fn views_in_a_distributed_run_on_devices_follow_the_cpu() {
    use dp::data::augment::Augmentation;
    let mut rng = ChaCha8Rng::seed_from_u64(53);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 200, false);
    let len = SmallConv::input_len();
    for example in [3, 150] {
        inputs[example * len..(example + 1) * len].fill(f32::NAN);
    }
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng).params().to_vec();
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    for per_layer in [false, true] {
        let outcomes = |on| {
            distributed_runs::<SmallConv>(&data, &initial, 2, on, &|t| {
                t.optimizer(Sgd::new(0.5).momentum(0.9))
                    .per_layer_clipping(per_layer)
                    .epochs(2)
                    .augmentation_multiplicity(3, augmentation)
            })
        };
        let on_cpu = outcomes(RanksOn::Cpu);
        let on_devices = outcomes(RanksOn::Devices { fault: None });
        for (rank, (cpu, dev)) in on_cpu.into_iter().zip(on_devices).enumerate() {
            let ((cpu, cpu_report), (dev, dev_report)) = (cpu.unwrap(), dev.unwrap());
            let moved = largest_difference(&cpu, &initial);
            let diff = largest_difference(&dev, &cpu);
            assert!(
                moved > 0.01,
                "per-layer {per_layer} rank {rank}: training moved the parameters by {moved}"
            );
            assert!(diff <= 1e-6 * moved.max(1.0), "per-layer {per_layer} rank {rank}: differs by {diff}");
            assert_eq!((dev_report.steps, dev_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
            assert_eq!(dev_report.accuracy.to_bits(), cpu_report.accuracy.to_bits(), "rank {rank}");
        }
    }
}

/// The FCNN trained on the shipped Adult data to ε = 1 with its recipe (1,272 steps of 256), seeded
/// alike, by the trainer on the host training state in f32 and in bf16 with the activations and output
/// gradients stored in bf16: the same steps and ε, and test accuracies within 0.3 points (issue 12's
/// bound for bf16). The two runs draw the same batches and noise; only the rounding differs. A third
/// run in bf16 storing f32 shows that storage was on (the parameters differ).
#[test]
fn bf16_storage_trains_the_fcnn_on_adult_to_its_f32_accuracy() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/adult");
    let (train, test) =
        dp::data::adult::load(format!("{dir}/adult_train.csv.gz"), format!("{dir}/adult_test.csv.gz"))
            .unwrap();
    let initial = AdultFfnn::init(&mut ChaCha8Rng::seed_from_u64(1));
    let recipe = dp::models::recipe::FFNN;
    let run = |precision: Precision, storing: bool| {
        let mut model = AdultFfnn::from_params(initial.params().to_vec());
        let device = match storing {
            true => HostTraining::<AdultFfnn>::storing_bf16(),
            false => HostTraining::<AdultFfnn>::new(),
        };
        let report = dp::Trainer::new(&mut model)
            .optimizer(recipe.optimizer())
            .clip_norm(recipe.clip_norm)
            .expected_batch_size(recipe.batch_size)
            .epochs(recipe.epochs)
            .target_privacy(1.0, 1e-5)
            .seed(1)
            .quiet(true)
            .precision(precision)
            .device(device)
            .fit(&train, Some(&test))
            .unwrap();
        (report.steps, report.epsilon, report.accuracy, model.params().to_vec())
    };
    let (f32_steps, f32_epsilon, f32_accuracy, _) = run(Precision::F32, true);
    let (steps, epsilon, accuracy, stored) = run(Precision::Bf16, true);
    // Storage was on: the run moved from the same bf16 run storing f32.
    let (.., unstored) = run(Precision::Bf16, false);
    let moved = largest_difference(&stored, &unstored);
    assert!(moved > 1e-4, "bf16 storage left the parameters where f32 storage did ({moved})");
    eprintln!(
        "Adult FCNN, {steps} steps to ε = {epsilon:.3}: f32 {f32_accuracy:.4}, bf16 storage {accuracy:.4}"
    );
    assert_eq!((steps, epsilon), (f32_steps, f32_epsilon));
    assert!(f32_accuracy > 0.8, "the f32 run reached {f32_accuracy}");
    assert!((accuracy - f32_accuracy).abs() <= 0.003, "bf16 storage {accuracy}, f32 {f32_accuracy}");
}

/// A measurement, not run by `cargo test`: the main job (the ScatterNet CNN on the shipped MNIST's
/// ScatterNet features, its recipe, ε = 3) for `DP_MAIN_JOB_STEPS` steps (by default 200, CI's
/// length: about 4 minutes on the host reference's loops; the whole run, e.g. 100000, stops at its
/// 1,758 planned steps: 47 minutes on a 2-core machine shared with a build), seeded alike on the CPU
/// in f32 and on the host training state in bf16 with bf16 storage; prints both accuracies
/// (2026-12-05: 98.32% and 98.31% over the whole run). Run with
/// `cargo test --release --test device_program main_job_with_bf16_storage -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement of minutes to an hour: see its documentation"]
fn main_job_with_bf16_storage_on_the_host() {
    use dp::data::scattering::Scattering2d;
    let steps = std::env::var("DP_MAIN_JOB_STEPS").map_or(200, |s| s.parse().unwrap());
    let (train, test) = dp::data::mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).unwrap();
    let scattering = Scattering2d::new(28, 28, 2, 8).unwrap();
    let (train, test) =
        (scattering.transform_dataset(&train).unwrap(), scattering.transform_dataset(&test).unwrap());
    let initial = ScatterCnn::init(&mut ChaCha8Rng::seed_from_u64(1));
    let recipe = dp::models::recipe::SCATTER_CNN;
    let run = |on_host: bool| {
        let started = std::time::Instant::now();
        let mut model = ScatterCnn::from_params(initial.params().to_vec());
        let trainer = dp::Trainer::new(&mut model)
            .optimizer(recipe.optimizer())
            .clip_norm(recipe.clip_norm)
            .expected_batch_size(recipe.batch_size)
            .epochs(recipe.epochs)
            .target_privacy(3.0, 1e-5)
            .max_steps(steps)
            .seed(1)
            .quiet(true);
        let report = match on_host {
            true => trainer
                .precision(Precision::Bf16)
                .device(HostTraining::<ScatterCnn>::storing_bf16())
                .fit(&train, Some(&test)),
            false => trainer.fit(&train, Some(&test)),
        }
        .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: {} steps, ε = {:.3}, accuracy {:.4} ({seconds:.0} s)",
            if on_host { "host, bf16 with bf16 storage" } else { "CPU, f32" },
            report.steps,
            report.epsilon,
            report.accuracy
        );
        report.accuracy
    };
    let (f32_accuracy, bf16_accuracy) = (run(false), run(true));
    eprintln!("bf16 storage against f32: {:+.2} points", 100.0 * (bf16_accuracy - f32_accuracy));
}
