//! Runs the `dp` binary's `privacy` subcommands: output formats, agreement with the library, and the
//! one-line, exit-code-2 errors for every invalid value.

use dp::accounting::{self, AccountantKind};
use std::process::{Command, Output};

const DP: &str = env!("CARGO_BIN_EXE_dp");

fn dp(args: &[&str]) -> Output {
    Command::new(DP).args(args).output().expect("the dp binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json(output: &Output) -> serde_json::Map<String, serde_json::Value> {
    assert!(output.status.success(), "dp failed: {}", stderr(output));
    let text = stdout(output);
    assert_eq!(text.trim_end().lines().count(), 1, "one JSON object on one line: {text:?}");
    match serde_json::from_str::<serde_json::Value>(&text).unwrap() {
        serde_json::Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

const MNIST: [&str; 8] = [
    "--sampling-rate",
    "0.004266666666666667",
    "--noise-multiplier",
    "1.1",
    "--steps",
    "14063",
    "--delta",
    "1e-5",
];

#[test]
fn epsilon_prints_one_readable_line() {
    let output = dp(&[&["privacy", "epsilon"][..], &MNIST].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.contains("epsilon = 2.59666"), "{text}");
    assert!(text.contains("order 8.1"), "{text}");
}

#[test]
fn epsilon_json_matches_the_library() {
    let map = json(&dp(&[&["privacy", "epsilon"][..], &MNIST, &["--json"]].concat()));
    assert_eq!(map.len(), 2, "{map:?}");
    let want = accounting::epsilon(AccountantKind::Rdp, 256.0 / 60000.0, 1.1, 14_063, 1e-5).unwrap();
    assert_eq!(map["epsilon"].as_f64().unwrap(), want.epsilon);
    assert_eq!(map["order"].as_f64().unwrap(), 8.1);

    let map = json(&dp(&[&["privacy", "epsilon"][..], &MNIST, &["--json", "--accountant", "pld"]].concat()));
    assert_eq!(map.len(), 1, "PLD has no order: {map:?}");
    let pld = map["epsilon"].as_f64().unwrap();
    assert!((pld - 2.3818).abs() / 2.3818 < 0.01, "{pld}");
}

#[test]
fn noise_calibrates_for_both_accountants() {
    for accountant in ["rdp", "pld"] {
        let args = [
            "privacy",
            "noise",
            "--sampling-rate",
            "0.01",
            "--steps",
            "500",
            "--delta",
            "1e-5",
            "--target-epsilon",
            "2",
            "--accountant",
            accountant,
            "--json",
        ];
        let map = json(&dp(&args));
        assert_eq!(map.len(), 1, "{map:?}");
        let sigma = map["noise_multiplier"].as_f64().unwrap();
        let kind: AccountantKind = accountant.parse().unwrap();
        let eps = accounting::epsilon(kind, 0.01, sigma, 500, 1e-5).unwrap().epsilon;
        assert!(eps <= 2.0 && eps > 1.99, "{accountant}: σ = {sigma} gives ε = {eps}");

        let output = dp(&args[..args.len() - 1]);
        assert!(output.status.success());
        let text = stdout(&output);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(text.starts_with("noise multiplier "), "{text}");
    }
}

/// Runs `args`, expecting exit code 2, nothing on stdout and one line on stderr starting with `prefix`.
fn expect_usage_error(args: &[&str], prefix: &str) {
    let output = dp(args);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
    assert!(stdout(&output).is_empty(), "{args:?}");
    let message = stderr(&output);
    assert!(message.starts_with(prefix), "{args:?}: {message:?}");
    assert_eq!(message.lines().count(), 1, "{args:?}: {message:?}");
}

fn with(base: &[&'static str], flag: &'static str, value: &'static str) -> Vec<&'static str> {
    let mut args = base.to_vec();
    let at = args.iter().position(|a| *a == flag).unwrap();
    args[at + 1] = value;
    args
}

#[test]
fn invalid_values_name_the_flag_and_exit_2() {
    let epsilon = [
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "100",
        "--delta",
        "1e-5",
    ];
    let noise = [
        "privacy",
        "noise",
        "--sampling-rate",
        "0.01",
        "--steps",
        "100",
        "--delta",
        "1e-5",
        "--target-epsilon",
        "1",
    ];
    for value in ["0", "-0.1", "1.5", "NaN"] {
        expect_usage_error(
            &with(&epsilon, "--sampling-rate", value),
            "error: --sampling-rate must be in (0, 1], got",
        );
        expect_usage_error(
            &with(&noise, "--sampling-rate", value),
            "error: --sampling-rate must be in (0, 1], got",
        );
    }
    expect_usage_error(
        &with(&epsilon, "--sampling-rate", "1.5"),
        "error: --sampling-rate must be in (0, 1], got 1.5",
    );
    for value in ["0", "-1", "inf"] {
        expect_usage_error(
            &with(&epsilon, "--noise-multiplier", value),
            "error: --noise-multiplier must be positive",
        );
    }
    for value in ["0", "1", "-1e-5", "2"] {
        expect_usage_error(&with(&epsilon, "--delta", value), "error: --delta must be in (0, 1), got");
        expect_usage_error(&with(&noise, "--delta", value), "error: --delta must be in (0, 1), got");
    }
    expect_usage_error(&with(&epsilon, "--steps", "0"), "error: --steps must be at least 1");
    expect_usage_error(&with(&noise, "--steps", "0"), "error: --steps must be at least 1");
    for value in ["0", "-2", "inf"] {
        expect_usage_error(
            &with(&noise, "--target-epsilon", value),
            "error: --target-epsilon must be positive",
        );
    }
    // A target that no noise can reach is a value error on the target.
    expect_usage_error(
        &with(&with(&noise, "--delta", "1e-300"), "--target-epsilon", "0.1"),
        "error: --target-epsilon",
    );
}

#[test]
fn parse_errors_exit_2() {
    let cases: [&[&str]; 5] = [
        &["privacy", "epsilon", "--sampling-rate", "0.01"],
        &[
            "privacy",
            "epsilon",
            "--sampling-rate",
            "x",
            "--noise-multiplier",
            "1",
            "--steps",
            "1",
            "--delta",
            "0.1",
        ],
        &[
            "privacy",
            "epsilon",
            "--sampling-rate",
            "0.1",
            "--noise-multiplier",
            "1",
            "--steps",
            "-3",
            "--delta",
            "0.1",
        ],
        &[
            "privacy",
            "noise",
            "--sampling-rate",
            "0.1",
            "--steps",
            "1",
            "--delta",
            "0.1",
            "--target-epsilon",
            "1",
            "--accountant",
            "prv",
        ],
        &["privacy", "frobnicate"],
    ];
    for args in cases {
        let output = dp(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stdout(&output).is_empty());
        assert!(stderr(&output).starts_with("error:"), "{args:?}: {}", stderr(&output));
    }
}
