//! `dp train --init`: pretrained weights written by PyTorch (tests/fixtures/pretrained, made by the
//! script beside them) loaded with PyTorch's strict semantics and a rename map.

mod common;

use std::path::Path;

use common::{dp, s, text, TempDir, ADULT};

const FIXTURE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pretrained/adult_ffnn_torch.safetensors");

fn train<'a>(model: &'a str, save: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        model,
        "--data",
        ADULT,
        "--non-private",
        "--batch-size",
        "256",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--seed",
        "5",
        "--save",
        save,
        "--init",
        FIXTURE,
    ];
    args.extend_from_slice(extra);
    args
}

fn tensor(path: &Path, name: &str) -> Vec<f32> {
    let dict = dp::pytorch::read(path).unwrap();
    dict.tensors
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} in {}", path.display()))
        .values
}

fn refused(args: &[&str], needles: &[&str]) {
    let out = dp(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} must be refused: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
}

#[test]
fn pytorch_weights_renamed_and_not_strict_are_the_starting_point() {
    let dir = TempDir::new("cli-init", "loaded");
    let save = dir.path("after.safetensors");
    // A learning rate far below f32's resolution of these weights: one step leaves them as loaded.
    let args = train("ffnn", s(&save), &["--lr", "1e-30", "--init-rename", "body=", "--init-non-strict"]);
    let out = dp(&args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("4 tensors (5352 values) loaded, 4 renamed"), "{stderr}");
    assert!(stderr.contains("ignored (not in the model): temperature"), "{stderr}");
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
        let loaded = tensor(&save, name);
        let torch = tensor(Path::new(FIXTURE), &format!("body.{name}"));
        assert_eq!(loaded, torch, "{name} is PyTorch's tensor in PyTorch's layout");
    }

    // Without --init the same seed starts elsewhere: the comparison above is not vacuous.
    let fresh = dir.path("fresh.safetensors");
    let mut args = train("ffnn", s(&fresh), &["--lr", "1e-30"]);
    let at = args.iter().position(|a| *a == "--init").unwrap();
    args.drain(at..at + 2);
    assert!(dp(&args).status.success());
    assert_ne!(tensor(&fresh, "fc1.weight"), tensor(Path::new(FIXTURE), "body.fc1.weight"));
}

#[test]
fn strict_loading_lists_every_missing_and_unexpected_key() {
    let dir = TempDir::new("cli-init", "strict");
    let save = dir.path("w.safetensors");
    refused(
        &train("ffnn", s(&save), &["--lr", "0.1"]),
        &[
            "missing key(s): fc1.weight, fc1.bias, fc2.weight, fc2.bias",
            "unexpected key(s): body.fc1.bias",
            "temperature",
        ],
    );
    refused(
        &train("ffnn", s(&save), &["--lr", "0.1", "--init-rename", "body="]),
        &["unexpected key(s): temperature"],
    );
    assert!(!save.exists(), "nothing is trained or written after a refusal");
}

#[test]
fn a_shape_that_differs_names_the_tensor_under_both_names() {
    let dir = TempDir::new("cli-init", "shape");
    let save = dir.path("w.safetensors");
    refused(
        &train("logreg", s(&save), &["--lr", "0.1", "--init-rename", "body.fc1=fc", "--init-non-strict"]),
        &["body.fc1.weight (renamed fc.weight)", "shape [50, 104], the model's parameter is [1, 104]"],
    );
}

#[test]
fn init_flags_that_cannot_work_are_refused_before_training() {
    let dir = TempDir::new("cli-init", "flags");
    let save = dir.path("w.safetensors");
    refused(
        &train("ffnn", s(&save), &["--lr", "0.1", "--init-rename", "body"]),
        &["--init-rename", "FROM=TO"],
    );
    refused(
        &["train", "--model", "ffnn", "--data", ADULT, "--non-private", "--init-non-strict"],
        &["--init"],
    );
    refused(&train("ffnn", FIXTURE, &["--lr", "0.1"]), &["--save", "writing it would destroy an input"]);
    refused(
        &[
            "train",
            "--model",
            "ffnn",
            "--data",
            ADULT,
            "--target-epsilon",
            "1",
            "--init",
            FIXTURE,
            "--resume",
            s(&save),
        ],
        &["--init", "the resumed checkpoint holds the parameters"],
    );
    let missing = dir.path("absent.safetensors");
    refused(
        &["train", "--model", "ffnn", "--data", ADULT, "--non-private", "--init", s(&missing)],
        &["absent.safetensors"],
    );
}
