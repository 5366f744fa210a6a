//! The generated device programs in bf16 on the host reference backend (`HostDevice`), against the
//! CPU program in bf16. A device program marks each product with what its operands may be
//! (`Operands`): the forward's products, the backward's to the inputs and those forming kept
//! per-example gradients may round to bf16; a ghost layer's clipped and plain sums stay f32, as on the
//! CPU, so that each example's clipped contribution is the gradient whose norm was measured. The host
//! backend rounds exactly as the CPU's bf16 products do, so where the two programs round the same
//! operands they agree as closely as in f32; `tests/gpu_programs.rs` runs these programs on a GPU.

use dp::device::{DeviceError, DeviceOptimizer, DevicePrivateStep, DeviceStepOutcome, DeviceTraining};
use dp::models::{AdultFfnn, AdultLogReg, MnistCnn};
use dp::optim::{OptimizerState, Sgd};
use dp::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod dense_models;

use dense_models::{
    batch, close, close_sum, cpu_reference_in, run_on_host_storing, CausalAttention, Deep, DenseLstm,
    SmallConv, SmallLstmDirect, SmallLstmGhost, StackedAttention, TanhMse, TestInput,
};
use dense_models::{DepthwiseSeparable, GroupedConvs};
use dense_models::{SequenceLinear, SequenceLinearDirect};

/// The device program in bf16 against the CPU program in bf16 (losses and norms to `tol` relative,
/// the clipped and plain sums to `tol` of their largest coordinate), with the CPU's bf16 clip factors; and the
/// device's bf16 losses and norms away from its f32 ones by more than 1e-3 relative somewhere, so that
/// a device ignoring its precision fails here.
fn bf16_device_matches_bf16_cpu<M: DpModel>(seed: u64, sizes: &[usize], tol: f32)
where
    M::Input: TestInput,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let mut moved = 0.0f32;
    for &n in sizes {
        let (inputs, labels) = batch::<M>(&mut rng, n, false);
        let cpu = cpu_reference_in(Precision::Bf16, &model, &inputs, &labels, n, 0.5);
        let dev = run_on_host_storing(&model, Precision::Bf16, false, &inputs, &labels, &cpu.factors, n);
        let tag = |what: &str| format!("{} bf16 n={n} {what}", M::NAME);
        close(&tag("losses"), &dev.losses, &cpu.losses, tol);
        close(&tag("squared norms"), &dev.sq_norms, &cpu.sq_norms, tol);
        close_sum(&tag("clipped sum"), &dev.clipped_sum, &cpu.clipped_sum, tol);
        let plain = plain_sum_on_host(&model, &inputs, &labels, n);
        close_sum(&tag("gradient sum"), &plain, &cpu.gradient_sum, tol.max(PLAIN_CONV_SUM_TOL));
        let f32_run = run_on_host_storing(&model, Precision::F32, false, &inputs, &labels, &cpu.factors, n);
        let pairs = dev.losses.iter().zip(&f32_run.losses).chain(dev.sq_norms.iter().zip(&f32_run.sq_norms));
        for (b, f) in pairs {
            moved = moved.max((b - f).abs() / f.abs().max(1e-3));
        }
    }
    eprintln!("{}: bf16 against f32, largest relative difference {moved}", M::NAME);
    assert!(
        moved > 1e-3,
        "{}: the bf16 losses and norms are the f32 ones (largest relative difference {moved})",
        M::NAME
    );
}

/// The plain sum's tolerance at least: a conv's plain weight gradient on the device rounds its
/// operands in bf16 (one product over the batch), the CPU's only for convs of over 2^20 multiply-adds
/// per example that it does not fold (`rounds_gradient_operands`), so the test convs' plain sums
/// differ by bf16's rounding of the terms (2^-9 relative each: up to 1.1e-3 of the largest coordinate
/// measured at n = 7, for the grouped convs and the activations after convs, as the per-example
/// products summed before did); a dropped group offset moves them by far more.
const PLAIN_CONV_SUM_TOL: f32 = 1e-2;

/// The device program's plain sum (a non-private step's) in bf16 on the host reference, buffers in f32.
fn plain_sum_on_host<M: DpModel>(model: &M, inputs: &[M::Input], labels: &[f32], n: usize) -> Vec<f32>
where
    M::Input: TestInput,
{
    let mut dev = dense_models::loaded_on_host(model, Precision::Bf16, false, inputs, labels, n);
    M::device_forward_backward(&mut dev, n).unwrap();
    M::device_gradient_sum(&mut dev, n).unwrap();
    dev.get(dp::device::Region::Grad).to_vec()
}

/// Linear layers round the same operands on both (the forward's and the backward's products; ghost
/// norms and sums in f32 from unrounded operands): as close as the f32 programs are.
#[test]
fn logreg_bf16_device_program_matches_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<AdultLogReg>(21, &[1, 7, 64], 1e-4);
}

#[test]
fn ffnn_bf16_device_program_matches_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<AdultFfnn>(22, &[1, 7, 64], 1e-4);
}

#[test]
fn deep_bf16_device_program_matches_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<Deep>(23, &[1, 7, 33], 1e-4);
}

#[test]
fn tanh_mse_bf16_device_program_matches_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<TanhMse>(24, &[1, 7, 33], 1e-4);
}

/// Convolutions whose per-example gradients the CPU keeps too (direct norms): both form them with bf16
/// products, so the programs agree as in f32.
#[test]
fn small_conv_bf16_device_program_matches_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<SmallConv>(25, &[1, 7], 1e-4);
}

/// The MNIST CNN's second conv has ghost norms on the CPU, which forms them and its clipped sum in f32
/// (its per-example product is below `BF16_GRADIENT_MIN_MACS`), while the device keeps that conv's
/// per-example gradients and forms them with bf16 products (normed and summed alike). The forward and
/// the losses round the same operands on both; that conv's norms differ by the rounding of its
/// gradient's operands (2.5e-4 relative measured; bf16 keeps 8 bits, 2⁻⁹ relative per operand).
#[test]
fn mnist_cnn_bf16_device_program_matches_the_bf16_cpu_to_the_rounding_of_a_ghost_conv() {
    bf16_device_matches_bf16_cpu::<MnistCnn>(26, &[1, 5], 2e-3);
}

/// LSTMs: the forward's and the backward's products round the same operands on both; the direct
/// norms' kept gradients are formed with bf16 products on both.
#[test]
fn lstm_bf16_device_programs_match_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<SmallLstmDirect>(28, &[1, 7], 1e-4);
    bf16_device_matches_bf16_cpu::<DenseLstm>(29, &[1, 7], 1e-4);
}

/// An LSTM with ghost norms on the CPU (formed from unrounded operands, its clipped sum in f32) against
/// the device's kept bf16 gradients: 2.2e-3 relative measured on the norms of 7 positions.
#[test]
fn ghost_lstm_bf16_device_program_matches_the_bf16_cpu_to_the_rounding_of_its_gradients() {
    bf16_device_matches_bf16_cpu::<SmallLstmGhost>(30, &[1, 7], 5e-3);
}

/// Linear layers over a sequence with direct norms: the per-example gradients are kept and formed by
/// bf16 products on both.
#[test]
fn direct_linear_over_a_sequence_bf16_device_program_matches_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<SequenceLinearDirect>(31, &[1, 7, 33], 1e-4);
}

/// With a ghost layer over the sequence and a direct one at one position, whose gradients the CPU
/// does not keep: it forms their norms from unrounded operands (their clipped sums in f32), the device
/// from its kept bf16 gradients (5.6e-3 relative measured on one norm).
#[test]
fn linear_over_a_sequence_bf16_device_program_matches_the_bf16_cpu_to_the_rounding_of_its_gradients() {
    bf16_device_matches_bf16_cpu::<SequenceLinear>(32, &[1, 7, 33], 1e-2);
}

/// Attention: the projections' forward and backward products round the same operands on both; the
/// core, the norms and the clipped sum are f32 on both (the device's kept gradients marked `F32`).
#[test]
fn attention_bf16_device_programs_match_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<CausalAttention>(31, &[1, 7], 1e-4);
    bf16_device_matches_bf16_cpu::<StackedAttention>(32, &[1, 7], 1e-4);
}

/// A training state that records the precision the trainer sets before it uploads anything.
struct PrecisionProbe {
    set: Vec<Precision>,
    uploaded_after: Option<usize>,
}

impl<M: DpModel> DeviceTraining<M> for &mut PrecisionProbe {
    fn describe(&self) -> String {
        "precision probe".into()
    }
    fn set_precision(&mut self, precision: Precision) -> Result<(), DeviceError> {
        self.set.push(precision);
        Ok(())
    }
    fn upload(&mut self, _params: &[f32]) -> Result<(), DeviceError> {
        self.uploaded_after.get_or_insert(self.set.len());
        Ok(())
    }
    fn download(&mut self, _params: &mut [f32]) -> Result<(), DeviceError> {
        Ok(())
    }
    fn optimizer_state(&mut self) -> Result<OptimizerState, DeviceError> {
        Ok(OptimizerState { kind: "sgd".into(), updates: 0, buffers: Vec::new() })
    }
    fn load_optimizer_state(&mut self, _state: &OptimizerState) -> Result<(), DeviceError> {
        Ok(())
    }
    fn start_average(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
    fn fold_average(&mut self, _decay: f64) -> Result<(), DeviceError> {
        Ok(())
    }
    fn download_average(&mut self, _average: &mut [f32]) -> Result<(), DeviceError> {
        Ok(())
    }
    fn last_losses_and_factors(
        &mut self,
        _n: usize,
        _views: usize,
        _losses: &mut [f32],
        _factors: &mut [f32],
    ) -> Result<(), DeviceError> {
        Ok(())
    }
    fn queue_non_private_step(&mut self, _optimizer: &DeviceOptimizer) -> Result<(), DeviceError> {
        Ok(())
    }
    fn finish_non_private_step(&mut self, _losses: &mut [f32]) -> Result<DeviceStepOutcome, DeviceError> {
        Ok(DeviceStepOutcome { non_finite_examples: 0, overflowed: false })
    }
    fn stage_batch(&mut self, _inputs: &[M::Input], _labels: &[f32], _n: usize) -> Result<(), DeviceError> {
        Ok(())
    }
    fn outputs(&mut self, _inputs: &[M::Input], _n: usize, outputs: &mut [f32]) -> Result<(), DeviceError> {
        outputs.fill(0.0);
        Ok(())
    }
    fn queue_private_step(&mut self, _step: &DevicePrivateStep) -> Result<(), DeviceError> {
        Ok(())
    }
    fn finish_private_step(&mut self) -> Result<DeviceStepOutcome, DeviceError> {
        Ok(DeviceStepOutcome { non_finite_examples: 0, overflowed: false })
    }
    fn private_step_with_views(
        &mut self,
        _inputs: &[M::Input],
        _labels: &[f32],
        _n: usize,
        _views: usize,
        _step: &DevicePrivateStep,
    ) -> Result<DeviceStepOutcome, DeviceError> {
        Ok(DeviceStepOutcome { non_finite_examples: 0, overflowed: false })
    }
    fn queue_clipped_sum(
        &mut self,
        _clip_mode: dp::clipping::ClipMode,
        _clip_norm: f64,
    ) -> Result<(), DeviceError> {
        Ok(())
    }
    fn finish_clipped_sum(&mut self, sum: &mut [f32]) -> Result<usize, DeviceError> {
        sum.fill(0.0);
        Ok(0)
    }
    fn clipped_sum_with_views_to_host(
        &mut self,
        _inputs: &[M::Input],
        _labels: &[f32],
        _n: usize,
        _views: usize,
        _clip_mode: dp::clipping::ClipMode,
        _clip_norm: f64,
        sum: &mut [f32],
    ) -> Result<usize, DeviceError> {
        sum.fill(0.0);
        Ok(0)
    }
    fn released_update(&mut self, _: &[f64], _: f64, _: DeviceOptimizer) -> Result<bool, DeviceError> {
        Ok(false)
    }
}

/// `Trainer::precision` reaches the device, before the parameters do.
#[test]
fn the_trainer_gives_its_precision_to_the_device() {
    for precision in [Precision::Bf16, Precision::F32] {
        let mut rng = ChaCha8Rng::seed_from_u64(27);
        let mut model = AdultLogReg::init(&mut rng);
        let (inputs, labels) = batch::<AdultLogReg>(&mut rng, 64, false);
        let train = Dataset::new(inputs, labels, vec![104], 1).unwrap();
        let mut probe = PrecisionProbe { set: Vec::new(), uploaded_after: None };
        dp::Trainer::new(&mut model)
            .optimizer(Sgd::new(0.1))
            .clip_norm(1.0)
            .noise_multiplier(1.0)
            .expected_batch_size(16)
            .steps(2)
            .precision(precision)
            .device(&mut probe)
            .quiet(true)
            .fit(&train, None)
            .unwrap();
        assert_eq!(probe.set, vec![precision]);
        assert_eq!(probe.uploaded_after, Some(1), "the precision is set before the upload");
    }
}

/// Grouped convs (two groups; a group per channel between 1×1 convs): each group's products round the
/// same operands on both.
#[test]
fn grouped_convs_bf16_device_programs_match_the_bf16_cpu() {
    bf16_device_matches_bf16_cpu::<GroupedConvs>(30, &[1, 7], 1e-4);
    bf16_device_matches_bf16_cpu::<DepthwiseSeparable>(31, &[1, 7], 1e-4);
}

/// GELU, SiLU and exact GELU after a conv (direct norms: its kept gradients formed by bf16 products on
/// both), a group norm and a residual add, and layer norm over a sequence then GELU: the activations
/// and norms are f32 on both, the products round the same operands.
#[test]
fn activations_from_their_input_after_convs_and_norms_bf16_device_programs_match_the_bf16_cpu() {
    use dense_models::image_activations_from_input::ImageActivationsFromInput;
    bf16_device_matches_bf16_cpu::<ImageActivationsFromInput>(33, &[1, 7], 1e-4);
    bf16_device_matches_bf16_cpu::<dense_models::SequenceNormGelu>(34, &[1, 7, 33], 1e-4);
}
