//! The built-in MNIST CNN and embedding network trained by two ranks (threads of this process, through
//! `dp::distributed::ThreadGroup`, so no MPI is needed) and by one process, with the same seed: after
//! 20 steps the same ε, the same ledger and parameters equal to 1e-6 (the f32 sum of two partial
//! clipped sums rounds differently from one sum). `tests/cli_mpirun.rs` does the same over MPI.

use dp::distributed::{shard_range, take_shard, Shard, ThreadGroup};
use dp::models::{EmbeddingNet, MnistCnn};
use dp::optim::Sgd;
use dp::{Dataset, DpModel, Report, Trainer};
use rand::{Rng, SeedableRng};

const STEPS: u64 = 20;

fn trainer<M: DpModel>(model: &mut M) -> Trainer<'_, M> {
    Trainer::new(model)
        .optimizer(Sgd::new(0.1).momentum(0.9))
        .clip_norm(1.0)
        .noise_multiplier(1.1)
        .expected_batch_size(64)
        .steps(STEPS)
        .seed(21)
        .quiet(true)
}

fn one_process<M: DpModel>(train: &Dataset<M::Input>) -> (Vec<f32>, Report) {
    let mut model = M::init(&mut dp::rng::seeded_init(21));
    let report = trainer(&mut model).fit(train, None).unwrap();
    (model.params().to_vec(), report)
}

fn two_ranks<M: DpModel>(train: &Dataset<M::Input>) -> Vec<(Vec<f32>, Report)>
where
    M::Input: Sync,
{
    let n = train.len();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .enumerate()
            .map(|(rank, group)| {
                scope.spawn(move || {
                    let shard = take_shard(train, shard_range(n, rank, 2)).unwrap();
                    let mut model = M::init(&mut dp::rng::seeded_init(21));
                    let report = trainer(&mut model)
                        .distributed(group, Shard::of_rank(n, rank, 2))
                        .fit(&shard, None)
                        .unwrap();
                    (model.params().to_vec(), report)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_same_run<M: DpModel>(train: &Dataset<M::Input>)
where
    M::Input: Sync,
{
    let (single, single_report) = one_process::<M>(train);
    let initial = M::init(&mut dp::rng::seeded_init(21));
    for (rank, (params, report)) in two_ranks::<M>(train).into_iter().enumerate() {
        let difference = params.iter().zip(&single).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(difference <= 1e-6, "{} rank {rank}: parameters differ by {difference}", M::NAME);
        assert_eq!(report.steps, STEPS);
        assert_eq!(report.epsilon, single_report.epsilon);
        assert_eq!(report.noise_multiplier, single_report.noise_multiplier);
        assert_eq!(report.sampling_rate, single_report.sampling_rate);
        // The comparison is not vacuous: 20 noisy steps moved the parameters.
        let moved = params.iter().zip(initial.params()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "{} rank {rank}: parameters moved only {moved}", M::NAME);
    }
}

#[test]
fn two_ranks_train_the_mnist_cnn_as_one_process() {
    let (train, _) = dp::data::mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).unwrap();
    let train = take_shard(&train, 0..6_000).unwrap();
    assert_same_run::<MnistCnn>(&train);
}

#[test]
fn two_ranks_train_the_embedding_network_as_one_process() {
    // Token sequences of the model's shape (256 tokens of a 10,004-word vocabulary), random labels.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let n = 3_000;
    let tokens: Vec<u32> = (0..n * 256).map(|_| rng.random_range(0..EmbeddingNet::VOCAB as u32)).collect();
    let labels: Vec<f32> = (0..n).map(|_| rng.random_range(0..2u8) as f32).collect();
    let train = Dataset::new(tokens, labels, vec![256], 1).unwrap();
    assert_same_run::<EmbeddingNet>(&train);
}
