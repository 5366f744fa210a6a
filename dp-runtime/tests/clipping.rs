//! Clipping through the DpModel contract: no clipped per-example gradient exceeds C (flat), or C/√G per
//! group (per-layer); an example with a NaN input contributes exactly zero and is counted.

mod common;

use common::{separable, softmax_gradient_f64, Mlp, SoftmaxRegression, FEATURES};
use dp_runtime::clipping::{clip_factors, ClipMode};
use dp_runtime::model::{Batch, DpModel, Workspace};
use dp_runtime::rng::seeded;

/// Inputs scaled up so most gradients exceed C, with some tiny ones that need no clipping.
fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let data = separable(n, 3);
    let inputs =
        data.inputs.iter().enumerate().map(|(i, &x)| if i % 7 == 0 { x * 1e-3 } else { x * 25.0 }).collect();
    (inputs, data.labels)
}

/// Each example's clipped gradient, group by group, through `clipped_sum` with one example's factors.
fn clipped_per_example<M: DpModel<Input = f32>>(model: &M, mode: ClipMode, clip: f64) -> Vec<Vec<f64>> {
    let n = 40;
    let (x, y) = inputs(n);
    let batch = Batch { inputs: &x, labels: &y, size: n };
    let groups = M::GROUPS.len();
    let mut ws = Workspace::new::<M>(n);
    let mut losses = vec![0.0; n];
    let mut sq = vec![0.0; n * groups];
    model.per_example_norms(&mut ws, batch, &mut losses, &mut sq);
    let mut factors = vec![0.0; n * groups];
    assert_eq!(clip_factors(mode, clip, groups, &sq, &mut factors).unwrap(), 0);
    (0..n)
        .map(|i| {
            let mut single = vec![0.0; n * groups];
            single[i * groups..(i + 1) * groups].copy_from_slice(&factors[i * groups..(i + 1) * groups]);
            let mut grad = vec![0.0; M::PARAM_COUNT];
            model.clipped_sum(&mut ws, batch, &single, &mut grad);
            let mut norms = vec![0.0f64; groups];
            for spec in M::PARAMS {
                norms[spec.group] += grad[spec.offset..spec.offset + spec.len]
                    .iter()
                    .map(|&g| (g as f64).powi(2))
                    .sum::<f64>();
            }
            norms
        })
        .collect()
}

#[test]
fn the_test_model_reports_exact_per_example_norms() {
    let model = SoftmaxRegression::init(&mut seeded(1));
    let (x, y) = inputs(10);
    let mut ws = Workspace::new::<SoftmaxRegression>(10);
    let (mut losses, mut sq) = (vec![0.0; 10], vec![0.0; 10]);
    model.per_example_norms(&mut ws, Batch { inputs: &x, labels: &y, size: 10 }, &mut losses, &mut sq);
    for i in 0..10 {
        let reference: f64 =
            softmax_gradient_f64(&model.params, &x[i * FEATURES..(i + 1) * FEATURES], y[i] as usize)
                .iter()
                .map(|g| g * g)
                .sum();
        assert!(
            (sq[i] as f64 - reference).abs() <= 1e-5 * reference.max(1e-6),
            "{i}: {} vs {reference}",
            sq[i]
        );
    }
}

#[test]
fn flat_clipping_never_exceeds_c() {
    let clip = 0.7;
    for norms in clipped_per_example(&Mlp::init(&mut seeded(2)), ClipMode::Flat, clip)
        .into_iter()
        .chain(clipped_per_example(&SoftmaxRegression::init(&mut seeded(2)), ClipMode::Flat, clip))
    {
        let total = norms.iter().sum::<f64>().sqrt();
        assert!(total <= clip * (1.0 + 1e-6), "{total} > {clip}");
    }
    // The bound is reached, not just respected: most examples were clipped to C.
    let clipped = clipped_per_example(&Mlp::init(&mut seeded(2)), ClipMode::Flat, clip);
    assert!(clipped.iter().filter(|n| (n.iter().sum::<f64>().sqrt() - clip).abs() < 1e-4).count() > 20);
}

#[test]
fn per_layer_clipping_bounds_each_group_by_c_over_root_g() {
    let clip = 1.5;
    let bound = clip / 2f64.sqrt();
    for norms in clipped_per_example(&Mlp::init(&mut seeded(4)), ClipMode::PerLayer, clip) {
        for &g in &norms {
            assert!(g.sqrt() <= bound * (1.0 + 1e-6), "group norm {} > {bound}", g.sqrt());
        }
        assert!(norms.iter().sum::<f64>().sqrt() <= clip * (1.0 + 1e-6));
    }
}

#[test]
fn nan_examples_contribute_zero_and_are_counted() {
    let model = Mlp::init(&mut seeded(7));
    let n = 6;
    let (mut x, y) = inputs(n);
    x[2 * FEATURES + 1] = f32::NAN;
    x[4 * FEATURES] = f32::INFINITY;
    let batch = Batch { inputs: &x, labels: &y, size: n };
    let mut ws = Workspace::new::<Mlp>(n);
    let (mut losses, mut sq, mut factors) = (vec![0.0; n], vec![0.0; 2 * n], vec![0.0; 2 * n]);
    model.per_example_norms(&mut ws, batch, &mut losses, &mut sq);
    assert_eq!(clip_factors(ClipMode::Flat, 1.0, 2, &sq, &mut factors).unwrap(), 2);
    let mut with_bad = vec![0.0; Mlp::PARAM_COUNT];
    model.clipped_sum(&mut ws, batch, &factors, &mut with_bad);
    assert!(with_bad.iter().all(|g| g.is_finite()));

    // The same sum over the good examples only.
    let good: Vec<usize> = vec![0, 1, 3, 5];
    let gx: Vec<f32> = good.iter().flat_map(|&i| x[i * FEATURES..(i + 1) * FEATURES].to_vec()).collect();
    let gy: Vec<f32> = good.iter().map(|&i| y[i]).collect();
    let gb = Batch { inputs: &gx, labels: &gy, size: 4 };
    let (mut l, mut s, mut f) = (vec![0.0; 4], vec![0.0; 8], vec![0.0; 8]);
    model.per_example_norms(&mut ws, gb, &mut l, &mut s);
    clip_factors(ClipMode::Flat, 1.0, 2, &s, &mut f).unwrap();
    let mut reference = vec![0.0; Mlp::PARAM_COUNT];
    model.clipped_sum(&mut ws, gb, &f, &mut reference);
    for (a, b) in with_bad.iter().zip(&reference) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}
