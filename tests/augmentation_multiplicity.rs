//! Augmentation multiplicity (De et al. 2022): each example's gradient is averaged over K random
//! views before clipping. Checked here:
//! - the step's clipped sum against a per-example loop over the same views (the model's own
//!   one-example gradients, averaged, clipped as one vector), flat and per-layer;
//! - the sensitivity stays C: on neighbouring datasets (one row removed) the clipped sums differ by
//!   a vector of norm at most C, and exactly C when the removed row is clipped; a non-finite row
//!   contributes nothing;
//! - K views of the unchanged image give the step without multiplicity;
//! - settings that cannot work are refused with an error naming them.

use dp::clipping::ClipMode;
use dp::data::augment::{Augmentation, ImageShape};
use dp::prelude::*;
use dp::trainer::step::StepEngine;
use dp::{Error, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};

/// Two parameter groups with positional (conv) and dense layers, on a 2×6×6 image.
#[dp_model(input = [2, 6, 6], loss = cross_entropy(classes = 3))]
struct SmallCnn {
    #[layer(conv2d(out = 3, kernel = 3, padding = 1), tanh, avg_pool2d(kernel = 2))]
    conv: Conv2d,
    #[layer(flatten, linear(out = 3))]
    fc: Linear,
}

const EXAMPLES: usize = 9;
const VIEWS: usize = 4;
const AUGMENTATION: Augmentation =
    Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: -0.25 };

fn model() -> SmallCnn {
    SmallCnn::init(&mut ChaCha8Rng::seed_from_u64(3))
}

fn images(rows: usize, seed: u64) -> Dataset<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = SmallCnn::input_len();
    let inputs = (0..rows * len).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let labels = (0..rows).map(|i| (i % 3) as f32).collect();
    Dataset::new(inputs, labels, vec![2, 6, 6], 1).unwrap()
}

fn engine(clip_norm: f64, mode: ClipMode, views: Option<(usize, Augmentation, u64)>) -> StepEngine<SmallCnn> {
    let engine = StepEngine::<SmallCnn>::new(clip_norm, mode, 64, EXAMPLES);
    match views {
        Some((count, augmentation, seed)) => {
            engine.with_views(count, augmentation, ChaCha20Rng::seed_from_u64(seed)).unwrap()
        }
        None => engine,
    }
}

/// The clipped sum of `indices` as the definition says: for each example, in order, K views drawn
/// from the same stream as the engine's, each view's gradient on its own, their average, clipped.
fn per_example_loop(
    model: &SmallCnn,
    data: &Dataset<f32>,
    indices: &[usize],
    clip_norm: f64,
    mode: ClipMode,
    seed: u64,
) -> Vec<f64> {
    let shape = ImageShape::of_input(SmallCnn::INPUT_SHAPE).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut ws = Workspace::new::<SmallCnn>(1);
    let params = SmallCnn::TRAINED_PARAM_COUNT;
    let groups = SmallCnn::GROUPS.len();
    let mut sum = vec![0.0f64; params];
    for &i in indices {
        let mut average = vec![0.0f64; params];
        for _ in 0..VIEWS {
            let mut view = vec![0.0f32; shape.len()];
            AUGMENTATION.apply(
                shape,
                AUGMENTATION.choose(&mut rng),
                data.input(i),
                &mut view,
                AUGMENTATION.padding_value,
            );
            let mut grad = vec![0.0f32; params];
            let batch = Batch { inputs: &view, labels: data.label(i), size: 1 };
            model.loss_and_gradient(&mut ws, batch, &mut [0.0], &mut grad);
            for (a, g) in average.iter_mut().zip(grad) {
                *a += g as f64 / VIEWS as f64;
            }
        }
        let mut sq = vec![0.0f64; groups];
        for p in SmallCnn::PARAMS {
            sq[p.group] += average[p.offset..p.offset + p.len].iter().map(|g| g * g).sum::<f64>();
        }
        let factor = |norm: f64, bound: f64| if norm > bound { bound / norm } else { 1.0 };
        let factors: Vec<f64> = match mode {
            ClipMode::Flat => vec![factor(sq.iter().sum::<f64>().sqrt(), clip_norm); groups],
            ClipMode::PerLayer => {
                sq.iter().map(|s| factor(s.sqrt(), clip_norm / (groups as f64).sqrt())).collect()
            }
        };
        for p in SmallCnn::PARAMS {
            for k in p.offset..p.offset + p.len {
                sum[k] += factors[p.group] * average[k];
            }
        }
    }
    sum
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn the_clipped_sum_is_the_clipped_average_over_each_examples_views() {
    let model = model();
    let data = images(EXAMPLES, 11);
    let indices: Vec<usize> = (0..EXAMPLES).collect();
    for (mode, clip_norm) in [(ClipMode::Flat, 0.05), (ClipMode::PerLayer, 0.05), (ClipMode::Flat, 1e3)] {
        let mut engine = engine(clip_norm, mode, Some((VIEWS, AUGMENTATION, 5)));
        let stats = engine.clipped_sum(&model, &data, &indices).unwrap();
        assert_eq!((stats.examples, stats.non_finite, stats.loss_count), (EXAMPLES, 0, EXAMPLES));
        let expected = per_example_loop(&model, &data, &indices, clip_norm, mode, 5);
        let scale = expected.iter().map(|v| v.abs()).fold(0.0, f64::max);
        for (k, (&got, &want)) in engine.clipped_sum.iter().zip(&expected).enumerate() {
            assert!(
                (got as f64 - want).abs() <= 1e-4 * scale,
                "{mode:?} C={clip_norm}: parameter {k}: {got} vs {want}"
            );
        }
        // Clipping the average is not clipping each view: with C small every example's contribution
        // has norm C exactly, which a sum of per-view clipped gradients over K would not keep.
        if clip_norm < 1.0 && mode == ClipMode::Flat {
            let norm = engine.clipped_sum.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
            assert!(norm <= EXAMPLES as f64 * clip_norm * (1.0 + 1e-5));
        }
    }
}

#[test]
fn neighbouring_datasets_move_the_clipped_sum_by_at_most_c() {
    let model = model();
    let clip_norm = 0.05;
    let full = images(EXAMPLES, 21);
    // The removed row is the last one, so every other row draws the same views in both runs.
    let mut removed = images(EXAMPLES, 21);
    removed = Dataset::new(
        removed.inputs[..(EXAMPLES - 1) * SmallCnn::input_len()].to_vec(),
        removed.labels[..EXAMPLES - 1].to_vec(),
        vec![2, 6, 6],
        1,
    )
    .unwrap();
    for mode in [ClipMode::Flat, ClipMode::PerLayer] {
        for views in [1, VIEWS, 16] {
            let mut with_row = engine(clip_norm, mode, Some((views, AUGMENTATION, 9)));
            with_row.clipped_sum(&model, &full, &(0..EXAMPLES).collect::<Vec<_>>()).unwrap();
            let mut without_row = engine(clip_norm, mode, Some((views, AUGMENTATION, 9)));
            without_row.clipped_sum(&model, &removed, &(0..EXAMPLES - 1).collect::<Vec<_>>()).unwrap();
            let moved = distance(&with_row.clipped_sum, &without_row.clipped_sum);
            // The rows' gradients are far above C = 0.05, so the removed row's contribution is clipped
            // to norm C exactly (per-layer: each group to C/√G, so C in all).
            assert!((moved - clip_norm).abs() <= 1e-4 * clip_norm, "{mode:?}, {views} views: moved {moved}");
        }
    }
}

#[test]
fn a_non_finite_row_contributes_nothing() {
    let model = model();
    let mut data = images(EXAMPLES, 31);
    let len = SmallCnn::input_len();
    // NaN in every view: the row is dropped (so is a row with any non-finite view).
    data.inputs[4 * len..5 * len].fill(f32::NAN);
    let mut step = engine(0.05, ClipMode::Flat, Some((VIEWS, AUGMENTATION, 13)));
    let stats = step.clipped_sum(&model, &data, &(0..EXAMPLES).collect::<Vec<_>>()).unwrap();
    assert_eq!(stats.non_finite, 1);
    assert!(step.clipped_sum.iter().all(|g| g.is_finite()));
    let mut without = engine(0.05, ClipMode::Flat, Some((VIEWS, AUGMENTATION, 13)));
    let kept: Vec<usize> = (0..EXAMPLES).filter(|&i| i != 4).collect();
    // The dropped row still drew its views, so the rows after it draw from a later point of the stream
    // in one run than in the other: compare the rows before it only.
    without.clipped_sum(&model, &data, &kept[..4]).unwrap();
    let mut before = engine(0.05, ClipMode::Flat, Some((VIEWS, AUGMENTATION, 13)));
    before.clipped_sum(&model, &data, &(0..5).collect::<Vec<_>>()).unwrap();
    assert!(distance(&before.clipped_sum, &without.clipped_sum) <= 1e-6);
}

#[test]
fn views_of_the_unchanged_image_give_the_step_without_multiplicity() {
    let model = model();
    let data = images(EXAMPLES, 41);
    let indices: Vec<usize> = (0..EXAMPLES).collect();
    let identity = Augmentation { crop_padding: 0, horizontal_flip: false, padding_value: 0.0 };
    for clip_norm in [0.05, 1e3] {
        let mut plain = engine(clip_norm, ClipMode::Flat, None);
        plain.clipped_sum(&model, &data, &indices).unwrap();
        let mut views = engine(clip_norm, ClipMode::Flat, Some((3, identity, 1)));
        views.clipped_sum(&model, &data, &indices).unwrap();
        let scale = plain.clipped_sum.iter().map(|v| v.abs()).fold(0.0f32, f32::max) as f64;
        assert!(
            distance(&plain.clipped_sum, &views.clipped_sum)
                <= 1e-5 * scale * (SmallCnn::TRAINED_PARAM_COUNT as f64).sqrt()
        );
    }
}

/// A model whose input is not an image.
#[dp_model(input = [12], loss = cross_entropy(classes = 2))]
struct Flat {
    #[layer(linear(out = 2))]
    fc: Linear,
}

/// A model over token ids.
#[dp_model(input = tokens(len = 4, vocab = 10), loss = cross_entropy(classes = 2))]
struct Tokens {
    #[layer(embedding(dim = 3), mean)]
    embed: Embedding,
    #[layer(linear(out = 2))]
    fc: Linear,
}

/// The error of a one-step run with `views` views of `augmentation`, under `memory_budget` if given.
fn fit_error<M: DpModel>(
    model: &mut M,
    data: &Dataset<M::Input>,
    views: usize,
    augmentation: Augmentation,
    memory_budget: Option<usize>,
) -> Error {
    let mut trainer = Trainer::new(model)
        .optimizer(dp::optim::Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(2)
        .steps(1)
        .allow_large_delta(true)
        .quiet(true)
        .augmentation_multiplicity(views, augmentation);
    if let Some(bytes) = memory_budget {
        trainer = trainer.memory_budget(bytes);
    }
    trainer.fit(data, None).unwrap_err()
}

fn refusal<M: DpModel>(
    model: &mut M,
    data: &Dataset<M::Input>,
    views: usize,
    augmentation: Augmentation,
) -> String {
    let error = fit_error(model, data, views, augmentation, None);
    match &error {
        Error::InvalidArgument { name, .. } => assert!(name.starts_with("augmentation"), "{error}"),
        other => panic!("expected a refused argument, got {other}"),
    }
    error.to_string()
}

#[test]
fn settings_that_cannot_give_views_are_refused_naming_them() {
    let data = images(4, 1);
    let message = refusal(&mut model(), &data, 0, AUGMENTATION);
    assert!(message.contains("at least 1 view"), "{message}");
    let message = refusal(
        &mut model(),
        &data,
        2,
        Augmentation { crop_padding: 6, horizontal_flip: false, padding_value: 0.0 },
    );
    assert!(message.contains("crop padding 6"), "{message}");

    let flat = Dataset::new(vec![0.5; 4 * 12], vec![0.0, 1.0, 0.0, 1.0], vec![12], 1).unwrap();
    let message = refusal(&mut Flat::init(&mut ChaCha8Rng::seed_from_u64(1)), &flat, 2, AUGMENTATION);
    assert!(message.contains("not an image"), "{message}");

    let tokens = Dataset::new(vec![1u32; 4 * 4], vec![0.0, 1.0, 0.0, 1.0], vec![4], 1).unwrap();
    let message = refusal(&mut Tokens::init(&mut ChaCha8Rng::seed_from_u64(1)), &tokens, 2, AUGMENTATION);
    assert!(message.contains("token ids"), "{message}");

    let budget = SmallCnn::WORKSPACE_FIXED * 4 + SmallCnn::WORKSPACE_PER_EXAMPLE * 4 * 3;
    let error = fit_error(&mut model(), &data, 8, AUGMENTATION, Some(budget));
    assert!(error.to_string().contains("do not fit one physical chunk"), "{error}");
}

#[test]
fn secure_mode_sums_the_same_clipped_averages_on_its_grid() {
    use dp::noise::SecureAggregator;
    let model = model();
    let data = images(EXAMPLES, 51);
    let indices: Vec<usize> = (0..EXAMPLES).collect();
    let clip_norm = 0.05;
    let mut float = engine(clip_norm, ClipMode::Flat, Some((VIEWS, AUGMENTATION, 17)));
    float.clipped_sum(&model, &data, &indices).unwrap();
    let params = SmallCnn::TRAINED_PARAM_COUNT;
    // A tiny noise multiplier: the released sum is the grid sum plus noise far below the grid's rounding.
    let mut aggregator = SecureAggregator::new(params, clip_norm, 1e-6).unwrap();
    let mut secure = engine(clip_norm, ClipMode::Flat, Some((VIEWS, AUGMENTATION, 17)));
    let stats = secure.secure_sum(&model, &data, &indices, &mut aggregator).unwrap();
    assert_eq!((stats.examples, stats.non_finite), (EXAMPLES, 0));
    let mut released = vec![0.0f32; params];
    aggregator.release(&mut ChaCha20Rng::seed_from_u64(0), &mut released);
    // Each coordinate of each example moves by at most half a grid step when rounded.
    let bound = EXAMPLES as f64 * aggregator.grid_step() * 0.5 + 1e-6;
    for (k, (&s, &f)) in released.iter().zip(&float.clipped_sum).enumerate() {
        assert!((s as f64 - f as f64).abs() <= bound, "parameter {k}: secure {s} vs {f}, bound {bound}");
    }
}

#[test]
fn blocks_of_examples_in_parallel_give_the_same_sum_whatever_the_threads() {
    let model = model();
    let examples = 53; // four blocks of 16, the last one partial
    let data = images(examples, 61);
    let indices: Vec<usize> = (0..examples).rev().collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut step = engine(0.05, ClipMode::Flat, Some((VIEWS, AUGMENTATION, 23)));
            let stats = step.clipped_sum(&model, &data, &indices).unwrap();
            assert_eq!((stats.examples, stats.loss_count), (examples, examples));
            step.clipped_sum.clone()
        })
    };
    let one = run(1);
    assert_eq!(one, run(3), "bit for bit");
    assert_eq!(one, run(2), "bit for bit");
    let expected = per_example_loop(&model, &data, &indices, 0.05, ClipMode::Flat, 23);
    let scale = expected.iter().map(|v| v.abs()).fold(0.0, f64::max);
    for (k, (&got, &want)) in one.iter().zip(&expected).enumerate() {
        assert!((got as f64 - want).abs() <= 1e-4 * scale, "parameter {k}: {got} vs {want}");
    }
}
