//! Checkpoints: round trip, PyTorch names and shapes, atomic writes, errors naming the tensor for
//! another model's file, and resume continuing the accounting exactly with fresh noise.

mod common;

use common::{separable, Mlp, SoftmaxRegression};
use dp_runtime::accounting::{Ledger, Mechanism};
use dp_runtime::checkpoint::{self, Checkpoint};
use dp_runtime::model::DpModel;
use dp_runtime::optim::{Adam, OptimizerState};
use dp_runtime::rng::seeded;
use dp_runtime::{Error, Trainer};
use safetensors::SafeTensors;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dp-runtime-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample_checkpoint() -> Checkpoint {
    let model = Mlp::init(&mut seeded(1));
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.1, Mechanism::Gaussian, 30);
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
        noise_multiplier: 1.3,
    }
}

#[test]
fn round_trip_with_pytorch_names_and_shapes() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let saved = sample_checkpoint();
    checkpoint::save::<Mlp>(&path, &saved).unwrap();
    let loaded = checkpoint::load::<Mlp>(&path).unwrap();
    assert_eq!(loaded.params, saved.params);
    assert_eq!(loaded.optimizer, saved.optimizer);
    assert_eq!(loaded.steps, 42);
    assert_eq!(loaded.ledger, saved.ledger);
    assert_eq!(loaded.noise_multiplier, 1.3);

    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("fc1.weight").unwrap().shape(), &[8, 4]);
    assert_eq!(file.tensor("fc2.bias").unwrap().shape(), &[3]);
    assert_eq!(file.tensor("optimizer.momentum.fc2.weight").unwrap().shape(), &[3, 8]);
    // No temporary file is left behind; overwriting works.
    checkpoint::save::<Mlp>(&path, &saved).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert_eq!(checkpoint::load_params::<Mlp>(&path).unwrap(), saved.params);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_models_checkpoint_is_an_error_naming_the_tensor() {
    let dir = temp_dir("mismatch");
    let path = dir.join("softmax.safetensors");
    checkpoint::save_params(&path, &SoftmaxRegression::init(&mut seeded(2))).unwrap();
    let err = checkpoint::load::<Mlp>(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    // The first unknown tensor in name order.
    assert!(err.to_string().contains("fc.bias"), "{err}");
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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_continues_the_accounting_exactly_with_fresh_noise() {
    let dir = temp_dir("resume");
    let train = separable(600, 3);
    let run = |model: &mut Mlp, epochs: u32, path: &std::path::Path, resume: bool| {
        let mut trainer = Trainer::new(model)
            .optimizer(Adam::new(0.01))
            .clip_norm(1.0)
            .target_privacy(3.0, 1e-5)
            .expected_batch_size(60)
            .epochs(epochs)
            .seed(11)
            .checkpoint(path)
            .quiet(true);
        if resume {
            trainer = trainer.resume_from(path);
        }
        trainer.fit(&train, None).unwrap()
    };
    let mut whole = Mlp::init(&mut seeded(4));
    let uninterrupted = run(&mut whole, 4, &dir.join("whole.safetensors"), false);

    let part_path = dir.join("part.safetensors");
    let mut first = Mlp::init(&mut seeded(4));
    // The first half must use the same σ: calibrate for the 4-epoch plan, then stop after 2 epochs.
    let sigma = uninterrupted.noise_multiplier;
    Trainer::new(&mut first)
        .optimizer(Adam::new(0.01))
        .clip_norm(1.0)
        .noise_multiplier(sigma)
        .expected_batch_size(60)
        .epochs(2)
        .seed(11)
        .checkpoint(&part_path)
        .quiet(true)
        .fit(&train, None)
        .unwrap();
    assert_eq!(checkpoint::load::<Mlp>(&part_path).unwrap().steps, 20);

    let mut resumed_model = Mlp::init(&mut seeded(99));
    let resumed = run(&mut resumed_model, 4, &part_path, true);
    assert_eq!(resumed.steps, uninterrupted.steps);
    assert_eq!(resumed.noise_multiplier, sigma);
    assert_eq!(resumed.epsilon, uninterrupted.epsilon);
    assert_eq!(resumed.epochs.len(), 2, "only the remaining epochs are trained");
    assert_eq!(resumed.epochs[0].epoch, 3);
    // Fresh noise: the resumed run does not reproduce the uninterrupted one's steps 21..40.
    assert_ne!(resumed_model.params, whole.params);
    std::fs::remove_dir_all(&dir).unwrap();
}
