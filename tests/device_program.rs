//! The generated device programs, run on the host reference backend (`HostDevice`), against the CPU
//! program of the same model: losses, per-example squared norms, the clipped sum (an example with a
//! non-finite input and factor 0 contributing exactly nothing) and the plain gradient sum. This tests
//! the launch sequence the macro emits (offsets, shapes, transposes, pass order) on every run, with no
//! GPU; `dp-cuda/tests/gpu_programs.rs` runs the same programs on a GPU.

use dp::models::{AdultFfnn, AdultLogReg, MnistCnn};
use dp::prelude::*;
use dp::clipping::{clip_factors, ClipMode};
use dp::device::host::HostDevice;
use dp::device::{DeviceError, Region};
use dp::{Batch, Workspace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[dp_model(input = [3, 2], loss = mse)]
struct TanhMse {
    #[layer(flatten, linear(out = 5, in = 6), tanh)]
    fc1: Linear,
    #[layer(linear(out = 2, bias = false))]
    fc2: Linear,
}

/// A standalone tanh on the input, linear → sigmoid (fused) → relu (standalone), one logit.
#[dp_model(input = [6], loss = binary_cross_entropy)]
struct SigmoidBce {
    #[layer(tanh)]
    squash: Tanh,
    #[layer(linear(out = 4), sigmoid, relu)]
    hidden: Linear,
    #[layer(linear(out = 1))]
    out: Linear,
}

#[dp_model(input = [5], loss = cross_entropy(classes = 3))]
struct Deep {
    #[layer(linear(out = 8), relu)]
    a: Linear,
    #[layer(linear(out = 6), tanh)]
    b: Linear,
    #[layer(linear(out = 3))]
    c: Linear,
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1e-3), "{what}[{i}]: device {g}, cpu {w}");
    }
}

/// Inputs (uniform, or class-valid labels) for `n` examples of `M`; example 0 poisoned with NaN when
/// `poison`.
fn batch<M: DpModel<Input = f32>>(rng: &mut ChaCha8Rng, n: usize, poison: bool) -> (Vec<f32>, Vec<f32>) {
    let mut inputs: Vec<f32> = (0..n * M::input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    if poison {
        inputs[0] = f32::NAN;
    }
    let labels = match M::LOSS {
        Loss::CrossEntropy { classes } => (0..n).map(|_| rng.random_range(0..classes) as f32).collect(),
        Loss::BinaryCrossEntropy => (0..n).map(|_| rng.random_range(0..2) as f32).collect(),
        Loss::MeanSquaredError { outputs } => (0..n * outputs).map(|_| rng.random_range(-1.0..1.0)).collect(),
    };
    (inputs, labels)
}

fn device_matches_cpu<M: DpModel<Input = f32>>(seed: u64) {
    assert_eq!(M::DEVICE_UNSUPPORTED, None, "{} should have a device program", M::NAME);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let groups = M::GROUPS.len();
    for (n, poison) in [(1, false), (7, true), (33, false), (256, true)] {
        let (inputs, labels) = batch::<M>(&mut rng, n, poison);
        let b = Batch { inputs: &inputs, labels: &labels, size: n };
        let mut ws = Workspace::new::<M>(n);
        let (mut losses, mut sq) = (vec![0.0; n], vec![0.0; n * groups]);
        model.per_example_norms(&mut ws, b, &mut losses, &mut sq);
        let mut factors = vec![0.0; n * groups];
        clip_factors(ClipMode::Flat, 0.5, groups, &sq, &mut factors).unwrap();
        let mut cpu_sum = vec![0.0; M::TRAINED_PARAM_COUNT];
        model.clipped_sum(&mut ws, b, &factors, &mut cpu_sum);

        let mut dev = HostDevice::new();
        dev.set(Region::Params, model.params().to_vec());
        dev.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
        // Garbage everywhere a pass must write before it reads.
        dev.set(Region::Arena, vec![f32::NAN; M::DEVICE_ARENA_PER_EXAMPLE * n]);
        dev.set(Region::Inputs, inputs.clone());
        dev.set(Region::Labels, labels.clone());
        dev.set(Region::Losses, vec![f32::NAN; n]);
        dev.set(Region::SqNorms, vec![f32::NAN; n * groups]);
        dev.set(Region::Factors, factors.clone());
        M::device_forward_backward(&mut dev, n).unwrap();
        M::device_norms(&mut dev, n).unwrap();
        M::device_clipped_sum(&mut dev, n).unwrap();
        let tag = |what: &str| format!("{} n={n} {what}", M::NAME);
        if poison {
            assert!(dev.get(Region::SqNorms)[..groups].iter().all(|v| v.is_nan()), "{}", tag("poisoned norm"));
            assert!(factors[..groups].iter().all(|&f| f == 0.0));
        }
        let finite = if poison { groups.. } else { 0.. };
        close(&tag("losses"), &dev.get(Region::Losses)[usize::from(poison)..], &losses[usize::from(poison)..], 1e-5);
        close(&tag("squared norms"), &dev.get(Region::SqNorms)[finite.clone()], &sq[finite], 1e-4);
        assert!(dev.get(Region::Grad).iter().all(|v| v.is_finite()), "{}", tag("clipped sum finite"));
        close(&tag("clipped sum"), dev.get(Region::Grad), &cpu_sum, 1e-4);

        if !poison {
            let mut cpu_grad = vec![0.0; M::TRAINED_PARAM_COUNT];
            let mut l = vec![0.0; n];
            model.loss_and_gradient(&mut ws, b, &mut l, &mut cpu_grad);
            dev.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
            M::device_forward_backward(&mut dev, n).unwrap();
            M::device_gradient_sum(&mut dev, n).unwrap();
            close(&tag("gradient sum"), dev.get(Region::Grad), &cpu_grad, 1e-4);
        }
    }
}

#[test]
fn logreg_device_program_matches_the_cpu() {
    device_matches_cpu::<AdultLogReg>(1);
}

#[test]
fn ffnn_device_program_matches_the_cpu() {
    device_matches_cpu::<AdultFfnn>(2);
}

#[test]
fn flatten_tanh_mse_device_program_matches_the_cpu() {
    device_matches_cpu::<TanhMse>(3);
}

#[test]
fn standalone_activations_device_program_matches_the_cpu() {
    device_matches_cpu::<SigmoidBce>(4);
}

#[test]
fn deep_device_program_matches_the_cpu() {
    device_matches_cpu::<Deep>(5);
}

#[test]
fn a_model_without_device_primitives_says_which_step() {
    assert_eq!(MnistCnn::DEVICE_UNSUPPORTED, Some("conv2d has no device primitives yet"));
    let mut dev = HostDevice::new();
    let err = MnistCnn::device_norms(&mut dev, 4).unwrap_err();
    assert!(matches!(err, DeviceError::Unsupported { .. }));
    assert_eq!(err.to_string(), "MnistCnn has no device program: conv2d has no device primitives yet");
}
