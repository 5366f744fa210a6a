//! The trainer end to end on the hand-written models: accuracy with privacy, the plan's numbers,
//! validation naming the field, the budget, empty batches, NaN examples, chunking, secure mode;
//! private-by-default reports, δ against 1/N, failures after privacy was spent, seed domains.

mod common;

use common::{separable, Mlp, SoftmaxRegression, FEATURES};
use dp_runtime::accounting::{self, AccountantKind};
use dp_runtime::model::{DpModel, Precision};
use dp_runtime::optim::{Adam, Sgd};
use dp_runtime::rng::{self, seeded, Domain};
use dp_runtime::sampling::SamplingMode;
use dp_runtime::{Dataset, Error, Trainer};

fn softmax() -> SoftmaxRegression {
    SoftmaxRegression::init(&mut seeded(1))
}

#[test]
fn private_softmax_regression_learns_a_separable_problem() {
    let (train, test) = (separable(3000, 1), separable(600, 2));
    let mut model = softmax();
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.5).momentum(0.5))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(100)
        .epochs(5)
        .seed(7)
        .quiet(true)
        .fit(&train, Some(&test))
        .unwrap();
    assert!(report.accuracy > 0.95, "accuracy {}", report.accuracy);
    // The plan: q = 100/3000, T = round(5·30) = 150, ε from the same accountant.
    assert_eq!(report.steps, 150);
    assert_eq!(report.epochs.len(), 5);
    assert_eq!(report.epochs.iter().map(|e| e.steps).collect::<Vec<_>>(), vec![30, 60, 90, 120, 150]);
    assert!((report.sampling_rate - 100.0 / 3000.0).abs() < 1e-15);
    let expected = accounting::epsilon(AccountantKind::Rdp, 100.0 / 3000.0, 1.0, 150, 1e-5).unwrap();
    assert_eq!(report.epsilon, expected.epsilon);
    assert!(report.epochs.windows(2).all(|w| w[0].epsilon < w[1].epsilon));
    assert!(report.epochs.iter().all(|e| e.diagnostics.is_none()) && report.diagnostics.is_none());
    assert_eq!(report.sampling, SamplingMode::Poisson);
    assert!(report.warnings.iter().any(|w| w.contains("NOT differentially private")));
}

#[test]
fn mlp_with_a_target_epsilon_meets_it() {
    let (train, test) = (separable(2000, 3), separable(500, 4));
    let mut model = Mlp::init(&mut seeded(2));
    let report = Trainer::new(&mut model)
        .optimizer(Adam::new(0.05))
        .clip_norm(1.0)
        .target_privacy(2.0, 1e-5)
        .expected_batch_size(100)
        .epochs(4)
        .per_layer_clipping(true)
        .seed(3)
        .quiet(true)
        .fit(&train, Some(&test))
        .unwrap();
    assert!(report.epsilon <= 2.0 + 1e-6 && report.epsilon > 1.9, "epsilon {}", report.epsilon);
    assert!(report.noise_multiplier > 0.5, "sigma {}", report.noise_multiplier);
    assert!(report.accuracy > 0.9, "accuracy {}", report.accuracy);
    assert!(report.epochs.iter().all(|e| e.eval_loss.is_some()));
}

#[test]
fn invalid_settings_name_their_field() {
    let train = separable(100, 1);
    let field = |result: Result<dp_runtime::Report, Error>| match result {
        Err(Error::InvalidArgument { name, .. }) => name,
        other => panic!("expected an invalid-argument error, got {other:?}"),
    };
    let run = |f: fn(Trainer<'_, SoftmaxRegression>) -> Trainer<'_, SoftmaxRegression>| {
        let mut model = softmax();
        let trainer = Trainer::new(&mut model)
            .optimizer(Sgd::new(0.1))
            .clip_norm(1.0)
            .noise_multiplier(1.0)
            .expected_batch_size(10)
            .steps(3)
            .quiet(true);
        field(f(trainer).fit(&train, None))
    };
    assert_eq!(run(|t| t.clip_norm(-1.0)), "clip_norm");
    assert_eq!(run(|t| t.expected_batch_size(0)), "expected_batch_size");
    assert_eq!(run(|t| t.expected_batch_size(101)), "expected_batch_size");
    assert_eq!(run(|t| t.delta(1.5)), "delta");
    assert_eq!(run(|t| t.epochs(1)), "epochs");
    assert_eq!(run(|t| t.target_privacy(1.0, 1e-5)), "target_privacy");
    assert_eq!(run(|t| t.budget(f64::NAN)), "budget");
    assert_eq!(run(|t| t.memory_budget(0)), "memory_budget");
    let mut model = softmax();
    let missing = Trainer::new(&mut model).clip_norm(1.0).fit(&train, None);
    assert_eq!(field(missing), "optimizer");
    let mut model = softmax();
    let zero_noise = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(0.0)
        .expected_batch_size(10)
        .steps(1)
        .fit(&train, None);
    assert_eq!(field(zero_noise), "noise_multiplier");

    // Data that does not fit the model.
    let wrong = Dataset::new(vec![0.0f32; 30], vec![0.0; 10], vec![3], 1).unwrap();
    let mut model = softmax();
    let err = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(5)
        .steps(1)
        .fit(&wrong, None)
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }) && err.to_string().contains("train"), "{err}");
    let bad_label = Dataset::new(vec![0.0f32; 8], vec![0.0, 7.0], vec![FEATURES], 1).unwrap();
    let mut model = softmax();
    let err = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(1)
        .steps(1)
        .fit(&bad_label, None)
        .unwrap_err();
    assert!(err.to_string().contains("label 7"), "{err}");
}

const BUDGET: f64 = 2.0;

fn budget_trainer(model: &mut SoftmaxRegression) -> Trainer<'_, SoftmaxRegression> {
    Trainer::new(model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.5)
        .expected_batch_size(100)
        .epochs(20)
        .budget(BUDGET)
        .seed(1)
        .quiet(true)
}

#[test]
fn the_budget_refuses_a_plan_or_stops_cleanly_at_it() {
    let train = separable(1000, 5);
    let planned = accounting::epsilon(AccountantKind::Rdp, 0.1, 1.5, 200, 1e-5).unwrap().epsilon;
    let single = accounting::epsilon(AccountantKind::Rdp, 0.1, 1.5, 1, 1e-5).unwrap().epsilon;
    assert!(planned > BUDGET && single < BUDGET, "{single} {planned}");
    let mut model = softmax();
    let before = model.params.clone();
    let err = budget_trainer(&mut model).fit(&train, None).unwrap_err();
    assert!(matches!(err, Error::Budget(_)), "{err}");
    assert_eq!(model.params, before, "nothing trained");

    let mut model = softmax();
    let report = budget_trainer(&mut model).stop_at_budget(true).fit(&train, None).unwrap();
    assert!(report.stopped_at_budget);
    assert!(report.epsilon <= BUDGET && report.steps < 200 && report.steps > 0);
    let one_more =
        accounting::epsilon(AccountantKind::Rdp, 0.1, 1.5, report.steps + 1, 1e-5).unwrap().epsilon;
    assert!(one_more > BUDGET, "stopped before the budget was reached");
}

#[test]
fn empty_batches_are_noisy_accounted_steps() {
    // N = 200, B = 1: most Poisson batches hold 0 or 1 examples; P(empty) = 0.995^200 ≈ 0.37.
    let train = separable(200, 6);
    let mut model = softmax();
    let before = model.params.clone();
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(1)
        .steps(50)
        .seed(2)
        .non_private_diagnostics(true)
        .quiet(true)
        .fit(&train, None)
        .unwrap();
    assert_eq!(report.steps, 50);
    assert!(report.epochs[0].diagnostics.as_ref().unwrap().mean_batch_size < 1.5);
    let expected = accounting::epsilon(AccountantKind::Rdp, 1.0 / 200.0, 1.0, 50, 1e-5).unwrap();
    assert_eq!(report.epsilon, expected.epsilon);
    assert_ne!(model.params, before);
    assert!(model.params.iter().all(|p| p.is_finite()));
}

#[test]
fn nan_examples_are_counted_and_parameters_stay_finite() {
    let mut train = separable(300, 7);
    for i in (0..300).step_by(10) {
        train.inputs[i * FEATURES] = f32::NAN;
    }
    let mut model = Mlp::init(&mut seeded(3));
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.2))
        .clip_norm(1.0)
        .noise_multiplier(0.5)
        .expected_batch_size(60)
        .epochs(3)
        .seed(4)
        .non_private_diagnostics(true)
        .quiet(true)
        .fit(&train, None)
        .unwrap();
    let epochs: Vec<_> = report.epochs.iter().map(|e| e.diagnostics.clone().unwrap()).collect();
    let total = report.diagnostics.unwrap().non_finite_examples;
    assert!(total > 0);
    assert_eq!(total, epochs.iter().map(|d| d.non_finite_examples).sum::<u64>());
    assert!(model.params.iter().all(|p| p.is_finite()));
    assert!(epochs.iter().all(|d| d.train_loss.is_finite()));
}

#[test]
fn chunked_batches_equal_whole_batches() {
    let train = separable(500, 8);
    let run = |memory: usize| {
        let mut model = Mlp::init(&mut seeded(5));
        Trainer::new(&mut model)
            .optimizer(Sgd::new(0.1))
            .clip_norm(1.0)
            .noise_multiplier(1.0)
            .expected_batch_size(100)
            .steps(5)
            .seed(9)
            .memory_budget(memory)
            .quiet(true)
            .fit(&train, None)
            .unwrap();
        model.params
    };
    // Three examples per chunk versus the whole batch in one call.
    let chunked = run(3 * Mlp::WORKSPACE_PER_EXAMPLE * 4);
    let whole = run(1 << 30);
    for (a, b) in chunked.iter().zip(&whole) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn shuffled_sampling_is_reported_as_such() {
    let train = separable(300, 9);
    let mut model = softmax();
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(30)
        .epochs(1)
        .sampling(SamplingMode::Shuffled)
        .seed(1)
        .non_private_diagnostics(true)
        .quiet(true)
        .fit(&train, None)
        .unwrap();
    assert_eq!(report.sampling, SamplingMode::Shuffled);
    assert_eq!(report.epochs[0].diagnostics.as_ref().unwrap().mean_batch_size, 30.0);
    assert!(report.warnings.iter().any(|w| w.contains("assumes Poisson")));
}

#[test]
fn secure_mode_learns_and_is_accounted_as_a_discrete_gaussian() {
    let (train, test) = (separable(1500, 10), separable(300, 11));
    let mut model = softmax();
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.5))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(75)
        .epochs(3)
        .secure_noise(true)
        .seed(12)
        .quiet(true)
        .fit(&train, Some(&test))
        .unwrap();
    let secure = report.secure.expect("secure report");
    assert!(secure.sigma >= secure.l2_sensitivity);
    assert!(report.accuracy > 0.9, "accuracy {}", report.accuracy);
    let mut ledger = accounting::Ledger::new();
    ledger.record(
        0.05,
        1.0,
        accounting::Mechanism::DiscreteGaussian {
            l2_sensitivity: secure.l2_sensitivity,
            sigma: secure.sigma,
            dimension: SoftmaxRegression::PARAM_COUNT,
        },
        60,
    );
    assert_eq!(report.epsilon, ledger.epsilon(AccountantKind::Rdp, 1e-5).unwrap().epsilon);
}

#[test]
fn an_overflowing_update_is_an_error_and_keeps_the_last_finite_parameters() {
    let train = separable(100, 12);
    let mut model = softmax();
    let before = model.params.clone();
    let err = Trainer::new(&mut model)
        .optimizer(Sgd::new(1e40))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(10)
        .steps(5)
        .seed(1)
        .quiet(true)
        .fit(&train, None)
        .unwrap_err();
    assert!(matches!(err.root(), Error::InvalidArgument { name, .. } if name == "optimizer"), "{err}");
    assert!(model.params.iter().all(|p| p.is_finite()));
    // The first update already overflows, so the model is left exactly as it started; its noisy
    // gradient was computed, so that one step is spent.
    assert_eq!(model.params, before);
    let Error::Interrupted { steps, epsilon, .. } = err else { panic!("expected Interrupted, got {err:?}") };
    let one_step = accounting::epsilon(AccountantKind::Rdp, 0.1, 1.0, 1, 1e-5).unwrap().epsilon;
    assert_eq!((steps, epsilon), (1, one_step));
}

#[test]
fn the_noisy_sum_is_divided_by_the_expected_batch_size() {
    // 100 identical examples: every per-example gradient is the same g, so one SGD step moves the
    // parameters by −lr·k·g/B for a realised batch of k. Dividing by the realised size would give −lr·g.
    let x = [1.0f32, -0.5, 0.25, 1.0];
    let inputs: Vec<f32> = (0..100).flat_map(|_| x).collect();
    let train = Dataset::new(inputs, vec![2.0; 100], vec![FEATURES], 1).unwrap();
    let mut model = softmax();
    let before = model.params.clone();
    let g = common::softmax_gradient_f64(&before, &x, 2);
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(1.0))
        .clip_norm(1e3)
        .noise_multiplier(1e-12)
        .expected_batch_size(10)
        .steps(1)
        .seed(4)
        .non_private_diagnostics(true)
        .quiet(true)
        .fit(&train, None)
        .unwrap();
    let realised = report.epochs[0].diagnostics.as_ref().unwrap().mean_batch_size;
    assert_ne!(realised, 10.0, "pick a seed whose batch is not exactly B");
    let (j, _) = g
        .iter()
        .enumerate()
        .fold((0, 0.0), |(bj, bv), (j, &v)| if v.abs() > bv { (j, v.abs()) } else { (bj, bv) });
    let ratio = (before[j] - model.params[j]) as f64 / g[j];
    assert!((ratio * 10.0 - realised).abs() < 1e-3, "moved by {ratio}·g, realised batch {realised}");
}

#[test]
fn max_steps_cuts_the_run_but_keeps_the_whole_plans_noise_and_reports_each_epoch() {
    let (train, test) = (separable(2000, 5), separable(300, 6));
    let run = |max_steps: Option<u64>| {
        let mut model = softmax();
        let mut seen = Vec::new();
        let mut trainer = Trainer::new(&mut model)
            .optimizer(Sgd::new(0.5))
            .clip_norm(1.0)
            .target_privacy(2.0, 1e-5)
            .expected_batch_size(100)
            .epochs(4)
            .seed(9)
            .quiet(true)
            .on_epoch(|e| seen.push((e.epoch, e.steps)));
        if let Some(max) = max_steps {
            trainer = trainer.max_steps(max);
        }
        let report = trainer.fit(&train, Some(&test)).unwrap();
        (report, seen)
    };
    let (full, full_seen) = run(None);
    let (cut, cut_seen) = run(Some(30));
    assert_eq!(full_seen, vec![(1, 20), (2, 40), (3, 60), (4, 80)]);
    assert_eq!(cut_seen, vec![(1, 20), (2, 30)], "the callback sees every epoch, the last one cut");
    assert!(!full.stopped_at_max_steps && cut.stopped_at_max_steps);
    assert_eq!((cut.steps, cut.planned_steps), (30, 80));
    assert_eq!(cut.noise_multiplier, full.noise_multiplier, "σ calibrated for the whole plan");
    let expected = accounting::epsilon(AccountantKind::Rdp, 0.05, cut.noise_multiplier, 30, 1e-5).unwrap();
    assert_eq!(cut.epsilon, expected.epsilon, "ε of the steps taken");
    assert!(cut.epsilon < full.epsilon);
    let (uncut, _) = run(Some(500));
    assert!(!uncut.stopped_at_max_steps && uncut.steps == 80, "a limit beyond the plan changes nothing");
}

#[test]
fn the_non_private_baseline_learns_and_reports_infinite_epsilon() {
    use dp_runtime::baseline::{fit_non_private, BaselineConfig};
    let (train, test) = (separable(2000, 7), separable(300, 8));
    let mut model = softmax();
    let mut optimizer = Sgd::new(0.5);
    let config = BaselineConfig {
        batch_size: 64,
        epochs: 2.0,
        max_steps: None,
        seed: Some(1),
        quiet: true,
        precision: Precision::F32,
    };
    let mut epochs = 0;
    let report = fit_non_private(&mut model, &mut optimizer, &train, &test, config, |_| epochs += 1).unwrap();
    assert_eq!((epochs, report.steps), (2, 63), "T = round(2 · 2000 / 64)");
    assert!(report.accuracy > 0.95, "accuracy {}", report.accuracy);
    assert!(report.epsilon.is_infinite() && report.epochs.iter().all(|e| e.epsilon.is_infinite()));
    assert_eq!(report.noise_multiplier, 0.0);
    // Nothing in it is private: its training statistics are always there, marked.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["diagnostics"]["not_private"], true, "{json}");
    for epoch in json["epochs"].as_array().unwrap() {
        assert_eq!(epoch["diagnostics"]["not_private"], true, "{epoch}");
        assert!(epoch["diagnostics"]["train_loss"].is_number(), "{epoch}");
        assert_eq!(epoch["diagnostics"]["mean_batch_size"], 64.0, "{epoch}");
    }
    let config = BaselineConfig { batch_size: 5000, ..config };
    let err = fit_non_private(&mut model, &mut optimizer, &train, &test, config, |_| {}).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

fn small_run(model: &mut SoftmaxRegression) -> Trainer<'_, SoftmaxRegression> {
    Trainer::new(model)
        .optimizer(Sgd::new(0.5))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(50)
        .epochs(2)
        .seed(3)
        .quiet(true)
}

#[test]
fn a_default_report_carries_no_training_statistics_and_diagnostics_say_not_private() {
    let (train, test) = (separable(500, 13), separable(200, 14));
    let training_keys = ["train_loss", "train_accuracy", "non_finite", "mean_batch_size", "diagnostics"];

    // Without an evaluation set: no metric at all, not even one silently computed on the training set.
    let report = small_run(&mut softmax()).fit(&train, None).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    let text = json.to_string();
    for key in training_keys.iter().chain(&["not_private"]) {
        assert!(!text.contains(key), "{key} in {text}");
    }
    assert!(report.accuracy.is_nan());
    for epoch in json["epochs"].as_array().unwrap() {
        assert!(epoch["accuracy"].is_null() && epoch["eval_loss"].is_null(), "{epoch}");
        assert!(epoch["epsilon"].as_f64().unwrap() > 0.0 && epoch["steps"].as_u64().unwrap() > 0);
    }

    // With an evaluation set: its metrics, still no training statistics.
    let report = small_run(&mut softmax()).fit(&train, Some(&test)).unwrap();
    let text = serde_json::to_string(&report).unwrap();
    for key in training_keys.iter().chain(&["not_private"]) {
        assert!(!text.contains(key), "{key} in {text}");
    }
    assert!(report.accuracy > 0.9, "eval accuracy {}", report.accuracy);
    assert!(report.epochs.iter().all(|e| e.accuracy.is_some() && e.eval_loss.is_some()));

    // Asked for: every object that carries training statistics says it is not private.
    let report = small_run(&mut softmax()).non_private_diagnostics(true).fit(&train, None).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["diagnostics"]["not_private"], true, "{json}");
    assert!(json["diagnostics"]["train_accuracy"].as_f64().unwrap() > 0.9, "{json}");
    for epoch in json["epochs"].as_array().unwrap() {
        let diagnostics = &epoch["diagnostics"];
        assert_eq!(diagnostics["not_private"], true, "{epoch}");
        for key in ["train_loss", "train_accuracy", "non_finite_examples", "mean_batch_size"] {
            assert!(diagnostics[key].is_number(), "{key} in {epoch}");
        }
        assert!(epoch["accuracy"].is_null(), "the training accuracy is not reported as accuracy");
    }
    assert!(report.warnings.iter().any(|w| w.contains("NOT covered")));
    // With an evaluation set, the training accuracy is not computed.
    let report = small_run(&mut softmax()).non_private_diagnostics(true).fit(&train, Some(&test)).unwrap();
    assert!(report.epochs.iter().all(|e| e.diagnostics.as_ref().unwrap().train_accuracy.is_none()));
    assert_eq!(report.diagnostics.unwrap().train_accuracy, None);
}

#[test]
fn delta_at_or_above_one_over_n_is_refused_unless_allowed() {
    let train = separable(100, 15);
    let run = |delta: f64, allow: bool| {
        Trainer::new(&mut softmax())
            .optimizer(Sgd::new(0.1))
            .clip_norm(1.0)
            .noise_multiplier(1.0)
            .expected_batch_size(10)
            .steps(2)
            .delta(delta)
            .allow_large_delta(allow)
            .seed(1)
            .quiet(true)
            .fit(&train, None)
    };
    for delta in [0.01, 0.5] {
        match run(delta, false) {
            Err(Error::InvalidArgument { name, message }) => {
                assert_eq!(name, "delta");
                assert!(message.contains("1/N") && message.contains("N = 100"), "{message}");
            }
            other => panic!("delta {delta}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(run(0.0099, false).unwrap().delta, 0.0099);
    assert_eq!(run(0.01, true).unwrap().delta, 0.01);
    // With a target ε, δ is that of the target.
    let err = Trainer::new(&mut softmax())
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .target_privacy(1.0, 0.05)
        .expected_batch_size(10)
        .steps(2)
        .quiet(true)
        .fit(&train, None)
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { name, .. } if name == "delta"), "{err}");
}

/// SGD that makes the parameters infinite at update `explode_at` (from 1): an overflow after some steps.
struct ExplodingSgd {
    inner: Sgd,
    explode_at: u64,
}

impl dp_runtime::optim::Optimizer for ExplodingSgd {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn step(&mut self, params: &mut [f32], gradient: dp_runtime::optim::NoisyGradient<'_>, at: StepInfo) {
        self.inner.step(params, gradient, at);
        if at.step + 1 == self.explode_at {
            params[0] = f32::INFINITY;
        }
    }
    fn learning_rate(&self, at: StepInfo) -> f64 {
        self.inner.learning_rate(at)
    }
    fn state(&self) -> dp_runtime::optim::OptimizerState {
        self.inner.state()
    }
    fn load_state(
        &mut self,
        state: dp_runtime::optim::OptimizerState,
        params: usize,
    ) -> dp_runtime::Result<()> {
        self.inner.load_state(state, params)
    }
}

use dp_runtime::optim::StepInfo;

/// A fresh folder under the system temp dir, removed when the guard drops (also when a test fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dp-runtime-trainer-{name}-"))
        .tempdir()
        .expect("the temporary folder is writable")
}

#[test]
fn a_fit_failing_after_steps_reports_the_steps_and_epsilon_spent_and_what_the_model_holds() {
    // N = 100, B = 10: 10 steps per epoch; a checkpoint after each epoch; update 25 overflows.
    let train = separable(100, 16);
    let tmp = temp_dir("interrupted");
    let dir = tmp.path();
    let path = dir.join("run.safetensors");
    let mut model = softmax();
    let err = Trainer::new(&mut model)
        .optimizer(ExplodingSgd { inner: Sgd::new(0.1), explode_at: 25 })
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(10)
        .epochs(3)
        .seed(2)
        .checkpoint(&path)
        .quiet(true)
        .fit(&train, None)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err.root(), Error::InvalidArgument { name, .. } if name == "optimizer"), "{text}");
    let Error::Interrupted { steps, epsilon, delta, holds, .. } = &err else { panic!("{err:?}") };
    // 24 updates kept, the 25th computed (so accounted) and discarded.
    let spent = accounting::epsilon(AccountantKind::Rdp, 0.1, 1.0, 25, 1e-5).unwrap().epsilon;
    assert_eq!((*steps, *epsilon, *delta), (25, spent, 1e-5));
    assert!(holds.contains("after step 24") && holds.contains("step 25"), "{holds}");
    assert!(holds.contains("holds step 20") && holds.contains("run.safetensors"), "{holds}");
    assert!(text.contains("25 accounted steps") && text.contains(&format!("{spent:.4}")), "{text}");
    assert!(model.params.iter().all(|p| p.is_finite()));
    let saved = dp_runtime::checkpoint::load::<SoftmaxRegression>(&path).unwrap();
    assert_eq!(saved.steps, 20);

    // An I/O error writing the first checkpoint: the epoch's 10 steps are spent.
    let mut model = softmax();
    let err = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(10)
        .epochs(3)
        .seed(2)
        .checkpoint(dir.join("no such directory").join("run.safetensors"))
        .quiet(true)
        .fit(&train, None)
        .unwrap_err();
    assert!(matches!(err.root(), Error::Io { .. }), "{err}");
    let Error::Interrupted { steps, epsilon, holds, .. } = &err else { panic!("{err:?}") };
    let spent = accounting::epsilon(AccountantKind::Rdp, 0.1, 1.0, 10, 1e-5).unwrap().epsilon;
    assert_eq!((*steps, *epsilon), (10, spent));
    assert_eq!(holds, "the model holds the parameters after step 10");

    // An error before the first step stays as it is.
    let mut model = softmax();
    let err = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(1000)
        .steps(1)
        .quiet(true)
        .fit(&train, None)
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { name, .. } if name == "expected_batch_size"), "{err}");
}

#[test]
fn seeded_init_sampling_and_noise_streams_are_domain_separated() {
    use dp_runtime::rng::{KeySource, Streams};
    use rand::RngCore;
    const SEED: u64 = 7;
    let bytes = |mut generator: rand_chacha::ChaCha20Rng| {
        let mut out = vec![0u8; 4096];
        generator.fill_bytes(&mut out);
        out
    };
    let streams = Streams::new(KeySource::Seed(SEED), 0).unwrap();
    let init = bytes(rng::seeded_init(SEED));
    let sampling = bytes(streams.sampling);
    let noise = bytes(streams.noise);
    let plain = bytes(seeded(SEED));
    let all = [&init, &sampling, &noise, &plain];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a[..32], b[..32], "two streams of seed {SEED} start alike");
        }
    }
    // Reproducible.
    assert_eq!(bytes(rng::seeded_init(SEED)), init);
    assert_eq!(bytes(Streams::new(KeySource::Seed(SEED), 0).unwrap().noise), noise);
    // No sampling or noise key, at any start step, is output of the generator that initialises the
    // model (or of the plain seeded one): the initial weights reveal nothing about batches or noise.
    for domain in [Domain::Sampling, Domain::Noise] {
        for start in [0, 1, 20, 1000] {
            let key = rng::derive_key(SEED, domain, start);
            assert!(!init.windows(32).any(|w| w == key), "{domain:?} key at {start} in the init stream");
            assert!(!plain.windows(32).any(|w| w == key), "{domain:?} key at {start} in seeded({SEED})");
        }
    }
    assert_ne!(rng::derive_key(SEED, Domain::Noise, 0), rng::derive_key(SEED + 1, Domain::Noise, 0));
    assert_ne!(rng::derive_key(SEED, Domain::Noise, 0), rng::derive_key(SEED, Domain::Noise, 1));
}
