//! The table of bad inputs in docs/CLI.md, run: every subcommand given missing files, files of the
//! wrong format, out-of-range numbers and conflicting flags answers with exit status 2 and one
//! `error:` line (followed by clap's usage for a missing or unknown flag) naming the flag or the file,
//! never panics, and writes no output file.

use std::path::{Path, PathBuf};
use std::process::Command;

const ADULT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/adult");
const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("dp-cli-bad-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file in `dir`, to check that a refused command wrote nothing.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_bad_input_of_every_subcommand_exits_2_with_one_line_naming_the_culprit() {
    let dir = TempDir::new();
    // Inputs: a text file posing as each binary format, an empty folder, a valid .npy pair.
    let junk = dir.path("junk.npy");
    std::fs::write(&junk, b"not a numpy file").unwrap();
    let not_weights = dir.path("junk.safetensors");
    std::fs::write(&not_weights, b"{}").unwrap();
    let empty_dir = dir.path("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let out = dir.path("out.safetensors");
    let plot = dir.path("run.svg");
    let missing = dir.path("missing");

    let train_on = |data: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["train", "--model", "ffnn", "--data", data];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect()
    };
    let train = |extra: &[&str]| train_on(ADULT, extra);
    let step = |extra: &[&str]| -> Vec<String> {
        let mut args =
            vec!["step", "--model", "ffnn", "--clip-norm", "1", "--lr", "0.1", "--noise-multiplier", "1"];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect()
    };
    let cmd = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).collect() };
    // `dp step` on the junk files, with exactly the numeric flags given.
    let step_flags = |flags: &[&str]| -> Vec<String> {
        let mut args = vec!["step", "--model", "ffnn", "--init", &not_weights, "--inputs", &junk];
        args.extend_from_slice(&["--labels", &junk, "--out", &out]);
        args.extend_from_slice(flags);
        args.iter().map(|s| s.to_string()).collect()
    };

    // (what is wrong, the command line, what the one error line must contain)
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        ("unknown flag", cmd(&["models", "--wide"]), "--wide".into()),
        ("unknown model", cmd(&["describe", "--model", "resnet"]), "--model".into()),
        ("missing --model", cmd(&["describe"]), "--model".into()),
        // dp train: files
        ("missing data folder", train_on(&missing, &["--target-epsilon", "1"]), "missing".into()),
        (
            "data folder without the files",
            train_on(&empty_dir, &["--target-epsilon", "1"]),
            "adult_train.csv".into(),
        ),
        (
            "MNIST folder for an Adult model",
            train_on(MNIST, &["--target-epsilon", "1"]),
            "adult_train.csv".into(),
        ),
        (
            "resume from a file that is not a checkpoint",
            train(&["--target-epsilon", "1", "--resume", &not_weights, "--save", &out]),
            "junk.safetensors".into(),
        ),
        (
            "resume from a missing checkpoint",
            train(&["--target-epsilon", "1", "--resume", &missing]),
            "missing".into(),
        ),
        // dp train: numbers
        ("negative ε", train(&["--target-epsilon", "-1"]), "--target-epsilon".into()),
        ("δ above 1", train(&["--target-epsilon", "1", "--delta", "2"]), "--delta".into()),
        ("δ ≥ 1/N", train(&["--target-epsilon", "1", "--delta", "0.001"]), "--delta".into()),
        ("zero clip norm", train(&["--target-epsilon", "1", "--clip-norm", "0"]), "--clip-norm".into()),
        ("NaN learning rate", train(&["--target-epsilon", "1", "--lr", "NaN"]), "--lr".into()),
        ("zero batch", train(&["--target-epsilon", "1", "--batch-size", "0"]), "--batch-size".into()),
        ("batch above N", train(&["--target-epsilon", "1", "--batch-size", "100000"]), "--batch-size".into()),
        ("negative epochs", train(&["--target-epsilon", "1", "--epochs", "-2"]), "--epochs".into()),
        (
            "final lr fraction above 1",
            train(&["--target-epsilon", "1", "--final-lr-fraction", "2"]),
            "--final-lr-fraction".into(),
        ),
        ("zero max steps", train(&["--target-epsilon", "1", "--max-steps", "0"]), "--max-steps".into()),
        ("negative noise multiplier", train(&["--noise-multiplier", "-1"]), "--noise-multiplier".into()),
        ("not a number", train(&["--target-epsilon", "three"]), "--target-epsilon".into()),
        ("unknown precision", train(&["--target-epsilon", "1", "--precision", "fp16"]), "--precision".into()),
        ("unknown device", train(&["--target-epsilon", "1", "--device", "gpu0"]), "--device".into()),
        // Without the feature the build refuses a device, also for the non-private baseline.
        ("a device for the baseline", train(&["--non-private", "--device", "cuda:0"]), "--device".into()),
        // dp train: conflicts
        ("no privacy choice", train(&[]), "--target-epsilon".into()),
        (
            "two privacy choices",
            train(&["--target-epsilon", "1", "--noise-multiplier", "1"]),
            "--noise-multiplier".into(),
        ),
        ("resume a non-private run", train(&["--non-private", "--resume", &out]), "--resume".into()),
        (
            "another optimizer without its lr",
            train(&["--target-epsilon", "1", "--optimizer", "adam"]),
            "--lr".into(),
        ),
        ("checkpoint named .svg", train(&["--target-epsilon", "1", "--save", &plot]), "--save".into()),
        (
            "plot = checkpoint",
            train(&["--target-epsilon", "1", "--save", &out, "--plot", &out]),
            "--plot".into(),
        ),
        ("checkpoint is a folder", train(&["--target-epsilon", "1", "--save", &empty_dir]), "--save".into()),
        // dp step: files
        (
            "missing weights",
            step(&["--init", &missing, "--inputs", &junk, "--labels", &junk, "--out", &out]),
            "missing".into(),
        ),
        (
            "weights not safetensors",
            step(&["--init", &not_weights, "--inputs", &junk, "--labels", &junk, "--out", &out]),
            "junk.safetensors".into(),
        ),
        // dp step: numbers and conflicts
        (
            "zero clip norm (step)",
            step_flags(&["--clip-norm", "0", "--lr", "1", "--noise-multiplier", "1"]),
            "--clip-norm".into(),
        ),
        ("no noise multiplier", step_flags(&["--clip-norm", "1", "--lr", "1"]), "--noise-multiplier".into()),
        (
            "output is the weights",
            step(&["--init", &not_weights, "--inputs", &junk, "--labels", &junk, "--out", &not_weights]),
            "--init".into(),
        ),
        (
            "norms over the output",
            step(&[
                "--init",
                &not_weights,
                "--inputs",
                &junk,
                "--labels",
                &junk,
                "--out",
                &out,
                "--norms-out",
                &out,
            ]),
            "--out".into(),
        ),
        // dp privacy
        (
            "sampling rate above 1",
            cmd(&[
                "privacy",
                "epsilon",
                "--sampling-rate",
                "2",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ]),
            "--sampling-rate".into(),
        ),
        (
            "zero steps",
            cmd(&[
                "privacy",
                "noise",
                "--sampling-rate",
                "0.01",
                "--steps",
                "0",
                "--delta",
                "1e-5",
                "--target-epsilon",
                "1",
            ]),
            "--steps".into(),
        ),
        (
            "unknown accountant",
            cmd(&[
                "privacy",
                "epsilon",
                "--sampling-rate",
                "0.01",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
                "--accountant",
                "prv",
            ]),
            "--accountant".into(),
        ),
        // dp bench
        ("zero bench steps", cmd(&["bench", "--model", "ffnn", "--steps", "0"]), "--steps".into()),
        (
            "unknown bench precision",
            cmd(&["bench", "--model", "ffnn", "--precision", "f16"]),
            "--precision".into(),
        ),
        ("bench flags in conflict", cmd(&["bench", "--all", "--model", "ffnn"]), "--model".into()),
    ];

    let before = listing(&dir.0);
    let mut failures = Vec::new();
    for (what, args, needle) in &cases {
        let output = Command::new(env!("CARGO_BIN_EXE_dp")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        let ok = output.status.code() == Some(2)
            && !stderr.contains("panicked")
            && error_lines.len() == 1
            && stderr.contains(needle.as_str())
            && listing(&dir.0) == before;
        if !ok {
            failures.push(format!("{what}: {args:?} -> {:?}\n{stderr}", output.status.code()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
