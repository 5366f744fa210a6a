//! `dp step` run as a binary, checked against a direct f64 computation written here (one example at a
//! time: forward, backward, norm, clip, sum, noise, ÷ N, SGD), and on every kind of bad input.

mod common;

use common::{dp, s, TempDir};

use std::path::Path;

use dp::data::npy::{self, NpyArray, NpyData};
use dp::pytorch::{self, StateTensor};

/// Deterministic values in [-scale, scale).
fn values(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) as f32 * scale as f32
        })
        .collect()
}

fn tensor(name: &str, shape: &[usize], values: Vec<f32>) -> StateTensor {
    StateTensor { name: name.into(), shape: shape.to_vec(), values }
}

fn read_tensors(path: &Path) -> Vec<StateTensor> {
    pytorch::read(path).unwrap().tensors
}

fn get<'a>(tensors: &'a [StateTensor], name: &str) -> &'a [f32] {
    &tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no {name}")).values
}

fn run_ok(args: &[&str]) {
    let out = dp(args);
    assert!(out.status.success(), "dp {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The f64 reference of one step: per-example gradients from `grad(i)` (flat, in the order of
/// `shapes`), clipped, summed, without noise, ÷ N, then W − lr·g. Returns (new weights, norms).
fn reference_step(
    weights: &[f64],
    n: usize,
    clip: f64,
    lr: f64,
    grad: impl Fn(usize) -> Vec<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0.0; weights.len()];
    let mut norms = Vec::new();
    for i in 0..n {
        let g = grad(i);
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let factor = (clip / norm).min(1.0);
        sum.iter_mut().zip(&g).for_each(|(s, v)| *s += factor * v);
        norms.push(norm);
    }
    let updated = weights.iter().zip(&sum).map(|(w, s)| w - lr * s / n as f64).collect();
    (updated, norms)
}

fn assert_close(actual: &[f32], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!((a as f64 - e).abs() <= tolerance * (1.0 + e.abs()), "{what}[{i}]: {a} vs reference {e}");
    }
}

const FEATURES: usize = 104;

/// Logistic regression: z = w·x + b, loss softplus(z) − y·z, dz = σ(z) − y.
#[test]
fn logreg_step_matches_the_f64_reference_with_large_lr_and_odd_clip() {
    let dir = TempDir::new("cli-step", "logreg");
    let n = 6;
    let w = values(1, FEATURES, 0.3);
    let b = values(2, 1, 0.3);
    let x = values(3, n * FEATURES, 0.2);
    let y: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    pytorch::write(
        &dir.path("w.safetensors"),
        &[tensor("fc.weight", &[1, FEATURES], w.clone()), tensor("fc.bias", &[1], b.clone())],
        &Default::default(),
    )
    .unwrap();
    npy::write_f32(&dir.path("x.npy"), &[n, FEATURES], &x).unwrap();
    npy::write_f32(&dir.path("y.npy"), &[n], &y).unwrap();
    let (out, norms) = (dir.path("w2.safetensors"), dir.path("norms.npy"));
    run_ok(&[
        "step",
        "--model",
        "logreg",
        "--init",
        s(&dir.path("w.safetensors")),
        "--inputs",
        s(&dir.path("x.npy")),
        "--labels",
        s(&dir.path("y.npy")),
        "--clip-norm",
        "0.777",
        "--lr",
        "500",
        "--noise-multiplier",
        "0",
        "--out",
        s(&out),
        "--norms-out",
        s(&norms),
    ]);

    let weights: Vec<f64> = w.iter().chain(&b).map(|&v| v as f64).collect();
    let (expected, expected_norms) = reference_step(&weights, n, 0.777, 500.0, |i| {
        let xi = &x[i * FEATURES..(i + 1) * FEATURES];
        let z = xi.iter().zip(&w).map(|(&a, &c)| a as f64 * c as f64).sum::<f64>() + b[0] as f64;
        let dz = 1.0 / (1.0 + (-z).exp()) - y[i] as f64;
        xi.iter().map(|&a| dz * a as f64).chain([dz]).collect()
    });
    let tensors = read_tensors(&out);
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fc.bias", "fc.weight"], "exactly the tensors of the input file");
    let actual: Vec<f32> =
        get(&tensors, "fc.weight").iter().chain(get(&tensors, "fc.bias")).copied().collect();
    assert_close(&actual, &expected, 2e-5, "weights");
    let written = npy::read(&norms).unwrap();
    assert_eq!(written.shape, [n]);
    let NpyData::F32(written) = written.data else { panic!("norms are f32") };
    assert_close(&written, &expected_norms, 1e-5, "norms");
    assert!(
        expected_norms.iter().any(|&v| v > 0.777) && expected_norms.iter().any(|&v| v < 0.777),
        "both clip cases: {expected_norms:?}"
    );
}

const HIDDEN: usize = 50;

/// The Adult FFNN: h = relu(W1 x + b1), z = W2 h + b2, softmax cross-entropy.
fn ffnn_gradient(w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32], x: &[f32], label: usize) -> Vec<f64> {
    let pre: Vec<f64> = (0..HIDDEN)
        .map(|j| (0..FEATURES).map(|k| w1[j * FEATURES + k] as f64 * x[k] as f64).sum::<f64>() + b1[j] as f64)
        .collect();
    let h: Vec<f64> = pre.iter().map(|&v| v.max(0.0)).collect();
    let z: Vec<f64> = (0..2)
        .map(|c| (0..HIDDEN).map(|j| w2[c * HIDDEN + j] as f64 * h[j]).sum::<f64>() + b2[c] as f64)
        .collect();
    let max = z[0].max(z[1]);
    let total: f64 = z.iter().map(|v| (v - max).exp()).sum();
    let dz: Vec<f64> = (0..2).map(|c| (z[c] - max).exp() / total - f64::from(u8::from(c == label))).collect();
    let dh: Vec<f64> = (0..HIDDEN)
        .map(|j| if pre[j] > 0.0 { (0..2).map(|c| w2[c * HIDDEN + j] as f64 * dz[c]).sum() } else { 0.0 })
        .collect();
    let mut g = Vec::new();
    for d in &dh {
        g.extend(x.iter().map(|&v| d * v as f64));
    }
    g.extend(&dh);
    for d in &dz {
        g.extend(h.iter().map(|&v| d * v));
    }
    g.extend(&dz);
    g
}

fn write_ffnn(dir: &TempDir, n: usize) -> (Vec<Vec<f32>>, Vec<f32>, Vec<i64>) {
    let w1 = values(11, HIDDEN * FEATURES, 0.2);
    let b1 = values(12, HIDDEN, 0.2);
    let w2 = values(13, 2 * HIDDEN, 0.3);
    let b2 = values(14, 2, 0.3);
    let x = values(15, n * FEATURES, 1.0);
    let y: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    pytorch::write(
        &dir.path("w.safetensors"),
        &[
            tensor("fc1.weight", &[HIDDEN, FEATURES], w1.clone()),
            tensor("fc1.bias", &[HIDDEN], b1.clone()),
            tensor("fc2.weight", &[2, HIDDEN], w2.clone()),
            tensor("fc2.bias", &[2], b2.clone()),
        ],
        &Default::default(),
    )
    .unwrap();
    npy::write_f32(&dir.path("x.npy"), &[n, FEATURES], &x).unwrap();
    npy::write_i64(&dir.path("y.npy"), &[n], &y).unwrap();
    (vec![w1, b1, w2, b2], x, y)
}

fn ffnn_reference(params: &[Vec<f32>], x: &[f32], y: &[i64], clip: f64, lr: f64) -> (Vec<f64>, Vec<f64>) {
    let weights: Vec<f64> = params.iter().flatten().map(|&v| v as f64).collect();
    reference_step(&weights, y.len(), clip, lr, |i| {
        ffnn_gradient(
            &params[0],
            &params[1],
            &params[2],
            &params[3],
            &x[i * FEATURES..(i + 1) * FEATURES],
            y[i] as usize,
        )
    })
}

fn ffnn_weights(path: &Path) -> Vec<f32> {
    let t = read_tensors(path);
    ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"].iter().flat_map(|n| get(&t, n).to_vec()).collect()
}

#[test]
fn ffnn_step_matches_the_f64_reference() {
    let dir = TempDir::new("cli-step", "ffnn");
    let n = 5;
    let (params, x, y) = write_ffnn(&dir, n);
    let (out, norms) = (dir.path("w2.safetensors"), dir.path("norms.npy"));
    run_ok(&[
        "step",
        "--model",
        "ffnn",
        "--init",
        s(&dir.path("w.safetensors")),
        "--inputs",
        s(&dir.path("x.npy")),
        "--labels",
        s(&dir.path("y.npy")),
        "--clip-norm",
        "3",
        "--lr",
        "0.1",
        "--noise-multiplier",
        "0",
        "--out",
        s(&out),
        "--norms-out",
        s(&norms),
    ]);
    let (expected, expected_norms) = ffnn_reference(&params, &x, &y, 3.0, 0.1);
    assert_close(&ffnn_weights(&out), &expected, 1e-5, "weights");
    let NpyData::F32(written) = npy::read(&norms).unwrap().data else { panic!("norms are f32") };
    assert_close(&written, &expected_norms, 1e-5, "norms");
    assert!(
        expected_norms.iter().any(|&v| v > 3.0) && expected_norms.iter().any(|&v| v < 3.0),
        "both clip cases: {expected_norms:?}"
    );
}

/// With S > 0 the difference to the noiseless reference, scaled back, is N(0, 1) per coordinate:
/// (W_noisy − W_ref)·N / (−lr) = S·C·z.
#[test]
fn ffnn_noise_has_standard_deviation_s_times_c_on_the_sum() {
    let dir = TempDir::new("cli-step", "noise");
    let n = 4;
    let (params, x, y) = write_ffnn(&dir, n);
    let out = dir.path("w2.safetensors");
    let (sigma, clip, lr) = (2.0, 0.5, 0.01);
    run_ok(&[
        "step",
        "--model",
        "ffnn",
        "--init",
        s(&dir.path("w.safetensors")),
        "--inputs",
        s(&dir.path("x.npy")),
        "--labels",
        s(&dir.path("y.npy")),
        "--clip-norm",
        "0.5",
        "--lr",
        "0.01",
        "--noise-multiplier",
        "2",
        "--seed",
        "7",
        "--out",
        s(&out),
    ]);
    let (expected, _) = ffnn_reference(&params, &x, &y, clip, lr);
    let z: Vec<f64> = ffnn_weights(&out)
        .iter()
        .zip(&expected)
        .map(|(&a, &e)| (a as f64 - e) * n as f64 / (-lr) / (sigma * clip))
        .collect();
    let mean = z.iter().sum::<f64>() / z.len() as f64;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
    // 5,352 draws: the standard error of the mean is 0.014, of the variance about 0.02.
    assert!(mean.abs() < 0.07, "mean {mean}");
    assert!((var - 1.0).abs() < 0.1, "variance {var}");
}

/// Runs `dp step` expecting failure: non-zero exit, one line on stderr mentioning `needle`, and no
/// output file.
fn fails(dir: &TempDir, model: &str, init: &Path, inputs: &Path, labels: &Path, needle: &str) {
    let out = dir.path("out.safetensors");
    let norms = dir.path("out-norms.npy");
    let result = dp(&[
        "step",
        "--model",
        model,
        "--init",
        s(init),
        "--inputs",
        s(inputs),
        "--labels",
        s(labels),
        "--clip-norm",
        "1",
        "--lr",
        "0.1",
        "--noise-multiplier",
        "0",
        "--out",
        s(&out),
        "--norms-out",
        s(&norms),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{needle}: should fail");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!out.exists() && !norms.exists(), "{needle}: nothing written");
}

#[test]
fn bad_inputs_are_one_line_errors_and_write_nothing() {
    let dir = TempDir::new("cli-step", "bad");
    let n = 3;
    write_ffnn(&dir, n);
    let (w, x, y) = (dir.path("w.safetensors"), dir.path("x.npy"), dir.path("y.npy"));
    let write = |name: &str, shape: Vec<usize>, data: NpyData| {
        let path = dir.path(name);
        npy::write(&path, &NpyArray::new(shape, data).unwrap()).unwrap();
        path
    };

    let bad_magic = dir.path("magic.npy");
    let mut bytes = std::fs::read(&x).unwrap();
    bytes[1] = b'X';
    std::fs::write(&bad_magic, &bytes).unwrap();
    fails(&dir, "ffnn", &w, &bad_magic, &y, "magic.npy");

    let truncated = dir.path("truncated.npy");
    let mut whole = std::fs::read(&x).unwrap();
    whole.truncate(whole.len() - 10);
    std::fs::write(&truncated, &whole).unwrap();
    fails(&dir, "ffnn", &w, &truncated, &y, "truncated.npy");

    let out_of_range = write("label2.npy", vec![n], NpyData::I64(vec![0, 2, 1]));
    fails(&dir, "ffnn", &w, &x, &out_of_range, "label 2 is out of range");

    let narrow = write("narrow.npy", vec![n, 103], NpyData::F32(vec![0.5; n * 103]));
    fails(&dir, "ffnn", &w, &narrow, &y, "does not match [N, 104]");

    let mut with_nan = vec![0.5f32; n * FEATURES];
    with_nan[FEATURES + 3] = f32::NAN;
    let nan = write("nan.npy", vec![n, FEATURES], NpyData::F32(with_nan));
    fails(&dir, "ffnn", &w, &nan, &y, "not finite");

    let empty_x = write("empty-x.npy", vec![0, FEATURES], NpyData::F32(vec![]));
    let empty_y = write("empty-y.npy", vec![0], NpyData::I64(vec![]));
    fails(&dir, "ffnn", &w, &empty_x, &empty_y, "empty");

    // Logistic-regression weights given to the FFNN, and the FFNN's to logistic regression.
    let logreg = dir.path("logreg.safetensors");
    pytorch::write(
        &logreg,
        &[tensor("fc.weight", &[1, FEATURES], vec![0.0; FEATURES]), tensor("fc.bias", &[1], vec![0.0])],
        &Default::default(),
    )
    .unwrap();
    fails(&dir, "ffnn", &logreg, &x, &y, "another model");
    let y01 = write("y01.npy", vec![n], NpyData::F32(vec![0.0, 1.0, 1.0]));
    fails(&dir, "logreg", &w, &x, &y01, "another model");

    // Float class labels for softmax models: i64 is the convention.
    fails(&dir, "ffnn", &w, &x, &y01, "must be integers");
    fails(&dir, "nope", &w, &x, &y, "unknown model");
}

#[test]
fn invalid_numbers_name_their_flag() {
    let dir = TempDir::new("cli-step", "flags");
    write_ffnn(&dir, 2);
    let (w, x, y) = (dir.path("w.safetensors"), dir.path("x.npy"), dir.path("y.npy"));
    let out = dir.path("o.safetensors");
    for (flag, value, needle) in [
        ("--clip-norm", "0", "--clip-norm"),
        ("--clip-norm", "-1", "--clip-norm"),
        ("--noise-multiplier", "-0.5", "--noise-multiplier"),
        ("--lr", "abc", "--lr"),
    ] {
        let mut args = vec!["step", "--model", "ffnn", "--init", s(&w), "--inputs", s(&x), "--labels", s(&y)];
        args.extend(["--out", s(&out), "--lr", "0.1", "--clip-norm", "1", "--noise-multiplier", "0"]);
        // The flag under test is given last and wins.
        args.extend([flag, value]);
        let args: Vec<&str> = dedupe_last(&args);
        let result = dp(&args);
        assert_eq!(result.status.code(), Some(2), "{flag} {value}");
        assert!(String::from_utf8_lossy(&result.stderr).contains(needle), "{flag} {value}");
        assert!(!out.exists());
    }
}

/// Keeps only the last occurrence of each `--flag value` pair (clap rejects repeated flags).
fn dedupe_last<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&'a str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i].starts_with("--") && i + 1 < args.len() {
            let flag = args[i];
            if let Some(pos) = out.iter().position(|&a| a == flag) {
                out.drain(pos..pos + 2);
            }
            out.extend([flag, args[i + 1]]);
            i += 2;
        } else {
            out.push(args[i]);
            i += 1;
        }
    }
    out
}

/// The LSTM's one bias per gate: PyTorch's two biases are summed on load, and written back as
/// `bias_ih_l0` (the updated sum) with `bias_hh_l0` zero; a file with the sum in `bias_ih_l0` alone
/// gives the same step. Tokens may be i32 or i64.
#[test]
fn lstm_biases_load_as_their_sum_and_save_as_bias_ih_with_bias_hh_zero() {
    let dir = TempDir::new("cli-step", "lstm");
    let (vocab, dim, hidden, len, n) = (10004, 100, 100, 256, 2);
    let bias_ih = values(21, 4 * hidden, 0.1);
    let bias_hh = values(22, 4 * hidden, 0.1);
    let summed: Vec<f32> = bias_ih.iter().zip(&bias_hh).map(|(a, b)| a + b).collect();
    let common = vec![
        tensor("embedding.weight", &[vocab, dim], values(23, vocab * dim, 0.5)),
        tensor("lstm.weight_ih_l0", &[4 * hidden, dim], values(24, 4 * hidden * dim, 0.1)),
        tensor("lstm.weight_hh_l0", &[4 * hidden, hidden], values(25, 4 * hidden * hidden, 0.1)),
        tensor("fc.weight", &[2, hidden], values(26, 2 * hidden, 0.1)),
        tensor("fc.bias", &[2], values(27, 2, 0.1)),
    ];
    let mut pair = common.clone();
    pair.push(tensor("lstm.bias_ih_l0", &[4 * hidden], bias_ih));
    pair.push(tensor("lstm.bias_hh_l0", &[4 * hidden], bias_hh));
    let mut single = common;
    single.push(tensor("lstm.bias_ih_l0", &[4 * hidden], summed.clone()));
    pytorch::write(&dir.path("pair.safetensors"), &pair, &Default::default()).unwrap();
    pytorch::write(&dir.path("single.safetensors"), &single, &Default::default()).unwrap();
    let tokens: Vec<i32> = (0..n * len).map(|i| ((i * 7919) % vocab) as i32).collect();
    npy::write(&dir.path("x32.npy"), &NpyArray::new(vec![n, len], NpyData::I32(tokens.clone())).unwrap())
        .unwrap();
    npy::write_i64(&dir.path("x64.npy"), &[n, len], &tokens.iter().map(|&t| t as i64).collect::<Vec<_>>())
        .unwrap();
    npy::write_i64(&dir.path("y.npy"), &[n], &[0, 1]).unwrap();
    let step = |init: &str, inputs: &str, out: &str| {
        run_ok(&[
            "step",
            "--model",
            "lstm",
            "--init",
            s(&dir.path(init)),
            "--inputs",
            s(&dir.path(inputs)),
            "--labels",
            s(&dir.path("y.npy")),
            "--clip-norm",
            "1",
            "--lr",
            "0.5",
            "--noise-multiplier",
            "0",
            "--out",
            s(&dir.path(out)),
        ]);
        read_tensors(&dir.path(out))
    };
    let from_pair = step("pair.safetensors", "x32.npy", "pair-out.safetensors");
    let from_single = step("single.safetensors", "x64.npy", "single-out.safetensors");
    assert_eq!(from_pair.len(), 7, "exactly the tensors of the input file");
    assert_eq!(from_single.len(), 6);
    assert!(get(&from_pair, "lstm.bias_hh_l0").iter().all(|&v| v == 0.0));
    for name in [
        "embedding.weight",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.bias_ih_l0",
        "fc.weight",
        "fc.bias",
    ] {
        assert_eq!(get(&from_pair, name), get(&from_single, name), "{name}");
    }
    let updated = get(&from_pair, "lstm.bias_ih_l0");
    let moved = updated.iter().zip(&summed).filter(|(a, b)| a != b).count();
    assert!(moved > 300, "the bias was trained from the sum ({moved} of 400 changed)");
}

#[test]
fn the_noise_multiplier_must_be_written_and_outputs_never_replace_inputs() {
    let dir = TempDir::new("cli-step", "explicit");
    write_ffnn(&dir, 2);
    let (w, x, y) = (dir.path("w.safetensors"), dir.path("x.npy"), dir.path("y.npy"));
    let out = dir.path("o.safetensors");
    let base =
        ["step", "--model", "ffnn", "--init", s(&w), "--inputs", s(&x), "--labels", s(&y), "--lr", "0.1"];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--clip-norm", "1"]);
        args.extend_from_slice(extra);
        dp(&args)
    };
    // No silent σ = 0.
    let result = with(&["--out", s(&out)]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("--noise-multiplier"));
    assert!(!out.exists());
    // σ = 0 written out is allowed, and says it is not private.
    let result = with(&["--out", s(&out), "--noise-multiplier", "0"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert!(String::from_utf8_lossy(&result.stderr).contains("NOT differentially private"));

    // An output that is an input, or the other output.
    let weights = std::fs::read(&w).unwrap();
    for (extra, needle) in [
        (vec!["--out", s(&w)], "--init"),
        (vec!["--out", s(&out), "--norms-out", s(&x)], "--inputs"),
        (vec!["--out", s(&out), "--norms-out", s(&out)], "--out"),
    ] {
        let mut extra = extra.clone();
        extra.extend(["--noise-multiplier", "1"]);
        let result = with(&extra);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{needle} not in {stderr}");
    }
    assert_eq!(std::fs::read(&w).unwrap(), weights, "the initial weights are untouched");
}
