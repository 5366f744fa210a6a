//! The compiled dense models against an f64 reference written only for this test, run one example at
//! a time: losses, per-example gradient norms, clipped sums and the non-private gradient; the
//! reference's own gradients against central finite differences.

mod dense_models;
mod reference;

use dense_models::{ActivatedOutput, Deep, SigmoidBce, TanhMse};
use dp::models::{AdultFfnn, AdultLogReg};
use dp::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reference::dense::{linear_backward, linear_forward, Activation};
use reference::loss::RefLoss;

// ---------------------------------------------------------------------------------------------
// The f64 reference: a chain of the ops of `tests/reference`, over a flat buffer laid out in op order
// (which `parameter_layout_is_pytorchs` holds the compiled layout to).

#[derive(Clone, Copy, Debug)]
enum RefOp {
    Linear { inputs: usize, outputs: usize, bias: bool },
    Act(Activation),
    Flatten,
}

struct Spec {
    ops: Vec<RefOp>,
    loss: RefLoss,
    input_len: usize,
    label_len: usize,
}

/// (offset of weight, offset of bias, group) of one linear op.
type LinearSlots = (usize, Option<usize>, usize);

/// The slots of each linear op in op order (weight then bias), the parameter count, the group count.
fn layout(spec: &Spec) -> (Vec<LinearSlots>, usize, usize) {
    let (mut offset, mut group, mut out) = (0, 0, Vec::new());
    for op in &spec.ops {
        if let RefOp::Linear { inputs, outputs, bias } = *op {
            let w = offset;
            offset += inputs * outputs;
            let b = bias.then(|| {
                offset += outputs;
                offset - outputs
            });
            out.push((w, b, group));
            group += 1;
        }
    }
    (out, offset, group)
}

/// The input of every op, then the output.
fn ref_forward(spec: &Spec, params: &[f64], x: &[f64]) -> Vec<Vec<f64>> {
    let (lay, _, _) = layout(spec);
    let mut values = vec![x.to_vec()];
    let mut linear = 0;
    for &op in &spec.ops {
        let v = values.last().unwrap();
        let next = match op {
            RefOp::Linear { inputs, outputs, .. } => {
                let (w, b, _) = lay[linear];
                linear += 1;
                linear_forward(
                    &params[w..w + outputs * inputs],
                    b.map(|b| &params[b..b + outputs]),
                    v,
                    outputs,
                )
            }
            RefOp::Flatten => v.clone(),
            RefOp::Act(a) => a.forward(v),
        };
        values.push(next);
    }
    values
}

/// Loss and dL/d(output) of one example.
fn ref_loss(loss: RefLoss, out: &[f64], label: &[f32]) -> (f64, Vec<f64>) {
    loss.value_and_gradient(out, &reference::widen(label))
}

/// Loss and the full parameter gradient of one example, by backpropagation.
fn ref_gradient(spec: &Spec, params: &[f64], x: &[f64], label: &[f32]) -> (f64, Vec<f64>) {
    let (lay, count, _) = layout(spec);
    let values = ref_forward(spec, params, x);
    let (loss, mut g) = ref_loss(spec.loss, values.last().unwrap(), label);
    let mut grad = vec![0.0; count];
    let mut linear = lay.len();
    for (k, &op) in spec.ops.iter().enumerate().rev() {
        let input = &values[k];
        g = match op {
            RefOp::Linear { inputs, outputs, .. } => {
                linear -= 1;
                let (w, b, _) = lay[linear];
                let (dx, dw, db) = linear_backward(&params[w..w + outputs * inputs], input, &g);
                grad[w..w + outputs * inputs].iter_mut().zip(dw).for_each(|(s, v)| *s += v);
                if let Some(b) = b {
                    grad[b..b + outputs].iter_mut().zip(db).for_each(|(s, v)| *s += v);
                }
                dx
            }
            RefOp::Flatten => g,
            RefOp::Act(a) => a.backward(input, &g),
        };
    }
    (loss, grad)
}

/// The parameter group of every parameter.
fn groups_of(spec: &Spec) -> Vec<usize> {
    let (lay, count, _) = layout(spec);
    let mut groups = vec![0; count];
    let mut bounds: Vec<(usize, usize)> = lay.iter().map(|&(w, _, g)| (w, g)).collect();
    bounds.push((count, 0));
    for win in bounds.windows(2) {
        groups[win[0].0..win[1].0].iter_mut().for_each(|v| *v = win[0].1);
    }
    groups
}

fn spec_tanh_mse() -> Spec {
    Spec {
        ops: vec![
            RefOp::Flatten,
            RefOp::Linear { inputs: 6, outputs: 5, bias: true },
            RefOp::Act(Activation::Tanh),
            RefOp::Linear { inputs: 5, outputs: 2, bias: false },
        ],
        loss: RefLoss::HalfSquaredError,
        input_len: 6,
        label_len: 2,
    }
}

fn spec_sigmoid_bce() -> Spec {
    Spec {
        ops: vec![
            RefOp::Act(Activation::Tanh),
            RefOp::Linear { inputs: 6, outputs: 4, bias: true },
            RefOp::Act(Activation::Sigmoid),
            RefOp::Act(Activation::Relu),
            RefOp::Linear { inputs: 4, outputs: 1, bias: true },
        ],
        loss: RefLoss::BinaryCrossEntropy,
        input_len: 6,
        label_len: 1,
    }
}

fn spec_deep() -> Spec {
    Spec {
        ops: vec![
            RefOp::Linear { inputs: 5, outputs: 8, bias: true },
            RefOp::Act(Activation::Relu),
            RefOp::Linear { inputs: 8, outputs: 6, bias: true },
            RefOp::Act(Activation::Tanh),
            RefOp::Linear { inputs: 6, outputs: 3, bias: true },
        ],
        loss: RefLoss::CrossEntropy,
        input_len: 5,
        label_len: 1,
    }
}

fn spec_activated_output() -> Spec {
    Spec {
        ops: vec![
            RefOp::Linear { inputs: 4, outputs: 7, bias: true },
            RefOp::Act(Activation::Relu),
            RefOp::Linear { inputs: 7, outputs: 3, bias: true },
            RefOp::Act(Activation::Sigmoid),
            RefOp::Act(Activation::Tanh),
        ],
        loss: RefLoss::HalfSquaredError,
        input_len: 4,
        label_len: 3,
    }
}

fn spec_ffnn() -> Spec {
    Spec {
        ops: vec![
            RefOp::Linear { inputs: 104, outputs: 50, bias: true },
            RefOp::Act(Activation::Relu),
            RefOp::Linear { inputs: 50, outputs: 2, bias: true },
        ],
        loss: RefLoss::CrossEntropy,
        input_len: 104,
        label_len: 1,
    }
}

fn spec_logreg() -> Spec {
    Spec {
        ops: vec![RefOp::Linear { inputs: 104, outputs: 1, bias: true }],
        loss: RefLoss::BinaryCrossEntropy,
        input_len: 104,
        label_len: 1,
    }
}

// ---------------------------------------------------------------------------------------------
// Harness.

struct Data {
    inputs: Vec<f32>,
    labels: Vec<f32>,
    size: usize,
}

fn random_data(spec: &Spec, size: usize, rng: &mut ChaCha8Rng) -> Data {
    let inputs = (0..size * spec.input_len).map(|_| rng.random_range(-2.0..2.0)).collect();
    let labels = (0..size * spec.label_len)
        .map(|_| match spec.loss {
            RefLoss::CrossEntropy => rng.random_range(0..spec_classes(spec)) as f32,
            RefLoss::BinaryCrossEntropy => rng.random_range(0..2u32) as f32,
            RefLoss::HalfSquaredError => rng.random_range(-1.0..1.0),
        })
        .collect();
    Data { inputs, labels, size }
}

fn spec_classes(spec: &Spec) -> u32 {
    match spec.ops.iter().rev().find_map(|op| match op {
        RefOp::Linear { outputs, .. } => Some(*outputs),
        _ => None,
    }) {
        Some(k) => k as u32,
        None => unreachable!(),
    }
}

impl Data {
    fn batch(&self) -> Batch<'_, f32> {
        Batch { inputs: &self.inputs, labels: &self.labels, size: self.size }
    }
}

/// Per example: loss, gradient (f64).
fn reference<M: DpModel>(model: &M, spec: &Spec, data: &Data) -> Vec<(f64, Vec<f64>)> {
    let params: Vec<f64> = model.params().iter().map(|&v| v as f64).collect();
    (0..data.size)
        .map(|i| {
            let x: Vec<f64> =
                data.inputs[i * spec.input_len..(i + 1) * spec.input_len].iter().map(|&v| v as f64).collect();
            ref_gradient(spec, &params, &x, &data.labels[i * spec.label_len..(i + 1) * spec.label_len])
        })
        .collect()
}

fn group_sq_norms(spec: &Spec, grad: &[f64]) -> Vec<f64> {
    let (_, _, groups) = layout(spec);
    let mut norms = vec![0.0; groups];
    for (g, v) in groups_of(spec).iter().zip(grad) {
        norms[*g] += v * v;
    }
    norms
}

/// |got − want| ≤ 1e-4·max(|want|, floor): relative, with a floor for values that cancel to ~0.
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    reference::assert_close(got, want, 1e-4, reference::scale_floor(want, 1e-3) + 1e-12, what);
}

/// Runs the private primitive and the non-private gradient and compares everything with the reference.
fn check_against_reference<M: DpModel<Input = f32>>(spec: &Spec, size: usize, clip: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let data = random_data(spec, size, &mut rng);
    let want = reference(&model, spec, &data);
    let groups = M::GROUPS.len();
    let mut ws = Workspace::new::<M>(size);

    let (mut losses, mut sq_norms) = (vec![0.0f32; size], vec![0.0f32; size * groups]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq_norms);
    let want_losses: Vec<f64> = want.iter().map(|(l, _)| *l).collect();
    assert_close(&losses, &want_losses, "losses");
    let want_norms: Vec<f64> = want.iter().flat_map(|(_, g)| group_sq_norms(spec, g)).collect();
    assert_close(&sq_norms, &want_norms, "per-example squared norms");

    // Flat clipping: one factor per example, from the reference's total norm.
    let factors: Vec<f32> = want
        .iter()
        .flat_map(|(_, g)| {
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            vec![(clip / norm).min(1.0) as f32; groups]
        })
        .collect();
    let start: Vec<f32> = (0..M::PARAM_COUNT).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut grad = start.clone();
    model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
    let mut want_sum: Vec<f64> = start.iter().map(|&v| v as f64).collect();
    for (i, (_, g)) in want.iter().enumerate() {
        want_sum.iter_mut().zip(g).for_each(|(s, v)| *s += factors[i * groups] as f64 * v);
    }
    assert_close(&grad, &want_sum, "clipped sum");

    let mut grad = start.clone();
    let mut losses2 = vec![0.0f32; size];
    model.loss_and_gradient(&mut ws, data.batch(), &mut losses2, &mut grad);
    let mut want_sum: Vec<f64> = start.iter().map(|&v| v as f64).collect();
    for (_, g) in &want {
        want_sum.iter_mut().zip(g).for_each(|(s, v)| *s += v);
    }
    assert_close(&grad, &want_sum, "non-private gradient sum");
    assert_close(&losses2, &want_losses, "non-private losses");

    let mut outputs = vec![0.0f32; size * M::LOSS.output_len()];
    model.forward(&mut ws, &data.inputs, size, &mut outputs);
    let params: Vec<f64> = model.params().iter().map(|&v| v as f64).collect();
    let want_out: Vec<f64> = (0..size)
        .flat_map(|i| {
            let x: Vec<f64> =
                data.inputs[i * spec.input_len..(i + 1) * spec.input_len].iter().map(|&v| v as f64).collect();
            ref_forward(spec, &params, &x).pop().unwrap()
        })
        .collect();
    assert_close(&outputs, &want_out, "forward outputs");
}

fn every_model(size: usize, clip: f64, seed: u64) {
    check_against_reference::<TanhMse>(&spec_tanh_mse(), size, clip, seed);
    check_against_reference::<SigmoidBce>(&spec_sigmoid_bce(), size, clip, seed + 1);
    check_against_reference::<Deep>(&spec_deep(), size, clip, seed + 2);
    check_against_reference::<AdultFfnn>(&spec_ffnn(), size, clip, seed + 3);
    check_against_reference::<AdultLogReg>(&spec_logreg(), size, clip, seed + 4);
    check_against_reference::<ActivatedOutput>(&spec_activated_output(), size, clip, seed + 5);
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_model_matches_the_reference_at_b_1_3_64() {
    for (size, seed) in [(1, 10), (3, 20), (64, 30)] {
        every_model(size, 0.5, seed);
    }
}

#[test]
fn clip_norms_above_and_below_every_per_example_norm() {
    every_model(16, 1e6, 40); // no example clipped: factors are 1
    every_model(16, 1e-3, 50); // every example clipped
}

#[test]
fn parameter_layout_is_pytorchs() {
    for (spec, params) in [
        (spec_tanh_mse(), TanhMse::PARAMS),
        (spec_sigmoid_bce(), SigmoidBce::PARAMS),
        (spec_deep(), Deep::PARAMS),
    ] {
        let (lay, count, groups) = layout(&spec);
        let offsets: Vec<usize> = lay.iter().flat_map(|&(w, b, _)| std::iter::once(w).chain(b)).collect();
        assert_eq!(params.iter().map(|p| p.offset).collect::<Vec<_>>(), offsets);
        assert_eq!(params.iter().map(|p| p.len).sum::<usize>(), count);
        assert_eq!(params.last().unwrap().group + 1, groups);
        assert!(params.iter().all(|p| p.shape.iter().product::<usize>() == p.len));
    }
    let names: Vec<&str> = TanhMse::PARAMS.iter().map(|p| p.name).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight"]);
    assert_eq!(TanhMse::PARAMS[0].shape, [5, 6]);
    assert_eq!(TanhMse::GROUPS, ["fc1", "fc2"]);
    assert_eq!(SigmoidBce::GROUPS, ["hidden", "out"]);
}

#[test]
fn adult_models_have_the_papers_parameter_counts() {
    assert_eq!(AdultLogReg::PARAM_COUNT, 105);
    assert_eq!(AdultFfnn::PARAM_COUNT, 5352);
    assert_eq!(
        AdultFfnn::PARAMS.iter().map(|p| p.name).collect::<Vec<_>>(),
        ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    );
    assert_eq!(AdultFfnn::LOSS, Loss::CrossEntropy { classes: 2 });
    assert_eq!(AdultLogReg::LOSS, Loss::BinaryCrossEntropy);
    assert_eq!(AdultFfnn::LAYERS.iter().map(|l| l.params).sum::<usize>(), 5352);
    let plan = AdultFfnn::describe();
    assert!(plan.contains("linear(out = 50)") && plan.contains("ghost"), "{plan}");
}

#[test]
fn reference_gradients_match_central_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(60);
    for spec in [
        spec_tanh_mse(),
        spec_sigmoid_bce(),
        spec_deep(),
        spec_ffnn(),
        spec_logreg(),
        spec_activated_output(),
    ] {
        let (_, count, _) = layout(&spec);
        let params: Vec<f64> = (0..count).map(|_| rng.random_range(-0.5..0.5)).collect();
        let data = random_data(&spec, 1, &mut rng);
        let x: Vec<f64> = data.inputs.iter().map(|&v| v as f64).collect();
        let (_, grad) = ref_gradient(&spec, &params, &x, &data.labels);
        let loss_at = |p: &[f64]| {
            let out = ref_forward(&spec, p, &x).pop().unwrap();
            ref_loss(spec.loss, &out, &data.labels).0
        };
        let h = 1e-6;
        // Every parameter of the small models, a strided sample of the FCNN's.
        for k in (0..count).step_by(count / 200 + 1) {
            let (mut plus, mut minus) = (params.clone(), params.clone());
            plus[k] += h;
            minus[k] -= h;
            let numeric = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
            assert!(
                (numeric - grad[k]).abs() <= 1e-6 + 1e-5 * grad[k].abs(),
                "{:?} param {k}: {numeric} vs {}",
                spec.loss,
                grad[k]
            );
        }
    }
}

#[test]
fn an_example_with_an_exactly_zero_gradient() {
    let spec = spec_tanh_mse();
    let mut rng = ChaCha8Rng::seed_from_u64(70);
    let model = TanhMse::init(&mut rng);
    let mut data = random_data(&spec, 5, &mut rng);
    let mut ws = Workspace::new::<TanhMse>(5);
    let mut outputs = vec![0.0f32; 10];
    model.forward(&mut ws, &data.inputs, 5, &mut outputs);
    data.labels[4..6].copy_from_slice(&outputs[4..6]); // example 2 predicts its label exactly
    let (mut losses, mut sq) = (vec![0.0f32; 5], vec![0.0f32; 10]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq);
    assert_eq!((losses[2], sq[4], sq[5]), (0.0, 0.0, 0.0));
    assert!((0..5).filter(|&i| i != 2).all(|i| sq[2 * i] > 0.0 && sq[2 * i + 1] > 0.0));
    let factors = vec![1.0f32; 10];
    let mut grad = vec![0.0f32; TanhMse::PARAM_COUNT];
    model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
    let want = reference(&model, &spec, &data);
    // The f64 reference's prediction differs from the f32 label in the last bits: leave example 2 out.
    let mut sum = vec![0.0f64; TanhMse::PARAM_COUNT];
    want.iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .for_each(|(_, (_, g))| sum.iter_mut().zip(g).for_each(|(s, v)| *s += v));
    assert_close(&grad, &sum, "clipped sum with a zero-gradient example");
}

#[test]
fn changing_one_example_changes_only_its_norm() {
    let spec = spec_deep();
    let mut rng = ChaCha8Rng::seed_from_u64(80);
    let model = Deep::init(&mut rng);
    let mut data = random_data(&spec, 8, &mut rng);
    let mut ws = Workspace::new::<Deep>(8);
    let norms = |data: &Data, ws: &mut Workspace| {
        let (mut losses, mut sq) = (vec![0.0f32; 8], vec![0.0f32; 8 * 3]);
        model.per_example_norms(ws, data.batch(), &mut losses, &mut sq);
        sq
    };
    let before = norms(&data, &mut ws);
    data.inputs[3 * 5..4 * 5].iter_mut().for_each(|v| *v = -*v * 1.5 + 0.25);
    data.labels[3] = (data.labels[3] + 1.0) % 3.0;
    let after = norms(&data, &mut ws);
    for i in 0..8 {
        let (b, a) = (&before[i * 3..i * 3 + 3], &after[i * 3..i * 3 + 3]);
        if i == 3 {
            assert_ne!(b, a, "the changed example's norms must change");
        } else {
            assert_eq!(b, a, "example {i} must not see example 3");
        }
    }
}

#[test]
fn one_compiled_model_runs_at_b_1_7_and_256() {
    let spec = spec_ffnn();
    let mut rng = ChaCha8Rng::seed_from_u64(90);
    let model = AdultFfnn::init(&mut rng);
    let mut ws = Workspace::new::<AdultFfnn>(1); // grows on demand
    for size in [1, 7, 256] {
        let data = random_data(&spec, size, &mut rng);
        let (mut losses, mut sq) = (vec![0.0f32; size], vec![0.0f32; size * 2]);
        model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq);
        let want = reference(&model, &spec, &data);
        let want_norms: Vec<f64> = want.iter().flat_map(|(_, g)| group_sq_norms(&spec, g)).collect();
        assert_close(&sq, &want_norms, "norms");
        let factors: Vec<f32> = (0..size * 2).map(|k| (k % 5) as f32 * 0.25).collect();
        let mut grad = vec![0.0f32; 5352];
        model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
        let groups = groups_of(&spec);
        let mut sum = vec![0.0f64; 5352];
        for (i, (_, g)) in want.iter().enumerate() {
            for (k, v) in g.iter().enumerate() {
                sum[k] += factors[i * 2 + groups[k]] as f64 * v; // per-layer factors
            }
        }
        assert_close(&grad, &sum, "per-layer clipped sum");
    }
}

#[test]
fn a_nan_example_with_factor_zero_contributes_nothing() {
    let spec = spec_ffnn();
    let mut rng = ChaCha8Rng::seed_from_u64(100);
    let model = AdultFfnn::init(&mut rng);
    let mut data = random_data(&spec, 4, &mut rng);
    data.inputs[2 * 104..3 * 104].iter_mut().for_each(|v| *v = f32::NAN);
    let mut ws = Workspace::new::<AdultFfnn>(4);
    let (mut losses, mut sq) = (vec![0.0f32; 4], vec![0.0f32; 8]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq);
    assert!(sq[4].is_nan() && sq[5].is_nan(), "the NaN example's norm is not finite");
    assert!(sq.iter().enumerate().filter(|(k, _)| k / 2 != 2).all(|(_, v)| v.is_finite()));
    let factors = [1.0f32, 1.0, 0.5, 0.5, 0.0, 0.0, 1.0, 1.0];
    let mut grad = vec![0.0f32; 5352];
    model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
    assert!(grad.iter().all(|v| v.is_finite()));
    let want = reference(&model, &spec, &data);
    let mut sum = vec![0.0f64; 5352];
    for (i, (_, g)) in want.iter().enumerate().filter(|(i, _)| *i != 2) {
        sum.iter_mut().zip(g).for_each(|(s, v)| *s += factors[i * 2] as f64 * v);
    }
    assert_close(&grad, &sum, "clipped sum without the NaN example");
}

#[test]
fn loss_and_gradient_equals_clipped_sum_with_unit_factors() {
    let spec = spec_deep();
    let mut rng = ChaCha8Rng::seed_from_u64(110);
    let model = Deep::init(&mut rng);
    let data = random_data(&spec, 32, &mut rng);
    let mut ws = Workspace::new::<Deep>(32);
    let (mut losses, mut sq) = (vec![0.0f32; 32], vec![0.0f32; 32 * 3]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq);
    let mut clipped = vec![0.0f32; Deep::PARAM_COUNT];
    model.clipped_sum(&mut ws, data.batch(), &vec![1.0; 32 * 3], &mut clipped);
    let mut plain = vec![0.0f32; Deep::PARAM_COUNT];
    model.loss_and_gradient(&mut ws, data.batch(), &mut losses, &mut plain);
    let plain64: Vec<f64> = plain.iter().map(|&v| v as f64).collect();
    assert_close(&clipped, &plain64, "clipped sum with factors 1");
}

#[test]
fn init_follows_pytorchs_default_bounds() {
    let mut rng = ChaCha8Rng::seed_from_u64(120);
    let model = AdultFfnn::init(&mut rng);
    for p in AdultFfnn::PARAMS {
        let fan_in = if p.name.starts_with("fc1") { 104.0f32 } else { 50.0 };
        let bound = 1.0 / fan_in.sqrt();
        let values = &model.params()[p.offset..p.offset + p.len];
        assert!(values.iter().all(|v| v.abs() <= bound), "{}", p.name);
        if p.len > 100 {
            let mean = values.iter().sum::<f32>() / p.len as f32;
            let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(mean.abs() < 0.1 * bound && max > 0.9 * bound, "{}: not uniform on ±{bound}", p.name);
        }
    }
    let again = AdultFfnn::from_params(model.params().to_vec());
    assert_eq!(again.params(), model.params());
}

// ---------------------------------------------------------------------------------------------
// No allocation per step: a counting allocator, per thread (tests run in parallel threads).

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by the GEMM library alone for the products of one `step` below on AdultFfnn:
/// per_example_norms 3 (two forward, one input gradient), clipped_sum 2, loss_and_gradient 5.
fn gemm_library_allocations(b: usize) -> usize {
    use dp::__private::kernels::{sgemm, Op};
    let calls = [
        (Op::N, Op::T, b, 50, 104, 0.0),
        (Op::N, Op::T, b, 2, 50, 0.0),
        (Op::N, Op::N, b, 50, 2, 0.0),
        (Op::T, Op::N, 50, 104, b, 1.0),
        (Op::T, Op::N, 2, 50, b, 1.0),
    ];
    let run = |(oa, ob, m, n, k, beta): (Op, Op, usize, usize, usize, f32)| {
        let (x, y, mut z) = (vec![0.5f32; m * k], vec![0.5f32; k * n], vec![0.0f32; m * n]);
        let before = ALLOCATIONS.with(|c| c.get());
        sgemm(oa, ob, m, n, k, 1.0, &x, &y, beta, &mut z);
        ALLOCATIONS.with(|c| c.get()) - before
    };
    let forward_backward = run(calls[0]) + run(calls[1]) + run(calls[2]);
    let grad_sum = run(calls[3]) + run(calls[4]);
    2 * forward_backward + 2 * grad_sum
}

#[test]
fn a_step_allocates_nothing_but_the_gemm_librarys_packing_buffers() {
    // Our code carves the workspace and allocates nothing; the `gemm` crate allocates a packing buffer
    // or two in some calls. So a step must allocate exactly what its GEMMs alone allocate. B ≤ 32
    // keeps every GEMM and kernel on this thread (below their threading thresholds), so the
    // per-thread count sees all the work of the step.
    let spec = spec_ffnn();
    let mut rng = ChaCha8Rng::seed_from_u64(130);
    let model = AdultFfnn::init(&mut rng);
    for size in [8, 32] {
        let data = random_data(&spec, size, &mut rng);
        let mut ws = Workspace::new::<AdultFfnn>(size);
        let (mut losses, mut sq, mut grad) = (vec![0.0f32; size], vec![0.0f32; 2 * size], vec![0.0f32; 5352]);
        let factors = vec![0.5f32; 2 * size];
        let mut step = |ws: &mut Workspace| {
            model.per_example_norms(ws, data.batch(), &mut losses, &mut sq);
            model.clipped_sum(ws, data.batch(), &factors, &mut grad);
            model.loss_and_gradient(ws, data.batch(), &mut losses, &mut grad);
        };
        step(&mut ws);
        let before = ALLOCATIONS.with(|c| c.get());
        step(&mut ws);
        let step_allocations = ALLOCATIONS.with(|c| c.get()) - before;
        assert_eq!(step_allocations, gemm_library_allocations(size), "B = {size}: the step allocated");
    }
}
