//! Every built-in model trains with the private trainer: a few DP-SGD steps on synthetic data of its
//! exact shapes move the parameters, keep them finite, and are accounted.
//!
//! The real-data runs (Adult, MNIST, reviews) are in `cli_train.rs`; correctness of the gradients is
//! in the `reference_*` tests. This file shows that the compiled models and the runtime fit together
//! for every model kind, including the ones without shipped data (CIFAR-10 shapes, IMDb shapes).

use dp::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, MnistVit, ResidualCnn,
    TextTransformer,
};
use dp::optim::Sgd;
use dp::{Dataset, DpModel, Loss, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EXAMPLES: usize = 12;
const STEPS: u64 = 2;

/// Labels valid for the model's loss, one per example.
fn labels<M: DpModel>(rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..EXAMPLES)
        .map(|_| match M::LOSS {
            Loss::CrossEntropy { classes } => rng.random_range(0..classes) as f32,
            Loss::BinaryCrossEntropy => rng.random_range(0..2) as f32,
            Loss::MeanSquaredError { .. } => unreachable!("no built-in model regresses"),
        })
        .collect()
}

fn train<M: DpModel>(data: Dataset<M::Input>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut model = M::init(&mut rng);
    let before = model.params().to_vec();
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.05))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .delta(1e-5)
        .expected_batch_size(4)
        .steps(STEPS)
        .seed(5)
        .non_private_diagnostics(true)
        .quiet(true)
        .fit(&data, Some(&data))
        .unwrap_or_else(|e| panic!("{}: {e}", M::NAME));
    assert_eq!(report.steps, STEPS, "{}", M::NAME);
    assert!(report.epsilon.is_finite() && report.epsilon > 0.0, "{}: ε {}", M::NAME, report.epsilon);
    let diagnostics = report.diagnostics.as_ref().expect("diagnostics were asked for");
    assert_eq!(diagnostics.non_finite_examples, 0, "{}", M::NAME);
    let after = model.params();
    assert!(after.iter().all(|v| v.is_finite()), "{}: parameters became non-finite", M::NAME);
    assert!(after.iter().zip(&before).any(|(a, b)| a != b), "{}: parameters did not move", M::NAME);
}

fn dense<M: DpModel<Input = f32>>() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let inputs = (0..EXAMPLES * M::input_len()).map(|_| rng.random_range(0.0..1.0)).collect();
    let data = Dataset::new(inputs, labels::<M>(&mut rng), M::INPUT_SHAPE.to_vec(), 1).unwrap();
    train::<M>(data);
}

fn tokens<M: DpModel<Input = u32>>() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // Few distinct ids, so tokens repeat within an example.
    let inputs =
        (0..EXAMPLES * M::input_len()).map(|_| rng.random_range(0..40) as u32 * 97 % M::VOCAB as u32);
    let data = Dataset::new(inputs.collect(), labels::<M>(&mut rng), M::INPUT_SHAPE.to_vec(), 1).unwrap();
    train::<M>(data);
}

#[test]
fn adult_models_train() {
    dense::<AdultLogReg>();
    dense::<AdultFfnn>();
}

#[test]
fn image_models_train() {
    dense::<MnistCnn>();
    dense::<Cifar10Cnn>();
    dense::<ResidualCnn>();
    dense::<MnistVit>();
}

#[test]
fn sequence_models_train() {
    tokens::<EmbeddingNet>();
    tokens::<LstmNet>();
    tokens::<TextTransformer>();
}
