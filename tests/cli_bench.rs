//! Runs `dp bench` on tiny batches: the JSON objects and their fields against the models' static plans,
//! the Markdown table, `--max-batch` against the budget, `--peak`, and the one-line, exit-code-2 errors.
//! Benchmarks measure; these tests check shapes and values that do not depend on the machine's speed.

use dp::models::{AdultFfnn, AdultLogReg};
use dp::DpModel;
use serde_json::{Map, Value};
use std::process::{Command, Output};

const DP: &str = env!("CARGO_BIN_EXE_dp");
/// The built-in models `dp bench --all` covers.
const MODELS: &[&str] = dp::cli::registry::NAMES;

fn dp(args: &[&str]) -> Output {
    Command::new(DP).arg("bench").args(args).output().expect("the dp binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Every stdout line of a successful run, parsed as a JSON object.
fn objects(output: &Output) -> Vec<Map<String, Value>> {
    assert!(output.status.success(), "dp bench failed: {}", stderr(output));
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        })
        .collect()
}

fn positive(map: &Map<String, Value>, key: &str) -> f64 {
    let v = map[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number: {map:?}"));
    assert!(v > 0.0 && v.is_finite(), "{key} = {v}");
    v
}

fn plan_flops<M: DpModel>(batch: u64) -> u64 {
    M::LAYERS.iter().map(|l| l.flops_per_example).sum::<u64>() * batch
}

#[test]
fn one_model_json_has_every_field_from_the_plan() {
    let out = dp(&["--model", "ffnn", "--batch-size", "5", "--steps", "3", "--warmup", "1", "--json"]);
    let maps = objects(&out);
    assert_eq!(maps.len(), 1, "one object for one model");
    let m = &maps[0];
    assert_eq!(m["model"], "ffnn");
    assert_eq!(m["model_type"], "AdultFfnn");
    assert_eq!(m["batch_size"], 5);
    assert_eq!(m["parameters"], AdultFfnn::PARAM_COUNT);
    assert_eq!(m["steps"], 3);
    assert_eq!(m["warmup"], 1);
    assert_eq!(m["bytes_per_example"], AdultFfnn::WORKSPACE_PER_EXAMPLE as u64 * 4);
    assert_eq!(m["workspace_fixed_bytes"], AdultFfnn::WORKSPACE_FIXED as u64 * 4);
    assert_eq!(m["flops_per_step"], plan_flops::<AdultFfnn>(5));
    assert_eq!(m["gflops_per_step"].as_f64().unwrap(), plan_flops::<AdultFfnn>(5) as f64 / 1e9);
    for prefix in ["private", "nonprivate"] {
        let median = positive(m, &format!("{prefix}_ms_median"));
        let min = positive(m, &format!("{prefix}_ms_min"));
        let max = positive(m, &format!("{prefix}_ms_max"));
        assert!(min <= median && median <= max, "{prefix}: {min} {median} {max}");
        let per_s = positive(m, &format!("{prefix}_examples_per_s"));
        assert!((per_s - 5.0 / (median * 1e-3)).abs() <= 1e-6 * per_s, "{prefix} examples/s");
        let gflops = positive(m, &format!("{prefix}_gflops_per_s"));
        let want = plan_flops::<AdultFfnn>(5) as f64 / (median * 1e-3) / 1e9;
        assert!((gflops - want).abs() <= 1e-6 * want, "{prefix} GFLOP/s");
    }
    assert!(positive(m, "threads") >= 1.0);
    assert!(positive(m, "peak_rss_bytes") > 1e5, "a process takes more than 100 kB");
}

#[test]
fn a_single_mode_leaves_the_other_null_and_threads_are_set() {
    let out = dp(&[
        "--model",
        "logreg",
        "--batch-size",
        "3",
        "--steps",
        "2",
        "--mode",
        "private",
        "--threads",
        "1",
        "--json",
    ]);
    let m = &objects(&out)[0];
    positive(m, "private_ms_median");
    assert!(m["nonprivate_ms_median"].is_null(), "{m:?}");
    // The overlapped step is a device's (the CPU trainer has no step to overlap with).
    assert!(m["private_overlapped_ms_median"].is_null(), "{m:?}");
    // So is the step with its noise drawn after the program rather than beside it.
    assert!(m["private_noise_after_ms_median"].is_null(), "{m:?}");
    // And the overlapped step with the next batch copied in behind it rather than beside it.
    assert!(m["private_copies_behind_ms_median"].is_null(), "{m:?}");
    assert_eq!(m["threads"], 1);
    assert_eq!(m["parameters"], AdultLogReg::PARAM_COUNT);

    let out =
        dp(&["--model", "logreg", "--batch-size", "3", "--steps", "2", "--mode", "non-private", "--json"]);
    let m = &objects(&out)[0];
    assert!(m["private_ms_median"].is_null(), "{m:?}");
    positive(m, "nonprivate_ms_median");
}

#[test]
fn all_gives_one_object_per_model_or_a_markdown_table() {
    let out = dp(&["--all", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--json"]);
    let maps = objects(&out);
    let names: Vec<&str> = maps.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, MODELS.to_vec());
    assert!(maps.iter().all(|m| m["batch_size"] == 2));

    let out = dp(&["--all", "--batch-size", "2", "--steps", "1", "--warmup", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + MODELS.len(), "{text}");
    assert!(lines[0].starts_with("| model | batch | private ms | non-private ms |"), "{text}");
    assert!(lines[1].starts_with("|---|"), "{text}");
    for (line, name) in lines[2..].iter().zip(MODELS) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 8, "{line}");
        assert_eq!(cells[0], *name);
        assert_eq!(cells[1], "2");
        assert!(cells[2].parse::<f64>().unwrap() > 0.0 && cells[3].parse::<f64>().unwrap() > 0.0, "{line}");
    }
}

#[test]
fn text_report_names_the_model_and_both_steps() {
    let out = dp(&["--model", "logreg", "--batch-size", "4", "--steps", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("logreg (AdultLogReg, 105 parameters): batch 4"), "{text}");
    for needle in
        ["private ", "non-private ", "private / non-private: ", "bytes per example", "peak resident"]
    {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
}

#[test]
fn max_batch_is_the_largest_that_fits_the_budget_and_runs() {
    let budget: u64 = 8 << 20;
    let out = dp(&["--max-batch", "--memory-budget", "8MiB", "--model", "ffnn", "--json"]);
    let m = &objects(&out)[0];
    assert_eq!(m["model"], "ffnn");
    assert_eq!(m["memory_budget_bytes"], budget);
    let per_example = m["bytes_per_example"].as_u64().unwrap();
    let fixed = m["fixed_bytes"].as_u64().unwrap();
    let batch = m["max_batch_size"].as_u64().unwrap();
    // At least the model's arena and one input of 104 floats per example; at least params and clipped sum.
    assert!(per_example >= AdultFfnn::WORKSPACE_PER_EXAMPLE as u64 * 4 + 104 * 4, "{m:?}");
    assert!(fixed >= AdultFfnn::PARAM_COUNT as u64 * 8, "{m:?}");
    assert!(batch >= 1 && fixed + batch * per_example <= budget, "{m:?}");
    assert!(fixed + (batch + 1) * per_example > budget, "a larger batch would fit: {m:?}");
    positive(m, "step_ms");
    assert_eq!(m["confirmed"], true);

    let out = dp(&["--max-batch", "--memory-budget", "32MiB", "--json"]);
    let names: Vec<String> = objects(&out).iter().map(|m| m["model"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, MODELS.to_vec());
}

#[test]
fn peak_reports_gemm_throughput_per_size() {
    let out = dp(&["--peak", "--peak-sizes", "32,64", "--threads", "1", "--json"]);
    let maps = objects(&out);
    assert_eq!(maps.len(), 2);
    for (m, n) in maps.iter().zip([32, 64]) {
        assert_eq!(m["n"], n);
        assert_eq!(m["threads"], 1);
        positive(m, "gflops_per_s");
    }
}

/// Runs an invalid command line: exit status 2 and one stderr line containing `needle`.
fn rejected(args: &[&str], needle: &str) {
    let out = dp(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
}

#[test]
fn invalid_arguments_name_the_flag_and_exit_with_2() {
    rejected(&["--model", "ffnn", "--steps", "0"], "--steps must be at least 1");
    rejected(&["--model", "ffnn", "--batch-size", "0"], "--batch-size must be at least 1");
    rejected(&["--model", "ffnn", "--threads", "0"], "--threads must be at least 1");
    rejected(&["--model", "resnet-1000"], "--model \"resnet-1000\" is not a built-in model");
    rejected(&[], "give --all, --max-batch or --peak");
    rejected(&["--model", "ffnn", "--mode", "fast"], "--mode");
    rejected(&["--model", "ffnn", "--steps", "-3"], "'-3'");
    rejected(&["--all", "--model", "ffnn"], "--model");
    rejected(&["--model", "ffnn", "--memory-budget", "1GiB"], "--max-batch");
    rejected(&["--max-batch", "--memory-budget", "8 parsecs"], "unknown unit");
    rejected(
        &["--max-batch", "--memory-budget", "1KiB", "--model", "ffnn"],
        "--memory-budget 1024 bytes do not hold",
    );
    rejected(&["--peak", "--peak-sizes", "0"], "--peak-sizes must all be at least 1");
    rejected(&["--peak-sizes", "8"], "--peak");
    rejected(&["--model", "ffnn", "--device", "tpu"], "unknown device `tpu`: expected cpu, cuda or cuda:N");
    if cfg!(not(feature = "cuda")) {
        rejected(
            &["--model", "ffnn", "--device", "cuda:0"],
            "--device needs a dp built with the `cuda` feature",
        );
    } else {
        rejected(&["--device", "cuda:0", "--peak"], "--device cuda times steps only");
    }
}
