//! The generated device programs with their activations and output gradients STORED in bf16, on the
//! host reference backend (`HostDevice::set_bf16_storage`): every arena span marked
//! `Stored::OfPrecision` is rounded to bf16 when written and lives apart from the f32 arena, so a
//! buffer written in one type and read in the other reads the NaN it was filled with.
//!
//! What must hold exactly is the clipping contract: the clipped sum adds the per-example gradients
//! whose norms were measured. With clip factors 1 for one example and 0 for the others, the clipped sum
//! is that example's gradient as the program forms it; its squared norm must be the norm the program
//! measured, to f32 rounding. The rest moves by bf16's rounding of what is stored (8 bits, 2⁻⁹
//! relative per value): the losses, norms and clipped sum against the CPU's bf16 program to a stated
//! tolerance, and away from the same program storing f32 (so storage that ignored the marks fails).
//! An example whose inputs are NaN, given factor 0, contributes nothing.

use dp::device::Region;
use dp::models::{AdultFfnn, AdultLogReg, MnistCnn};
use dp::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod dense_models;

use dense_models::activations_from_input::ActivationsFromInput;
use dense_models::image_activations_from_input::ImageActivationsFromInput;
use dense_models::norm_residual::NormResidual;
use dense_models::token_lora::TokenLora;
use dense_models::{
    batch, close, close_sum, cpu_reference_in, private_pass_on_host_storing, run_on_host_storing,
    ActivatedOutput, CausalAttention, Deep, DenseAttention, DenseLstm, DepthwiseSeparable, DeviceRun,
    GroupedConvs, LstmSequence, PatchFirst, PooledConv, SequenceLinear, SequenceLinearDirect,
    SequenceNormGelu, SigmoidBce, SmallConv, SmallLstm, SmallLstmDirect, SmallLstmGhost, StackedAttention,
    TanhMse, TestInput, TokenBag, TokenMlp, TokenSeq, TokenSequenceLinear,
};

/// One private pass in bf16, storing in bf16 or not.
fn pass<M: DpModel>(
    model: &M,
    bf16_storage: bool,
    inputs: &[M::Input],
    labels: &[f32],
    factors: &[f32],
    n: usize,
) -> DeviceRun
where
    M::Input: TestInput,
{
    run_on_host_storing(model, Precision::Bf16, bf16_storage, inputs, labels, factors, n)
}

/// The clipping contract in bf16, storing in bf16 or not (`storing`), example by example. With factor 1 for example `i` and 0
/// for the others (every group), the clipped sum is example `i`'s gradient `g_i`, and its squared norm
/// is the sum of the norms the program measured for it (to f32 rounding, 1e-4 relative). With a
/// factor of 0.7 instead (not a power of two, so its products round), the clipped sum is `0.7·g_i` to
/// f32 rounding: the scaled gradient is formed in f32, never rounded to bf16 on its way into the sum
/// (a rounding would move it by up to 2⁻⁹ relative, past what was measured).
fn clipped_gradient_has_its_measured_norm<M: DpModel>(
    model: &M,
    storing: bool,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
) where
    M::Input: TestInput,
{
    let groups = M::GROUPS.len();
    let one_hot = |i: usize, factor: f32| {
        let mut factors = vec![0.0; n * groups];
        factors[i * groups..(i + 1) * groups].fill(factor);
        factors
    };
    for i in 0..n {
        let run = pass(model, storing, inputs, labels, &one_hot(i, 1.0), n);
        let measured: f64 = run.sq_norms[i * groups..(i + 1) * groups].iter().map(|&s| f64::from(s)).sum();
        let summed: f64 = run.clipped_sum.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
        assert!(
            measured.is_finite() && (summed - measured).abs() <= 1e-4 * measured.max(1e-8),
            "{} n={n} storing {storing} example {i}: the clipped sum's squared norm {summed}, measured {measured}",
            M::NAME
        );
        let scaled = pass(model, storing, inputs, labels, &one_hot(i, 0.7), n);
        let want: Vec<f32> = run.clipped_sum.iter().map(|&g| 0.7 * g).collect();
        close_sum(
            &format!("{} n={n} storing {storing} example {i} scaled by 0.7", M::NAME),
            &scaled.clipped_sum,
            &want,
            1e-5,
        );
    }
}

/// bf16 storage against the CPU's f32 program: losses to `loss_tol` relative, norms to `grad_tol`
/// relative and the clipped and plain sums to `grad_tol` of their largest coordinate; away from the same device
/// program storing f32 by more than 1e-4 relative somewhere; and the clipping contract at the largest
/// size.
fn bf16_storage_holds<M: DpModel>(seed: u64, sizes: &[usize], loss_tol: f32, grad_tol: f32)
where
    M::Input: TestInput,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let (mut moved, mut off_loss, mut off_norm) = (0.0f32, 0.0f32, 0.0f32);
    let relative = |a: f32, b: f32| (a - b).abs() / b.abs().max(1e-3);
    for &n in sizes {
        let (inputs, labels) = batch::<M>(&mut rng, n, false);
        let cpu = cpu_reference_in(Precision::F32, &model, &inputs, &labels, n, 0.5);
        let stored = pass(&model, true, &inputs, &labels, &cpu.factors, n);
        let tag = |what: &str| format!("{} bf16 storage n={n} {what}", M::NAME);
        off_loss = stored.losses.iter().zip(&cpu.losses).fold(off_loss, |m, (&s, &c)| m.max(relative(s, c)));
        off_norm =
            stored.sq_norms.iter().zip(&cpu.sq_norms).fold(off_norm, |m, (&s, &c)| m.max(relative(s, c)));
        close(&tag("losses"), &stored.losses, &cpu.losses, loss_tol);
        close(&tag("squared norms"), &stored.sq_norms, &cpu.sq_norms, grad_tol);
        close_sum(&tag("clipped sum"), &stored.clipped_sum, &cpu.clipped_sum, grad_tol);
        // The plain sum of a non-private step, from the same stored values.
        let mut dev =
            private_pass_on_host_storing(&model, Precision::Bf16, true, &inputs, &labels, &cpu.factors, n);
        dev.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
        M::device_forward_backward(&mut dev, n).unwrap();
        M::device_gradient_sum(&mut dev, n).unwrap();
        close_sum(&tag("gradient sum"), dev.get(Region::Grad), &cpu.gradient_sum, grad_tol);
        // The forward alone (evaluation): the outputs, read as stored, against the CPU's forward.
        M::device_forward(&mut dev, n).unwrap();
        let outputs = dev.values(M::device_outputs(n).unwrap()).unwrap();
        let mut want = vec![0.0; n * M::LOSS.output_len()];
        model.forward(&mut dp::Workspace::new::<M>(n), &inputs, n, &mut want);
        close_sum(&tag("outputs"), &outputs, &want, grad_tol);
        let unstored = pass(&model, false, &inputs, &labels, &cpu.factors, n);
        let pairs =
            stored.losses.iter().zip(&unstored.losses).chain(stored.sq_norms.iter().zip(&unstored.sq_norms));
        moved = pairs.fold(moved, |m, (&s, &u)| m.max(relative(s, u)));
    }
    eprintln!(
        "{}: bf16 storage against the CPU in f32: losses {off_loss}, norms {off_norm}; against f32 storage {moved}",
        M::NAME
    );
    assert!(
        moved > 1e-4,
        "{}: storing in bf16 changed nothing (largest relative difference {moved})",
        M::NAME
    );
    let n = *sizes.last().unwrap();
    let (inputs, labels) = batch::<M>(&mut rng, n, false);
    // In bf16 storing in f32 too: the products round what they read, and a clipped sum of f32
    // operands (a ghost conv's) must round them as the norms' products did.
    for storing in [true, false] {
        clipped_gradient_has_its_measured_norm(&model, storing, &inputs, &labels, n);
    }
    if <M::Input as TestInput>::POISONS {
        a_nan_example_contributes_nothing(&model, &mut rng, n, grad_tol);
    }
}

/// Example 0 NaN (dense inputs): the CPU gives it factor 0, and with bf16 storage its NaN activations
/// and gradients, rounded and stored like any, still reach nothing of the clipped sum.
fn a_nan_example_contributes_nothing<M: DpModel>(model: &M, rng: &mut ChaCha8Rng, n: usize, grad_tol: f32)
where
    M::Input: TestInput,
{
    let (inputs, labels) = batch::<M>(rng, n, true);
    let cpu = cpu_reference_in(Precision::F32, model, &inputs, &labels, n, 0.5);
    assert!(
        cpu.factors[..M::GROUPS.len()].iter().all(|&f| f == 0.0),
        "{}: the NaN example's factors",
        M::NAME
    );
    let stored = pass(model, true, &inputs, &labels, &cpu.factors, n);
    let what = format!("{} bf16 storage n={n} clipped sum with a NaN example", M::NAME);
    assert!(stored.clipped_sum.iter().all(|g| g.is_finite()), "{what}: not finite");
    close_sum(&what, &stored.clipped_sum, &cpu.clipped_sum, grad_tol);
}

#[test]
fn dense_models_store_in_bf16() {
    bf16_storage_holds::<AdultLogReg>(41, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<AdultFfnn>(42, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<Deep>(43, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<TanhMse>(44, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<SigmoidBce>(45, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<ActivatedOutput>(46, &[1, 7], 1e-2, 3e-2);
}

#[test]
fn token_models_store_in_bf16() {
    bf16_storage_holds::<TokenBag>(47, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<TokenSeq>(48, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<TokenSequenceLinear>(49, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<TokenMlp>(50, &[1, 7], 1e-2, 3e-2);
    bf16_storage_holds::<TokenLora>(51, &[1, 7], 1e-2, 3e-2);
}

#[test]
fn lstms_store_in_bf16() {
    bf16_storage_holds::<SmallLstm>(52, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<SmallLstmGhost>(53, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<SmallLstmDirect>(54, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<LstmSequence>(55, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<DenseLstm>(56, &[1, 5], 1e-2, 3e-2);
}

/// A conv by the ghost norm on the model's input, which is f32 while the arena stores in bf16: its
/// norms' products round the input, so must its clipped sum's operands.
#[dp_model(input = [6, 5, 5], loss = cross_entropy(classes = 3))]
pub struct GhostFirstConv {
    #[layer(conv2d(out = 8, kernel = 3, padding = 1, norms = ghost), tanh)]
    conv: Conv2d,
    #[layer(flatten, linear(out = 3))]
    fc: Linear,
}

#[test]
fn convolutions_store_in_bf16() {
    bf16_storage_holds::<GhostFirstConv>(56, &[1, 4], 1e-2, 3e-2);
    bf16_storage_holds::<SmallConv>(57, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<PooledConv>(58, &[1, 5], 1e-2, 1e-1);
    bf16_storage_holds::<NormResidual>(59, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<GroupedConvs>(60, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<DepthwiseSeparable>(61, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<ImageActivationsFromInput>(62, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<MnistCnn>(63, &[1, 3], 1e-2, 0.5);
}

#[test]
fn sequences_and_attention_store_in_bf16() {
    bf16_storage_holds::<SequenceLinear>(64, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<SequenceLinearDirect>(65, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<ActivationsFromInput>(66, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<SequenceNormGelu>(67, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<PatchFirst>(68, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<DenseAttention>(69, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<CausalAttention>(70, &[1, 5], 1e-2, 3e-2);
    bf16_storage_holds::<StackedAttention>(71, &[1, 5], 1e-2, 3e-2);
}
