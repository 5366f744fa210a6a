//! The f64 reference ops of `tests/reference` checked on their own: each op's analytic backward
//! against central finite differences of `L = ⟨r, op(x)⟩` (r random), plus forward values that follow
//! from PyTorch's definitions by other routes (hand-computed cases, identities between ops). Then
//! two small networks with every op kind, end to end through the loss, against finite differences.

mod reference;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reference::conv::{conv2d_backward, conv2d_forward, Conv2dGeom};
use reference::dense::{linear_backward, linear_forward, Activation};
use reference::embedding::*;
use reference::loss::*;
use reference::lstm::{lstm_backward, lstm_forward, LstmParams};
use reference::net::{Conv, Network, Op};
use reference::norm::*;
use reference::pool::*;
use reference::{assert_matches_finite_differences as assert_fd, dot, sample_coords, uniform};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn all(len: usize) -> Vec<usize> {
    (0..len).collect()
}

fn assert_values(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what}[{k}]: {g} vs {w}");
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    let mut r = rng(1);
    let (x, w, b, dy) =
        (uniform(&mut r, 5, 1.0), uniform(&mut r, 20, 1.0), uniform(&mut r, 4, 1.0), uniform(&mut r, 4, 1.0));
    let (dx, dw, db) = linear_backward(&w, &x, &dy);
    assert_fd(|x| dot(&dy, &linear_forward(&w, Some(&b), x, 4)), &x, &dx, &all(5), "linear dx");
    assert_fd(|w| dot(&dy, &linear_forward(w, Some(&b), &x, 4)), &w, &dw, &all(20), "linear dW");
    assert_fd(|b| dot(&dy, &linear_forward(&w, Some(b), &x, 4)), &b, &db, &all(4), "linear db");
    // y = W x + b row by row.
    let y = linear_forward(&w, Some(&b), &x, 4);
    assert_values(&y, &(0..4).map(|o| dot(&w[o * 5..o * 5 + 5], &x) + b[o]).collect::<Vec<_>>(), "linear");
}

#[test]
fn activation_backward_matches_finite_differences() {
    let mut r = rng(2);
    // Away from relu's kink at 0 (the finite-difference step is 1e-6).
    let x: Vec<f64> =
        uniform(&mut r, 12, 3.0).into_iter().map(|v| if v.abs() < 1e-3 { 0.5 } else { v }).collect();
    let dy = uniform(&mut r, 12, 1.0);
    for a in [Activation::Relu, Activation::Tanh, Activation::Sigmoid, Activation::Gelu, Activation::Silu] {
        assert_fd(|x| dot(&dy, &a.forward(x)), &x, &a.backward(&x, &dy), &all(12), &format!("{a:?}"));
    }
    assert_eq!(Activation::Relu.forward(&[-1.0, 0.0, 2.0]), [0.0, 0.0, 2.0]);
    assert_eq!(Activation::Relu.derivative(0.0), 0.0);
    assert!((Activation::Sigmoid.apply(0.0) - 0.5).abs() < 1e-15);
    assert!((Activation::Tanh.apply(1.0) - 0.761_594_155_955_764_9).abs() < 1e-15);
    // PyTorch: gelu(1.0, approximate="tanh") = 0.8411919906082768, silu(1.0) = 0.7310585786300049.
    assert!((Activation::Gelu.apply(1.0) - 0.841_191_990_608_276_8).abs() < 1e-15);
    assert!((Activation::Silu.apply(1.0) - 0.731_058_578_630_004_9).abs() < 1e-15);
    assert_eq!(Activation::Gelu.apply(0.0), 0.0);
}

fn check_conv(geom: Conv2dGeom, seed: u64) {
    let mut r = rng(seed);
    let (ho, wo) = geom.output_size();
    let x = uniform(&mut r, geom.in_channels * geom.height * geom.width, 1.0);
    let w = uniform(&mut r, geom.weight_len(), 1.0);
    let b = uniform(&mut r, geom.out_channels, 1.0);
    let dy = uniform(&mut r, geom.out_channels * ho * wo, 1.0);
    let (dx, dw, db) = conv2d_backward(&geom, &w, &x, &dy);
    let what = format!("{geom:?}");
    assert_fd(|x| dot(&dy, &conv2d_forward(&geom, &w, Some(&b), x)), &x, &dx, &all(x.len()), &what);
    assert_fd(|w| dot(&dy, &conv2d_forward(&geom, w, Some(&b), &x)), &w, &dw, &all(w.len()), &what);
    assert_fd(|b| dot(&dy, &conv2d_forward(&geom, &w, Some(b), &x)), &b, &db, &all(b.len()), &what);
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    check_conv(Conv2dGeom::square(2, 3, (6, 5), 3, 1, 1), 3);
    check_conv(Conv2dGeom::square(1, 4, (9, 9), 4, 2, 3), 4); // MnistCnn's first conv, scaled down
    check_conv(
        Conv2dGeom {
            in_channels: 4,
            out_channels: 6,
            height: 7,
            width: 6,
            kernel: (3, 2),
            stride: (2, 1),
            padding: (1, 2),
            dilation: (2, 1),
            groups: 2,
        },
        5,
    );
}

#[test]
fn conv2d_forward_agrees_with_linear_where_pytorch_says_it_must() {
    let mut r = rng(6);
    // A kernel covering the whole unpadded input is a linear layer on the flattened input.
    let full = Conv2dGeom::square(3, 4, (5, 5), 5, 1, 0);
    let (x, w, b) =
        (uniform(&mut r, 75, 1.0), uniform(&mut r, full.weight_len(), 1.0), uniform(&mut r, 4, 1.0));
    assert_eq!(full.output_size(), (1, 1));
    assert_values(
        &conv2d_forward(&full, &w, Some(&b), &x),
        &linear_forward(&w, Some(&b), &x, 4),
        "full-size conv",
    );
    // A 1×1 convolution is the same linear map at every pixel.
    let point = Conv2dGeom::square(3, 2, (4, 3), 1, 1, 0);
    let (x, w) = (uniform(&mut r, 36, 1.0), uniform(&mut r, 6, 1.0));
    let y = conv2d_forward(&point, &w, None, &x);
    for pix in 0..12 {
        let pixel: Vec<f64> = (0..3).map(|c| x[c * 12 + pix]).collect();
        let want = linear_forward(&w, None, &pixel, 2);
        assert_values(&[y[pix], y[12 + pix]], &want, "1×1 conv");
    }
    // Padding reads zeros; stride 2 and padding 1 on a 3×3 kernel of ones sums the in-range window.
    let ones = Conv2dGeom::square(1, 1, (3, 3), 3, 2, 1);
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    assert_eq!(ones.output_size(), (2, 2));
    assert_values(&conv2d_forward(&ones, &[1.0; 9], None, &x), &[12.0, 16.0, 24.0, 28.0], "padded conv");
    // Dilation 2: a 2×2 kernel reads the four corners of a 3×3 input.
    let dilated = Conv2dGeom { dilation: (2, 2), ..Conv2dGeom::square(1, 1, (3, 3), 2, 1, 0) };
    assert_values(
        &conv2d_forward(&dilated, &[1.0, 10.0, 100.0, 1000.0], None, &x),
        &[9731.0],
        "dilated conv",
    );
    // Groups: each output channel sees only its group's input channels.
    let grouped = Conv2dGeom { groups: 2, ..Conv2dGeom::square(2, 2, (1, 1), 1, 1, 0) };
    assert_values(&conv2d_forward(&grouped, &[2.0, 3.0], None, &[5.0, 7.0]), &[10.0, 21.0], "grouped conv");
}

#[test]
fn pooling_forward_is_pytorchs() {
    let x: Vec<f64> = (1..=16).map(f64::from).collect(); // one 4×4 channel, row-major
    let geom = PoolGeom { channels: 1, height: 4, width: 4, kernel: 2, stride: 2, padding: 0 };
    assert_values(&max_pool2d_forward(&geom, &x), &[6.0, 8.0, 14.0, 16.0], "max_pool2d k2 s2");
    assert_values(&avg_pool2d_forward(&geom, &x), &[3.5, 5.5, 11.5, 13.5], "avg_pool2d k2 s2");
    let overlapping = PoolGeom { stride: 1, ..geom };
    assert_eq!(overlapping.output_size(), (3, 3));
    assert_values(
        &max_pool2d_forward(&overlapping, &x),
        &[6.0, 7.0, 8.0, 10.0, 11.0, 12.0, 14.0, 15.0, 16.0],
        "k2 s1",
    );
    // count_include_pad = True: the padded zeros count in the divisor.
    let x = [1.0, 2.0, 3.0, 4.0];
    let padded = PoolGeom { channels: 1, height: 2, width: 2, kernel: 2, stride: 1, padding: 1 };
    let want = [0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0];
    assert_values(&avg_pool2d_forward(&padded, &x), &want, "avg_pool2d with padding");
    // Max pooling pads with −∞: negative inputs stay the maximum of their windows.
    let neg = [-1.0, -2.0, -3.0, -4.0];
    assert_values(
        &max_pool2d_forward(&padded, &neg),
        &[-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -3.0, -3.0, -4.0],
        "max pad",
    );
    // Ties: the gradient goes to the first maximum only.
    let tie = PoolGeom { channels: 1, height: 1, width: 2, kernel: 1, stride: 1, padding: 0 };
    let tie2 = PoolGeom { kernel: 2, height: 2, width: 2, ..tie };
    assert_eq!(max_pool2d_backward(&tie2, &[3.0, 3.0, 1.0, 3.0], &[1.0]), [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(tie.output_size(), (1, 2));
    assert_values(&global_avg_pool_forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 9.0], 3), &[2.0, 6.0], "global avg");
}

#[test]
fn pooling_backward_matches_finite_differences() {
    let mut r = rng(7);
    for geom in [
        PoolGeom { channels: 2, height: 6, width: 5, kernel: 2, stride: 1, padding: 0 },
        PoolGeom { channels: 2, height: 6, width: 6, kernel: 2, stride: 2, padding: 0 },
        PoolGeom { channels: 1, height: 5, width: 5, kernel: 3, stride: 2, padding: 1 },
    ] {
        let (ho, wo) = geom.output_size();
        let x = uniform(&mut r, geom.channels * geom.height * geom.width, 1.0);
        let dy = uniform(&mut r, geom.channels * ho * wo, 1.0);
        let n = x.len();
        let what = format!("{geom:?}");
        let dmax = max_pool2d_backward(&geom, &x, &dy);
        assert_fd(|x| dot(&dy, &max_pool2d_forward(&geom, x)), &x, &dmax, &all(n), &what);
        let davg = avg_pool2d_backward(&geom, &x, &dy);
        assert_fd(|x| dot(&dy, &avg_pool2d_forward(&geom, x)), &x, &davg, &all(n), &what);
    }
    let (x, dy) = (uniform(&mut r, 3 * 7, 1.0), uniform(&mut r, 3, 1.0));
    let dx = global_avg_pool_backward(&dy, 7);
    assert_fd(|x| dot(&dy, &global_avg_pool_forward(x, 7)), &x, &dx, &all(21), "global avg pool");
}

#[test]
fn group_norm_matches_its_definition_and_finite_differences() {
    let mut r = rng(8);
    let (channels, plane, groups) = (6, 5, 3);
    let x = uniform(&mut r, channels * plane, 2.0);
    let (gamma, beta, dy) = (uniform(&mut r, 6, 1.5), uniform(&mut r, 6, 1.0), uniform(&mut r, 30, 1.0));
    // With γ = 1, β = 0 each group has mean 0 and variance var / (var + ε).
    let y = group_norm_forward(&x, channels, groups, &[1.0; 6], &[0.0; 6]);
    for (xg, yg) in x.chunks(10).zip(y.chunks(10)) {
        let mean = xg.iter().sum::<f64>() / 10.0;
        let var = xg.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0;
        assert!(yg.iter().sum::<f64>().abs() < 1e-12);
        assert!((yg.iter().map(|v| v * v).sum::<f64>() / 10.0 - var / (var + EPS)).abs() < 1e-12);
    }
    let (dx, dgamma, dbeta) = group_norm_backward(&x, channels, groups, &gamma, &dy);
    let f = |x: &[f64], g: &[f64], b: &[f64]| dot(&dy, &group_norm_forward(x, channels, groups, g, b));
    assert_fd(|x| f(x, &gamma, &beta), &x, &dx, &all(30), "group_norm dx");
    assert_fd(|g| f(&x, g, &beta), &gamma, &dgamma, &all(6), "group_norm dγ");
    assert_fd(|b| f(&x, &gamma, b), &beta, &dbeta, &all(6), "group_norm dβ");
    // One channel per group is instance norm; one group over everything is layer norm with a
    // per-channel affine.
    let (dx1, _, _) = group_norm_backward(&x, channels, 6, &gamma, &dy);
    assert_fd(
        |x| dot(&dy, &group_norm_forward(x, channels, 6, &gamma, &beta)),
        &x,
        &dx1,
        &all(30),
        "instance",
    );
    let wide_gamma: Vec<f64> = (0..30).map(|k| gamma[k / 5]).collect();
    let wide_beta: Vec<f64> = (0..30).map(|k| beta[k / 5]).collect();
    assert_values(
        &group_norm_forward(&x, channels, 1, &gamma, &beta),
        &layer_norm_forward(&x, &wide_gamma, &wide_beta),
        "group_norm(1) = layer_norm",
    );
    let (ldx, ldg, ldb) = layer_norm_backward(&x, &wide_gamma, &dy);
    assert_fd(
        |x| dot(&dy, &layer_norm_forward(x, &wide_gamma, &wide_beta)),
        &x,
        &ldx,
        &all(30),
        "layer_norm dx",
    );
    assert_fd(
        |g| dot(&dy, &layer_norm_forward(&x, g, &wide_beta)),
        &wide_gamma,
        &ldg,
        &all(30),
        "layer_norm dγ",
    );
    assert_fd(
        |b| dot(&dy, &layer_norm_forward(&x, &wide_gamma, b)),
        &wide_beta,
        &ldb,
        &all(30),
        "layer_norm dβ",
    );
}

#[test]
fn embedding_adds_the_rows_of_repeated_tokens() {
    let mut r = rng(9);
    let (vocab, dim) = (7, 3);
    let weight = uniform(&mut r, vocab * dim, 1.0);
    let tokens = [4, 1, 4, 6, 4, 0, 1];
    let y = embedding_forward(&weight, dim, &tokens);
    assert_values(&y[6..9], &weight[12..15], "row of token 4 at position 2");
    let dy = uniform(&mut r, tokens.len() * dim, 1.0);
    let mut dw = vec![0.0; vocab * dim];
    embedding_backward(dim, &tokens, &dy, &mut dw);
    assert_fd(|w| dot(&dy, &embedding_forward(w, dim, &tokens)), &weight, &dw, &all(21), "embedding dW");
    let row4: Vec<f64> = (0..dim).map(|d| dy[d] + dy[6 + d] + dy[12 + d]).collect();
    assert_values(&dw[12..15], &row4, "token 4's three positions add up");
    assert_eq!(&dw[6..9], &[0.0; 3], "token 2 never appears");
    let x = uniform(&mut r, 5 * 4, 1.0);
    let dm = uniform(&mut r, 4, 1.0);
    let dx = mean_over_sequence_backward(&dm, 5);
    assert_fd(|x| dot(&dm, &mean_over_sequence_forward(x, 4)), &x, &dx, &all(20), "mean over the sequence");
    assert_values(&mean_over_sequence_forward(&[1.0, 2.0, 3.0, 6.0], 2), &[2.0, 4.0], "mean");
}

#[test]
fn lstm_matches_pytorchs_equations_and_finite_differences() {
    let mut r = rng(10);
    let (steps, inputs, hidden) = (6, 3, 4);
    let x = uniform(&mut r, steps * inputs, 1.0);
    let (wih, whh, bias) = (
        uniform(&mut r, 4 * hidden * inputs, 0.8),
        uniform(&mut r, 4 * hidden * hidden, 0.8),
        uniform(&mut r, 16, 0.5),
    );
    let dy = uniform(&mut r, steps * hidden, 1.0);
    let p = LstmParams { weight_ih: &wih, weight_hh: &whh, bias: &bias, hidden };
    let g = lstm_backward(&p, &x, &dy);
    let out = |wih: &[f64], whh: &[f64], b: &[f64], x: &[f64]| {
        dot(&dy, &lstm_forward(&LstmParams { weight_ih: wih, weight_hh: whh, bias: b, hidden }, x))
    };
    assert_fd(|x| out(&wih, &whh, &bias, x), &x, &g.input, &all(x.len()), "lstm dx");
    assert_fd(|w| out(w, &whh, &bias, &x), &wih, &g.weight_ih, &all(wih.len()), "lstm dW_ih");
    assert_fd(|w| out(&wih, w, &bias, &x), &whh, &g.weight_hh, &all(whh.len()), "lstm dW_hh");
    assert_fd(|b| out(&wih, &whh, b, &x), &bias, &g.bias, &all(16), "lstm db");
    // One step from the zero state: h = σ(a_o) tanh(σ(a_i) tanh(a_g)), gate rows i, f, g, o.
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let first = lstm_forward(&p, &x[..inputs]);
    let pre = linear_forward(&wih, Some(&bias), &x[..inputs], 16);
    let want: Vec<f64> =
        (0..hidden).map(|k| sig(pre[12 + k]) * (sig(pre[k]) * pre[8 + k].tanh()).tanh()).collect();
    assert_values(&first, &want, "first LSTM step");
    assert_values(&lstm_forward(&p, &x)[..hidden], &want, "the output sequence starts with the first step");
}

#[test]
fn losses_match_their_definitions_and_finite_differences() {
    let mut r = rng(11);
    let z = uniform(&mut r, 5, 3.0);
    let (_, g) = cross_entropy(&z, 3);
    assert_fd(|z| cross_entropy(z, 3).0, &z, &g, &all(5), "cross-entropy");
    assert!((cross_entropy(&[0.7; 4], 1).0 - 4f64.ln()).abs() < 1e-14, "equal logits give ln K");
    assert!((cross_entropy(&[1000.0, 0.0], 0).0).abs() < 1e-14, "stable at large logits");
    for (zv, y) in [(0.3, 1.0), (-2.5, 0.0), (40.0, 0.0), (-1.0, 1.0)] {
        let (l, g) = binary_cross_entropy_with_logits(zv, y);
        assert_fd(|z| binary_cross_entropy_with_logits(z[0], y).0, &[zv], &g, &[0], "bce");
        let p = 1.0 / (1.0 + (-zv).exp());
        let direct = -(y * p.ln() + (1.0 - y) * (1.0 - p).ln());
        assert!((l - direct).abs() <= 1e-9 * direct.max(1.0), "bce({zv}, {y}) = {l} vs {direct}");
    }
    let (out, label) = (uniform(&mut r, 3, 1.0), uniform(&mut r, 3, 1.0));
    let (l, g) = half_squared_error(&out, &label);
    assert_fd(|o| half_squared_error(o, &label).0, &out, &g, &all(3), "½‖·‖²");
    assert!((l - 0.5 * out.iter().zip(&label).map(|(a, b)| (a - b).powi(2)).sum::<f64>()).abs() < 1e-15);
}

fn network_matches_finite_differences(net: &Network, x: &[f64], label: &[f64], seed: u64) {
    let mut r = rng(seed);
    let params = uniform(&mut r, net.layout.count, 0.5);
    let (loss, grad) = net.loss_and_gradient(&params, x, label);
    assert!((loss - net.loss(&params, x, label)).abs() < 1e-15);
    let coords = sample_coords(net.layout.count, 400);
    assert_fd(|p| net.loss(p, x, label), &params, &grad, &coords, "network");
    assert_eq!(net.layout.group_sq_norms(&grad).iter().sum::<f64>(), grad.iter().map(|v| v * v).sum::<f64>());
}

#[test]
fn an_image_network_with_every_op_matches_finite_differences() {
    let block = || {
        Op::Residual(vec![
            Op::Conv2d(Conv { bias: false, ..Conv::new("b.conv", 4, 3, 1, 1) }),
            Op::GroupNorm { name: "b.gn", groups: 2 },
            Op::Act(Activation::Tanh),
        ])
    };
    let net = Network::standalone(
        vec![
            Op::Conv2d(Conv::new("stem", 4, 3, 1, 1)),
            Op::GroupNorm { name: "gn", groups: 2 },
            Op::Act(Activation::Sigmoid),
            Op::MaxPool2d { kernel: 2, stride: 1, padding: 0 },
            block(),
            Op::AvgPool2d { kernel: 2, stride: 2, padding: 1 },
            Op::Conv2d(Conv::new("head", 3, 2, 1, 0)),
            Op::Act(Activation::Relu),
            Op::GlobalAvgPool,
            Op::Linear { name: "fc", out: 3, bias: true },
            Op::Act(Activation::Tanh),
            Op::Flatten,
            Op::Linear { name: "out", out: 3, bias: false },
        ],
        &[2, 6, 6],
        RefLoss::CrossEntropy,
    );
    // Twelve tensors, the residual body's included.
    assert_eq!(net.layout.entries.len(), 12);
    let x = uniform(&mut rng(12), 72, 1.0);
    network_matches_finite_differences(&net, &x, &[2.0], 13);
}

#[test]
fn a_sequence_network_with_every_op_matches_finite_differences() {
    let net = Network::standalone(
        vec![
            Op::Embedding { name: "emb", vocab: 9, dim: 3 },
            Op::Lstm { name: "lstm", hidden: 4, biases: &["bias_ih_l0", "bias_hh_l0"] },
            Op::MeanOverSequence,
            Op::Linear { name: "fc", out: 1, bias: true },
        ],
        &[7],
        RefLoss::BinaryCrossEntropy,
    );
    let x = [3.0, 8.0, 3.0, 0.0, 5.0, 3.0, 8.0];
    network_matches_finite_differences(&net, &x, &[1.0], 14);
    let mse = Network::standalone(
        vec![
            Op::Embedding { name: "emb", vocab: 6, dim: 4 },
            Op::MeanOverSequence,
            Op::Linear { name: "fc", out: 2, bias: true },
        ],
        &[5],
        RefLoss::HalfSquaredError,
    );
    network_matches_finite_differences(&mse, &[1.0, 1.0, 5.0, 0.0, 1.0], &[0.3, -0.2], 15);
}
