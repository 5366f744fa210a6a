//! Distributed DP-SGD through the in-process `ThreadGroup` (no MPI needed): K ranks train like one
//! process (same batches, same noise, same ledger, parameters to rounding; K = 1 bit for bit), ranks
//! agree on OS-drawn sampling keys, a failing rank stops every rank naming it, a checkpoint records K
//! and refuses another K.

mod common;

use common::{separable, Mlp, SoftmaxRegression};
use dp_runtime::checkpoint;
use dp_runtime::distributed::{shard_range, take_shard, Shard, ThreadGroup};
use dp_runtime::model::{Batch, DpModel, LayerInfo, Loss, ParamSpec, Workspace};
use dp_runtime::optim::Sgd;
use dp_runtime::rng::seeded;
use dp_runtime::{Dataset, Error, Report, Result, Trainer};

fn trainer<M: DpModel>(model: &mut M, batch: usize, seed: Option<u64>) -> Trainer<'_, M> {
    let trainer = Trainer::new(model)
        .optimizer(Sgd::new(0.5).momentum(0.9))
        .clip_norm(1.0)
        .noise_multiplier(1.1)
        .expected_batch_size(batch)
        .steps(20)
        .quiet(true);
    match seed {
        Some(seed) => trainer.seed(seed),
        None => trainer,
    }
}

/// One process: the parameters and report after 20 steps.
fn one_process<M: DpModel>(train: &Dataset<M::Input>, batch: usize, seed: u64) -> (Vec<f32>, Report) {
    let mut model = M::init(&mut seeded(3));
    let report = trainer(&mut model, batch, Some(seed)).fit(train, None).unwrap();
    (model.params().to_vec(), report)
}

/// K ranks as threads, each with its shard; every rank's parameters and report (`seed` None: keys
/// from the operating system). `configure` may add settings per rank.
fn ranks<M: DpModel>(
    train: &Dataset<M::Input>,
    k: usize,
    batch: usize,
    seed: Option<u64>,
    configure: impl Fn(usize, Trainer<'_, M>) -> Trainer<'_, M> + Sync,
) -> Vec<Result<(Vec<f32>, Report)>>
where
    M::Input: Sync,
{
    let n = train.len();
    let groups = ThreadGroup::new(k);
    std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(rank, group)| {
                let configure = &configure;
                scope.spawn(move || {
                    let shard = take_shard(train, shard_range(n, rank, k)).unwrap();
                    let mut model = M::init(&mut seeded(3));
                    let trainer =
                        trainer(&mut model, batch, seed).distributed(group, Shard::of_rank(n, rank, k));
                    let report = configure(rank, trainer).fit(&shard, None)?;
                    Ok((model.params().to_vec(), report))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn two_and_three_ranks_train_as_one_process() {
    let train = separable(1001, 4);
    let (single, single_report) = one_process::<Mlp>(&train, 100, 9);
    for k in [2, 3] {
        let results = ranks::<Mlp>(&train, k, 100, Some(9), |_, t| t);
        for (rank, result) in results.into_iter().enumerate() {
            let (params, report) = result.unwrap();
            let difference = max_difference(&params, &single);
            assert!(difference <= 1e-6, "K = {k}, rank {rank}: parameters differ by {difference}");
            // One ledger: the same plan, steps and ε as one process.
            assert_eq!(report.steps, single_report.steps);
            assert_eq!(report.epsilon, single_report.epsilon);
            assert_eq!(report.sampling_rate, single_report.sampling_rate);
        }
    }
}

#[test]
fn one_rank_is_the_single_process_run_bit_for_bit() {
    let train = separable(500, 5);
    let (single, _) = one_process::<SoftmaxRegression>(&train, 50, 11);
    let results = ranks::<SoftmaxRegression>(&train, 1, 50, Some(11), |_, t| t);
    let (params, _) = results.into_iter().next().unwrap().unwrap();
    assert_eq!(params, single);
}

/// Without a seed each rank samples its shard with its own operating-system key (no rank learns
/// another shard's batch membership); the released update is the same on every rank, so the ranks
/// still hold the same parameters, and they trained (moved from the initial parameters).
#[test]
fn os_keyed_ranks_sample_their_own_shards_and_agree_on_the_parameters() {
    let train = separable(600, 6);
    let results = ranks::<Mlp>(&train, 2, 60, None, |_, t| t);
    let params: Vec<Vec<f32>> = results.into_iter().map(|r| r.unwrap().0).collect();
    assert_eq!(params[0], params[1]);
    assert!(max_difference(&params[0], Mlp::init(&mut seeded(3)).params()) > 0.01);
}

/// The noise is drawn once, by rank 0, from the run's noise stream: a run whose update is mostly noise
/// (C = 50, noise std σC = 55) must still match one process, which it would not if any rank drew its
/// own noise or the noise were scaled per rank.
#[test]
fn the_noise_is_the_single_process_draw() {
    let train = separable(400, 7);
    let mut model = SoftmaxRegression::init(&mut seeded(3));
    trainer(&mut model, 40, Some(13)).clip_norm(50.0).fit(&train, None).unwrap();
    let results = ranks::<SoftmaxRegression>(&train, 2, 40, Some(13), |_, t| t.clip_norm(50.0));
    for result in results {
        let (params, _) = result.unwrap();
        let difference = max_difference(&params, model.params());
        assert!(difference <= 1e-5, "parameters differ by {difference}");
        // The noise moved the parameters far from the start: the comparison is not vacuous.
        let start = SoftmaxRegression::init(&mut seeded(3));
        assert!(max_difference(&params, start.params()) > 0.1);
    }
}

/// SoftmaxRegression whose clipped sum turns NaN on an example whose first feature is 999 (a model
/// breaking the `DpModel` contract, which the step engine reports as an error).
struct BreaksOn999(SoftmaxRegression);

impl DpModel for BreaksOn999 {
    type Input = f32;
    const NAME: &'static str = "BreaksOn999";
    const INPUT_SHAPE: &'static [usize] = SoftmaxRegression::INPUT_SHAPE;
    const VOCAB: usize = 0;
    const LOSS: Loss = SoftmaxRegression::LOSS;
    const PARAMS: &'static [ParamSpec] = SoftmaxRegression::PARAMS;
    const PARAM_COUNT: usize = SoftmaxRegression::PARAM_COUNT;
    const GROUPS: &'static [&'static str] = SoftmaxRegression::GROUPS;
    const LAYERS: &'static [LayerInfo] = &[];
    const WORKSPACE_PER_EXAMPLE: usize = SoftmaxRegression::WORKSPACE_PER_EXAMPLE;
    const WORKSPACE_FIXED: usize = 0;
    fn from_params(params: Vec<f32>) -> Self {
        BreaksOn999(SoftmaxRegression::from_params(params))
    }
    fn params(&self) -> &[f32] {
        self.0.params()
    }
    fn params_mut(&mut self) -> &mut [f32] {
        self.0.params_mut()
    }
    fn init(rng: &mut dyn rand::RngCore) -> Self {
        BreaksOn999(SoftmaxRegression::init(rng))
    }
    fn forward(&self, ws: &mut Workspace, inputs: &[f32], batch: usize, outputs: &mut [f32]) {
        self.0.forward(ws, inputs, batch, outputs)
    }
    fn loss_and_gradient(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, f32>,
        losses: &mut [f32],
        grad: &mut [f32],
    ) {
        self.0.loss_and_gradient(ws, batch, losses, grad)
    }
    fn per_example_norms(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, f32>,
        losses: &mut [f32],
        sq: &mut [f32],
    ) {
        self.0.per_example_norms(ws, batch, losses, sq)
    }
    fn clipped_sum(&self, ws: &mut Workspace, batch: Batch<'_, f32>, factors: &[f32], grad: &mut [f32]) {
        self.0.clipped_sum(ws, batch, factors, grad);
        if batch.inputs.chunks(Self::INPUT_SHAPE[0]).any(|x| x[0] == 999.0) {
            grad[0] = f32::NAN;
        }
    }
}

#[test]
fn a_failing_rank_stops_every_rank_naming_it() {
    let mut train = separable(100, 8);
    // Example 80 is in rank 1's shard (50..100); every example is sampled (B = N).
    train.inputs[80 * Mlp::INPUT_SHAPE[0]] = 999.0;
    let results = ranks::<BreaksOn999>(&train, 2, 100, Some(1), |_, t| t);
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Err(Error::RankFailed { rank: 1, ranks: 2, message }) => {
                assert!(message.contains("breaks the DpModel contract"), "rank {rank}: {message}");
            }
            other => panic!("rank {rank}: expected rank 1's failure, got {:?}", other.map(|r| r.1.steps)),
        }
    }
}

/// A folder for one test's checkpoint, removed when the guard drops (also when the test fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dp-distributed-{name}-"))
        .tempdir()
        .expect("the temporary folder is writable")
}

#[test]
fn a_checkpoint_rank_0_cannot_write_stops_every_rank() {
    let train = separable(200, 9);
    let tmp = temp_dir("unwritable");
    let missing = tmp.path().join("no-such-dir").join("c.st");
    let results = ranks::<SoftmaxRegression>(&train, 2, 20, Some(1), |_, t| t.checkpoint(&missing));
    for (rank, result) in results.into_iter().enumerate() {
        let error = result.err().unwrap_or_else(|| panic!("rank {rank} did not fail"));
        assert!(matches!(error.root(), Error::RankFailed { rank: 0, ranks: 2, .. }), "rank {rank}: {error}");
        // The step was spent: the error says so.
        assert!(matches!(error, Error::Interrupted { .. }), "rank {rank}: {error}");
    }
}

#[test]
fn a_checkpoint_records_k_and_resumes_only_with_the_same_k() {
    // 300 examples, B = 30: an epoch is 10 steps, the plan 20; the first run stops after 10.
    let train = separable(300, 10);
    let tmp = temp_dir("resume");
    let path = tmp.path().join("run.safetensors");
    let results =
        ranks::<SoftmaxRegression>(&train, 2, 30, Some(2), |_, t| t.checkpoint(&path).max_steps(10));
    assert!(results.iter().all(Result::is_ok));
    let saved = checkpoint::load::<SoftmaxRegression>(&path).unwrap();
    assert_eq!(saved.identity.ranks, 2);
    assert_eq!(saved.steps, 10);

    // Another K (one process) is refused, naming K.
    let mut model = SoftmaxRegression::init(&mut seeded(3));
    let error = trainer(&mut model, 30, Some(2)).resume_from(&path).fit(&train, None).unwrap_err();
    assert!(error.to_string().contains("ranks (K, mpirun -n): checkpoint 2, this run 1"), "{error}");

    // The same K continues the run to its 20 steps, with the ε of the whole plan.
    let (_, uninterrupted) = one_process::<SoftmaxRegression>(&train, 30, 2);
    let results =
        ranks::<SoftmaxRegression>(&train, 2, 30, Some(2), |_, t| t.resume_from(&path).checkpoint(&path));
    for result in results {
        let (_, report) = result.unwrap();
        assert_eq!(report.steps, 20);
        assert_eq!(report.epsilon, uninterrupted.epsilon);
    }
    assert_eq!(checkpoint::load::<SoftmaxRegression>(&path).unwrap().steps, 20);
}

#[test]
fn unsupported_settings_are_refused_by_name() {
    let train = separable(100, 11);
    for (flag, results) in [
        ("secure_noise", ranks::<SoftmaxRegression>(&train, 1, 10, Some(1), |_, t| t.secure_noise(true))),
        (
            "non_private_diagnostics",
            ranks::<SoftmaxRegression>(&train, 1, 10, Some(1), |_, t| t.non_private_diagnostics(true)),
        ),
    ] {
        let error = results.into_iter().next().unwrap().unwrap_err();
        assert!(matches!(&error, Error::InvalidArgument { name, .. } if name == flag), "{error}");
    }
}
