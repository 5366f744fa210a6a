//! The moving average of the parameters (`Trainer::ema`): it never enters a gradient (the raw
//! trajectory is bit-identical with and without it at a fixed seed), the model ends holding the
//! average of that trajectory, and evaluations use it.

mod common;

use common::{separable, Mlp};
use dp_runtime::model::DpModel;
use dp_runtime::optim::Sgd;
use dp_runtime::rng::seeded;
use dp_runtime::trainer::ema::Ema;
use dp_runtime::{checkpoint, Trainer};

const STEPS: u64 = 6;

/// A seeded run of `steps` steps (of a plan of `STEPS`), with a checkpoint of the raw parameters at
/// every epoch (one step per epoch): (the model after `fit`, the checkpoint's parameters, the report's
/// evaluation losses).
fn run(ema: Option<f64>, steps: u64, tag: &str) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
    // Removed when dropped, also when an assertion fails.
    let dir = tempfile::Builder::new().prefix(&format!("dp-runtime-test-ema-{tag}-")).tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let (train, test) = (separable(400, 1), separable(200, 2));
    let mut model = Mlp::init(&mut seeded(5));
    let mut trainer = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.5).momentum(0.9))
        .clip_norm(1.0)
        .noise_multiplier(0.8)
        .expected_batch_size(400) // q = 1: one step per epoch
        .steps(STEPS)
        .max_steps(steps)
        .seed(11)
        .checkpoint(&path)
        .quiet(true);
    if let Some(decay) = ema {
        trainer = trainer.ema(decay);
    }
    let report = trainer.fit(&train, Some(&test)).unwrap();
    let saved = checkpoint::load::<Mlp>(&path).unwrap();
    let losses = report.epochs.iter().map(|e| e.eval_loss.unwrap()).collect();
    (model.params().to_vec(), saved.params, losses)
}

#[test]
fn the_average_never_enters_the_gradient() {
    let (plain, plain_saved, plain_losses) = run(None, STEPS, "plain");
    let (averaged, averaged_saved, averaged_losses) = run(Some(0.9), STEPS, "averaged");
    // The raw trajectory is the same bit for bit: the checkpoints hold the raw parameters.
    assert_eq!(plain_saved, plain);
    assert_eq!(averaged_saved, plain, "the raw parameters differ with an average kept");
    // The model ends holding the average, which is not the raw end point ...
    assert_ne!(averaged, plain);
    // ... and the evaluations were of the average.
    assert_ne!(averaged_losses, plain_losses);

    // The average equals the one computed from the raw trajectory, step by step (each prefix of the
    // seeded run is a run cut by max_steps).
    let initial = Mlp::init(&mut seeded(5)).params().to_vec();
    let mut expected = Ema::new(0.9, &initial).unwrap();
    for t in 1..=STEPS {
        let (raw, _, _) = run(None, t, &format!("prefix{t}"));
        expected.update(&raw);
    }
    assert_eq!(expected.average(), &averaged[..]);
}

#[test]
fn a_decay_outside_the_unit_interval_is_refused() {
    let (train, _) = (separable(100, 1), ());
    let mut model = Mlp::init(&mut seeded(5));
    let err = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.1))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .expected_batch_size(10)
        .steps(2)
        .seed(1)
        .ema(1.5)
        .quiet(true)
        .fit(&train, None)
        .unwrap_err();
    assert!(err.to_string().contains("ema"), "{err}");
}
