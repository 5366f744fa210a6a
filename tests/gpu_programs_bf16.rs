//! The generated device programs in bf16 on a GPU, storing every buffer in f32 (`set_bf16_storage(false)`),
//! against the CPU programs in bf16: the products the device program marks `Operands::OfPrecision` run
//! on the tensor cores (cuBLAS's
//! `CUBLAS_COMPUTE_32F_FAST_16BF`: bf16 operands converted by cuBLAS, f32 accumulation), everything
//! else in f32. `tests/device_program_bf16.rs` checks the same programs on the host reference, which
//! rounds exactly as the CPU does; here the tolerances also cover cuBLAS's conversion, whose rounding is
//! not specified to be the CPU's round-to-nearest-even (`dp-cuda/tests/gpu.rs` measures it on single
//! products). Built with `--features cuda`; each test is `#[ignore]`d and `scripts/gpu/check.sh` runs
//! them with `--include-ignored` and `DP_REQUIRE_GPU`. **Not yet run on a GPU** (written in a session
//! without one; docs/GPU.md).

#![cfg(feature = "cuda")]

mod dense_models;
mod gpu_support;

use dense_models::{
    batch, Deep, SequenceLinear, SequenceLinearDirect, SmallConv, SmallLstmDirect, TestInput,
};
use dp::cuda::trainer::GpuModel;
use dp::models::{AdultFfnn, AdultLogReg, Cifar10Cnn, LstmNet, MnistCnn};
use dp::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use gpu_support::{batch_matches_cpu_in, gpu};

/// `M` in bf16 on the GPU against the CPU in bf16 to `tol` (`batch_matches_cpu_in`), at batch sizes
/// 1, 7 and 256 (a NaN example in the batch of 7, which must still contribute nothing).
fn bf16_norms_and_sums_match<M: DpModel>(seed: u64, tol: f32)
where
    M::Input: TestInput,
{
    let Some(gpu) = gpu(&format!("{} bf16", M::NAME)) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let mut on_gpu = GpuModel::<M>::new(gpu, model.params(), 256).unwrap();
    on_gpu.set_precision(Precision::Bf16).unwrap();
    // Products only: the buffers in f32, as the CPU's bf16 program keeps them (bf16 storage has its
    // own tests, tests/gpu_storage_bf16.rs).
    on_gpu.set_bf16_storage(false).unwrap();
    for (n, poison) in [(1, false), (7, true), (256, false)] {
        let poison = poison && M::Input::POISONS;
        let (inputs, labels) = batch::<M>(&mut rng, n, poison);
        batch_matches_cpu_in(Precision::Bf16, tol, &mut on_gpu, &model, &inputs, &labels, n, poison);
    }
}

/// Linear layers: the same operands rounded on both (the forward's and the backward's products).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_dense_models_match_the_bf16_cpu() {
    bf16_norms_and_sums_match::<AdultLogReg>(31, 5e-3);
    bf16_norms_and_sums_match::<AdultFfnn>(32, 5e-3);
    bf16_norms_and_sums_match::<Deep>(33, 5e-3);
}

/// Convolutions: the device forms every conv's kept per-example gradients with bf16 products, the
/// CPU a ghost conv's norms and sums in f32 where its per-example product is small (2.5e-4 relative
/// on the MNIST CNN's norms on the host reference, `tests/device_program_bf16.rs`).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_image_models_match_the_bf16_cpu() {
    bf16_norms_and_sums_match::<SmallConv>(34, 5e-3);
    bf16_norms_and_sums_match::<MnistCnn>(35, 2e-2);
    bf16_norms_and_sums_match::<Cifar10Cnn>(36, 2e-2);
}

/// LSTMs (whose device program has not run on a GPU in f32 either): a small one with direct norms,
/// and the LSTM model, whose norms the CPU may form by another strategy than the device's kept
/// gradients.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_lstm_models_match_the_bf16_cpu() {
    bf16_norms_and_sums_match::<SmallLstmDirect>(37, 5e-3);
    bf16_norms_and_sums_match::<LstmNet>(38, 2e-2);
}

/// Linear layers over a sequence (whose device program has not run on a GPU in f32 either): direct
/// norms, kept on both, and a mix with a ghost layer, whose norms the CPU forms from unrounded
/// operands.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_bf16_sequence_linear_models_match_the_bf16_cpu() {
    bf16_norms_and_sums_match::<SequenceLinearDirect>(39, 5e-3);
    bf16_norms_and_sums_match::<SequenceLinear>(40, 2e-2);
}
