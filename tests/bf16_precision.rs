//! `Precision::Bf16` on models with every op whose products it changes (convs that fold and convs
//! that do not, linear layers, the LSTM, attention's projections):
//! - the per-example norms move from the f32 ones (the precision reaches the kernels) by no more
//!   than bf16 rounding explains;
//! - privacy: an example's clipped contribution has exactly the clip norm, to f32 rounding, because
//!   the norms and the clipped sum read the same stored activations and output gradients, whatever
//!   precision formed them, and the kept per-example gradients (formed by bf16 products) are both what
//!   is normed and what is summed; on two small models whose inputs bf16 rounds all the same way
//!   (ghost and kept direct norms) each layer's part of the sum has the measured norm to 1e-5, where a
//!   clipped sum multiplying rounded operands against f32 ghost norms is 0.2 % off;
//! - an example whose input is NaN gets factor 0 and the clipped sum is that of the batch without it.

use dp::models::{AdultFfnn, Cifar10Cnn, LstmNet, MnistCnn, MnistVit};
use dp::prelude::*;

/// Ghost norms on every layer, the first reading the inputs: with inputs that bf16 rounds all the
/// same way, a clipped sum whose products rounded what the ghost norms did not would be off the clip
/// norm by about 0.2 % (random rounding errors would cancel in a norm; these do not). The conv is
/// large enough (1.2 M multiply-adds per example) for its sums to run in bf16
/// (`conv_chunks::rounds_gradient_operands`).
#[dp_model(input = [16, 16, 16], loss = cross_entropy(classes = 3))]
struct GhostFirst {
    #[layer(conv2d(out = 32, kernel = 3, padding = 1, norms = ghost), relu, global_avg_pool)]
    conv: Conv2d,
    #[layer(linear(out = 3, norms = ghost))]
    fc: Linear,
}

/// The same with direct norms: the conv keeps the per-example gradients its norms form (in bf16),
/// and its clipped sum is their weighted sum.
#[dp_model(input = [2, 8, 8], loss = cross_entropy(classes = 3))]
struct DirectFirst {
    #[layer(conv2d(out = 4, kernel = 3, padding = 1, norms = direct), relu)]
    conv: Conv2d,
    #[layer(flatten, linear(out = 3, norms = direct))]
    fc: Linear,
}

/// Deterministic inputs of `n` examples: values in [0, 1) for dense inputs, token ids below the
/// vocabulary for token inputs.
trait TestInput: Sized {
    fn inputs<M: DpModel<Input = Self>>(n: usize) -> Vec<Self>;
    fn nan() -> Option<Self>;
}

impl TestInput for f32 {
    fn inputs<M: DpModel<Input = f32>>(n: usize) -> Vec<f32> {
        (0..n * M::input_len()).map(|i| ((i * 7919 + 13) % 1000) as f32 / 1000.0).collect()
    }
    fn nan() -> Option<f32> {
        Some(f32::NAN)
    }
}

impl TestInput for u32 {
    fn inputs<M: DpModel<Input = u32>>(n: usize) -> Vec<u32> {
        (0..n * M::input_len()).map(|i| ((i * 31 + i / 7) % M::VOCAB) as u32).collect()
    }
    fn nan() -> Option<u32> {
        None
    }
}

fn labels<M: DpModel>(n: usize) -> Vec<f32> {
    (0..n * M::LOSS.label_len()).map(|i| (i % 2) as f32).collect()
}

fn model<M: DpModel>() -> M {
    M::init(&mut dp::rng::seeded(5))
}

/// Every example's squared norms per group, in `precision`.
fn sq_norms<M: DpModel>(
    model: &M,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
    precision: Precision,
) -> Vec<f32> {
    let mut ws = Workspace::new::<M>(n).with_precision(precision);
    let (mut losses, mut sq) = (vec![0.0; n], vec![0.0; n * M::GROUPS.len()]);
    model.per_example_norms(&mut ws, Batch { inputs, labels, size: n }, &mut losses, &mut sq);
    sq
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

fn norms_move_by_bf16_rounding_only<M: DpModel>()
where
    M::Input: TestInput,
{
    let n = 3;
    let (inputs, labels) = (M::Input::inputs::<M>(n), labels::<M>(n));
    let m = model::<M>();
    let f32_norms = sq_norms(&m, &inputs, &labels, n, Precision::F32);
    let bf16_norms = sq_norms(&m, &inputs, &labels, n, Precision::Bf16);
    assert_ne!(f32_norms, bf16_norms, "{}: bf16 changed no norm", M::NAME);
    for (i, (a, b)) in f32_norms.iter().zip(&bf16_norms).enumerate() {
        let (a, b) = (*a as f64, *b as f64);
        assert!(
            b.is_finite() && (a - b).abs() <= 0.05 * a.abs() + 1e-12,
            "{}: squared norm {i}: {a} in f32, {b} in bf16",
            M::NAME
        );
    }
}

fn clipped_contribution_has_the_clip_norm<M: DpModel>()
where
    M::Input: TestInput,
{
    let n = 3;
    let (inputs, labels) = (M::Input::inputs::<M>(n), labels::<M>(n));
    let (m, groups, len) = (model::<M>(), M::GROUPS.len(), M::input_len());
    for i in 0..n {
        let (x, y) = (
            &inputs[i * len..(i + 1) * len],
            &labels[i * M::LOSS.label_len()..(i + 1) * M::LOSS.label_len()],
        );
        let mut ws = Workspace::new::<M>(1).with_precision(Precision::Bf16);
        let (mut losses, mut sq) = (vec![0.0; 1], vec![0.0; groups]);
        m.per_example_norms(&mut ws, Batch { inputs: x, labels: y, size: 1 }, &mut losses, &mut sq);
        let g = sq.iter().map(|&s| s as f64).sum::<f64>().sqrt();
        // A clip norm well below the gradient's: the contribution is the gradient scaled to it.
        let clip = 0.25 * g;
        let factors = vec![(clip / g) as f32; groups];
        let mut sum = vec![0.0f32; M::TRAINED_PARAM_COUNT];
        m.clipped_sum(&mut ws, Batch { inputs: x, labels: y, size: 1 }, &factors, &mut sum);
        let contribution = norm(&sum);
        assert!(
            (contribution - clip).abs() <= 1e-4 * clip,
            "{}: example {i} contributes {contribution}, clipped to {clip}",
            M::NAME
        );
    }
}

fn a_nan_example_contributes_nothing<M: DpModel>()
where
    M::Input: TestInput,
{
    let Some(nan) = M::Input::nan() else { return };
    let n = 3;
    let (mut inputs, labels) = (M::Input::inputs::<M>(n), labels::<M>(n));
    let (m, groups, len, label_len) = (model::<M>(), M::GROUPS.len(), M::input_len(), M::LOSS.label_len());
    inputs[len + len / 2] = nan;
    let mut ws = Workspace::new::<M>(n).with_precision(Precision::Bf16);
    let (mut losses, mut sq) = (vec![0.0; n], vec![0.0; n * groups]);
    m.per_example_norms(&mut ws, Batch { inputs: &inputs, labels: &labels, size: n }, &mut losses, &mut sq);
    assert!(!sq[groups..2 * groups].iter().sum::<f32>().is_finite(), "{}: the NaN example's norm", M::NAME);
    let mut factors = vec![0.5f32; n * groups];
    factors[groups..2 * groups].fill(0.0);
    let mut with_nan = vec![0.0f32; M::TRAINED_PARAM_COUNT];
    m.clipped_sum(&mut ws, Batch { inputs: &inputs, labels: &labels, size: n }, &factors, &mut with_nan);

    let (inputs, labels, factors) = (keep(&inputs, len), keep(&labels, label_len), keep(&factors, groups));
    let mut ws = Workspace::new::<M>(2).with_precision(Precision::Bf16);
    let (mut losses, mut sq) = (vec![0.0; 2], vec![0.0; 2 * groups]);
    m.per_example_norms(&mut ws, Batch { inputs: &inputs, labels: &labels, size: 2 }, &mut losses, &mut sq);
    let mut without = vec![0.0f32; M::TRAINED_PARAM_COUNT];
    m.clipped_sum(&mut ws, Batch { inputs: &inputs, labels: &labels, size: 2 }, &factors, &mut without);
    let scale = norm(&without);
    for (k, (a, b)) in with_nan.iter().zip(&without).enumerate() {
        assert!(a.is_finite(), "{}: entry {k} of the clipped sum is {a}", M::NAME);
        assert!(
            ((a - b).abs() as f64) <= 1e-5 * scale,
            "{}: entry {k}: {a} with the NaN example, {b} without",
            M::NAME
        );
    }
}

/// Examples 0 and 2 of three, `width` values each.
fn keep<T: Clone>(v: &[T], width: usize) -> Vec<T> {
    [&v[..width], &v[2 * width..3 * width]].concat()
}

fn check<M: DpModel>()
where
    M::Input: TestInput,
{
    norms_move_by_bf16_rounding_only::<M>();
    clipped_contribution_has_the_clip_norm::<M>();
    a_nan_example_contributes_nothing::<M>();
}

/// Each example alone, every factor 1: each group's part of the clipped sum has the norm measured.
fn norms_and_the_clipped_sum_read_the_same_operands<M: DpModel<Input = f32>>() {
    // 1 + 3·2⁻⁹ lies 3/4 of the way from 1 to the next bf16 value: every input rounds up by 0.19 %.
    let n = 2;
    let inputs = vec![1.0 + 3.0 * 2f32.powi(-9); n * M::input_len()];
    let labels = labels::<M>(n);
    let (m, groups) = (model::<M>(), M::GROUPS.len());
    for i in 0..n {
        let x = &inputs[i * M::input_len()..(i + 1) * M::input_len()];
        let y = &labels[i..i + 1];
        let mut ws = Workspace::new::<M>(1).with_precision(Precision::Bf16);
        let (mut losses, mut sq) = (vec![0.0; 1], vec![0.0; groups]);
        m.per_example_norms(&mut ws, Batch { inputs: x, labels: y, size: 1 }, &mut losses, &mut sq);
        let mut sum = vec![0.0f32; M::TRAINED_PARAM_COUNT];
        m.clipped_sum(&mut ws, Batch { inputs: x, labels: y, size: 1 }, &vec![1.0; groups], &mut sum);
        for (group, spec) in M::GROUPS.iter().enumerate() {
            let in_group: Vec<f32> = M::PARAMS
                .iter()
                .filter(|p| p.group == group && p.is_trained())
                .flat_map(|p| sum[p.offset..p.offset + p.len].to_vec())
                .collect();
            let (contribution, measured) = (norm(&in_group), (sq[group] as f64).sqrt());
            assert!(
                (contribution - measured).abs() <= 1e-5 * measured,
                "{}: example {i}, {spec:?}: the clipped sum's norm {contribution}, the measured norm {measured}",
                M::NAME
            );
        }
    }
}

#[test]
fn ghost_norms_and_the_clipped_sum_read_the_same_operands_in_bf16() {
    norms_and_the_clipped_sum_read_the_same_operands::<GhostFirst>();
}

#[test]
fn direct_norms_and_the_clipped_sum_read_the_same_operands_in_bf16() {
    assert!(DirectFirst::describe().contains("direct, kept"), "{}", DirectFirst::describe());
    norms_and_the_clipped_sum_read_the_same_operands::<DirectFirst>();
}

#[test]
fn mnist_cnn_in_bf16() {
    check::<MnistCnn>();
}

#[test]
fn cifar10_cnn_in_bf16() {
    check::<Cifar10Cnn>();
}

#[test]
fn ffnn_in_bf16() {
    check::<AdultFfnn>();
}

#[test]
fn lstm_in_bf16() {
    check::<LstmNet>();
}

#[test]
fn vit_in_bf16() {
    check::<MnistVit>();
}
