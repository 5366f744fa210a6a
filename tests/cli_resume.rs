//! `dp train --resume`: a training process killed with SIGKILL at random moments (and while a
//! checkpoint is being written) is resumed until it finishes. After every kill the checkpoint on disk
//! loads, no epoch the killed run reported is lost, and the resumed run ends with the step count and ε
//! of a run that was never interrupted.

mod common;

use common::TempDir;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dp::models::Cifar10Cnn;
use rand::{Rng, SeedableRng};

/// A CIFAR-10 folder of `per_file` random images in each of the six batch files. The CIFAR-10 CNN's
/// checkpoint (605,226 parameters and as many momentum values, 4.8 MB) takes long enough to write that
/// a kill can land inside the write.
fn write_cifar(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let names =
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
    for name in names.iter().copied().chain(["test_batch.bin"]) {
        let mut bytes = Vec::with_capacity(per_file * 3073);
        for _ in 0..per_file {
            bytes.push(rng.random_range(0..10u8));
            bytes.extend((0..3072).map(|_| rng.random::<u8>()));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn train_args(data: &Path, save: &Path, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--model",
        "cifar10-cnn",
        "--data",
        data.to_str().unwrap(),
        "--target-epsilon",
        "8",
        "--delta",
        "1e-3",
        "--batch-size",
        "8",
        "--epochs",
        "6",
        "--lr",
        "0.05",
        "--json",
        "--save",
        save.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if resume {
        args.extend(["--resume".to_string(), save.to_str().unwrap().to_string()]);
    }
    args
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dp"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dp binary starts")
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Whether a temporary file of an atomic checkpoint write is in `dir` (the write is under way).
fn writing(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().contains(".tmp-")))
        .unwrap_or(false)
}

/// Kills `child` with SIGKILL once `when` says so (or the child ends); returns its output.
fn kill_when(mut child: Child, mut when: impl FnMut() -> bool) -> (Output, bool) {
    let started = Instant::now();
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if when() || started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap(); // SIGKILL on Unix: no handler, no clean-up.
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let status = child.wait().unwrap();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    (Output { status, stdout, stderr }, killed)
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let dir = TempDir::new("cli-resume", "kill");
    let data = dir.path("cifar");
    write_cifar(&data, 16); // 80 training examples: 10 steps an epoch at batch 8, 60 in all.

    // The run that is never interrupted.
    let whole = dir.path("whole");
    std::fs::create_dir_all(&whole).unwrap();
    let (out, _) = kill_when(spawn(&train_args(&data, &whole.join("ck.safetensors"), false)), || false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = json_lines(&String::from_utf8_lossy(&out.stdout));
    let last = reference.last().unwrap();
    assert_eq!(last["steps"], 60);

    let runs = dir.path("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let checkpoint = runs.join("ck.safetensors");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(std::process::id() as u64);
    let mut resumed = false;
    let mut kills_during_write = 0;
    for attempt in 0..4 {
        let child = spawn(&train_args(&data, &checkpoint, resumed));
        // Odd attempts: at the first sign of a checkpoint write; even ones: at a random moment after the
        // first checkpoint exists.
        let (out, killed) = if attempt % 2 == 1 {
            let (out, killed) = kill_when(child, || writing(&runs));
            kills_during_write += usize::from(killed);
            (out, killed)
        } else {
            let mut deadline: Option<Instant> = None;
            let pause = Duration::from_millis(rng.random_range(0..400));
            kill_when(child, || {
                if deadline.is_none() && checkpoint.exists() {
                    deadline = Some(Instant::now() + pause);
                }
                deadline.is_some_and(|d| Instant::now() >= d)
            })
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !killed {
            assert!(out.status.success(), "attempt {attempt}: {stderr}");
            break;
        }
        // The checkpoint on disk always loads, and holds every epoch the killed run reported.
        let reported = json_lines(&String::from_utf8_lossy(&out.stdout));
        if checkpoint.exists() {
            let saved = dp::checkpoint::load::<Cifar10Cnn>(&checkpoint)
                .unwrap_or_else(|e| panic!("attempt {attempt}: the checkpoint does not load: {e}"));
            let reported_steps = reported.last().map_or(0, |e| e["steps"].as_u64().unwrap());
            assert!(
                saved.steps >= reported_steps,
                "attempt {attempt}: epoch lost ({} < {reported_steps})",
                saved.steps
            );
            assert_eq!(saved.steps % 10, 0, "checkpoints are written at epoch ends");
            resumed = true;
        }
    }
    // Finish whatever is left.
    let (out, _) = kill_when(spawn(&train_args(&data, &checkpoint, resumed)), || false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = dp::checkpoint::load::<Cifar10Cnn>(&checkpoint).unwrap();
    assert_eq!(saved.steps, 60);
    let finished = json_lines(&String::from_utf8_lossy(&out.stdout));
    let final_epoch = finished.last().unwrap_or_else(|| panic!("the last run reports its epochs"));
    assert_eq!(final_epoch["steps"], 60);
    assert_eq!(final_epoch["epoch"], 6);
    let (a, b) = (final_epoch["epsilon"].as_f64().unwrap(), last["epsilon"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-9 * b, "resumed ε {a} vs uninterrupted ε {b}");
    eprintln!("kills during a checkpoint write: {kills_during_write}");
}

#[test]
fn resume_refuses_another_plan_and_a_finished_run_trains_nothing() {
    let dir = TempDir::new("cli-resume", "refuse");
    let data = dir.path("cifar");
    write_cifar(&data, 4); // 20 examples: δ must stay below 1/20.
    let checkpoint = dir.path("ck.safetensors");
    let mut args = train_args(&data, &checkpoint, false);
    let epochs = args.iter().position(|a| a == "--epochs").unwrap();
    args[epochs + 1] = "1".to_string();
    let (out, _) = kill_when(spawn(&args), || false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = std::fs::read(&checkpoint).unwrap();
    let steps = dp::checkpoint::load::<Cifar10Cnn>(&checkpoint).unwrap().steps;

    // The same plan again: nothing is left to train, and nothing changes.
    let mut same = args.clone();
    same.extend(["--resume".to_string(), checkpoint.to_str().unwrap().to_string()]);
    let (out, _) = kill_when(spawn(&same), || false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(dp::checkpoint::load::<Cifar10Cnn>(&checkpoint).unwrap().steps, steps);

    // Another batch size: another sampling rate and another plan.
    let mut other = args.clone();
    let batch = other.iter().position(|a| a == "--batch-size").unwrap();
    other[batch + 1] = "4".to_string();
    other.extend(["--resume".to_string(), checkpoint.to_str().unwrap().to_string()]);
    let (out, _) = kill_when(spawn(&other), || false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sampling rate") || stderr.contains("batch"), "{stderr}");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before, "the checkpoint is left as it was");

    // Another model.
    let mut wrong_model = args.clone();
    let model = wrong_model.iter().position(|a| a == "cifar10-cnn").unwrap();
    wrong_model[model] = "residual-cnn".to_string();
    wrong_model.extend(["--resume".to_string(), checkpoint.to_str().unwrap().to_string()]);
    let (out, _) = kill_when(spawn(&wrong_model), || false);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before);
}
