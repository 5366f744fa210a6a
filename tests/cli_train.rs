//! `dp train`, `dp models` and `dp describe` run as a binary: short runs on the shipped Adult data
//! (text and JSON output, checkpoint and plot), a short MNIST-CNN run on small IDX files written here,
//! and every kind of bad data file.

mod common;

use common::{dp, s, text, TempDir, ADULT};

use std::io::Write;
use std::path::Path;
use std::process::Output;

#[test]
fn models_lists_every_registered_model_with_shape_and_parameters() {
    let out = dp(&["models"]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    for (name, model, params) in
        [("logreg", "AdultLogReg", "105"), ("ffnn", "AdultFfnn", "5352"), ("mnist-cnn", "MnistCnn", "26010")]
    {
        let line = listing.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing"));
        assert!(line.contains(model) && line.contains(params), "{line}");
    }
    let out = dp(&["models", "--json"]);
    let rows: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mnist = rows.iter().find(|r| r["name"] == "mnist-cnn").unwrap();
    assert_eq!(mnist["input_shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(mnist["parameters"], 26010);
    assert_eq!(mnist["device"], "device program");
    let lstm = rows.iter().find(|r| r["name"] == "lstm").unwrap();
    assert_eq!(lstm["device"], "device program");
    let transformer = rows.iter().find(|r| r["name"] == "text-transformer").unwrap();
    assert_eq!(transformer["device"], "device program");
    let ffnn = rows.iter().find(|r| r["name"] == "ffnn").unwrap();
    assert_eq!(ffnn["device"], "device program");

    let out = dp(&["describe", "--model", "ffnn"]);
    assert!(out.status.success());
    let plan = text(&out.stdout);
    assert!(plan.contains("AdultFfnn: 5352 parameters") && plan.contains("linear(out = 50)"), "{plan}");
    let out = dp(&["describe", "--model", "resnet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--model unknown model \"resnet\""));
}

fn adult_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        model,
        "--data",
        ADULT,
        "--clip-norm",
        "1",
        "--lr",
        "0.5",
        "--batch-size",
        "256",
        "--epochs",
        "3",
        "--seed",
        "3",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn adult_run_cut_by_max_steps_prints_accuracy_and_epsilon() {
    let out = dp(&adult_args("ffnn", &["--target-epsilon", "1", "--max-steps", "40"]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped after 40 of 382 planned steps (--max-steps 40)"), "{stderr}");
    let summary = stdout.lines().last().unwrap();
    let number_after = |key: &str| -> f64 {
        let rest = &summary[summary.find(key).unwrap_or_else(|| panic!("{key} in {summary}")) + key.len()..];
        rest.trim_start().split([' ', '%', ',']).next().unwrap().parse().unwrap()
    };
    let (accuracy, epsilon) = (number_after("test accuracy"), number_after("epsilon"));
    // 40 steps already beat the 76% majority class; ε is spent on 40 of 382 steps only.
    assert!(accuracy > 78.0 && accuracy <= 100.0, "{summary}");
    assert!(epsilon > 0.0 && epsilon < 1.0, "{summary}");
    assert!(summary.contains("40 steps"), "{summary}");
}

/// `--max-physical-batch` runs a batch in chunks with the step and its privacy unchanged: the same ε
/// and about the same accuracy as the run in one piece; 0, or with --non-private, is refused.
#[test]
fn max_physical_batch_chunks_the_step_and_bad_values_are_refused() {
    let last = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--noise-multiplier", "1.0", "--json", "--max-steps", "20"];
        args.extend_from_slice(extra);
        let out = dp(&adult_args("ffnn", &args));
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap()
    };
    let (whole, chunked) = (last(&[]), last(&["--max-physical-batch", "37"]));
    assert_eq!(whole["epsilon"], chunked["epsilon"]);
    let accuracy = |e: &serde_json::Value| e["accuracy"].as_f64().unwrap();
    assert!((accuracy(&whole) - accuracy(&chunked)).abs() <= 0.005, "{whole} vs {chunked}");

    let out = dp(&adult_args("ffnn", &["--noise-multiplier", "1.0", "--max-physical-batch", "0"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--max-physical-batch") && stderr.contains("at least 1"), "{stderr}");
    let out = dp(&adult_args("ffnn", &["--non-private", "--max-physical-batch", "8"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--max-physical-batch") && stderr.contains("--non-private"), "{stderr}");
}

#[test]
fn json_lines_parse_and_checkpoint_and_plot_are_written() {
    let dir = TempDir::new("cli-train", "json");
    let checkpoint = dir.path("logreg.safetensors");
    let out = dp(&adult_args("logreg", &["--noise-multiplier", "1.0", "--json", "--save", s(&checkpoint)]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let epochs: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert_eq!(epochs.len(), 3);
    let mut previous_epsilon = 0.0;
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i + 1);
        for key in ["accuracy", "epsilon", "steps", "seconds"] {
            assert!(e[key].is_number(), "{key} in {e}");
        }
        // Private by default: no statistic of the training data.
        assert!(
            e.get("loss").is_none() && e.get("diagnostics").is_none() && e.get("not_private").is_none(),
            "{e}"
        );
        let epsilon = e["epsilon"].as_f64().unwrap();
        assert!(epsilon > previous_epsilon, "ε grows");
        previous_epsilon = epsilon;
    }
    assert_eq!(epochs[2]["steps"], 382);
    assert!(epochs[2]["accuracy"].as_f64().unwrap() > 0.8);

    let saved = dp::checkpoint::load::<dp::models::AdultLogReg>(&checkpoint).unwrap();
    assert_eq!(saved.steps, 382);
    let svg = std::fs::read_to_string(checkpoint.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("test accuracy (%)"));
}

#[test]
fn non_private_baseline_runs_with_infinite_epsilon() {
    let out = dp(&[
        "train",
        "--model",
        "ffnn",
        "--data",
        ADULT,
        "--non-private",
        "--lr",
        "0.5",
        "--batch-size",
        "256",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--json",
        "--max-steps",
        "30",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert!(line["epsilon"].is_null(), "no ε: {line}");
    assert_eq!(line["steps"], 30);
    let out = dp(&[
        "train",
        "--model",
        "ffnn",
        "--data",
        ADULT,
        "--lr",
        "0.5",
        "--batch-size",
        "256",
        "--epochs",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2), "a privacy choice is required");
}

/// An IDX file: magic (two zeros, type 0x08 = u8, dimensions), sizes, bytes.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// A small MNIST folder: `n` 28×28 images of a bright square at a place fixed by the label.
fn write_mnist(dir: &Path, n: usize, side: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let mut pixels = vec![0u8; n * (side * side) as usize];
    for (i, &l) in labels.iter().enumerate() {
        for k in 0..4 {
            pixels[i * (side * side) as usize + l as usize * 2 + k * side as usize] = 255;
        }
    }
    for (prefix, _) in [("train", ()), ("t10k", ())] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(&[n as u32, side, side], &pixels),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), idx(&[n as u32], &labels)).unwrap();
    }
}

fn mnist_train(data: &Path, save: &Path) -> Output {
    dp(&[
        "train",
        "--model",
        "mnist-cnn",
        "--data",
        s(data),
        "--noise-multiplier",
        "1",
        "--clip-norm",
        "1",
        "--lr",
        "0.1",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--save",
        s(save),
    ])
}

fn fails(output: Output, save: &Path, needle: &str) {
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{needle}: should fail");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!save.exists() && !save.with_extension("svg").exists(), "{needle}: nothing written");
}

#[test]
fn mnist_cnn_trains_on_idx_files_and_bad_files_are_one_line_errors() {
    let dir = TempDir::new("cli-train", "mnist");
    let good = dir.path("good");
    write_mnist(&good, 40, 28);
    let save = dir.path("cnn.safetensors");
    let out = mnist_train(&good, &save);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(save.exists());

    let save = dir.path("never.safetensors");
    let broken = |name: &str, file: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let folder = dir.path(name);
        write_mnist(&folder, 40, 28);
        let path = folder.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        edit(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        folder
    };
    let magic = broken("magic", "train-images-idx3-ubyte", &|b| b[0] = 7);
    fails(mnist_train(&magic, &save), &save, "train-images-idx3-ubyte");
    let truncated = broken("truncated", "t10k-images-idx3-ubyte", &|b| b.truncate(b.len() - 100));
    fails(mnist_train(&truncated, &save), &save, "t10k-images-idx3-ubyte");
    let label = broken("label", "train-labels-idx1-ubyte", &|b| b[10] = 10);
    fails(mnist_train(&label, &save), &save, "train-labels-idx1-ubyte");
    let small = dir.path("small");
    write_mnist(&small, 40, 27);
    fails(mnist_train(&small, &save), &save, "28×28");
    let empty = dir.path("empty");
    write_mnist(&empty, 0, 28);
    fails(mnist_train(&empty, &save), &save, "empty");
    fails(mnist_train(&dir.path("missing"), &save), &save, "missing");
}

#[test]
fn bad_adult_files_are_one_line_errors() {
    let dir = TempDir::new("cli-train", "adult");
    let save = dir.path("never.safetensors");
    let header = "age,workclass,fnlwgt,education,education-num,marital-status,occupation,relationship,race,sex,capital-gain,capital-loss,hours-per-week,native-country,income";
    let row = |age: &str, income: &str| {
        format!("{age},Private,1,Bachelors,13,Never-married,Sales,Husband,White,Male,0,0,40,United-States,{income}")
    };
    let write = |name: &str, train: &str, test: &str| {
        let folder = dir.path(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::File::create(folder.join("adult_train.csv")).unwrap().write_all(train.as_bytes()).unwrap();
        std::fs::File::create(folder.join("adult_test.csv")).unwrap().write_all(test.as_bytes()).unwrap();
        folder
    };
    let good_rows = format!("{header}\n{}\n{}\n", row("30", "<=50K"), row("50", ">50K"));
    let run = |folder: &Path| {
        dp(&[
            "train",
            "--model",
            "logreg",
            "--data",
            s(folder),
            "--noise-multiplier",
            "1",
            "--clip-norm",
            "1",
            "--lr",
            "0.1",
            "--batch-size",
            "1",
            "--epochs",
            "1",
            "--save",
            s(&save),
        ])
    };
    let nan = write("nan", &format!("{header}\n{}\n", row("nan", "<=50K")), &good_rows);
    fails(run(&nan), &save, "adult_train.csv");
    let label = write("label", &good_rows, &format!("{header}\n{}\n", row("40", "maybe")));
    fails(run(&label), &save, "adult_test.csv");
    let empty = write("empty", &format!("{header}\n"), &good_rows);
    fails(run(&empty), &save, "adult_train.csv");
    let ragged = write("ragged", &format!("{header}\n30,Private\n"), &good_rows);
    fails(run(&ragged), &save, "adult_train.csv");
}

#[test]
fn every_builtin_model_trains_with_only_data_and_a_target_epsilon() {
    // The recipe gives every other hyperparameter; `dp models` prints it.
    let out = dp(&["models"]);
    let listing = text(&out.stdout);
    let recipes = &listing[listing.find("recipes:").expect("a recipe table")..];
    for name in dp::cli::registry::NAMES {
        assert!(recipes.lines().any(|l| l.starts_with(name)), "{name} has no recipe line: {recipes}");
    }
    let out = dp(&["models", "--json"]);
    let mnist: serde_json::Value = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["name"] == "mnist-cnn")
        .unwrap();
    assert_eq!(mnist["recipe"]["batch_size"], 512);
    assert_eq!(mnist["recipe"]["clip_norm"], 1.0);

    let dir = TempDir::new("cli-train", "recipe");
    let data = dir.path("mnist");
    write_mnist(&data, 600, 28);
    // Only the data, the privacy target and a short cut; δ below 1/600.
    let recipe_run = |extra: &[&str]| {
        let mut args = vec!["train", "--model", "mnist-cnn", "--data", s(&data), "--target-epsilon", "3"];
        args.extend_from_slice(&["--delta", "1e-3", "--max-steps", "2"]);
        args.extend_from_slice(extra);
        dp(&args)
    };
    let out = recipe_run(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // The recipe's batch of 512 on 600 examples: q = 512/600; 30 epochs of 600 examples: 35 steps.
    assert!(stdout.contains("sampling rate 8.533e-1"), "{stdout}");
    assert!(stderr.contains("stopped after 2 of 35 planned steps"), "{stderr}");

    // A flag given overrides the recipe.
    let out = recipe_run(&["--batch-size", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sampling rate 1.000e-1"), "{}", text(&out.stdout));

    // Another optimizer needs its own learning rate.
    let out =
        dp(&["train", "--model", "ffnn", "--data", ADULT, "--target-epsilon", "3", "--optimizer", "adam"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--lr is required with --optimizer adam"), "{}", text(&out.stderr));
}

/// `dp train --model mnist-vit` runs privately end to end (the text transformer's real-data runs are
/// in docs/MODELS.md: evaluating it on the 4,492 test reviews takes minutes in a test build).
#[test]
fn the_vision_transformer_trains_privately_from_the_command_line() {
    let dir = TempDir::new("cli-train", "vit");
    let data = dir.path("mnist");
    write_mnist(&data, 64, 28);
    let mut args = vec!["train", "--model", "mnist-vit", "--data", s(&data), "--delta", "1e-3"];
    args.extend_from_slice(&[
        "--target-epsilon",
        "3",
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--seed",
        "7",
    ]);
    let out = dp(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("test accuracy") && stdout.contains("epsilon"), "{stdout}");
    assert!(stderr.contains("stopped after 1 of"), "{stderr}");
}

#[test]
fn outputs_that_collide_with_each_other_or_with_an_input_are_refused_before_training() {
    let dir = TempDir::new("cli-train", "collide");
    // `--save run.svg`: the plot beside the checkpoint would be the checkpoint itself.
    let svg = dir.path("run.svg");
    let out = dp(&adult_args("logreg", &["--noise-multiplier", "1", "--save", s(&svg)]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--save"), "{}", text(&out.stderr));
    assert!(!svg.exists(), "nothing written");

    // `--plot` equal to `--save`, spelled differently.
    let save = dir.path("run.safetensors");
    let other_spelling = dir.path(".").join("run.safetensors");
    let out = dp(&adult_args(
        "logreg",
        &["--noise-multiplier", "1", "--save", s(&save), "--plot", s(&other_spelling)],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--plot") && text(&out.stderr).contains("--save"),
        "{}",
        text(&out.stderr)
    );
    assert!(!save.exists());

    // An output that is a file of the data folder.
    let data = dir.path("adult");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["adult_train.csv.gz", "adult_test.csv.gz"] {
        std::fs::copy(Path::new(ADULT).join(name), data.join(name)).unwrap();
    }
    let train_file = data.join("adult_train.csv.gz");
    let before = std::fs::read(&train_file).unwrap();
    let mut args = adult_args("logreg", &["--noise-multiplier", "1", "--save", s(&train_file)]);
    let at = args.iter().position(|a| *a == ADULT).unwrap();
    args[at] = s(&data);
    let out = dp(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("inside --data"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&train_file).unwrap(), before, "the data file is untouched");
}

#[test]
fn non_private_diagnostics_are_off_by_default_and_marked_when_asked_for() {
    let out = dp(&adult_args(
        "ffnn",
        &["--noise-multiplier", "1", "--json", "--max-steps", "20", "--non-private-diagnostics"],
    ));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["not_private"], true, "{line}");
    assert_eq!(line["diagnostics"]["not_private"], true, "{line}");
    assert!(line["diagnostics"]["train_loss"].is_number(), "{line}");
    assert!(line["diagnostics"]["mean_batch_size"].is_number(), "{line}");
    // Every stderr line that carries a training statistic says so.
    for l in stderr.lines().filter(|l| l.contains("train loss") || l.contains("batch size")) {
        assert!(l.contains("not private"), "{l}");
    }

    let out = dp(&adult_args("ffnn", &["--noise-multiplier", "1", "--max-steps", "20"]));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("not private") && !stderr.contains("train loss"), "{stderr}");
    assert!(!stderr.contains("batch size") && !stderr.contains("non-finite"), "{stderr}");
}

#[test]
fn without_model_the_kind_of_data_picks_the_recommended_model() {
    let dir = TempDir::new("cli-train", "recommended");
    let mnist = dir.path("idx");
    write_mnist(&mnist, 40, 28);
    let out = dp(&[
        "train",
        "--data",
        s(&mnist),
        "--noise-multiplier",
        "1",
        "--batch-size",
        "8",
        "--max-steps",
        "1",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("IDX images") && stderr.contains("recommended model scatter-cnn"), "{stderr}");
    assert!(stderr.contains("ScatterCnn"), "{stderr}");

    let out = dp(&["train", "--data", ADULT, "--noise-multiplier", "1", "--max-steps", "1"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("recommended model ffnn"), "{stderr}");

    let unknown = dir.path("unknown");
    std::fs::create_dir_all(&unknown).unwrap();
    let out = dp(&["train", "--data", s(&unknown), "--noise-multiplier", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--data") && stderr.contains("give --model"), "{stderr}");
}

#[test]
fn ema_is_checked_and_the_tanh_cnn_standardises_with_public_constants() {
    let adult = |ema: &str| {
        dp(&[
            "train",
            "--model",
            "ffnn",
            "--data",
            ADULT,
            "--noise-multiplier",
            "1",
            "--ema",
            ema,
            "--max-steps",
            "3",
        ])
    };
    let out = adult("1.5");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--ema"), "{}", text(&out.stderr));
    let out = adult("0.9");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = dp(&[
        "train",
        "--model",
        "ffnn",
        "--data",
        ADULT,
        "--non-private",
        "--ema",
        "0.9",
        "--max-steps",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--ema"), "{}", text(&out.stderr));

    let dir = TempDir::new("cli-train", "tanh");
    let mnist = dir.path("idx");
    write_mnist(&mnist, 40, 28);
    let out = dp(&[
        "train",
        "--model",
        "mnist-cnn-tanh",
        "--data",
        s(&mnist),
        "--noise-multiplier",
        "1",
        "--batch-size",
        "8",
        "--max-steps",
        "1",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("standardised with the public constants mean 0.1307 and std 0.3081"), "{stderr}");
}

#[test]
fn augmentation_multiplicity_runs_on_image_models_and_is_refused_elsewhere() {
    let dir = TempDir::new("cli-train", "views");
    let mnist = dir.path("idx");
    write_mnist(&mnist, 40, 28);
    let mnist_run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "mnist-cnn",
            "--data",
            s(&mnist),
            "--noise-multiplier",
            "1",
            "--batch-size",
            "8",
            "--max-steps",
            "2",
        ];
        args.extend_from_slice(extra);
        dp(&args)
    };
    let out = mnist_run(&["--augment-views", "3", "--augment-crop", "2"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("augmentation multiplicity: 3 views per example (crop padding 2 of value 0, no flips)"),
        "{stderr}"
    );

    let refused = |out: Output, needle: &str| {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--augment-views") && stderr.contains(needle), "{needle:?} not in {stderr}");
    };
    refused(mnist_run(&["--augment-views", "3"]), "every view is the image itself");
    refused(mnist_run(&["--augment-views", "0", "--augment-flip"]), "at least 1");
    refused(mnist_run(&["--augment-views", "2", "--augment-crop", "28"]), "crop padding 28");
    let out = dp(&adult_args("ffnn", &["--noise-multiplier", "1", "--augment-views", "2", "--augment-flip"]));
    refused(out, "not an image");
    let out = mnist_run(&["--augment-crop", "2"]);
    assert_eq!(out.status.code(), Some(2), "--augment-crop needs --augment-views");
}
