//! Checkpoints: round trip, PyTorch names and shapes, atomic writes, errors naming the tensor for
//! another model's file, the checks at load (model, finiteness, ledger, identity), resume refusing
//! another plan, and resume continuing the accounting exactly with fresh noise.

mod common;

use common::{separable, Mlp, SoftmaxRegression};
use dp_runtime::accounting::{Ledger, Mechanism};
use dp_runtime::checkpoint::{self, Checkpoint, RunIdentity};
use dp_runtime::model::DpModel;
use dp_runtime::optim::{Adam, OptimizerState};
use dp_runtime::rng::seeded;
use dp_runtime::{Error, Trainer};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// A fresh folder under the system temp dir, removed when the guard drops (also when a test fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dp-runtime-test-{name}-"))
        .tempdir()
        .expect("the temporary folder is writable")
}

fn sample_checkpoint() -> Checkpoint {
    let model = Mlp::init(&mut seeded(1));
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.3, Mechanism::Gaussian, 30);
    ledger.record(0.01, 1.3, Mechanism::Gaussian, 12);
    let momentum: Vec<f32> = (0..Mlp::PARAM_COUNT).map(|i| i as f32 * 0.5).collect();
    Checkpoint {
        params: model.params.clone(),
        optimizer: OptimizerState {
            kind: "sgd".into(),
            updates: 42,
            buffers: vec![("momentum".into(), momentum)],
        },
        steps: 42,
        ledger,
        identity: RunIdentity {
            model: "Mlp".into(),
            param_count: Mlp::PARAM_COUNT,
            noise_multiplier: 1.3,
            sampling_rate: 0.01,
            delta: 1e-5,
            examples: 600,
            expected_batch_size: 6,
            planned_steps: 100,
            ranks: 1,
        },
    }
}

#[test]
fn round_trip_with_pytorch_names_and_shapes() {
    let tmp = temp_dir("roundtrip");
    let dir = tmp.path();
    let path = dir.join("model.safetensors");
    let saved = sample_checkpoint();
    checkpoint::save::<Mlp>(&path, &saved).unwrap();
    let loaded = checkpoint::load::<Mlp>(&path).unwrap();
    assert_eq!(loaded.params, saved.params);
    assert_eq!(loaded.optimizer, saved.optimizer);
    assert_eq!(loaded.steps, 42);
    assert_eq!(loaded.ledger, saved.ledger);
    assert_eq!(loaded.identity, saved.identity);

    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("fc1.weight").unwrap().shape(), &[8, 4]);
    assert_eq!(file.tensor("fc2.bias").unwrap().shape(), &[3]);
    assert_eq!(file.tensor("optimizer.momentum.fc2.weight").unwrap().shape(), &[3, 8]);
    // No temporary file is left behind; overwriting works.
    checkpoint::save::<Mlp>(&path, &saved).unwrap();
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
    assert_eq!(checkpoint::load_params::<Mlp>(&path).unwrap(), saved.params);
}

#[test]
fn another_models_checkpoint_is_an_error_naming_the_tensor() {
    let tmp = temp_dir("mismatch");
    let dir = tmp.path();
    let path = dir.join("softmax.safetensors");
    checkpoint::save_params(&path, &SoftmaxRegression::init(&mut seeded(2))).unwrap();
    let err = checkpoint::load_params::<Mlp>(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    // The first unknown tensor in name order.
    assert!(err.to_string().contains("fc.bias"), "{err}");
    // Parameters only: nothing to resume.
    let err = checkpoint::load::<SoftmaxRegression>(&path).unwrap_err();
    assert!(err.to_string().contains("parameters only"), "{err}");
    let err = checkpoint::load_params::<SoftmaxRegression>(&dir.join("missing.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");

    // Same names, another shape.
    let fake = [8usize * 5];
    let bytes: Vec<u8> = vec![0; fake[0] * 4];
    let views = vec![(
        "fc1.weight",
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 5], &bytes).unwrap(),
    )];
    let shaped = dir.join("shape.safetensors");
    std::fs::write(&shaped, safetensors::serialize(views, None).unwrap()).unwrap();
    let err = checkpoint::load_params::<Mlp>(&shaped).unwrap_err();
    assert!(err.to_string().contains("fc1.weight") && err.to_string().contains("shape"), "{err}");

    // Garbage is a format error, not a panic.
    std::fs::write(&shaped, b"not a safetensors file").unwrap();
    assert!(matches!(checkpoint::load::<Mlp>(&shaped).unwrap_err(), Error::Format { .. }));
}

/// Rewrites the safetensors file at `path` with its metadata and tensors edited: a corrupted file that
/// `save` (which checks what it writes) would refuse to produce.
fn corrupt(
    path: &Path,
    edit_metadata: impl FnOnce(&mut HashMap<String, String>),
    edit_tensor: impl Fn(&str, &mut Vec<u8>),
) {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    edit_metadata(&mut metadata);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            edit_tensor(&name, &mut data);
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, data)| {
        (
            name.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap(),
        )
    });
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

#[test]
fn load_refuses_another_model_non_finite_optimizer_state_and_a_corrupted_ledger() {
    let tmp = temp_dir("corrupted");
    let dir = tmp.path();
    let path = dir.join("run.safetensors");
    let load_error = |edit_metadata: &dyn Fn(&mut HashMap<String, String>), nan_buffer: bool| {
        checkpoint::save::<Mlp>(&path, &sample_checkpoint()).unwrap();
        corrupt(&path, edit_metadata, |name, data| {
            if nan_buffer && name == "optimizer.momentum.fc2.bias" {
                data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        });
        checkpoint::load::<Mlp>(&path).unwrap_err()
    };
    let format_error = |err: Error, field: &str, words: &[&str]| match &err {
        Error::Format { location, message, .. } => {
            assert_eq!(location, field, "{err}");
            for word in words {
                assert!(message.contains(word), "{word} not in {err}");
            }
        }
        other => panic!("expected a format error at {field}, got {other:?}"),
    };
    let nothing = |_: &mut HashMap<String, String>| {};
    let ledger_json = |ledger: &Ledger| serde_json::to_string(ledger).unwrap();

    // The uncorrupted file loads.
    checkpoint::save::<Mlp>(&path, &sample_checkpoint()).unwrap();
    checkpoint::load::<Mlp>(&path).unwrap();

    // Another model (by name or parameter count), named with both.
    for (key, value) in [("model", "OtherNet"), ("param_count", "12")] {
        let err = load_error(&|m| drop(m.insert(key.into(), value.into())), false);
        let text = err.to_string();
        assert!(matches!(err, Error::Mismatch { .. }), "{text}");
        assert!(text.contains("Mlp") && text.contains(&Mlp::PARAM_COUNT.to_string()), "{text}");
        assert!(text.contains(if key == "model" { "OtherNet" } else { "(12 parameters)" }), "{text}");
    }
    // A model of another type reading a real checkpoint.
    let err = checkpoint::load::<SoftmaxRegression>(&path).unwrap_err();
    assert!(
        err.to_string().contains("checkpoint of model Mlp") && err.to_string().contains("SoftmaxRegression")
    );

    // A NaN in an optimizer buffer: value 1 of fc2.bias is value 1 + fc2.bias's offset of the buffer.
    let offset = Mlp::PARAMS[3].offset + 1;
    format_error(
        load_error(&nothing, true),
        "optimizer buffer momentum",
        &[&format!("value {offset}"), "finite"],
    );

    // Ledgers: an invalid σ, a zero-step phase, a step count other than the checkpoint's, and a
    // phase at another σ than the run's.
    let mut negative = Ledger::new();
    negative.record(0.01, -1.3, Mechanism::Gaussian, 42);
    let err = load_error(&|m| drop(m.insert("ledger".into(), ledger_json(&negative))), false);
    format_error(err, "ledger", &["phase 0", "noise_multiplier"]);
    let zero_step =
        r#"{"entries":[{"sampling_rate":0.01,"noise_multiplier":1.3,"steps":0,"mechanism":"Gaussian"}]}"#;
    let err = load_error(&|m| drop(m.insert("ledger".into(), zero_step.into())), false);
    format_error(err, "ledger", &["phase 0", "steps"]);
    let err = load_error(&|m| drop(m.insert("steps".into(), "41".into())), false);
    format_error(err, "ledger", &["42 steps", "41"]);
    let mut other_sigma = Ledger::new();
    other_sigma.record(0.01, 1.1, Mechanism::Gaussian, 42);
    let err = load_error(&|m| drop(m.insert("ledger".into(), ledger_json(&other_sigma))), false);
    format_error(err, "ledger", &["sigma 1.1"]);

    // The identity: q must be B / N, steps at most the plan's, numbers must parse.
    let err = load_error(&|m| drop(m.insert("sampling_rate".into(), "0.02".into())), false);
    format_error(err, "sampling_rate", &["6 / 600"]);
    let err = load_error(&|m| drop(m.insert("planned_steps".into(), "40".into())), false);
    format_error(err, "steps", &["42", "40"]);
    let err = load_error(&|m| drop(m.insert("delta".into(), "tiny".into())), false);
    format_error(err, "delta", &["tiny"]);
    // A file of the format before identities were stored is refused with the reason.
    let err = load_error(&|m| drop(m.insert("format".into(), "dp-checkpoint/1".into())), false);
    format_error(err, "metadata", &["load_params"]);

    // save refuses to write what load would refuse.
    let mut bad = sample_checkpoint();
    bad.optimizer.buffers[0].1[3] = f32::INFINITY;
    assert!(checkpoint::save::<Mlp>(&dir.join("bad.safetensors"), &bad).is_err());
    assert!(!dir.join("bad.safetensors").exists());
}

/// A run of the 4-epoch plan on 600 examples (B = 60, 40 steps, target ε = 3 at δ = 1e-5),
/// checkpointing every epoch.
fn plan_run<'m>(model: &'m mut Mlp, path: &Path) -> Trainer<'m, Mlp> {
    plan_with(model, 60, 1e-5, 4).checkpoint(path)
}

fn plan_with(model: &mut Mlp, batch: usize, delta: f64, epochs: u32) -> Trainer<'_, Mlp> {
    Trainer::new(model)
        .optimizer(Adam::new(0.01))
        .clip_norm(1.0)
        .target_privacy(3.0, delta)
        .expected_batch_size(batch)
        .epochs(epochs)
        .seed(11)
        .quiet(true)
}

#[test]
fn resume_after_two_epochs_ends_with_the_epsilon_and_steps_of_an_uninterrupted_run() {
    let tmp = temp_dir("resume");
    let dir = tmp.path();
    let train = separable(600, 3);
    let mut whole = Mlp::init(&mut seeded(4));
    let uninterrupted = plan_run(&mut whole, &dir.join("whole.safetensors")).fit(&train, None).unwrap();
    assert_eq!(uninterrupted.steps, 40);

    // Interrupted after 2 epochs: the same plan, cut by max_steps.
    let part_path = dir.join("part.safetensors");
    let mut first = Mlp::init(&mut seeded(4));
    let cut = plan_run(&mut first, &part_path).max_steps(20).fit(&train, None).unwrap();
    assert!(cut.stopped_at_max_steps && cut.epsilon < uninterrupted.epsilon);
    let saved = checkpoint::load::<Mlp>(&part_path).unwrap();
    assert_eq!(saved.steps, 20);
    assert_eq!(saved.identity.planned_steps, 40);
    assert_eq!(saved.identity.noise_multiplier, uninterrupted.noise_multiplier);

    let mut resumed_model = Mlp::init(&mut seeded(99));
    let resumed = plan_run(&mut resumed_model, &part_path).resume_from(&part_path).fit(&train, None).unwrap();
    assert_eq!(resumed.steps, uninterrupted.steps);
    assert_eq!(resumed.planned_steps, 40);
    assert_eq!(resumed.noise_multiplier, uninterrupted.noise_multiplier);
    assert_eq!(resumed.epsilon, uninterrupted.epsilon);
    let numbers = |r: &dp_runtime::Report| r.epochs.iter().map(|e| (e.epoch, e.steps)).collect::<Vec<_>>();
    assert_eq!(numbers(&resumed), vec![(3, 30), (4, 40)], "only the remaining epochs are trained");
    assert_eq!(resumed.epochs[1].epsilon, uninterrupted.epochs[3].epsilon);
    let last = checkpoint::load::<Mlp>(&part_path).unwrap();
    assert_eq!((last.steps, last.ledger.steps()), (40, 40));
    assert_eq!(last.ledger.entries().len(), 1, "one phase: the same q and σ throughout");
    // Fresh noise: the resumed run does not reproduce the uninterrupted one's steps 21..40.
    assert_ne!(resumed_model.params, whole.params);
}

#[test]
fn resume_with_another_plan_is_refused_naming_each_field_and_both_values() {
    let tmp = temp_dir("resume-mismatch");
    let dir = tmp.path();
    let train = separable(600, 3);
    let path = dir.join("part.safetensors");
    let mut model = Mlp::init(&mut seeded(4));
    plan_run(&mut model, &path).max_steps(20).fit(&train, None).unwrap();
    let sigma = checkpoint::load::<Mlp>(&path).unwrap().identity.noise_multiplier;

    let refusal = |trainer: Trainer<'_, Mlp>, data: &dp_runtime::Dataset<f32>| {
        let err = trainer.resume_from(&path).fit(data, None).unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        err.to_string()
    };
    let fresh = || Mlp::init(&mut seeded(5));

    // σ given instead of calibrated for the same target.
    let mut m = fresh();
    let text = refusal(
        Trainer::new(&mut m)
            .optimizer(Adam::new(0.01))
            .clip_norm(1.0)
            .noise_multiplier(1.0)
            .expected_batch_size(60)
            .epochs(4)
            .seed(11)
            .quiet(true),
        &train,
    );
    assert!(text.contains(&format!("noise_multiplier (sigma): checkpoint {sigma}, this run 1")), "{text}");
    assert!(!text.contains("delta") && !text.contains("planned_steps"), "only what differs: {text}");

    // Another batch size: q and B.
    let mut m = fresh();
    let text = refusal(plan_with(&mut m, 30, 1e-5, 4), &train);
    assert!(text.contains("sampling_rate (q): checkpoint 0.1, this run 0.05"), "{text}");
    assert!(text.contains("expected_batch_size (B): checkpoint 60, this run 30"), "{text}");

    // Another δ.
    let mut m = fresh();
    let text = refusal(plan_with(&mut m, 60, 1e-6, 4), &train);
    assert!(text.contains("delta: checkpoint 0.00001, this run 0.000001"), "{text}");

    // Another data size N (one example fewer): N and q.
    let smaller = dp_runtime::Dataset::new(
        train.inputs[..599 * common::FEATURES].to_vec(),
        train.labels[..599].to_vec(),
        vec![common::FEATURES],
        1,
    )
    .unwrap();
    let mut m = fresh();
    let text = refusal(plan_with(&mut m, 60, 1e-5, 4), &smaller);
    assert!(text.contains("examples (N): checkpoint 600, this run 599"), "{text}");
    assert!(text.contains("sampling_rate (q)"), "{text}");

    // Another length.
    let mut m = fresh();
    let text = refusal(plan_with(&mut m, 60, 1e-5, 5), &train);
    assert!(text.contains("planned_steps: checkpoint 40, this run 50"), "{text}");

    // Another model.
    let mut other = SoftmaxRegression::init(&mut seeded(1));
    let before = other.params.clone();
    let err = Trainer::new(&mut other)
        .optimizer(Adam::new(0.01))
        .clip_norm(1.0)
        .target_privacy(3.0, 1e-5)
        .expected_batch_size(60)
        .epochs(4)
        .quiet(true)
        .resume_from(&path)
        .fit(&train, None)
        .unwrap_err();
    assert!(
        matches!(err, Error::Mismatch { .. }) && err.to_string().contains("checkpoint of model Mlp"),
        "{err}"
    );
    assert_eq!(other.params, before, "nothing trained");
}
