//! The harness that holds a compiled model (any `DpModel`, dense or token inputs) against a
//! reference [`Network`]: random parameters and inputs, then every entry point of the model compared
//! with the reference one example at a time, and the reference's gradient against finite differences.

use dp::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::net::Network;
use super::{
    assert_close, assert_close_with_floors, assert_matches_finite_differences, sample_coords, scale_floor,
    widen,
};

/// Relative tolerance of every comparison between a compiled model (f32) and the reference (f64).
pub const TOL: f64 = 1e-4;
/// Entries smaller than this fraction of their vector's largest magnitude are compared against that
/// fraction instead of their own size: an f32 sum carries an absolute error proportional to the
/// size of its terms, so entries that cancel to nearly 0 cannot be relatively exact. With `TOL` this
/// allows such entries 1e-6 of the vector's scale, about 16 f32 ulps: a sum of a few hundred terms
/// rounds by that much, and the order of its additions is the GEMM kernel's choice (it differs
/// between its AVX2 and AVX-512 kernels).
pub const FLOOR: f64 = 1e-2;

// ---------------------------------------------------------------------------------------------
// Inputs of either element type.

/// How a test draws one model input element and hands it to the reference.
pub trait TestInput: dp::InputElem {
    /// `examples` random inputs of `len` elements each.
    fn random(rng: &mut ChaCha8Rng, examples: usize, len: usize, vocab: usize) -> Vec<Self>;
    fn to_f64(self) -> f64;
    /// A non-finite input, where the type has one.
    fn poison() -> Option<Self>;
}

impl TestInput for f32 {
    fn random(rng: &mut ChaCha8Rng, examples: usize, len: usize, _: usize) -> Vec<f32> {
        (0..examples * len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn poison() -> Option<f32> {
        Some(f32::NAN)
    }
}

impl TestInput for u32 {
    /// Each example draws from a small pool of distinct tokens, so tokens repeat within it (the
    /// embedding's per-example gradient must add their rows before squaring); the first example's
    /// pool holds the smallest and the largest token id.
    fn random(rng: &mut ChaCha8Rng, examples: usize, len: usize, vocab: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(examples * len);
        for i in 0..examples {
            let mut pool: Vec<u32> =
                (0..(len / 4).max(2)).map(|_| rng.random_range(0..vocab as u32)).collect();
            if i == 0 {
                pool[0] = 0;
                pool[1] = vocab as u32 - 1;
            }
            out.extend((0..len).map(|_| pool[rng.random_range(0..pool.len())]));
        }
        out
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn poison() -> Option<u32> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// One batch for model `M`: inputs, labels, size.
pub struct Data<T> {
    inputs: Vec<T>,
    labels: Vec<f32>,
    size: usize,
}

impl<T: TestInput> Data<T> {
    fn random<M: DpModel<Input = T>>(rng: &mut ChaCha8Rng, size: usize) -> Self {
        let inputs = T::random(rng, size, M::input_len(), M::VOCAB);
        let labels = (0..size * M::LOSS.label_len())
            .map(|_| match M::LOSS {
                Loss::CrossEntropy { classes } => rng.random_range(0..classes) as f32,
                Loss::BinaryCrossEntropy => rng.random_range(0..2u32) as f32,
                Loss::MeanSquaredError { .. } => rng.random_range(-1.0..1.0),
            })
            .collect();
        Data { inputs, labels, size }
    }

    fn batch(&self) -> Batch<'_, T> {
        Batch { inputs: &self.inputs, labels: &self.labels, size: self.size }
    }

    fn example(&self, i: usize, len: usize) -> Vec<f64> {
        self.inputs[i * len..(i + 1) * len].iter().map(|v| v.to_f64()).collect()
    }

    fn label(&self, i: usize, len: usize) -> Vec<f64> {
        widen(&self.labels[i * len..(i + 1) * len])
    }
}

/// The reference's answer for one example.
pub struct Want {
    loss: f64,
    grad: Vec<f64>,
    output: Vec<f64>,
}

fn reference_answers<M: DpModel>(net: &Network, params: &[f64], data: &Data<M::Input>) -> Vec<Want>
where
    M::Input: TestInput,
{
    (0..data.size)
        .map(|i| {
            let (x, label) = (data.example(i, M::input_len()), data.label(i, M::LOSS.label_len()));
            let (loss, grad, output) = net.evaluate(params, &x, &label);
            Want { loss, grad, output }
        })
        .collect()
}

/// `Σ_i c_{i, group(k)} g_{i, k}` over the examples whose factors are not all 0, with the floor of
/// each entry's comparison: `Σ_i |c_{i, group(k)} g_{i, k}|` (an f32 sum of terms that cancel is
/// exact only relative to the terms), and never under [`FLOOR`] of the sum's largest entry.
fn weighted_sum(net: &Network, want: &[Want], factors: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let groups = net.layout.groups;
    let group_of = net.layout.group_of_each();
    let (mut sum, mut magnitude) = (vec![0.0; net.layout.count], vec![0.0; net.layout.count]);
    for (i, w) in want.iter().enumerate() {
        let f = &factors[i * groups..(i + 1) * groups];
        if f.iter().all(|&c| c == 0.0) {
            continue;
        }
        // Frozen tensors (after the trained prefix) get no gradient.
        for (k, v) in w.grad.iter().enumerate().take(net.layout.trained) {
            let term = f64::from(f[group_of[k]]) * v;
            sum[k] += term;
            magnitude[k] += term.abs();
        }
    }
    sum.truncate(net.layout.trained);
    magnitude.truncate(net.layout.trained);
    let floor = scale_floor(&sum, FLOOR);
    magnitude.iter_mut().for_each(|m| *m = m.max(floor));
    (sum, magnitude)
}

/// The largest relative error of each comparison, for the report.
#[derive(Debug, Default)]
pub struct Errors {
    pub outputs: f64,
    pub losses: f64,
    pub norms: f64,
    pub clipped_sum: f64,
    pub gradient: f64,
}

/// Compares every entry point of `M` with the reference on one random batch of `size` examples.
pub fn check_model<M: DpModel>(net: &Network, size: usize, seed: u64) -> Errors
where
    M::Input: TestInput,
{
    check_model_with::<M>(net, size, seed, |_| {})
}

/// [`check_model`] on random inputs that `edit` changes first (all examples, example-major).
pub fn check_model_with<M: DpModel>(
    net: &Network,
    size: usize,
    seed: u64,
    edit: impl Fn(&mut [M::Input]),
) -> Errors
where
    M::Input: TestInput,
{
    check_model_in::<M>(net, &mut Workspace::new::<M>(size), size, seed, edit)
}

/// [`check_model_with`] in a workspace the caller keeps (it grows on demand): a workspace reused
/// across batches of different sizes must not leak one batch into the next.
pub fn check_model_in<M: DpModel>(
    net: &Network,
    ws: &mut Workspace,
    size: usize,
    seed: u64,
    edit: impl Fn(&mut [M::Input]),
) -> Errors
where
    M::Input: TestInput,
{
    check_model_at::<M>(net, ws, size, seed, edit, |_| {})
}

/// [`check_model_in`] with parameters that `params` changes after `M::init` (e.g. a LoRA B matrix,
/// zero at init, made random so that the A matrix gets a gradient).
pub fn check_model_at<M: DpModel>(
    net: &Network,
    ws: &mut Workspace,
    size: usize,
    seed: u64,
    edit: impl Fn(&mut [M::Input]),
    params: impl Fn(&mut [f32]),
) -> Errors
where
    M::Input: TestInput,
{
    ws.ensure::<M>(size);
    net.check_layout();
    assert_eq!(M::GROUPS.len(), net.layout.groups, "{}: group count", M::NAME);
    assert_eq!(M::PARAM_COUNT, net.layout.count, "{}: parameter count", M::NAME);
    assert_eq!(M::TRAINED_PARAM_COUNT, net.layout.trained, "{}: trained parameter count", M::NAME);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = M::init(&mut rng);
    params(model.params_mut());
    let params = widen(model.params());
    let mut data = Data::<M::Input>::random::<M>(&mut rng, size);
    edit(&mut data.inputs);
    let want = reference_answers::<M>(net, &params, &data);
    let groups = net.layout.groups;
    let mut errors = Errors::default();
    let name = M::NAME;

    let mut outputs = vec![0.0f32; size * M::LOSS.output_len()];
    model.forward(ws, &data.inputs, size, &mut outputs);
    let want_out: Vec<f64> = want.iter().flat_map(|w| w.output.clone()).collect();
    errors.outputs =
        assert_close(&outputs, &want_out, TOL, scale_floor(&want_out, FLOOR), &format!("{name} outputs"));

    let (mut losses, mut sq_norms) = (vec![0.0f32; size], vec![0.0f32; size * groups]);
    model.per_example_norms(ws, data.batch(), &mut losses, &mut sq_norms);
    let want_losses: Vec<f64> = want.iter().map(|w| w.loss).collect();
    errors.losses =
        assert_close(&losses, &want_losses, TOL, scale_floor(&want_losses, FLOOR), &format!("{name} losses"));
    let want_norms: Vec<Vec<f64>> = want.iter().map(|w| net.layout.group_sq_norms(&w.grad)).collect();
    for g in 0..groups {
        // Each group against its own scale: groups differ by orders of magnitude.
        let got: Vec<f32> = (0..size).map(|i| sq_norms[i * groups + g]).collect();
        let wanted: Vec<f64> = want_norms.iter().map(|n| n[g]).collect();
        let what = format!("{name} squared norms of group {} ({})", g, M::GROUPS[g]);
        let err = assert_close(&got, &wanted, TOL, scale_floor(&wanted, FLOOR), &what);
        errors.norms = errors.norms.max(err);
    }

    // Clip at the geometric mean of the smallest and largest norm, model-wide and per layer: the
    // largest example is clipped, the smallest is not.
    let totals: Vec<f64> = want_norms.iter().map(|n| n.iter().sum::<f64>().sqrt()).collect();
    let between = |v: &[f64]| {
        (v.iter().copied().fold(f64::INFINITY, f64::min) * v.iter().copied().fold(0.0, f64::max)).sqrt()
    };
    let clip = between(&totals);
    let flat: Vec<f32> = totals.iter().flat_map(|&n| vec![(clip / n).min(1.0) as f32; groups]).collect();
    let layer_clips: Vec<f64> =
        (0..groups).map(|g| between(&want_norms.iter().map(|n| n[g].sqrt()).collect::<Vec<_>>())).collect();
    let per_layer: Vec<f32> = want_norms
        .iter()
        .flat_map(|n| (0..groups).map(|g| (layer_clips[g] / n[g].sqrt()).min(1.0) as f32).collect::<Vec<_>>())
        .collect();
    if size > 1 {
        assert!(flat.iter().any(|&c| c < 1.0) && flat.contains(&1.0), "{name}: clip some, not all");
    }
    for (factors, kind) in [(&flat, "model-wide"), (&per_layer, "per-layer")] {
        let (want_sum, floors) = weighted_sum(net, &want, factors);
        let mut grad = vec![0.0f32; M::TRAINED_PARAM_COUNT];
        model.clipped_sum(ws, data.batch(), factors, &mut grad);
        let err =
            assert_close_with_floors(&grad, &want_sum, TOL, &floors, &format!("{name} {kind} clipped sum"));
        errors.clipped_sum = errors.clipped_sum.max(err);
        // A second call adds to the first.
        model.clipped_sum(ws, data.batch(), factors, &mut grad);
        let twice: Vec<f64> = want_sum.iter().map(|v| 2.0 * v).collect();
        let floors: Vec<f64> = floors.iter().map(|v| 2.0 * v).collect();
        assert_close_with_floors(
            &grad,
            &twice,
            TOL,
            &floors,
            &format!("{name} {kind} clipped sum, added twice"),
        );
    }

    let mut grad = vec![0.0f32; M::TRAINED_PARAM_COUNT];
    let mut losses2 = vec![0.0f32; size];
    model.loss_and_gradient(ws, data.batch(), &mut losses2, &mut grad);
    let (want_grad, floors) = weighted_sum(net, &want, &vec![1.0; size * groups]);
    errors.gradient = assert_close_with_floors(&grad, &want_grad, TOL, &floors, &format!("{name} gradient"));
    assert_close(
        &losses2,
        &want_losses,
        TOL,
        scale_floor(&want_losses, FLOOR),
        &format!("{name} losses (2)"),
    );
    errors
}

/// A batch whose example 1 has factor 0 (and, for dense inputs, NaN inputs): the clipped sum is
/// finite and equals the others' weighted sum.
pub fn check_zero_factor_example<M: DpModel>(net: &Network, size: usize, seed: u64)
where
    M::Input: TestInput,
{
    assert!(size >= 2);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let params = widen(model.params());
    let mut data = Data::<M::Input>::random::<M>(&mut rng, size);
    let len = M::input_len();
    if let Some(nan) = M::Input::poison() {
        data.inputs[len..2 * len].iter_mut().for_each(|v| *v = nan);
    }
    let groups = net.layout.groups;
    let mut ws = Workspace::new::<M>(size);
    let (mut losses, mut sq) = (vec![0.0f32; size], vec![0.0f32; size * groups]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq);
    let factors: Vec<f32> =
        (0..size * groups).map(|k| if k / groups == 1 { 0.0 } else { 0.25 + 0.5 * (k % 2) as f32 }).collect();
    let mut grad = vec![0.0f32; M::TRAINED_PARAM_COUNT];
    model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
    assert!(grad.iter().all(|v| v.is_finite()), "{}: the factor-0 example leaked into the sum", M::NAME);
    // weighted_sum skips example 1 (its reference gradient is NaN for a NaN input).
    let want = reference_answers::<M>(net, &params, &data);
    let (want_sum, floors) = weighted_sum(net, &want, &factors);
    assert_close_with_floors(&grad, &want_sum, TOL, &floors, &format!("{} without example 1", M::NAME));
}

/// The reference network's own gradient against central finite differences at the model's size,
/// on a spread of coordinates plus the largest gradient entries.
pub fn check_reference_gradient<M: DpModel>(net: &Network, seed: u64, samples: usize)
where
    M::Input: TestInput,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = widen(M::init(&mut rng).params());
    let data = Data::<M::Input>::random::<M>(&mut rng, 1);
    let (x, label) = (data.example(0, M::input_len()), data.label(0, M::LOSS.label_len()));
    let (_, grad) = net.loss_and_gradient(&params, &x, &label);
    let mut coords = sample_coords(grad.len(), samples);
    let mut by_size: Vec<usize> = (0..grad.len()).collect();
    by_size.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    coords.extend(&by_size[..samples.min(grad.len())]);
    assert_matches_finite_differences(|p| net.loss(p, &x, &label), &params, &grad, &coords, M::NAME);
}

pub fn report(name: &str, e: &Errors) {
    println!(
        "{name}: max relative error outputs {:.1e}, losses {:.1e}, squared norms {:.1e}, clipped sums {:.1e}, \
         gradient {:.1e}",
        e.outputs, e.losses, e.norms, e.clipped_sum, e.gradient
    );
}
