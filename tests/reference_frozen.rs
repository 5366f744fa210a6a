//! Frozen layers (`#[layer(..., frozen)]`) against the f64 reference of `tests/reference`, one example
//! at a time: a frozen layer between trained ones (the gradient flows through it, its own gradient is
//! in no norm and no sum), a frozen first layer, a frozen residual block in `forward`, a frozen
//! embedding under a trained LSTM and a frozen LSTM between trained layers, at B = 1, 3 and 64. Then the runtime: after `Trainer` training, frozen parameters are bit-identical, the
//! report's noise dimension is the trained count, checkpoints keep frozen values and optimizer state
//! only for the trained ones, and the state dict round trip keeps every name.

mod common;
mod reference;

use common::TempDir;
use dp::optim::Adam;
use dp::prelude::*;
use dp::{checkpoint, Trainer, FROZEN_GROUP};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reference::dense::Activation;
use reference::harness::{check_model, check_zero_factor_example, report, TestInput};
use reference::net::{embedding_lstm_mean_linear, Network, Op};

/// A frozen layer sandwiched between two trained ones: its input gradient must reach `fc1`.
#[dp_model(input = [6], loss = cross_entropy(classes = 3))]
struct Sandwich {
    #[layer(linear(out = 5), tanh)]
    fc1: Linear,
    #[layer(linear(out = 4), sigmoid, frozen)]
    mid: Linear,
    #[layer(linear(out = 3))]
    head: Linear,
}

fn sandwich() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "fc1", out: 5, bias: true },
            Op::Act(Activation::Tanh),
            Op::Linear { name: "mid", out: 4, bias: true },
            Op::Act(Activation::Sigmoid),
            Op::Linear { name: "head", out: 3, bias: true },
        ],
        Sandwich::INPUT_SHAPE,
        Sandwich::LOSS,
        Sandwich::PARAMS,
    )
}

/// A frozen first layer (a pretrained feature extractor): nothing below it is trained.
#[dp_model(input = [7], loss = mse)]
struct FrozenBase {
    #[layer(linear(out = 6), tanh, frozen)]
    base: Linear,
    #[layer(linear(out = 2))]
    head: Linear,
}

fn frozen_base() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "base", out: 6, bias: true },
            Op::Act(Activation::Tanh),
            Op::Linear { name: "head", out: 2, bias: true },
        ],
        FrozenBase::INPUT_SHAPE,
        FrozenBase::LOSS,
        FrozenBase::PARAMS,
    )
}

/// `forward` over a dense sequence: a trained position-wise layer, a frozen residual block, mean
/// pooling and a trained classifier.
#[dp_model(input = [4, 6], loss = cross_entropy(classes = 2))]
mod frozen_residual {
    pub struct FrozenResidual {
        #[layer(linear(out = 5), tanh)]
        fc1: Linear,
        #[layer(linear(out = 5), tanh, frozen)]
        block: Linear,
        #[layer(mean, linear(out = 2))]
        head: Linear,
    }

    impl FrozenResidual {
        fn forward(&self, x: Input) -> Output {
            let h = self.fc1(x);
            let r = self.block(h);
            self.head(h + r)
        }
    }
}
use frozen_residual::FrozenResidual;

fn frozen_residual() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "fc1", out: 5, bias: true },
            Op::Act(Activation::Tanh),
            Op::Residual(vec![Op::Linear { name: "block", out: 5, bias: true }, Op::Act(Activation::Tanh)]),
            Op::MeanOverSequence,
            Op::Linear { name: "head", out: 2, bias: true },
        ],
        FrozenResidual::INPUT_SHAPE,
        FrozenResidual::LOSS,
        FrozenResidual::PARAMS,
    )
}

/// The frozen tensors of `M` and the trained-first layout.
fn frozen_names<M: DpModel>() -> Vec<&'static str> {
    for p in M::PARAMS {
        assert_eq!(
            p.offset < M::TRAINED_PARAM_COUNT,
            p.is_trained(),
            "{}: {} at {}",
            M::NAME,
            p.name,
            p.offset
        );
    }
    M::PARAMS.iter().filter(|p| p.group == FROZEN_GROUP).map(|p| p.name).collect()
}

/// Every entry point at B = 1, 3 and 64 and a factor-0 example; the reference gradient of the frozen
/// tensors is not zero (so a model that counted it in its norms would fail the comparison).
fn check_everything<M: DpModel>(name: &str, net: &Network, seed: u64)
where
    M::Input: TestInput,
{
    for (size, offset) in [(1, 0), (3, 1), (64, 2)] {
        let e = check_model::<M>(net, size, seed + offset);
        report(&format!("{name} B = {size}"), &e);
    }
    check_zero_factor_example::<M>(net, 3, seed + 10);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params: Vec<f64> = M::init(&mut rng).params().iter().map(|&v| f64::from(v)).collect();
    let x: Vec<f64> = (0..M::input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let label = vec![0.0; M::LOSS.label_len()];
    let (_, grad) = net.loss_and_gradient(&params, &x, &label);
    let frozen_sq: f64 = grad[M::TRAINED_PARAM_COUNT..].iter().map(|g| g * g).sum();
    assert!(
        frozen_sq > 1e-8,
        "{name}: the frozen layer's gradient is {frozen_sq}, the test would not see it"
    );
}

#[test]
fn a_frozen_layer_between_trained_ones_matches_the_reference() {
    assert_eq!(frozen_names::<Sandwich>(), ["mid.weight", "mid.bias"]);
    assert_eq!(Sandwich::GROUPS, ["fc1", "head"]);
    assert_eq!(Sandwich::TRAINED_PARAM_COUNT, (5 * 6 + 5) + (3 * 4 + 3));
    assert_eq!(Sandwich::PARAM_COUNT, Sandwich::TRAINED_PARAM_COUNT + 4 * 5 + 4);
    check_everything::<Sandwich>("Sandwich", &sandwich(), 500);
}

#[test]
fn a_frozen_first_layer_matches_the_reference() {
    assert_eq!(frozen_names::<FrozenBase>(), ["base.weight", "base.bias"]);
    assert_eq!(FrozenBase::GROUPS, ["head"]);
    check_everything::<FrozenBase>("FrozenBase", &frozen_base(), 520);
}

#[test]
fn a_frozen_residual_block_in_forward_matches_the_reference() {
    assert_eq!(frozen_names::<FrozenResidual>(), ["block.weight", "block.bias"]);
    check_everything::<FrozenResidual>("FrozenResidual", &frozen_residual(), 540);
}

#[test]
fn describe_says_how_many_parameters_are_trained() {
    let table = Sandwich::describe();
    let (total, trained) = (Sandwich::PARAM_COUNT, Sandwich::TRAINED_PARAM_COUNT);
    let header = format!("Sandwich: {total} parameters ({trained} trained, {} frozen)", total - trained);
    assert!(table.starts_with(&header), "{table}");
    assert!(table.contains("(frozen)"), "{table}");
}

// ---------------------------------------------------------------------------------------------
// The runtime.

fn data<M: DpModel<Input = f32>>(examples: usize, seed: u64) -> Dataset<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let inputs = (0..examples * M::input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let labels = (0..examples * M::LOSS.label_len())
        .map(|_| match M::LOSS {
            Loss::CrossEntropy { classes } => rng.random_range(0..classes) as f32,
            Loss::BinaryCrossEntropy => rng.random_range(0..2) as f32,
            Loss::MeanSquaredError { .. } => rng.random_range(-1.0..1.0),
        })
        .collect();
    Dataset::new(inputs, labels, M::INPUT_SHAPE.to_vec(), M::LOSS.label_len()).expect("a valid dataset")
}

/// Trains `steps` Adam steps, checkpointing to `path` (resuming from it when it exists).
fn train<M: DpModel<Input = f32>>(model: &mut M, steps: u64, path: &std::path::Path) -> dp::Report {
    let data = data::<M>(40, 7);
    let resume = path.exists();
    let mut trainer = Trainer::new(model)
        .optimizer(Adam::new(0.05))
        .clip_norm(1.0)
        .noise_multiplier(1.0)
        .delta(1e-5)
        .expected_batch_size(8)
        .steps(6)
        .max_steps(steps)
        .seed(9)
        .quiet(true)
        .checkpoint(path);
    if resume {
        trainer = trainer.resume_from(path);
    }
    trainer.fit(&data, Some(&data)).unwrap_or_else(|e| panic!("{}: {e}", M::NAME))
}

fn frozen_values<M: DpModel>(params: &[f32]) -> Vec<f32> {
    params[M::TRAINED_PARAM_COUNT..].to_vec()
}

fn check_training_leaves_frozen_parameters<M: DpModel<Input = f32>>(tag: &str) {
    let dir = TempDir::new("reference_frozen", tag);
    let path = dir.path("run.safetensors");
    let mut model = M::init(&mut ChaCha8Rng::seed_from_u64(1));
    let before = model.params().to_vec();
    let report = train(&mut model, 3, &path);
    assert_eq!(report.steps, 3);
    assert_eq!(report.trained_parameters, M::TRAINED_PARAM_COUNT, "{}: the noise dimension", M::NAME);
    let after = model.params().to_vec();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&frozen_values::<M>(&after)),
        bits(&frozen_values::<M>(&before)),
        "{}: frozen moved",
        M::NAME
    );
    assert_ne!(
        after[..M::TRAINED_PARAM_COUNT],
        before[..M::TRAINED_PARAM_COUNT],
        "{}: nothing trained",
        M::NAME
    );

    // The checkpoint: every parameter, optimizer state only for the trained ones.
    let saved = checkpoint::load::<M>(&path).expect("the checkpoint loads");
    assert_eq!(bits(&saved.params), bits(&after));
    assert!(!saved.optimizer.buffers.is_empty());
    for (name, values) in &saved.optimizer.buffers {
        assert_eq!(values.len(), M::TRAINED_PARAM_COUNT, "{}: optimizer buffer {name}", M::NAME);
    }
    // Resuming trains on; the frozen values still do not move.
    let report = train(&mut model, 6, &path);
    assert_eq!(report.steps, 6);
    assert_eq!(bits(&frozen_values::<M>(model.params())), bits(&frozen_values::<M>(&before)));

    // Parameters only: saved with every PyTorch name, loaded back bit for bit.
    let params_path = dir.path("params.safetensors");
    checkpoint::save_params(&params_path, &model).expect("the parameters save");
    let dict = dp::pytorch::read(&params_path).expect("a state dict");
    for p in M::PARAMS {
        assert!(
            dict.tensors.iter().any(|t| t.name == p.name),
            "{}: {} missing from the state dict",
            M::NAME,
            p.name
        );
    }
    let loaded = checkpoint::load_params::<M>(&params_path).expect("the parameters load");
    assert_eq!(bits(&loaded), bits(model.params()));
    // As pretrained weights (`dp train --init`), strict: every key, the frozen ones included.
    let mut fresh = M::init(&mut ChaCha8Rng::seed_from_u64(2));
    dp::pretrained::init_from_file(&mut fresh, &params_path, &dp::pretrained::InitOptions::default())
        .expect("the parameters initialise a fresh model");
    assert_eq!(bits(fresh.params()), bits(model.params()));
}

#[test]
fn training_leaves_frozen_parameters_bit_identical() {
    check_training_leaves_frozen_parameters::<Sandwich>("sandwich");
    check_training_leaves_frozen_parameters::<FrozenBase>("base");
    check_training_leaves_frozen_parameters::<FrozenResidual>("residual");
}

/// Two ranks (threads, `ThreadGroup`) reduce only the trained prefix and train as one process; the
/// frozen parameters stay bit-identical on every rank.
#[test]
fn two_ranks_train_a_frozen_model_as_one_process() {
    use dp::distributed::{shard_range, take_shard, Shard, ThreadGroup};
    use dp::optim::Sgd;
    let train = data::<Sandwich>(200, 13);
    fn trainer(model: &mut Sandwich) -> Trainer<'_, Sandwich> {
        Trainer::new(model)
            .optimizer(Sgd::new(0.2).momentum(0.9))
            .clip_norm(1.0)
            .noise_multiplier(1.1)
            .delta(1e-4)
            .expected_batch_size(32)
            .steps(8)
            .seed(21)
            .quiet(true)
    }
    let initial = Sandwich::init(&mut ChaCha8Rng::seed_from_u64(4));
    let mut single = initial.clone();
    trainer(&mut single).fit(&train, None).expect("one process trains");
    let n = train.len();
    let ranks: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .enumerate()
            .map(|(rank, group)| {
                let (train, initial) = (&train, &initial);
                scope.spawn(move || {
                    let shard = take_shard(train, shard_range(n, rank, 2)).unwrap();
                    let mut model = initial.clone();
                    trainer(&mut model)
                        .distributed(group, Shard::of_rank(n, rank, 2))
                        .fit(&shard, None)
                        .unwrap();
                    model.params().to_vec()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let trained = Sandwich::TRAINED_PARAM_COUNT;
    for (rank, params) in ranks.iter().enumerate() {
        let difference =
            params.iter().zip(single.params()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(difference <= 1e-6, "rank {rank}: parameters differ by {difference}");
        assert!(params[trained..]
            .iter()
            .zip(&initial.params()[trained..])
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let moved =
            params[..trained].iter().zip(initial.params()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "rank {rank}: the trained parameters moved only {moved}");
    }
}

// ---------------------------------------------------------------------------------------------
// Frozen sequence layers: an embedding below a trained LSTM, and an LSTM the gradient passes through.

/// A frozen (pretrained) embedding table under a trained LSTM.
#[dp_model(input = tokens(len = 7, vocab = 5), loss = binary_cross_entropy)]
struct FrozenEmbedding {
    #[layer(embedding(dim = 3), frozen)]
    emb: Embedding,
    #[layer(lstm(hidden = 4), mean)]
    lstm: Lstm,
    #[layer(linear(out = 1))]
    fc: Linear,
}

/// A frozen LSTM between a trained embedding and a trained classifier: backward through time still
/// runs, to reach the embedding.
#[dp_model(input = tokens(len = 7, vocab = 5), loss = binary_cross_entropy)]
struct FrozenLstm {
    #[layer(embedding(dim = 3))]
    emb: Embedding,
    #[layer(lstm(hidden = 4), mean, frozen)]
    lstm: Lstm,
    #[layer(linear(out = 1))]
    fc: Linear,
}

#[test]
fn a_frozen_embedding_under_a_trained_lstm_matches_the_reference() {
    assert_eq!(frozen_names::<FrozenEmbedding>(), ["emb.weight"]);
    assert_eq!(FrozenEmbedding::GROUPS, ["lstm", "fc"]);
    check_everything::<FrozenEmbedding>(
        "FrozenEmbedding",
        &embedding_lstm_mean_linear::<FrozenEmbedding>(),
        560,
    );
}

#[test]
fn a_frozen_lstm_between_trained_layers_matches_the_reference() {
    assert_eq!(frozen_names::<FrozenLstm>(), ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0"]);
    assert_eq!(FrozenLstm::GROUPS, ["emb", "fc"]);
    check_everything::<FrozenLstm>("FrozenLstm", &embedding_lstm_mean_linear::<FrozenLstm>(), 580);
}

/// The step engine the trainer runs: the clipped sum and the noise it draws have one value per
/// trained parameter, and the frozen layer's gradient is not in the sum.
#[test]
fn the_noise_and_the_clipped_sum_cover_only_the_trained_parameters() {
    use dp::clipping::ClipMode;
    use dp::noise::GaussianNoise;
    use dp::trainer::step::StepEngine;
    let train = data::<Sandwich>(16, 3);
    let model = Sandwich::init(&mut ChaCha8Rng::seed_from_u64(6));
    let mut engine = StepEngine::<Sandwich>::new(1.0, ClipMode::Flat, 16, 16);
    let mut noise = GaussianNoise::new(dp::rng::seeded(1));
    let indices: Vec<usize> = (0..16).collect();
    engine.clipped_sum_and_noise(&model, &train, &indices, &mut noise).expect("one step's sum");
    assert_eq!(engine.drawn_noise().len(), Sandwich::TRAINED_PARAM_COUNT);
    assert_eq!(engine.clipped_sum.len(), Sandwich::TRAINED_PARAM_COUNT);
    assert_ne!(engine.clipped_sum.len(), model.params().len(), "the frozen layer has no gradient");
    // Each example is clipped to norm 1 over the trained parameters alone: the sum of 16 has norm ≤ 16.
    let norm = engine.clipped_sum.iter().map(|&g| f64::from(g).powi(2)).sum::<f64>().sqrt();
    assert!(norm > 0.0 && norm <= 16.0 + 1e-3, "clipped sum norm {norm}");
}
