//! The generated device programs on a GPU against the CPU programs of the same models: per-example
//! losses and squared norms, clip factors, clipped sums (a NaN example contributing exactly zero),
//! and a whole private step (noise drawn on the device under a fixed test key) at batch sizes 1, 7,
//! 256 and a Poisson-sized 301, on an NVIDIA H200 (2026-12-04). Built with `--features cuda`; each test
//! is `#[ignore]`d, so
//! `cargo test` lists them as ignored, and `scripts/gpu/check.sh` runs them with `--include-ignored` and
//! `DP_REQUIRE_GPU`, which turns a missing device into a failure. Without a device each says
//! `1 GPU test skipped: no CUDA device` and checks nothing.

#![cfg(feature = "cuda")]

mod dense_models;
mod gpu_support;

use dense_models::activations_from_input::ActivationsFromInput;
use dense_models::norm_residual::NormResidual;
use dense_models::token_lora::TokenLora;
use dense_models::{
    batch, token_batch, ActivatedOutput, CausalAttention, Deep, DenseAttention, DenseLstm, LstmSequence,
    PooledConv, SigmoidBce, SmallConv, SmallLstm, SmallLstmDirect, SmallLstmGhost, StackedAttention, TanhMse,
    TestInput, TokenBag, TokenSeq,
};
use dense_models::{DepthwiseSeparable, GroupedConvs};
use dense_models::{PatchFirst, SequenceLinear, TokenMlp, TokenSequenceLinear};
use dp::clipping::{clip_factors, ClipMode};
use dp::cuda::device::{Gpu, SgdStep};
use dp::cuda::trainer::{Clipping, GpuModel};
use dp::device::DeviceTraining;
use dp::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, MnistVit, ResidualCnn, ScatterCnn,
    TextTransformer,
};
use dp::noise::gaussian::fill_chunk;
use dp::optim::{NoisyGradient, Optimizer, Sgd, StepInfo};
use dp::prelude::*;
use dp::{Batch, Workspace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use gpu_support::{batch_matches_cpu_in, gpu, say};

const BATCHES: [(usize, bool); 4] = [(1, false), (7, true), (256, false), (301, true)];

fn norms_and_sums_match<M: DpModel>(seed: u64)
where
    M::Input: TestInput,
{
    let Some(gpu) = gpu(M::NAME) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let mut on_gpu = GpuModel::<M>::new(gpu, model.params(), 301).unwrap();
    for (n, poison) in BATCHES {
        let poison = poison && M::Input::POISONS;
        let (inputs, labels) = batch::<M>(&mut rng, n, poison);
        batch_matches_cpu(&mut on_gpu, &model, &inputs, &labels, n, poison);
    }
}

/// A model over a token sequence, its ids repeating within every example and, at 7 and 301, a NaN
/// example though token ids cannot be NaN (`dense_models::token_batch`: a NaN table row of its own).
fn token_norms_and_sums_match<M: DpModel<Input = u32>>(seed: u64) {
    let Some(gpu) = gpu(M::NAME) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let mut on_gpu = GpuModel::<M>::new(gpu, model.params(), 301).unwrap();
    for (n, poison) in BATCHES {
        let (params, inputs, labels) = token_batch::<M>(&mut rng, model.params(), n, poison);
        on_gpu.upload(&params).unwrap();
        batch_matches_cpu(&mut on_gpu, &M::from_params(params), &inputs, &labels, n, poison);
    }
}

/// One batch through the device program on the GPU and through the CPU program, in f32 to 1e-4.
fn batch_matches_cpu<M: DpModel>(
    on_gpu: &mut GpuModel<M>,
    model: &M,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
    poison: bool,
) where
    M::Input: TestInput,
{
    batch_matches_cpu_in(Precision::F32, 1e-4, on_gpu, model, inputs, labels, n, poison);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_logreg_matches_the_cpu() {
    norms_and_sums_match::<AdultLogReg>(11);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_ffnn_matches_the_cpu() {
    norms_and_sums_match::<AdultFfnn>(12);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_embedding_models_match_the_cpu() {
    norms_and_sums_match::<TokenBag>(17);
    norms_and_sums_match::<EmbeddingNet>(18);
    token_norms_and_sums_match::<TokenSeq>(30);
}

/// The LSTM with a mean (the planner's, ghost and direct norms) and without one, an LSTM on a dense
/// sequence, and the LSTM model (NaN examples at 7 and 301). Written without a GPU: NOT YET RUN ON
/// ONE (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_lstm_models_match_the_cpu() {
    token_norms_and_sums_match::<SmallLstm>(31);
    token_norms_and_sums_match::<SmallLstmGhost>(32);
    token_norms_and_sums_match::<SmallLstmDirect>(33);
    token_norms_and_sums_match::<LstmSequence>(34);
    norms_and_sums_match::<DenseLstm>(35);
    token_norms_and_sums_match::<LstmNet>(36);
}

/// Multi-head self-attention on a dense sequence, causal or not, and two stacked (the first's input
/// gradient; NaN examples at 7 and 301). Written without a GPU: NOT YET RUN ON ONE (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_attention_models_match_the_cpu() {
    norms_and_sums_match::<DenseAttention>(37);
    norms_and_sums_match::<CausalAttention>(38);
    norms_and_sums_match::<StackedAttention>(39);
}

/// The text transformer (tokens with repeated ids, a NaN example of a NaN table row at 7 and 301) and
/// the ViT. Written without a GPU: NOT YET RUN ON ONE (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_transformers_match_the_cpu() {
    token_norms_and_sums_match::<TextTransformer>(40);
    norms_and_sums_match::<MnistVit>(41);
}

/// Convolutions (strided, padded, dilated, without bias), max, average and global average pooling.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_image_models_match_the_cpu() {
    norms_and_sums_match::<SmallConv>(19);
    norms_and_sums_match::<PooledConv>(20);
    norms_and_sums_match::<MnistCnn>(22);
    norms_and_sums_match::<Cifar10Cnn>(23);
}

/// Group norm, layer norm over an image, residual adds: a small test model, the residual CNN and the
/// ScatterNet CNN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_norm_models_match_the_cpu() {
    norms_and_sums_match::<NormResidual>(24);
    norms_and_sums_match::<ResidualCnn>(25);
    norms_and_sums_match::<ScatterCnn>(26);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_test_models_match_the_cpu() {
    norms_and_sums_match::<TanhMse>(13);
    norms_and_sums_match::<SigmoidBce>(14);
    norms_and_sums_match::<Deep>(15);
    norms_and_sums_match::<ActivatedOutput>(16);
}

/// A whole private step on the GPU against the same step on the CPU: norms, factors, clipped sum,
/// the chunked noise under the same key, the SGD update with momentum, three steps in a row (the
/// first launched one by one, the others from a captured CUDA graph).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_private_steps_equal_the_cpus() {
    let Some(gpu) = gpu("private step") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut cpu = AdultFfnn::init(&mut rng);
    let (n, groups, len) = (256, AdultFfnn::GROUPS.len(), AdultFfnn::TRAINED_PARAM_COUNT);
    let mut on_gpu = GpuModel::<AdultFfnn>::new(gpu, cpu.params(), n).unwrap();
    let mut sgd = Sgd::new(0.5).momentum(0.9);
    let (sigma_c, clip) = (0.3, 1.0);
    for step in 0..3u64 {
        let (inputs, labels) = batch::<AdultFfnn>(&mut rng, n, step == 1);
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(step as u8));
        // The CPU step.
        let b = Batch { inputs: &inputs, labels: &labels, size: n };
        let mut ws = Workspace::new::<AdultFfnn>(n);
        let (mut losses, mut sq) = (vec![0.0; n], vec![0.0; n * groups]);
        cpu.per_example_norms(&mut ws, b, &mut losses, &mut sq);
        let mut factors = vec![0.0; n * groups];
        let bad = clip_factors(ClipMode::Flat, clip, groups, &sq, &mut factors).unwrap();
        let mut sum = vec![0.0; len];
        cpu.clipped_sum(&mut ws, b, &factors, &mut sum);
        let mut z = vec![0.0; len];
        for (chunk, values) in z.chunks_mut(dp::cuda::noise::CHUNK).enumerate() {
            fill_chunk(&key, chunk as u64, values);
        }
        let at = StepInfo { step, total_steps: 3 };
        sgd.step(cpu.trained_params_mut(), NoisyGradient::with_drawn_noise(&sum, &z, sigma_c, n as f64), at);
        // The GPU step.
        let update = SgdStep {
            noise_std: sigma_c,
            inverse_batch: 1.0 / n as f64,
            lr: 0.5,
            momentum: 0.9,
            weight_decay: 0.0,
            first: step == 0,
            nesterov: false,
        };
        let clipping = Clipping { mode: ClipMode::Flat, norm: clip };
        let before = on_gpu.transfers();
        let outcome = on_gpu.private_step(&inputs, &labels, n, clipping, &key, update).unwrap();
        let after = on_gpu.transfers();
        assert_eq!(
            (after.to_device - before.to_device, after.to_host - before.to_host),
            (3, 1),
            "a step copies in its inputs, labels and key and out its counts, nothing else"
        );
        assert_eq!(outcome.non_finite_examples, bad, "step {step}: non-finite count");
        assert!(!outcome.overflowed);
        assert_eq!(bad, usize::from(step == 1));
        let params = on_gpu.params().unwrap();
        let diff = params.iter().zip(cpu.params()).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
        let scale = cpu.params().iter().map(|c| c.abs()).fold(0.0f32, f32::max);
        say(&format!("step {step}: largest parameter difference {diff:.3e} (largest parameter {scale:.3})"));
        assert!(diff <= 1e-4 * scale, "step {step}: GPU and CPU parameters differ by {diff}");
    }
    // The first step launched one by one; the next two were captured into one graph (n = 256) and
    // replayed, and matched the CPU all the same.
    say(&format!("graphs: {} steps replayed, off: {:?}", on_gpu.graph_replays(), on_gpu.graphs_off()));
    assert_eq!(on_gpu.graphs_off(), None, "a step's capture failed");
    assert_eq!(on_gpu.graph_replays(), 2);
    // The momentum a checkpoint takes from the GPU.
    let (cpu_state, gpu_state) = (sgd.state(), DeviceTraining::optimizer_state(&mut on_gpu).unwrap());
    assert_eq!((gpu_state.kind.as_str(), gpu_state.updates), ("sgd", cpu_state.updates));
    let (c, g) = (&cpu_state.buffers[0].1, &gpu_state.buffers[0].1);
    let diff = c.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "the momentum differs by {diff}");
}

/// The noise drawn beside the program, on a branch of the stream (the default), and after it on the
/// one stream give the same steps bit for bit: eagerly, then replayed from graphs, at batch sizes that
/// vary, with a NaN example; for a model whose noise is short (the FCNN) and one whose draw is long
/// (the CIFAR-10 CNN, 605,226 coordinates). A join missing fails the capture: no graph, no replay.
/// WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_noise_beside_the_program_equals_noise_after_it() {
    noise_beside_equals_noise_after::<AdultFfnn>(&[(64, false), (64, true), (31, false), (64, false)], 25);
    noise_beside_equals_noise_after::<Cifar10Cnn>(&[(3, false), (3, true), (2, false), (3, false)], 26);
}

fn noise_beside_equals_noise_after<M: DpModel>(batches: &[(usize, bool)], seed: u64)
where
    M::Input: TestInput,
{
    let Some(gpu) = gpu(M::NAME) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let max = batches.iter().map(|&(n, _)| n).max().unwrap_or(1);
    let mut beside = GpuModel::<M>::new(gpu, model.params(), max).unwrap();
    let mut after = GpuModel::<M>::new(Gpu::open(0).unwrap(), model.params(), max).unwrap();
    after.draw_noise_beside(false);
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    for (step, &(n, poison)) in batches.iter().enumerate() {
        let (inputs, labels) = batch::<M>(&mut rng, n, poison && M::Input::POISONS);
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(11).wrapping_add(step as u8));
        let update = SgdStep {
            noise_std: 0.7,
            inverse_batch: 1.0 / 64.0,
            lr: 0.5,
            momentum: 0.9,
            weight_decay: 0.0,
            first: step == 0,
            nesterov: false,
        };
        let a = beside.private_step(&inputs, &labels, n, clipping, &key, update).unwrap();
        let b = after.private_step(&inputs, &labels, n, clipping, &key, update).unwrap();
        assert_eq!(a, b, "{}: step {step}'s outcome", M::NAME);
        let (a, b) = (beside.params().unwrap(), after.params().unwrap());
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{}: step {step}: the noise beside the program gave other parameters", M::NAME);
    }
    assert_eq!(beside.graphs_off(), None, "{}: a capture with the branch failed", M::NAME);
    assert_eq!(after.graphs_off(), None, "{}: a capture without the branch failed", M::NAME);
    // The first step eager; then two sizes captured and replayed, and the first size replayed again.
    assert_eq!(beside.graph_replays(), 3, "{}: the steps after the first were replayed", M::NAME);
    say(&format!("{}: {} steps replayed with the noise beside", M::NAME, beside.graph_replays()));
}

/// Step `i` of the overlap tests: flat clipping at 1, noise 0.3, a normaliser of 8, SGD with momentum,
/// a key of its own (`mul` tells the tests' keys apart).
fn sgd_step_keyed(mul: u8, i: usize) -> dp::device::DevicePrivateStep {
    use dp::device::{DeviceOptimizer, DevicePrivateStep, DeviceSgd};
    DevicePrivateStep {
        clip_mode: ClipMode::Flat,
        clip_norm: 1.0,
        noise_std: 0.3,
        normaliser: 8.0,
        key: std::array::from_fn(|j| (j as u8).wrapping_mul(mul).wrapping_add(i as u8)),
        optimizer: DeviceOptimizer::Sgd(DeviceSgd {
            lr: 0.5,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }),
        keep_losses: false,
    }
}

/// A step queued and awaited apart, the next batch staged while it is in flight (the trainer's
/// overlap, docs/GPU.md), lands where the same steps one after another land, bit for bit: the staged
/// copies wait behind the step in flight. The third batch is larger than the arena: staged during the
/// second step, its copies wait until the arena grows for it. The same copies as a step alone; a
/// second step queued before the first is awaited, the parameters read while a step is queued, or an
/// await with none queued, are refused. A clipped sum queued and awaited apart equals one copied out
/// in one call.
/// WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_steps_overlapped_with_staging_equal_steps_in_turn() {
    let Some(gpu) = gpu("overlapped steps") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let model = AdultFfnn::init(&mut rng);
    let batches: Vec<_> = [(7, false), (5, true), (20, true), (7, false)]
        .into_iter()
        .map(|(n, poison)| (batch::<AdultFfnn>(&mut rng, n, poison), n))
        .collect();
    let step = |i: usize| sgd_step_keyed(5, i);
    let mut in_turn = GpuModel::<AdultFfnn>::new(gpu, model.params(), 7).unwrap();
    let mut overlapped = GpuModel::<AdultFfnn>::new(Gpu::open(0).unwrap(), model.params(), 7).unwrap();
    let mut outcomes = vec![];
    for (i, ((inputs, labels), n)) in batches.iter().enumerate() {
        outcomes.push(DeviceTraining::private_step(&mut in_turn, inputs, labels, *n, &step(i)).unwrap());
    }
    let ((inputs, labels), n) = &batches[0];
    DeviceTraining::stage_batch(&mut overlapped, inputs, labels, *n).unwrap();
    for (i, expected) in outcomes.iter().enumerate() {
        DeviceTraining::queue_private_step(&mut overlapped, &step(i)).unwrap();
        assert!(DeviceTraining::queue_private_step(&mut overlapped, &step(i)).is_err(), "queued twice");
        assert!(overlapped.params().is_err(), "the parameters read before the queued step's restore");
        if let Some(((inputs, labels), n)) = batches.get(i + 1) {
            DeviceTraining::stage_batch(&mut overlapped, inputs, labels, *n).unwrap();
        }
        let outcome = DeviceTraining::finish_private_step(&mut overlapped).unwrap();
        assert_eq!(&outcome, expected, "step {i}");
    }
    assert!(DeviceTraining::finish_private_step(&mut overlapped).is_err(), "awaited with none queued");
    assert_eq!(outcomes.iter().map(|o| o.non_finite_examples).sum::<usize>(), 2);
    assert_eq!(overlapped.params().unwrap(), in_turn.params().unwrap(), "overlapped steps differ");
    assert_eq!(overlapped.transfers(), in_turn.transfers());
    // A distributed rank's clipped sum, queued and awaited apart: not awaited as a step; the sum
    // clipped_sum_out gives in one call.
    let ((inputs, labels), n) = &batches[1];
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    overlapped.stage_batch(inputs, labels, *n).unwrap();
    overlapped.queue_clipped_sum(clipping).unwrap();
    assert!(overlapped.await_step().is_err(), "a clipped sum awaited as a step");
    let len = AdultFfnn::TRAINED_PARAM_COUNT;
    let (mut sum, mut expected) = (vec![0.0f32; len], vec![0.0f32; len]);
    let bad = overlapped.await_clipped_sum(&mut sum).unwrap();
    let expected_bad = in_turn.clipped_sum_out(inputs, labels, *n, clipping, &mut expected).unwrap();
    assert_eq!(bad, expected_bad);
    assert!(sum.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "the clipped sums differ");
}

/// The next batch copied in beside the step in flight (into the landing words, on a stream of their
/// own, and moved into the regions when the next step is queued: docs/GPU.md, "The copies in beside
/// the step") gives the steps that its copies queued behind the step give, and the steps one after
/// another: for dense inputs bit for bit, for token ids to 1e-6 of the largest parameter (the
/// embedding's scatter adds with atomics, in an order that may vary from run to run); with a batch
/// larger than the arena staged while a step runs (copied in after the arena grows, not landed); with
/// an evaluation between a landed batch and its step, which still takes that batch. The same copies
/// are counted, but for the batch queued behind a step that an evaluation then overwrote, which is
/// copied in again (a landed one is not).
/// WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_batches_copied_in_beside_a_step_equal_batches_copied_behind_it() {
    copies_beside_equal_copies_behind::<AdultFfnn>(31, 0.0);
    copies_beside_equal_copies_behind::<EmbeddingNet>(32, 1e-6);
}

/// `tolerance`: of the largest parameter (or output); 0, bit for bit.
fn copies_beside_equal_copies_behind<M: DpModel>(seed: u64, tolerance: f32)
where
    M::Input: TestInput,
{
    let Some(gpu) = gpu(M::NAME) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let batches: Vec<_> = [(7, false), (5, true), (20, false), (7, true), (6, false)]
        .into_iter()
        .map(|(n, poison)| (batch::<M>(&mut rng, n, poison && M::Input::POISONS), n))
        .collect();
    let held_out = 9;
    let (held_out_inputs, _) = batch::<M>(&mut rng, held_out, false);
    let step = |i: usize| sgd_step_keyed(7, i);
    let outputs_len = held_out * M::LOSS.output_len();
    let mut in_turn = GpuModel::<M>::new(gpu, model.params(), 7).unwrap();
    let (mut expected, mut expected_outputs) = (vec![], vec![0.0f32; outputs_len]);
    for (i, ((inputs, labels), n)) in batches.iter().enumerate() {
        expected.push(DeviceTraining::private_step(&mut in_turn, inputs, labels, *n, &step(i)).unwrap());
        if i == 0 {
            in_turn.outputs(&held_out_inputs, held_out, &mut expected_outputs).unwrap();
        }
    }
    for beside in [true, false] {
        let mut overlapped = GpuModel::<M>::new(Gpu::open(0).unwrap(), model.params(), 7).unwrap();
        overlapped.copy_in_beside(beside);
        let ((inputs, labels), n) = &batches[0];
        DeviceTraining::stage_batch(&mut overlapped, inputs, labels, *n).unwrap();
        for (i, expected) in expected.iter().enumerate() {
            DeviceTraining::queue_private_step(&mut overlapped, &step(i)).unwrap();
            if let Some(((inputs, labels), n)) = batches.get(i + 1) {
                DeviceTraining::stage_batch(&mut overlapped, inputs, labels, *n).unwrap();
            }
            let outcome = DeviceTraining::finish_private_step(&mut overlapped).unwrap();
            assert_eq!(&outcome, expected, "{}: step {i}, copies beside: {beside}", M::NAME);
            if i == 0 {
                // The next batch has landed (beside) or is queued behind (not): the evaluation
                // overwrites the regions, not the landing words.
                let mut outputs = vec![0.0f32; outputs_len];
                overlapped.outputs(&held_out_inputs, held_out, &mut outputs).unwrap();
                let same = within(&outputs, &expected_outputs, tolerance);
                assert!(same, "{}: the evaluation differs, copies beside: {beside}", M::NAME);
            }
        }
        let same = within(&overlapped.params().unwrap(), &in_turn.params().unwrap(), tolerance);
        assert!(same, "{}: copies beside: {beside}: other parameters than the steps in turn", M::NAME);
        let (got, expected) = (overlapped.transfers(), in_turn.transfers());
        // Behind, the evaluation overwrote the regions the second batch was copied into: again, two
        // copies more.
        let again = if beside { 0 } else { 2 };
        assert_eq!(got.to_device, expected.to_device + again, "{}: copies beside: {beside}", M::NAME);
        assert_eq!(got.to_host, expected.to_host, "{}: copies beside: {beside}", M::NAME);
    }
    say(&format!("{}: batches copied in beside the steps equal batches copied in behind them", M::NAME));
}

/// `a` and `b` equal to `tolerance` of the largest magnitude of `b`; 0: bit for bit.
fn within(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match tolerance {
            0.0 => x.to_bits() == y.to_bits(),
            _ => (x - y).abs() <= tolerance * scale,
        })
}

/// The device's forward alone, for evaluation (`GpuModel::outputs`): the outputs of the CPU's forward
/// to 1e-4 of the largest, in chunks of the arena's room (173 examples through room for 50), for
/// dense, conv and token models; storing in bf16, within 3e-2. A batch staged for the next step before
/// an evaluation is still the one that step takes: its parameters after it equal those of a twin
/// model that evaluated nothing, bit for bit; and an evaluation while a step is queued is refused.
/// WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_evaluation_by_the_devices_forward_equals_the_cpus_and_keeps_the_staged_batch() {
    use dp::device::{DeviceOptimizer, DevicePrivateStep, DeviceSgd};
    let Some(gpu) = gpu("evaluation") else { return };
    drop(gpu);
    fn outputs_match<M: DpModel>(seed: u64, bf16: bool)
    where
        M::Input: TestInput,
    {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let model = M::init(&mut rng);
        let n = 173;
        let (inputs, _) = batch::<M>(&mut rng, n, false);
        let mut on_gpu = GpuModel::<M>::new(Gpu::open(0).unwrap(), model.params(), 50).unwrap();
        if bf16 {
            on_gpu.set_precision(dp::Precision::Bf16).unwrap();
        }
        let mut got = vec![0.0; n * M::LOSS.output_len()];
        on_gpu.outputs(&inputs, n, &mut got).unwrap();
        let mut ws = Workspace::new::<M>(n);
        let mut want = vec![0.0; got.len()];
        model.forward(&mut ws, &inputs, n, &mut want);
        let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let diff = got.iter().zip(&want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        say(&format!("evaluation {} (bf16 {bf16}): largest difference {diff:.3e} of {scale:.3}", M::NAME));
        assert!(diff <= if bf16 { 3e-2 } else { 1e-4 } * scale, "{} bf16 {bf16}: {diff} of {scale}", M::NAME);
    }
    for bf16 in [false, true] {
        outputs_match::<AdultFfnn>(71, bf16);
        outputs_match::<MnistCnn>(72, bf16);
        outputs_match::<EmbeddingNet>(73, bf16);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(74);
    let model = AdultFfnn::init(&mut rng);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 20, false);
    let (held_out, _) = batch::<AdultFfnn>(&mut rng, 90, false);
    let step = DevicePrivateStep {
        clip_mode: ClipMode::Flat,
        clip_norm: 1.0,
        noise_std: 0.3,
        normaliser: 20.0,
        key: [9; 32],
        optimizer: DeviceOptimizer::Sgd(DeviceSgd {
            lr: 0.5,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
        keep_losses: false,
    };
    let mut evaluating = GpuModel::<AdultFfnn>::new(Gpu::open(0).unwrap(), model.params(), 32).unwrap();
    let mut twin = GpuModel::<AdultFfnn>::new(Gpu::open(0).unwrap(), model.params(), 32).unwrap();
    let mut outputs = vec![0.0; 90 * AdultFfnn::LOSS.output_len()];
    DeviceTraining::stage_batch(&mut evaluating, &inputs, &labels, 20).unwrap();
    evaluating.outputs(&held_out, 90, &mut outputs).unwrap();
    DeviceTraining::queue_private_step(&mut evaluating, &step).unwrap();
    assert!(evaluating.outputs(&held_out, 90, &mut outputs).is_err(), "evaluated while a step was queued");
    DeviceTraining::finish_private_step(&mut evaluating).unwrap();
    DeviceTraining::private_step(&mut twin, &inputs, &labels, 20, &step).unwrap();
    assert_eq!(evaluating.params().unwrap(), twin.params().unwrap(), "the staged batch was disturbed");
}

/// Not a check: where a private step's time goes on this GPU, phase by phase (printed for the report).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_step_phases() {
    phases::<AdultFfnn>("ffnn", 31);
    phases::<MnistCnn>("mnist-cnn", 32);
    phases::<Cifar10Cnn>("cifar10-cnn", 33);
    phases::<ResidualCnn>("residual-cnn", 34);
}

fn phases<M: DpModel>(name: &str, seed: u64)
where
    M::Input: TestInput,
{
    let Some(gpu) = gpu("step phases") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let n = 128;
    let (inputs, labels) = batch::<M>(&mut rng, n, false);
    let mut on_gpu = GpuModel::<M>::new(gpu, model.params(), n).unwrap();
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    let step = SgdStep {
        noise_std: 1.0,
        inverse_batch: 1.0 / n as f64,
        lr: 0.0,
        momentum: 0.0,
        weight_decay: 0.0,
        first: true,
        nesterov: false,
    };
    let phases = on_gpu.phase_timings(&inputs, &labels, n, clipping, &[7; 32], step, 100).unwrap();
    for (phase, ms) in phases {
        say(&format!("{name} batch {n}, {phase}: median {ms:.4} ms"));
    }
}

/// `AdultFfnn` from the same initial parameters trained on the CPU and then on the GPU, on the same
/// data with the same seeds, each trainer set up further by `configure`: the initial model, then the
/// CPU's trained model and report, then the GPU's.
#[allow(clippy::type_complexity)]
fn ffnn_on_cpu_and_gpu(
    gpu: Gpu,
    seed: u64,
    configure: impl for<'m> Fn(dp::Trainer<'m, AdultFfnn>) -> dp::Trainer<'m, AdultFfnn>,
) -> (AdultFfnn, (AdultFfnn, dp::Report), (AdultFfnn, dp::Report)) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 2_000, false);
    let data = dp::Dataset::new(inputs, labels, AdultFfnn::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = AdultFfnn::init(&mut rng);
    let train = |device: Option<GpuModel<AdultFfnn>>| {
        let mut model = AdultFfnn::from_params(initial.params().to_vec());
        let trainer = configure(
            dp::Trainer::new(&mut model)
                .clip_norm(1.0)
                .noise_multiplier(0.8)
                .expected_batch_size(128)
                .seed(3)
                .quiet(true),
        );
        let report = match device {
            Some(d) => trainer.device(d).fit(&data, Some(&data)),
            None => trainer.fit(&data, Some(&data)),
        }
        .unwrap();
        (model, report)
    };
    let on_cpu = train(None);
    let on_gpu = train(Some(GpuModel::<AdultFfnn>::new(gpu, initial.params(), 128).unwrap()));
    (initial, on_cpu, on_gpu)
}

/// The trainer with its steps on the GPU against the trainer on the CPU, both seeded alike: the same
/// Poisson batches and noise keys, so the same noise; the parameters agree to rounding after several
/// steps of SGD with momentum, and so do ε and the steps taken.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_follows_the_cpu_trainer() {
    let Some(gpu) = gpu("trainer") else { return };
    let (initial, (cpu, cpu_report), (on_gpu, gpu_report)) =
        ffnn_on_cpu_and_gpu(gpu, 41, |t| t.optimizer(Sgd::new(0.5).momentum(0.9)).steps(24));
    assert_eq!(gpu_report.steps, cpu_report.steps);
    assert_eq!(gpu_report.epsilon, cpu_report.epsilon);
    let diff = on_gpu.params().iter().zip(cpu.params()).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    let moved =
        on_gpu.params().iter().zip(initial.params()).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    say(&format!(
        "trainer: 24 steps, largest parameter difference {diff:.3e}, largest move {moved:.3}, accuracy cpu {:.4} gpu {:.4}",
        cpu_report.accuracy, gpu_report.accuracy
    ));
    assert!(moved > 0.01, "training moved the parameters");
    assert!(diff <= 1e-3 * moved, "GPU and CPU trainers differ by {diff}");
}

/// Poisson batches of about 128 with `Trainer::max_physical_batch(40)` on a GPU model with room for
/// 40: each step's clipped sum formed in chunks of at most 40 (copied out and added on the host, the
/// step's normals drawn there from its key, R handed back as a distributed step's), ending where the
/// CPU trainer with the same bound ends, with its ε and its non-private diagnostics (each chunk's
/// losses read back while the next is staged). WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_runs_batches_larger_than_the_physical_batch_in_chunks() {
    let Some(gpu) = gpu("trainer in physical chunks") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 2_000, true);
    let data = dp::Dataset::new(inputs, labels, AdultFfnn::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = AdultFfnn::init(&mut rng);
    let train = |device: Option<GpuModel<AdultFfnn>>| {
        let mut model = AdultFfnn::from_params(initial.params().to_vec());
        let trainer = dp::Trainer::new(&mut model)
            .optimizer(Sgd::new(0.5).momentum(0.9))
            .clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(128)
            .steps(24)
            .max_physical_batch(40)
            .non_private_diagnostics(true)
            .seed(3)
            .quiet(true);
        let report = match device {
            Some(d) => trainer.device(d).fit(&data, Some(&data)),
            None => trainer.fit(&data, Some(&data)),
        }
        .unwrap();
        (model, report)
    };
    let (cpu, cpu_report) = train(None);
    let (on_gpu, gpu_report) = train(Some(GpuModel::<AdultFfnn>::new(gpu, initial.params(), 40).unwrap()));
    assert_eq!((gpu_report.steps, gpu_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
    let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (diff, moved) = (largest(on_gpu.params(), cpu.params()), largest(cpu.params(), initial.params()));
    say(&format!(
        "trainer in chunks of 40: 24 steps, largest difference {diff:.3e}, largest move {moved:.3}"
    ));
    assert!(moved > 0.01, "training moved the parameters");
    assert!(diff <= 1e-3 * moved, "GPU and CPU trainers in chunks differ by {diff}");
    // The diagnostics, read back chunk by chunk while the next chunk is staged.
    for (g, c) in gpu_report.epochs.iter().zip(&cpu_report.epochs) {
        let (g, c) = (g.diagnostics.as_ref().unwrap(), c.diagnostics.as_ref().unwrap());
        assert!((g.train_loss - c.train_loss).abs() <= 1e-4 * c.train_loss, "{g:?} vs {c:?}");
        assert_eq!((g.non_finite_examples, g.mean_batch_size), (c.non_finite_examples, c.mean_batch_size));
    }
}

/// The trainer with Adam (L2 decay, a cosine schedule) on the GPU against the trainer on the CPU,
/// both seeded alike, both writing a checkpoint: the parameters agree to rounding after several
/// steps, and so do the checkpoints' update counts and moments, which the GPU's comes from the device
/// (written 2026-12-04; not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_with_adam_follows_the_cpu_trainer() {
    let Some(gpu) = gpu("trainer with Adam") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 2_000, false);
    let data = dp::Dataset::new(inputs, labels, AdultFfnn::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = AdultFfnn::init(&mut rng);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gpu-adam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let train = |model: &mut AdultFfnn, device: Option<GpuModel<AdultFfnn>>, path: &std::path::Path| {
        let trainer = dp::Trainer::new(model)
            .optimizer(
                dp::optim::Adam::new(0.01)
                    .weight_decay(1e-3)
                    .schedule(dp::optim::Schedule::Cosine { final_fraction: 0.1 }),
            )
            .clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(128)
            .steps(24)
            .seed(3)
            .checkpoint(path)
            .quiet(true);
        match device {
            Some(d) => trainer.device(d).fit(&data, Some(&data)),
            None => trainer.fit(&data, Some(&data)),
        }
        .unwrap()
    };
    let (cpu_path, gpu_path) = (dir.join("cpu.safetensors"), dir.join("gpu.safetensors"));
    let mut cpu = AdultFfnn::from_params(initial.params().to_vec());
    let cpu_report = train(&mut cpu, None, &cpu_path);
    let mut on_gpu = AdultFfnn::from_params(initial.params().to_vec());
    let device = GpuModel::<AdultFfnn>::new(gpu, initial.params(), 128).unwrap();
    let gpu_report = train(&mut on_gpu, Some(device), &gpu_path);
    assert_eq!(gpu_report.steps, cpu_report.steps);
    assert_eq!(gpu_report.epsilon, cpu_report.epsilon);
    let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let diff = largest(on_gpu.params(), cpu.params());
    let moved = largest(on_gpu.params(), initial.params());
    say(&format!(
        "trainer with Adam: 24 steps, largest parameter difference {diff:.3e}, largest move {moved:.3}, accuracy cpu {:.4} gpu {:.4}",
        cpu_report.accuracy, gpu_report.accuracy
    ));
    assert!(moved > 0.01, "training moved the parameters");
    assert!(diff <= 1e-3 * moved, "GPU and CPU trainers differ by {diff}");
    let cpu_state = dp::checkpoint::load::<AdultFfnn>(&cpu_path).unwrap().optimizer;
    let gpu_state = dp::checkpoint::load::<AdultFfnn>(&gpu_path).unwrap().optimizer;
    assert_eq!((gpu_state.kind.as_str(), gpu_state.updates), ("adam", cpu_state.updates));
    for ((name, c), (gpu_name, g)) in cpu_state.buffers.iter().zip(&gpu_state.buffers) {
        assert_eq!(name, gpu_name);
        let scale = c.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let diff = largest(c, g);
        say(&format!(
            "trainer with Adam: the checkpoints' {name} differ by {diff:.3e} (largest {scale:.3e})"
        ));
        assert!(diff <= 1e-3 * scale, "the checkpoints' {name} differ by {diff}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With Adam, a run on the GPU cut after 7 steps and resumed from its checkpoint (the moments and
/// update count loaded onto the device) ends where the same run on the CPU does (written 2026-12-04;
/// not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_adam_run_resumes_like_the_cpu() {
    let Some(first_gpu) = gpu("Adam resumed") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 2_000, false);
    let data = dp::Dataset::new(inputs, labels, AdultFfnn::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = AdultFfnn::init(&mut rng);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gpu-adam-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run =
        |model: &mut AdultFfnn, device: Option<GpuModel<AdultFfnn>>, path: &std::path::Path, cut: bool| {
            let mut trainer = dp::Trainer::new(model)
                .optimizer(dp::optim::Adam::adamw(0.01, 0.05))
                .clip_norm(1.0)
                .noise_multiplier(0.8)
                .expected_batch_size(128)
                .epochs(2)
                .seed(5)
                .quiet(true);
            trainer = match cut {
                true => trainer.max_steps(7).checkpoint(path),
                false => trainer.resume_from(path).checkpoint(path),
            };
            match device {
                Some(d) => trainer.device(d).fit(&data, Some(&data)),
                None => trainer.fit(&data, Some(&data)),
            }
            .unwrap()
        };
    let mut finals = Vec::new();
    let mut first_gpu = Some(first_gpu);
    for on_gpu in [false, true] {
        let path = dir.join(format!("run-{on_gpu}.safetensors"));
        let mut model = AdultFfnn::from_params(initial.params().to_vec());
        let device = |gpu: Gpu| GpuModel::<AdultFfnn>::new(gpu, initial.params(), 128).unwrap();
        let first = on_gpu.then(|| device(first_gpu.take().unwrap()));
        assert_eq!(run(&mut model, first, &path, true).steps, 7);
        // A fresh device for the resumed run: everything it holds comes from the checkpoint.
        let second = on_gpu.then(|| device(Gpu::open(0).unwrap()));
        let report = run(&mut model, second, &path, false);
        let saved = dp::checkpoint::load::<AdultFfnn>(&path).unwrap();
        finals.push((report.steps, model.params().to_vec(), saved.optimizer));
    }
    let ((cpu_steps, cpu, cpu_state), (gpu_steps, on_gpu, gpu_state)) = (&finals[0], &finals[1]);
    assert_eq!(cpu_steps, gpu_steps);
    let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let moved = largest(cpu, initial.params());
    let diff = largest(cpu, on_gpu);
    say(&format!("Adam resumed: largest parameter difference {diff:.3e}, largest move {moved:.3}"));
    assert!(moved > 0.01, "training moved the parameters");
    assert!(diff <= 1e-3 * moved, "GPU and CPU runs differ by {diff} after resuming");
    assert_eq!((gpu_state.kind.as_str(), gpu_state.updates), ("adamw", cpu_state.updates));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A transformer's steps other than attention: linear layers over a sequence (every norm strategy),
/// the activations whose derivative needs their input, a position embedding, layer norm over a
/// sequence, `first`, patches and LoRA layers among frozen ones (NaN examples at 7 and 301). Written without a GPU: NOT YET RUN ON
/// ONE (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_transformer_steps_match_the_cpu() {
    norms_and_sums_match::<SequenceLinear>(37);
    token_norms_and_sums_match::<TokenSequenceLinear>(38);
    norms_and_sums_match::<ActivationsFromInput>(39);
    token_norms_and_sums_match::<TokenMlp>(40);
    norms_and_sums_match::<PatchFirst>(41);
    token_norms_and_sums_match::<TokenLora>(42);
}

/// A model with frozen layers (LoRA adapters among a frozen embedding, position embedding and layer
/// norms) trained with Adam on the GPU against the CPU trainer, seeded alike: the trained parameters
/// agree to rounding and the frozen ones are untouched. Written without a GPU: NOT YET RUN ON ONE.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_with_frozen_layers_follows_the_cpu_trainer() {
    use rand::Rng;
    let Some(gpu) = gpu("trainer with frozen layers") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(47);
    let (inputs, labels) = batch::<TokenLora>(&mut rng, 1_000, false);
    let data = dp::Dataset::new(inputs, labels, TokenLora::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial: Vec<f32> =
        TokenLora::init(&mut rng).params().iter().map(|p| p + rng.random_range(-0.3..0.3)).collect();
    let train = |model: &mut TokenLora, device: Option<GpuModel<TokenLora>>| {
        let trainer = dp::Trainer::new(model)
            .optimizer(dp::optim::Adam::new(0.01))
            .clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(128)
            .steps(16)
            .seed(3)
            .quiet(true);
        match device {
            Some(d) => trainer.device(d).fit(&data, Some(&data)),
            None => trainer.fit(&data, Some(&data)),
        }
        .unwrap()
    };
    let mut cpu = TokenLora::from_params(initial.clone());
    let cpu_report = train(&mut cpu, None);
    let mut on_gpu = TokenLora::from_params(initial.clone());
    let device = GpuModel::<TokenLora>::new(gpu, &initial, 128).unwrap();
    let gpu_report = train(&mut on_gpu, Some(device));
    assert_eq!((gpu_report.steps, gpu_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
    let trained = TokenLora::TRAINED_PARAM_COUNT;
    let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (diff, moved) =
        (largest(on_gpu.params(), cpu.params()), largest(&cpu.params()[..trained], &initial[..trained]));
    say(&format!("frozen layers: largest parameter difference {diff:.3e}, largest move {moved:.3}"));
    assert!(moved > 0.01, "training moved the trained parameters");
    assert!(diff <= 1e-3 * moved, "GPU and CPU trainers differ by {diff}");
    assert_eq!(&on_gpu.params()[trained..], &initial[trained..], "the frozen parameters changed");
}

/// Grouped convs: two groups with stride, padding, with and without bias, and a depthwise conv
/// between 1×1 convs. NOT YET RUN ON A GPU (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_grouped_conv_models_match_the_cpu() {
    norms_and_sums_match::<GroupedConvs>(30);
    norms_and_sums_match::<DepthwiseSeparable>(31);
}

/// GELU, SiLU and exact GELU after a conv, a group norm and a residual add, and GELU after layer norm
/// over a sequence (NaN examples at 7 and 301). Written without a GPU: NOT YET RUN ON ONE
/// (docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_activations_from_their_input_after_convs_and_norms_match_the_cpu() {
    use dense_models::image_activations_from_input::ImageActivationsFromInput;
    norms_and_sums_match::<ImageActivationsFromInput>(43);
    norms_and_sums_match::<dense_models::SequenceNormGelu>(44);
}

/// The trainer with a moving average of the parameters (`Trainer::ema`) on the GPU against the CPU
/// trainer, seeded alike: the returned averages agree to rounding. Written without a GPU: NOT YET RUN
/// ON ONE.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_keeps_the_average_like_the_cpu() {
    let Some(gpu) = gpu("trainer with an average") else { return };
    let (initial, (cpu, cpu_report), (on_gpu, gpu_report)) =
        ffnn_on_cpu_and_gpu(gpu, 48, |t| t.optimizer(Sgd::new(0.5).momentum(0.9)).epochs(2).ema(0.9));
    assert_eq!((gpu_report.steps, gpu_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
    let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (diff, moved) = (largest(on_gpu.params(), cpu.params()), largest(cpu.params(), initial.params()));
    say(&format!("average: largest parameter difference {diff:.3e}, largest move {moved:.3}"));
    assert!(moved > 0.01, "training moved the average");
    assert!(diff <= 1e-3 * moved, "the GPU's and the CPU's averages differ by {diff}");
}

/// Non-private diagnostics with the steps on the GPU: each step's losses and clip factors come back,
/// and the epochs' training loss agrees with the CPU trainer's to rounding, the non-finite counts and
/// mean batch sizes exactly (written 2026-12-04; not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_reports_the_diagnostics_of_the_cpu() {
    let Some(gpu) = gpu("diagnostics") else { return };
    let (_, (_, cpu_report), (_, gpu_report)) = ffnn_on_cpu_and_gpu(gpu, 43, |t| {
        t.optimizer(Sgd::new(0.5).momentum(0.9)).epochs(2).non_private_diagnostics(true)
    });
    assert_eq!(gpu_report.epochs.len(), 2);
    for (g, c) in gpu_report.epochs.iter().zip(&cpu_report.epochs) {
        let (g, c) = (g.diagnostics.as_ref().unwrap(), c.diagnostics.as_ref().unwrap());
        say(&format!("diagnostics: training loss cpu {:.6} gpu {:.6}", c.train_loss, g.train_loss));
        assert!(c.train_loss.is_finite() && c.train_loss > 0.0);
        assert!((g.train_loss - c.train_loss).abs() <= 1e-4 * c.train_loss);
        assert_eq!((g.non_finite_examples, g.mean_batch_size), (c.non_finite_examples, c.mean_batch_size));
    }
}

/// The non-private baseline with its steps on the GPU against `fit_non_private` on the CPU: the same
/// shuffled batches and updates, so the parameters agree to rounding and the training losses closely
/// (written 2026-12-04; not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_non_private_baseline_follows_the_cpu() {
    use dp::baseline::{fit_non_private, fit_non_private_on_device, BaselineConfig};
    let Some(gpu) = gpu("non-private baseline") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 2_000, false);
    let data = dp::Dataset::new(inputs, labels, AdultFfnn::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = AdultFfnn::init(&mut rng);
    let config = BaselineConfig {
        batch_size: 128,
        epochs: 1.0,
        max_steps: None,
        seed: Some(4),
        quiet: true,
        precision: Precision::F32,
    };
    let mut cpu = AdultFfnn::from_params(initial.params().to_vec());
    let cpu_report =
        fit_non_private(&mut cpu, &mut Sgd::new(0.5).momentum(0.9), &data, &data, config, |_| {}).unwrap();
    let mut on_gpu = AdultFfnn::from_params(initial.params().to_vec());
    let mut device = GpuModel::<AdultFfnn>::new(gpu, initial.params(), 128).unwrap();
    let gpu_report = fit_non_private_on_device(
        &mut on_gpu,
        &mut Sgd::new(0.5).momentum(0.9),
        &mut device,
        &data,
        &data,
        config,
        |_| {},
    )
    .unwrap();
    let diff = on_gpu.params().iter().zip(cpu.params()).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    let moved = cpu.params().iter().zip(initial.params()).map(|(c, i)| (c - i).abs()).fold(0.0f32, f32::max);
    let loss = |r: &dp::Report| r.epochs[0].diagnostics.as_ref().unwrap().train_loss;
    say(&format!(
        "non-private baseline: {} steps, largest parameter difference {diff:.3e}, training loss cpu {:.6} gpu {:.6}",
        cpu_report.steps,
        loss(&cpu_report),
        loss(&gpu_report)
    ));
    assert_eq!(gpu_report.steps, cpu_report.steps);
    assert!(moved > 0.01 && diff <= 1e-3 * moved, "GPU and CPU baselines differ by {diff} (moved {moved})");
    assert!((loss(&gpu_report) - loss(&cpu_report)).abs() <= 1e-4 * loss(&cpu_report));
}

/// Augmentation multiplicity on the GPU (`GpuModel::private_step_with_views`) against the trainer on
/// the CPU, seeded alike: `SmallConv` with 3 views per example (crops after padding, flips), flat and
/// per-layer clipping, examples 5 to 7 all NaN (contributing nothing), SGD with momentum; the
/// parameters agree to rounding and so do the accuracies. Then one step by hand: the views, labels and
/// key copied in once and the two counts out, whatever the batch, the NaN example counted, and every
/// example after the first (which runs eagerly) replayed from one graph.
/// NOT YET RUN ON A GPU (written 2026-12-04, the graphs 2026-12-05; docs/GPU.md).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_with_views_follows_the_cpu_trainer() {
    use dp::data::augment::Augmentation;
    let mut rng = ChaCha8Rng::seed_from_u64(49);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 600, false);
    let len = SmallConv::input_len();
    inputs[5 * len..8 * len].fill(f32::NAN);
    let data = dp::Dataset::new(inputs.clone(), labels.clone(), SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng);
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    for per_layer in [false, true] {
        let Some(gpu) = gpu("trainer with views") else { return };
        let train = |model: &mut SmallConv, device: Option<GpuModel<SmallConv>>| {
            let trainer = dp::Trainer::new(model)
                .optimizer(Sgd::new(0.5).momentum(0.9))
                .clip_norm(1.0)
                .per_layer_clipping(per_layer)
                .noise_multiplier(0.8)
                .expected_batch_size(64)
                .steps(16)
                .augmentation_multiplicity(3, augmentation)
                .seed(7)
                .quiet(true);
            match device {
                Some(d) => trainer.device(d).fit(&data, Some(&data)),
                None => trainer.fit(&data, Some(&data)),
            }
            .unwrap()
        };
        let mut cpu = SmallConv::from_params(initial.params().to_vec());
        let cpu_report = train(&mut cpu, None);
        let mut on_gpu = SmallConv::from_params(initial.params().to_vec());
        let gpu_report =
            train(&mut on_gpu, Some(GpuModel::<SmallConv>::new(gpu, initial.params(), 64).unwrap()));
        assert_eq!((gpu_report.steps, gpu_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
        let largest =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let (diff, moved) = (largest(on_gpu.params(), cpu.params()), largest(cpu.params(), initial.params()));
        say(&format!(
            "views (per-layer {per_layer}): largest parameter difference {diff:.3e}, largest move {moved:.3}"
        ));
        assert!(moved > 0.01, "training moved the parameters");
        assert!(diff <= 1e-3 * moved, "GPU and CPU trainers differ by {diff}");
        assert!((gpu_report.accuracy - cpu_report.accuracy).abs() <= 0.01);
    }
    let Some(gpu) = gpu("a step with views") else { return };
    let mut model = GpuModel::<SmallConv>::new(gpu, initial.params(), 8).unwrap();
    let (n, views) = (20, 3);
    // Examples 5 to 9, each seen 3 times unaugmented: example 5 (NaN) is the first.
    let view_inputs: Vec<f32> =
        (5..5 + n).flat_map(|i| inputs[i * len..(i + 1) * len].repeat(views)).collect();
    let view_labels: Vec<f32> = (5..5 + n).flat_map(|i| vec![labels[i]; views]).collect();
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    let step = SgdStep {
        noise_std: 0.8,
        inverse_batch: 1.0 / 64.0,
        lr: 0.1,
        momentum: 0.0,
        weight_decay: 0.0,
        first: true,
        nesterov: false,
    };
    let before = model.transfers();
    let outcome = model
        .private_step_with_views((&view_inputs, &view_labels), n, views, clipping, &[9; 32], step, false)
        .unwrap();
    let after = model.transfers();
    assert_eq!(outcome.non_finite_examples, 3, "examples 5 to 7 are NaN");
    assert!(!outcome.overflowed);
    assert_eq!((after.to_device - before.to_device, after.to_host - before.to_host), (3, 1));
    assert_eq!(model.graphs_off(), None, "an example's capture failed");
    assert_eq!(model.graph_replays(), n as u64 - 1, "the examples after the first replay one graph");
}

/// `M` trained seeded by `ranks` ranks (threads of one `ThreadGroup`), each on its shard and on its
/// own `GpuModel` of GPU 0 when `on_gpu` (else on the CPU): every rank's parameters and report.
fn ranks_of<M: DpModel>(
    data: &dp::Dataset<M::Input>,
    initial: &[f32],
    ranks: usize,
    on_gpu: bool,
    configure: &(dyn for<'m> Fn(dp::Trainer<'m, M>) -> dp::Trainer<'m, M> + Sync),
) -> Vec<(Vec<f32>, dp::Report)>
where
    M::Input: Sync,
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
                    let mut trainer = configure(
                        dp::Trainer::new(&mut model)
                            .clip_norm(1.0)
                            .noise_multiplier(0.8)
                            .expected_batch_size(128)
                            .seed(3)
                            .quiet(true),
                    )
                    .distributed(group, Shard::of_rank(n, rank, ranks));
                    if on_gpu {
                        let gpu = Gpu::open(0).unwrap();
                        trainer = trainer.device(GpuModel::<M>::new(gpu, initial, 128).unwrap());
                    }
                    let report = trainer.fit(&shard, Some(data)).unwrap();
                    (model.params().to_vec(), report)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A distributed run on GPUs (two and three ranks in threads, each with its own `GpuModel` on GPU 0)
/// against the CPU's distributed run and one process on the CPU, seeded alike, with SGD (momentum) and
/// Adam: every rank's clipped sum comes off its GPU, rank 0's noise is the CPU's, R goes back into
/// each GPU's update; the parameters agree to rounding, ε and the steps exactly (written 2026-12-04;
/// not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_distributed_runs_follow_the_cpu() {
    let Some(_gpu) = gpu("distributed") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(52);
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, 2_000, false);
    let data = dp::Dataset::new(inputs, labels, AdultFfnn::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = AdultFfnn::init(&mut rng).params().to_vec();
    let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    type Configure = dyn for<'m> Fn(dp::Trainer<'m, AdultFfnn>) -> dp::Trainer<'m, AdultFfnn> + Sync;
    let sgd: &Configure = &|t| t.optimizer(Sgd::new(0.5).momentum(0.9)).steps(24);
    let adam: &Configure = &|t| t.optimizer(dp::optim::Adam::new(0.01).weight_decay(1e-3)).steps(24);
    for (name, configure) in [("sgd", sgd), ("adam", adam)] {
        let mut single = AdultFfnn::from_params(initial.clone());
        let single_report = configure(
            dp::Trainer::new(&mut single)
                .clip_norm(1.0)
                .noise_multiplier(0.8)
                .expected_batch_size(128)
                .seed(3)
                .quiet(true),
        )
        .fit(&data, Some(&data))
        .unwrap();
        let moved = largest(single.params(), &initial);
        assert!(moved > 0.01, "{name}: training moved the parameters by {moved}");
        for ranks in [2, 3] {
            let on_cpu = ranks_of::<AdultFfnn>(&data, &initial, ranks, false, configure);
            for (rank, (params, report)) in
                ranks_of::<AdultFfnn>(&data, &initial, ranks, true, configure).iter().enumerate()
            {
                let diff = largest(params, single.params());
                let diff_cpu_ranks = largest(params, &on_cpu[rank].0);
                say(&format!(
                    "distributed {name}, K = {ranks}, rank {rank}: differs from one process by {diff:.3e}, \
                     from the CPU's rank by {diff_cpu_ranks:.3e} (moved {moved:.3})"
                ));
                assert!(diff <= 1e-3 * moved, "{name} K = {ranks} rank {rank}: differs by {diff}");
                assert!(diff_cpu_ranks <= 1e-3 * moved, "{name} K = {ranks} rank {rank}");
                assert_eq!((report.steps, report.epsilon), (single_report.steps, single_report.epsilon));
            }
        }
    }
}

/// A distributed rank's two halves on the GPU directly: the clipped sum it copies out equals the CPU
/// program's (to rounding), and the update from a released vector R equals the CPU optimizer's
/// `NoisyGradient::released` update bit for bit (R in the normals buffer, a zero sum, noise_std 1), with
/// the copies counted: inputs and labels in, the sum and the counts out; R in, the counts out
/// (written 2026-12-04; not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_clipped_sum_out_and_released_update() {
    let Some(gpu) = gpu("released update") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(53);
    let n = 37;
    let (inputs, labels) = batch::<AdultFfnn>(&mut rng, n, true);
    let model = AdultFfnn::init(&mut rng);
    let mut on_gpu = GpuModel::<AdultFfnn>::new(gpu, model.params(), 64).unwrap();
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    let len = AdultFfnn::TRAINED_PARAM_COUNT;
    let before = on_gpu.transfers();
    let mut sum = vec![f32::NAN; len];
    let bad = on_gpu.clipped_sum_out(&inputs, &labels, n, clipping, &mut sum).unwrap();
    let after = on_gpu.transfers();
    assert_eq!((after.to_device - before.to_device, after.to_host - before.to_host), (2, 2));
    let cpu = dense_models::cpu_reference(&model, &inputs, &labels, n, 1.0);
    assert_eq!(bad, cpu.non_finite, "the poisoned example's norm is not finite");
    let cpu_sum = cpu.clipped_sum;
    let diff = sum.iter().zip(&cpu_sum).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    say(&format!("released update: the clipped sum copied out differs from the CPU's by {diff:.3e}"));
    assert!(diff <= 1e-4, "the clipped sum copied out differs from the CPU's by {diff}");

    let released: Vec<f64> =
        cpu_sum.iter().enumerate().map(|(i, &s)| s as f64 + 0.3 * (i as f64).sin()).collect();
    let described = dp::device::DeviceSgd { lr: 0.5, momentum: 0.0, nesterov: false, weight_decay: 1e-3 };
    let step = on_gpu.released_step(dp::device::DeviceOptimizer::Sgd(described), 64.0);
    let before = on_gpu.transfers();
    let overflowed = on_gpu.released_update(&released, step).unwrap();
    let after = on_gpu.transfers();
    assert!(!overflowed);
    assert_eq!((after.to_device - before.to_device, after.to_host - before.to_host), (1, 1));
    let mut expected = model.params().to_vec();
    Sgd::new(0.5).weight_decay(1e-3).step(
        &mut expected[..len],
        NoisyGradient::released(&released, 64.0),
        StepInfo { step: 0, total_steps: 1 },
    );
    let got = on_gpu.params().unwrap();
    let differing = got.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{differing} parameters differ from the CPU's released update");
}

/// Augmentation multiplicity in a distributed run on GPUs (two ranks in threads, each with its own
/// `GpuModel` on GPU 0, `clipped_sum_with_views_out`) against the CPU's distributed run with views,
/// seeded alike, flat and per-layer, NaN examples on both ranks: every rank's parameters agree to
/// rounding (written 2026-12-04; not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_distributed_run_with_views_follows_the_cpu() {
    use dp::data::augment::Augmentation;
    if gpu("distributed run with views").is_none() {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(53);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 400, false);
    let len = SmallConv::input_len();
    for example in [3, 300] {
        inputs[example * len..(example + 1) * len].fill(f32::NAN);
    }
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng).params().to_vec();
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    for per_layer in [false, true] {
        let run = |on_gpu| {
            ranks_of::<SmallConv>(&data, &initial, 2, on_gpu, &|t| {
                t.optimizer(Sgd::new(0.5).momentum(0.9))
                    .per_layer_clipping(per_layer)
                    .steps(12)
                    .augmentation_multiplicity(3, augmentation)
            })
        };
        let (on_cpu, on_gpu) = (run(false), run(true));
        let largest =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        for (rank, ((cpu, cpu_report), (gpu, gpu_report))) in on_cpu.iter().zip(&on_gpu).enumerate() {
            let (diff, moved) = (largest(gpu, cpu), largest(cpu, &initial));
            say(&format!(
                "distributed views (per-layer {per_layer}) rank {rank}: differs from the CPU's rank by {diff:.3e} \
                 (moved {moved:.3})"
            ));
            assert!(
                moved > 0.01 && diff <= 1e-3 * moved,
                "per-layer {per_layer} rank {rank}: differs by {diff}"
            );
            assert_eq!((gpu_report.steps, gpu_report.epsilon), (cpu_report.steps, cpu_report.epsilon));
        }
    }
}

/// Non-private diagnostics with augmentation multiplicity on the GPU: the step keeps each view's loss
/// and each example's clip factors, and the epochs' training loss agrees with the CPU trainer's
/// (written 2026-12-04; not yet run on a GPU).
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_trainer_with_views_reports_the_diagnostics_of_the_cpu() {
    use dp::data::augment::Augmentation;
    let Some(gpu) = gpu("views with diagnostics") else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(52);
    let (mut inputs, labels) = batch::<SmallConv>(&mut rng, 300, false);
    let len = SmallConv::input_len();
    inputs[5 * len..8 * len].fill(f32::NAN);
    let data = dp::Dataset::new(inputs, labels, SmallConv::INPUT_SHAPE.to_vec(), 1).unwrap();
    let initial = SmallConv::init(&mut rng);
    let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.5 };
    let train = |device: Option<GpuModel<SmallConv>>| {
        let mut model = SmallConv::from_params(initial.params().to_vec());
        let trainer = dp::Trainer::new(&mut model)
            .optimizer(Sgd::new(0.5).momentum(0.9))
            .clip_norm(1.0)
            .noise_multiplier(0.8)
            .expected_batch_size(48)
            .epochs(2)
            .augmentation_multiplicity(3, augmentation)
            .non_private_diagnostics(true)
            .seed(7)
            .quiet(true);
        match device {
            Some(d) => trainer.device(d).fit(&data, Some(&data)),
            None => trainer.fit(&data, Some(&data)),
        }
        .unwrap()
    };
    let cpu_report = train(None);
    let gpu_report = train(Some(GpuModel::<SmallConv>::new(gpu, initial.params(), 64).unwrap()));
    for (g, c) in gpu_report.epochs.iter().zip(&cpu_report.epochs) {
        let (g, c) = (g.diagnostics.as_ref().unwrap(), c.diagnostics.as_ref().unwrap());
        say(&format!("views diagnostics: training loss cpu {:.6} gpu {:.6}", c.train_loss, g.train_loss));
        assert!(c.train_loss.is_finite() && (g.train_loss - c.train_loss).abs() <= 1e-3 * c.train_loss);
        assert_eq!(g.non_finite_examples, c.non_finite_examples);
    }
}

/// A batch whose regions do not fit the device is refused before anything is allocated, with an error
/// that names the model, the batch and the flag to change; the same model at batch 128 fits, and its
/// arena's growth to that batch is refused the same way, leaving it as it was. In the trainer's path
/// (a sampled batch) the error does not say the batch's size.
/// WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_batches_too_large_for_the_device_are_refused_with_what_to_change() {
    let Some(gpu) = gpu("memory") else { return };
    let (free, total) = gpu.memory().unwrap();
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    say(&format!("device memory: {:.2} GiB free of {:.2} GiB", gib(free), gib(total)));
    let model = Cifar10Cnn::init(&mut ChaCha8Rng::seed_from_u64(27));
    // Batches whose regions need more than the whole device in f32.
    let per_example =
        GpuModel::<Cifar10Cnn>::regions_bytes(2, false) - GpuModel::<Cifar10Cnn>::regions_bytes(1, false);
    let too_many = (total / per_example) as usize + 1;
    let error = GpuModel::<Cifar10Cnn>::new(gpu, model.params(), too_many).unwrap_err().to_string();
    say(&error);
    assert!(error.contains("Cifar10Cnn") && error.contains(&format!("{too_many} examples")), "{error}");
    assert!(error.contains("--batch-size") && error.contains("--max-physical-batch"), "{error}");
    let mut fits = GpuModel::<Cifar10Cnn>::new(Gpu::open(0).unwrap(), model.params(), 128).unwrap();
    let error = fits.resize(too_many, model.params()).unwrap_err().to_string();
    assert!(error.contains("--batch-size"), "{error}");
    // The trainer's path: a sampled batch larger than the arena grows it, and when that cannot be done
    // the error does not say the batch's size, which depends on the private data.
    let (inputs, labels) = batch::<Cifar10Cnn>(&mut ChaCha8Rng::seed_from_u64(29), too_many, false);
    let private = dp::device::DevicePrivateStep {
        clip_mode: ClipMode::Flat,
        clip_norm: 1.0,
        noise_std: 0.5,
        normaliser: 128.0,
        key: [3; 32],
        optimizer: dp::device::DeviceOptimizer::Sgd(dp::device::DeviceSgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
        keep_losses: false,
    };
    let error = DeviceTraining::private_step(&mut fits, &inputs, &labels, too_many, &private)
        .unwrap_err()
        .to_string();
    say(&error);
    assert!(error.contains("--max-physical-batch") && !error.contains(&too_many.to_string()), "{error}");
    // The model is as it was: a step at 128 still runs.
    let (inputs, labels) = batch::<Cifar10Cnn>(&mut ChaCha8Rng::seed_from_u64(28), 3, false);
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    let update = SgdStep {
        noise_std: 0.5,
        inverse_batch: 1.0 / 3.0,
        lr: 0.1,
        momentum: 0.0,
        weight_decay: 0.0,
        first: true,
        nesterov: false,
    };
    fits.private_step(&inputs, &labels, 3, clipping, &[5; 32], update).unwrap();
}

/// An LSTM's recurrence as one kernel each way (the default) and step by step (a cuBLAS product and a
/// launch of the gates per time step): the same losses and norms to 1e-4, and the same parameters
/// after two private steps, for a small LSTM and the LSTM model at batch 64 in f32 and bf16; and the
/// private step's time both ways (printed for the report).
/// WRITTEN WITHOUT A GPU, NOT YET RUN.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu/check.sh runs it (--include-ignored)"]
fn gpu_lstm_recurrence_as_one_kernel_equals_it_step_by_step() {
    use dp::device::Precision;
    fused_equals_step_by_step::<SmallLstm>(41, Precision::F32);
    fused_equals_step_by_step::<LstmNet>(42, Precision::F32);
    fused_equals_step_by_step::<LstmNet>(43, Precision::Bf16);
}

fn fused_equals_step_by_step<M: DpModel<Input = u32>>(seed: u64, precision: dp::device::Precision) {
    let Some(gpu) = gpu(M::NAME) else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let n = 64;
    let (inputs, labels) = batch::<M>(&mut rng, n, false);
    let mut fused = GpuModel::<M>::new(gpu, model.params(), n).unwrap();
    let mut by_steps = GpuModel::<M>::new(Gpu::open(0).unwrap(), model.params(), n).unwrap();
    by_steps.fuse_lstm_recurrence(false);
    fused.set_precision(precision).unwrap();
    by_steps.set_precision(precision).unwrap();
    let what = format!("{} in {precision:?}", M::NAME);
    let (a, b) = (
        fused.per_example_norms(&inputs, &labels, n).unwrap(),
        by_steps.per_example_norms(&inputs, &labels, n).unwrap(),
    );
    for (x, y) in a.0.iter().chain(&a.1).zip(b.0.iter().chain(&b.1)) {
        assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{what}: losses or norms {x} and {y}");
    }
    let clipping = Clipping { mode: ClipMode::Flat, norm: 1.0 };
    let update = SgdStep {
        noise_std: 0.5,
        inverse_batch: 1.0 / n as f64,
        lr: 0.5,
        momentum: 0.0,
        weight_decay: 0.0,
        first: true,
        nesterov: false,
    };
    let mut times = [Vec::new(), Vec::new()];
    for step in 0..12u8 {
        for (model, time) in [(&mut fused, 0), (&mut by_steps, 1)] {
            let start = std::time::Instant::now();
            model.private_step(&inputs, &labels, n, clipping, &[step; 32], update).unwrap();
            times[time].push(start.elapsed().as_secs_f64() * 1e3);
        }
        if step == 1 {
            let (a, b) = (fused.params().unwrap(), by_steps.params().unwrap());
            let moved = model.params().iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            say(&format!("{what}: parameters after two steps differ by {diff:.2e} (moved {moved:.2e})"));
            assert!(diff <= 1e-3 * moved, "{what}: the fused recurrence moved the parameters elsewhere");
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let (f, s) = (median(&mut times[0]), median(&mut times[1]));
    say(&format!(
        "{what}: private step at batch {n}, recurrence as one kernel {f:.3} ms, step by step {s:.3} ms"
    ));
}
