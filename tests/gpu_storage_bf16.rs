//! The generated device programs in bf16 on a GPU **storing activations and output gradients in bf16**
//! (the default in bf16, docs/GPU.md "bf16 storage"), against the host reference storing in bf16
//! (`HostDevice::set_bf16_storage`, checked against the CPU in `tests/device_storage_bf16.rs`). Both
//! round the same values to bf16 when they are stored and multiply the same operands; they differ by
//! the order of the products' sums (cuBLAS's against the host's f64 loop), which can tip a stored
//! value to its neighbouring bf16 value (2⁻⁸ relative), hence the tolerances. What must hold exactly
//! holds on the GPU alone: with factor 1 for one example, the clipped sum's squared norm is the norm
//! the GPU measured for it. And storage was on: the results move from the same GPU program storing
//! f32. Built with `--features cuda`; each test is `#[ignore]`d and `scripts/gpu/check.sh` runs them
//! with `--include-ignored` and `DP_REQUIRE_GPU`. **Not yet run on a GPU** (written in a session
//! without one).

#![cfg(feature = "cuda")]

mod dense_models;
mod gpu_support;

use dense_models::norm_residual::NormResidual;
use dense_models::{
    batch, close, close_sum, cpu_reference_in, run_on_host_storing, CausalAttention, Deep, DenseLstm,
    GroupedConvs, SequenceLinear, SequenceNormGelu, SmallConv, SmallLstmDirect, TestInput, TokenBag,
    TokenSeq,
};
use dp::cuda::trainer::GpuModel;
use dp::models::{AdultFfnn, AdultLogReg, Cifar10Cnn, LstmNet, MnistCnn};
use dp::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use gpu_support::gpu;

/// `M` in bf16 storing in bf16 on the GPU against the host reference storing in bf16, at batch sizes
/// 1 and `n` (example 0 NaN where the inputs are dense: it must contribute nothing; the host
/// reference's plain loops make a large batch of a CNN or the LSTM model take minutes, and the GPU's
/// large batches are the f32 tests'): losses and norms to `tol` relative, the clipped sum to `tol` of
/// its largest coordinate; the clipping contract on the GPU for up to three examples of the batch of
/// `n`; and a move from f32 storage.
fn stores_as_the_host_reference<M: DpModel>(seed: u64, tol: f32, n: usize)
where
    M::Input: TestInput,
{
    let Some(gpu) = gpu(&format!("{} bf16 storage", M::NAME)) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let mut on_gpu = GpuModel::<M>::new(gpu, model.params(), n).unwrap();
    on_gpu.set_precision(Precision::Bf16).unwrap();
    assert!(on_gpu.storing_bf16(), "{}: bf16 does not store in bf16 by default", M::NAME);
    let groups = M::GROUPS.len();
    let mut moved = 0.0f32;
    for (n, poison) in [(1, false), (n, true)] {
        let poison = poison && M::Input::POISONS;
        let (inputs, labels) = batch::<M>(&mut rng, n, poison);
        let factors = cpu_reference_in(Precision::F32, &model, &inputs, &labels, n, 0.5).factors;
        let host = run_on_host_storing(&model, Precision::Bf16, true, &inputs, &labels, &factors, n);
        let (losses, sq_norms) = on_gpu.per_example_norms(&inputs, &labels, n).unwrap();
        let clipped = on_gpu.clipped_sum(&factors, n).unwrap();
        let tag = |what: &str| format!("{} bf16 storage n={n} {what}", M::NAME);
        let from = usize::from(poison);
        close(&tag("losses"), &losses[from..], &host.losses[from..], tol);
        close(&tag("squared norms"), &sq_norms[from * groups..], &host.sq_norms[from * groups..], tol);
        if poison {
            assert!(sq_norms[..groups].iter().all(|v| v.is_nan()), "{}", tag("poisoned norm"));
        }
        assert!(clipped.iter().all(|v| v.is_finite()), "{}", tag("a NaN example reached the sum"));
        close_sum(&tag("clipped sum"), &clipped, &host.clipped_sum, tol);

        if n > 1 {
            for i in from..(from + 3).min(n) {
                let mut one = vec![0.0; n * groups];
                one[i * groups..(i + 1) * groups].fill(1.0);
                let (_, measured) = on_gpu.per_example_norms(&inputs, &labels, n).unwrap();
                let measured: f64 =
                    measured[i * groups..(i + 1) * groups].iter().map(|&s| f64::from(s)).sum();
                let sum = on_gpu.clipped_sum(&one, n).unwrap();
                let summed: f64 = sum.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
                assert!(
                    (summed - measured).abs() <= 1e-4 * measured.max(1e-8),
                    "{}: example {i}'s clipped sum has squared norm {summed}, measured {measured}",
                    tag("clipping contract")
                );
            }
            on_gpu.set_bf16_storage(false).unwrap();
            let (f32_losses, f32_norms) = on_gpu.per_example_norms(&inputs, &labels, n).unwrap();
            on_gpu.set_bf16_storage(true).unwrap();
            let relative = |a: f32, b: f32| (a - b).abs() / b.abs().max(1e-3);
            let pairs = losses.iter().zip(&f32_losses).chain(sq_norms.iter().zip(&f32_norms)).skip(from);
            moved = pairs
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .fold(moved, |m, (&a, &b)| m.max(relative(a, b)));
        }
    }
    assert!(moved > 1e-4, "{}: storing in bf16 changed nothing on the GPU ({moved})", M::NAME);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_storage_dense_and_token_models_match_the_host_reference() {
    stores_as_the_host_reference::<AdultLogReg>(81, 2e-2, 33);
    stores_as_the_host_reference::<AdultFfnn>(82, 2e-2, 33);
    stores_as_the_host_reference::<Deep>(83, 2e-2, 33);
    stores_as_the_host_reference::<TokenBag>(84, 2e-2, 33);
    stores_as_the_host_reference::<TokenSeq>(85, 2e-2, 33);
}

/// Max pooling's winners can change when a stored value tips to its neighbour, which moves an
/// example's norm by tens of percent (the host reference's own test allows 0.5 on the MNIST CNN against
/// the CPU for that reason), so the two pooled CNNs are held to 0.5 here too; their clipping contract
/// and the move from f32 storage are exact checks all the same.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_storage_image_models_match_the_host_reference() {
    stores_as_the_host_reference::<SmallConv>(86, 2e-2, 33);
    stores_as_the_host_reference::<NormResidual>(87, 2e-2, 33);
    stores_as_the_host_reference::<GroupedConvs>(88, 2e-2, 33);
    stores_as_the_host_reference::<MnistCnn>(89, 5e-1, 3);
    stores_as_the_host_reference::<Cifar10Cnn>(90, 5e-1, 3);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_storage_lstm_and_sequence_models_match_the_host_reference() {
    stores_as_the_host_reference::<SmallLstmDirect>(91, 2e-2, 33);
    stores_as_the_host_reference::<DenseLstm>(92, 2e-2, 33);
    stores_as_the_host_reference::<LstmNet>(93, 5e-2, 3);
    stores_as_the_host_reference::<SequenceLinear>(94, 2e-2, 33);
    stores_as_the_host_reference::<SequenceNormGelu>(95, 2e-2, 33);
    stores_as_the_host_reference::<CausalAttention>(96, 2e-2, 33);
}
