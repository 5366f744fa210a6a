//! `mpirun -n 2 dp train`: two ranks train like one process (MNIST CNN and embedding network, 20
//! steps, same seed: the same ε and ledger, parameters equal to rounding: 1e-6 for the MNIST CNN,
//! 2e-6 for the embedding network, see below); a rank killed mid-run ends the job with an error and
//! leaves the last complete checkpoint, which resumes with the same K and is refused with another K.
//!
//! These need the `mpi` feature and `mpirun` (`.ci/run` installs Open MPI and runs them with
//! `cargo test --features mpi --test cli_mpirun`). Without either, each test says on stderr, outside
//! the test harness's capture, that it was SKIPPED. Ranks run one thread each (`RAYON_NUM_THREADS=1`).

mod common;

use common::TempDir;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Says on the terminal (not through the captured `eprintln!`) that a test did not run.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// `mpirun` when this build can use it, `None` (after saying so) otherwise.
fn mpirun(test: &str) -> Option<PathBuf> {
    if !cfg!(feature = "mpi") {
        skipped(test, "dp was built without the `mpi` feature (cargo test --features mpi --test cli_mpirun)");
        return None;
    }
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("mpirun")).find(|p| p.is_file()));
    if found.is_none() {
        skipped(test, "no mpirun on PATH (install Open MPI: apt-get install openmpi-bin libopenmpi-dev)");
    }
    found
}

fn dp() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dp"));
    command.env("RAYON_NUM_THREADS", "1").stdin(Stdio::null());
    command
}

/// `mpirun -n ranks dp args...`, one thread per rank. Open MPI refuses to run as root unless
/// `OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1` are set: `.ci/run` sets them (CI runs
/// as root); the tests do not.
fn mpirun_dp(mpirun: &Path, ranks: usize) -> Command {
    let mut command = Command::new(mpirun);
    command
        .args(["-n", &ranks.to_string(), "--oversubscribe", "-x", "RAYON_NUM_THREADS=1"])
        .arg(env!("CARGO_BIN_EXE_dp"))
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null());
    command
}

fn succeeded(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Trains `model` on `data` for 20 seeded steps with one process and with two ranks (twice) and
/// compares the checkpoints (parameters to `tolerance` across K and bit for bit for the same K,
/// ledger, steps, K) and the reported ε.
fn compare_with_one_process<M: dp::DpModel>(
    mpirun: &Path,
    model: &str,
    data: &Path,
    dir: &TempDir,
    tolerance: f32,
) {
    let args = |save: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            model,
            "--data",
            data.to_str().unwrap(),
            "--seed",
            "5",
            "--max-steps",
            "20",
            "--batch-size",
            "64",
            "--noise-multiplier",
            "1.1",
            "--lr",
            "0.1",
            "--json",
            "--save",
            save.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (one, two) = (dir.path("one.safetensors"), dir.path("two.safetensors"));
    let one_out = succeeded("dp train", dp().args(args(&one)).output().unwrap());
    let two_out = succeeded("mpirun -n 2 dp train", mpirun_dp(mpirun, 2).args(args(&two)).output().unwrap());
    // The same K twice: bit for bit (the reduce's order is fixed for a given K and message size).
    let again = dir.path("again.safetensors");
    succeeded("mpirun -n 2 dp train (again)", mpirun_dp(mpirun, 2).args(args(&again)).output().unwrap());
    let again = dp::checkpoint::load::<M>(&again).unwrap();
    let (one, two) = (dp::checkpoint::load::<M>(&one).unwrap(), dp::checkpoint::load::<M>(&two).unwrap());
    assert_eq!(again.params, two.params, "{model}: two runs with K = 2 differ");
    assert_eq!((one.steps, two.steps), (20, 20));
    assert_eq!(one.ledger, two.ledger, "one ledger");
    assert_eq!((one.identity.ranks, two.identity.ranks), (1, 2));
    let difference = one.params.iter().zip(&two.params).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(difference <= tolerance, "{model}: parameters differ by {difference}");
    // One report: rank 0's JSON line only, with the ε of one process.
    let epsilon = |out: &Output| -> Vec<f64> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["epsilon"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(epsilon(&one_out).len(), 1);
    assert_eq!(epsilon(&one_out), epsilon(&two_out));
}

#[test]
fn two_ranks_train_the_mnist_cnn_as_one_process() {
    let Some(mpirun) = mpirun("two_ranks_train_the_mnist_cnn_as_one_process") else { return };
    let dir = TempDir::new("cli-mpirun", "mnist");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    compare_with_one_process::<dp::models::MnistCnn>(&mpirun, "mnist-cnn", &data, &dir, 1e-6);
}

#[test]
fn two_ranks_train_the_embedding_network_as_one_process() {
    let Some(mpirun) = mpirun("two_ranks_train_the_embedding_network_as_one_process") else { return };
    let dir = TempDir::new("cli-mpirun", "embedding");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/reviews/womens_clothing_reviews.csv.gz");
    // The embedding row of a token frequent in the reviews: its clipped sum adds thousands of positions
    // per step, and two partial f32 sums round differently from one. Measured: 1.22e-6 at most, and
    // 2.62e-6 once the noise's retries read per-segment streams (the same seed, other noise values):
    // the rounding depends on the values drawn, so the bound leaves room above both.
    compare_with_one_process::<dp::models::EmbeddingNet>(&mpirun, "embedding", &data, &dir, 5e-6);
}

/// Raw IDX files of `train` random 28×28 images (and 100 test images) with random labels.
fn write_mnist(dir: &Path, train: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for (prefix, n) in [("train", train), ("t10k", 100)] {
        let mut images = vec![0, 0, 8, 3];
        for dim in [n as u32, 28, 28] {
            images.extend(dim.to_be_bytes());
        }
        images.extend((0..n * 784).map(|_| rng.random::<u8>()));
        let mut labels = vec![0, 0, 8, 1];
        labels.extend((n as u32).to_be_bytes());
        labels.extend((0..n).map(|_| rng.random_range(0..10u8)));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// The process ids whose environment has every one of `entries` (`NAME=value`).
fn processes_with(entries: &[String]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if entries.iter().all(|e| vars.contains(&e.as_bytes())) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_killed_rank_ends_the_job_and_leaves_the_last_checkpoint() {
    let Some(mpirun) = mpirun("a_killed_rank_ends_the_job_and_leaves_the_last_checkpoint") else { return };
    let dir = TempDir::new("cli-mpirun", "kill");
    let data = dir.path("mnist");
    std::fs::create_dir_all(&data).unwrap();
    // 1,280 examples, B = 64: an epoch is 20 steps; the plan is 100 epochs.
    write_mnist(&data, 1_280);
    let save = dir.path("run.safetensors");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--model",
            "mnist-cnn",
            "--data",
            data.to_str().unwrap(),
            "--noise-multiplier",
            "1.0",
            "--delta",
            "1e-4",
            "--batch-size",
            "64",
            "--epochs",
            "100",
            "--lr",
            "0.05",
            "--json",
            "--save",
            save.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let marker = format!("DP_TEST_RUN=kill-{}", std::process::id());
    let (name, value) = marker.split_once('=').unwrap();
    let job = mpirun_dp(&mpirun, 2)
        .args(args(&[]))
        .env(name, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint (epoch 1), then kill rank 1.
    let started = std::time::Instant::now();
    while !save.exists() {
        assert!(started.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rank1 = processes_with(&[marker.clone(), "OMPI_COMM_WORLD_RANK=1".to_string()]);
    assert_eq!(rank1.len(), 1, "rank 1's process: {rank1:?}");
    assert!(Command::new("kill").args(["-KILL", &rank1[0].to_string()]).status().unwrap().success());
    let output = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the job survived the killed rank: {stderr}");
    assert!(stderr.contains("rank 1"), "the error does not name rank 1: {stderr}");
    // The last complete checkpoint: a whole number of epochs, loadable.
    let saved = dp::checkpoint::load::<dp::models::MnistCnn>(&save).unwrap();
    assert!(saved.steps >= 20 && saved.steps.is_multiple_of(20), "checkpoint at step {}", saved.steps);
    assert_eq!(saved.identity.ranks, 2);

    // Another K is refused, naming it.
    let refused = dp().args(args(&["--resume", save.to_str().unwrap()])).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("ranks (K, mpirun -n): checkpoint 2, this run 1"), "{message}");

    // The same K resumes and goes on (cut after one more epoch).
    let max = (saved.steps + 20).to_string();
    let resumed = succeeded(
        "resumed mpirun -n 2 dp train",
        mpirun_dp(&mpirun, 2)
            .args(args(&["--resume", save.to_str().unwrap(), "--max-steps", &max]))
            .output()
            .unwrap(),
    );
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&resumed.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["steps"].as_u64(), Some(saved.steps + 20));
    assert_eq!(dp::checkpoint::load::<dp::models::MnistCnn>(&save).unwrap().steps, saved.steps + 20);
}

/// A build without the `mpi` feature started by a launcher as one of K > 1 ranks refuses to train
/// (each copy would train alone on all the data and write the same outputs).
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_k_ranks() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/adult");
    let output = dp()
        .args(["train", "--model", "logreg", "--data", data.to_str().unwrap(), "--target-epsilon", "1"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--mpi") && stderr.contains("built without the `mpi` feature"), "{stderr}");
}
