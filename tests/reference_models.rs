//! The founding paper's models (and the residual CNN) against the f64 reference of
//! `tests/reference`, one example at a time: per-example losses, per-example squared gradient norms
//! per parameter group, clipped sums with factors that clip some examples and not others (per model
//! and per layer, and an example with factor 0 whose input is NaN), the non-private gradient and the
//! forward outputs, all to 1e-4 relative; and each reference network's gradient against central
//! finite differences at the model's real size.
//!
//! Parameters come from `M::init` with a seeded ChaCha rng and are read by the reference by their
//! PyTorch names through `M::PARAMS`, so the check does not depend on the buffer order.

mod reference;

use dp::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, MnistCnnTanh, ResidualCnn,
    ScatterCnn,
};
use dp::prelude::*;
use reference::dense::Activation;
use reference::harness::{
    check_model, check_model_in, check_model_with, check_reference_gradient, check_zero_factor_example,
    report,
};
use reference::net::{embedding_lstm_mean_linear, Conv, Network, Op, ONE_BIAS};

// ---------------------------------------------------------------------------------------------
// Models declared for this test: the ops the six do not exercise (or not in these combinations).

/// Dilated, grouped, strided and bias-free convs; group_norm; layer_norm on an image (one group,
/// per-channel affine) and on a vector; padded max and average pooling; all three activations.
#[dp_model(input = [2, 8, 8], loss = cross_entropy(classes = 4))]
struct ImageOps {
    #[layer(conv2d(out = 4, kernel = 3, padding = 1), tanh)]
    c1: Conv2d,
    #[layer(group_norm(groups = 2), relu, max_pool2d(kernel = 2, stride = 2, padding = 1))]
    gn: GroupNorm,
    #[layer(
        conv2d(out = 6, kernel = 2, dilation = 2, groups = 2, padding = 1),
        sigmoid,
        avg_pool2d(kernel = 2, stride = 1, padding = 1)
    )]
    c2: Conv2d,
    #[layer(layer_norm)]
    ln: LayerNorm,
    #[layer(conv2d(out = 3, kernel = 3, stride = 2, bias = false), relu, global_avg_pool)]
    c3: Conv2d,
    #[layer(layer_norm)]
    ln2: LayerNorm,
    #[layer(linear(out = 4))]
    fc: Linear,
}

/// layer_norm between two linear layers, squared error on two outputs.
#[dp_model(input = [5], loss = mse)]
struct DenseNorm {
    #[layer(linear(out = 6), tanh)]
    fc1: Linear,
    #[layer(layer_norm, sigmoid)]
    ln: LayerNorm,
    #[layer(linear(out = 2))]
    fc2: Linear,
}

/// Embedding → LSTM (whole sequence) → mean → one logit, small enough for B = 3 and many
/// finite-difference probes; 7 positions over 5 tokens always repeat.
#[dp_model(input = tokens(len = 7, vocab = 5), loss = binary_cross_entropy)]
struct TinySeq {
    #[layer(embedding(dim = 3))]
    emb: Embedding,
    #[layer(lstm(hidden = 4), mean)]
    lstm: Lstm,
    #[layer(linear(out = 1))]
    fc: Linear,
}

/// `MnistCnn` with every layer's norms forced to ghost, then to direct: both code paths at the real
/// sizes, whatever the planner picks for the model itself.
#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
struct MnistCnnGhost {
    #[layer(
        conv2d(out = 16, kernel = 8, stride = 2, padding = 3, norms = ghost),
        relu,
        max_pool2d(kernel = 2, stride = 1)
    )]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 4, stride = 2, norms = ghost), relu, max_pool2d(kernel = 2, stride = 1))]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32, norms = ghost), relu)]
    fc1: Linear,
    #[layer(linear(out = 10, norms = ghost))]
    fc2: Linear,
}

/// See [`MnistCnnGhost`].
#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
struct MnistCnnDirect {
    #[layer(
        conv2d(out = 16, kernel = 8, stride = 2, padding = 3, norms = direct),
        relu,
        max_pool2d(kernel = 2, stride = 1)
    )]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 4, stride = 2, norms = direct), relu, max_pool2d(kernel = 2, stride = 1))]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32, norms = direct), relu)]
    fc1: Linear,
    #[layer(linear(out = 10, norms = direct))]
    fc2: Linear,
}

/// `LstmNet` with the LSTM's and the classifier's norms forced to ghost, then to direct.
#[dp_model(input = tokens(len = 256, vocab = 10004), loss = cross_entropy(classes = 2))]
struct LstmNetGhost {
    #[layer(embedding(dim = 100))]
    embedding: Embedding,
    #[layer(lstm(hidden = 100, norms = ghost), mean)]
    lstm: Lstm,
    #[layer(linear(out = 2, norms = ghost))]
    fc: Linear,
}

/// See [`LstmNetGhost`].
#[dp_model(input = tokens(len = 256, vocab = 10004), loss = cross_entropy(classes = 2))]
struct LstmNetDirect {
    #[layer(embedding(dim = 100))]
    embedding: Embedding,
    #[layer(lstm(hidden = 100, norms = direct), mean)]
    lstm: Lstm,
    #[layer(linear(out = 2, norms = direct))]
    fc: Linear,
}

/// `TinySeq` with forced norms.
#[dp_model(input = tokens(len = 7, vocab = 5), loss = binary_cross_entropy)]
struct TinySeqGhost {
    #[layer(embedding(dim = 3))]
    emb: Embedding,
    #[layer(lstm(hidden = 4, norms = ghost), mean)]
    lstm: Lstm,
    #[layer(linear(out = 1, norms = ghost))]
    fc: Linear,
}

/// See [`TinySeqGhost`].
#[dp_model(input = tokens(len = 7, vocab = 5), loss = binary_cross_entropy)]
struct TinySeqDirect {
    #[layer(embedding(dim = 3))]
    emb: Embedding,
    #[layer(lstm(hidden = 4, norms = direct), mean)]
    lstm: Lstm,
    #[layer(linear(out = 1, norms = direct))]
    fc: Linear,
}

// ---------------------------------------------------------------------------------------------
// The reference networks, from the paper's layer tables.

fn logreg() -> Network {
    Network::new(
        vec![Op::Linear { name: "fc", out: 1, bias: true }],
        AdultLogReg::INPUT_SHAPE,
        AdultLogReg::LOSS,
        AdultLogReg::PARAMS,
    )
}

fn ffnn() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "fc1", out: 50, bias: true },
            Op::Act(Activation::Relu),
            Op::Linear { name: "fc2", out: 2, bias: true },
        ],
        AdultFfnn::INPUT_SHAPE,
        AdultFfnn::LOSS,
        AdultFfnn::PARAMS,
    )
}

fn conv(name: &'static str, out: usize, kernel: usize, stride: usize, padding: usize) -> Op {
    Op::Conv2d(Conv::new(name, out, kernel, stride, padding))
}

fn mnist_cnn() -> Network {
    mnist_cnn_of::<MnistCnn>()
}

/// The same network over the parameter layout of `M` (a copy of `MnistCnn`, e.g. with forced norms).
fn mnist_cnn_of<M: DpModel>() -> Network {
    Network::new(
        vec![
            conv("conv1", 16, 8, 2, 3),
            Op::Act(Activation::Relu),
            Op::MaxPool2d { kernel: 2, stride: 1, padding: 0 },
            conv("conv2", 32, 4, 2, 0),
            Op::Act(Activation::Relu),
            Op::MaxPool2d { kernel: 2, stride: 1, padding: 0 },
            Op::Flatten,
            Op::Linear { name: "fc1", out: 32, bias: true },
            Op::Act(Activation::Relu),
            Op::Linear { name: "fc2", out: 10, bias: true },
        ],
        M::INPUT_SHAPE,
        M::LOSS,
        M::PARAMS,
    )
}

/// `MnistCnnTanh`: the MNIST CNN with tanh after every layer but the last.
fn mnist_cnn_tanh() -> Network {
    Network::new(
        vec![
            conv("conv1", 16, 8, 2, 3),
            Op::Act(Activation::Tanh),
            Op::MaxPool2d { kernel: 2, stride: 1, padding: 0 },
            conv("conv2", 32, 4, 2, 0),
            Op::Act(Activation::Tanh),
            Op::MaxPool2d { kernel: 2, stride: 1, padding: 0 },
            Op::Flatten,
            Op::Linear { name: "fc1", out: 32, bias: true },
            Op::Act(Activation::Tanh),
            Op::Linear { name: "fc2", out: 10, bias: true },
        ],
        MnistCnnTanh::INPUT_SHAPE,
        MnistCnnTanh::LOSS,
        MnistCnnTanh::PARAMS,
    )
}

/// `ScatterCnn`: group norm of the 81 scattering channels, then the small tanh CNN.
fn scatter_cnn() -> Network {
    Network::new(
        vec![
            Op::GroupNorm { name: "norm", groups: 27 },
            conv("conv1", 16, 3, 2, 1),
            Op::Act(Activation::Tanh),
            conv("conv2", 32, 3, 1, 1),
            Op::Act(Activation::Tanh),
            Op::Flatten,
            Op::Linear { name: "fc1", out: 32, bias: true },
            Op::Act(Activation::Tanh),
            Op::Linear { name: "fc2", out: 10, bias: true },
        ],
        ScatterCnn::INPUT_SHAPE,
        ScatterCnn::LOSS,
        ScatterCnn::PARAMS,
    )
}

fn cifar10_cnn() -> Network {
    let relu = || Op::Act(Activation::Relu);
    let pool = || Op::AvgPool2d { kernel: 2, stride: 2, padding: 0 };
    Network::new(
        vec![
            conv("conv1", 32, 3, 1, 1),
            relu(),
            conv("conv2", 32, 3, 1, 1),
            relu(),
            pool(),
            conv("conv3", 64, 3, 1, 1),
            relu(),
            conv("conv4", 64, 3, 1, 1),
            relu(),
            pool(),
            conv("conv5", 128, 3, 1, 1),
            relu(),
            conv("conv6", 128, 3, 1, 1),
            relu(),
            pool(),
            conv("conv7", 256, 3, 1, 1),
            relu(),
            conv("conv8", 10, 3, 1, 1),
            Op::GlobalAvgPool,
        ],
        Cifar10Cnn::INPUT_SHAPE,
        Cifar10Cnn::LOSS,
        Cifar10Cnn::PARAMS,
    )
}

fn image_ops() -> Network {
    Network::new(
        vec![
            conv("c1", 4, 3, 1, 1),
            Op::Act(Activation::Tanh),
            Op::GroupNorm { name: "gn", groups: 2 },
            Op::Act(Activation::Relu),
            Op::MaxPool2d { kernel: 2, stride: 2, padding: 1 },
            Op::Conv2d(Conv { dilation: 2, groups: 2, ..Conv::new("c2", 6, 2, 1, 1) }),
            Op::Act(Activation::Sigmoid),
            Op::AvgPool2d { kernel: 2, stride: 1, padding: 1 },
            // The compiler's layer_norm of an image is GroupNorm(1, C): per-channel affine.
            Op::GroupNorm { name: "ln", groups: 1 },
            Op::Conv2d(Conv { bias: false, ..Conv::new("c3", 3, 3, 2, 0) }),
            Op::Act(Activation::Relu),
            Op::GlobalAvgPool,
            Op::LayerNorm { name: "ln2" },
            Op::Linear { name: "fc", out: 4, bias: true },
        ],
        ImageOps::INPUT_SHAPE,
        ImageOps::LOSS,
        ImageOps::PARAMS,
    )
}

fn dense_norm() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "fc1", out: 6, bias: true },
            Op::Act(Activation::Tanh),
            Op::LayerNorm { name: "ln" },
            Op::Act(Activation::Sigmoid),
            Op::Linear { name: "fc2", out: 2, bias: true },
        ],
        DenseNorm::INPUT_SHAPE,
        DenseNorm::LOSS,
        DenseNorm::PARAMS,
    )
}

/// Stem conv 3→16, group_norm(4), relu; two blocks of conv, gn, relu, conv, gn, skip add, relu;
/// global average pool; linear 10.
fn residual_cnn() -> Network {
    let block = |conv1, norm1, conv2, norm2| {
        [
            Op::Residual(vec![
                conv(conv1, 16, 3, 1, 1),
                Op::GroupNorm { name: norm1, groups: 4 },
                Op::Act(Activation::Relu),
                conv(conv2, 16, 3, 1, 1),
                Op::GroupNorm { name: norm2, groups: 4 },
            ]),
            Op::Act(Activation::Relu),
        ]
    };
    let mut ops = vec![
        conv("stem", 16, 3, 1, 1),
        Op::GroupNorm { name: "stem_norm", groups: 4 },
        Op::Act(Activation::Relu),
    ];
    ops.extend(block("block1_conv1", "block1_norm1", "block1_conv2", "block1_norm2"));
    ops.extend(block("block2_conv1", "block2_norm1", "block2_conv2", "block2_norm2"));
    ops.extend([Op::GlobalAvgPool, Op::Linear { name: "head", out: 10, bias: true }]);
    Network::new(ops, ResidualCnn::INPUT_SHAPE, ResidualCnn::LOSS, ResidualCnn::PARAMS)
}

fn embedding_net() -> Network {
    Network::new(
        vec![
            Op::Embedding { name: "embedding", vocab: 10_004, dim: 16 },
            Op::MeanOverSequence,
            Op::Linear { name: "fc", out: 2, bias: true },
        ],
        EmbeddingNet::INPUT_SHAPE,
        EmbeddingNet::LOSS,
        EmbeddingNet::PARAMS,
    )
}

fn lstm_net() -> Network {
    lstm_net_of::<LstmNet>()
}

/// The same network over the parameter layout of `M` (a copy of `LstmNet`, e.g. with forced norms).
fn lstm_net_of<M: DpModel>() -> Network {
    Network::new(
        vec![
            Op::Embedding { name: "embedding", vocab: 10_004, dim: 100 },
            Op::Lstm { name: "lstm", hidden: 100, biases: ONE_BIAS },
            Op::MeanOverSequence,
            Op::Linear { name: "fc", out: 2, bias: true },
        ],
        M::INPUT_SHAPE,
        M::LOSS,
        M::PARAMS,
    )
}

fn tiny_seq() -> Network {
    embedding_lstm_mean_linear::<TinySeq>()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn adult_logreg_matches_the_reference() {
    let net = logreg();
    for (size, seed) in [(2, 1), (3, 2)] {
        report("AdultLogReg", &check_model::<AdultLogReg>(&net, size, seed));
    }
    check_zero_factor_example::<AdultLogReg>(&net, 3, 3);
    check_reference_gradient::<AdultLogReg>(&net, 4, 105);
}

#[test]
fn adult_ffnn_matches_the_reference() {
    let net = ffnn();
    for (size, seed) in [(2, 11), (3, 12)] {
        report("AdultFfnn", &check_model::<AdultFfnn>(&net, size, seed));
    }
    check_zero_factor_example::<AdultFfnn>(&net, 3, 13);
    check_reference_gradient::<AdultFfnn>(&net, 14, 100);
}

#[test]
fn mnist_cnn_matches_the_reference() {
    let net = mnist_cnn();
    assert_eq!(net.layout.count, 26_010);
    for (size, seed) in [(2, 21), (3, 22)] {
        report("MnistCnn", &check_model::<MnistCnn>(&net, size, seed));
    }
    check_zero_factor_example::<MnistCnn>(&net, 3, 23);
    check_reference_gradient::<MnistCnn>(&net, 24, 40);
}

#[test]
fn mnist_cnn_matches_the_reference_on_mostly_blank_images() {
    // Real digits are mostly exact zeros: the background of every feature map is a constant, so max
    // pooling meets exact ties, and the gradient must go where PyTorch sends it.
    let blank_but_a_square = |inputs: &mut [f32]| {
        for (k, v) in inputs.iter_mut().enumerate() {
            let (row, col) = ((k % 784) / 28, k % 28);
            if !(9..19).contains(&row) || !(6..16).contains(&col) {
                *v = 0.0;
            }
        }
    };
    let net = mnist_cnn();
    report("MnistCnn (blank)", &check_model_with::<MnistCnn>(&net, 2, 25, blank_but_a_square));
    report("MnistCnn (blank)", &check_model_with::<MnistCnn>(&net, 3, 26, blank_but_a_square));
}

#[test]
fn mnist_cnn_tanh_matches_the_reference() {
    let net = mnist_cnn_tanh();
    assert_eq!(net.layout.count, 26_010);
    for (size, seed) in [(2, 61), (3, 62)] {
        report("MnistCnnTanh", &check_model::<MnistCnnTanh>(&net, size, seed));
    }
    check_zero_factor_example::<MnistCnnTanh>(&net, 3, 63);
    check_reference_gradient::<MnistCnnTanh>(&net, 64, 40);
}

#[test]
fn scatter_cnn_matches_the_reference() {
    let net = scatter_cnn();
    assert_eq!(net.layout.count, 33_228);
    for (size, seed) in [(2, 71), (3, 72)] {
        report("ScatterCnn", &check_model::<ScatterCnn>(&net, size, seed));
    }
    check_zero_factor_example::<ScatterCnn>(&net, 3, 73);
    check_reference_gradient::<ScatterCnn>(&net, 74, 40);
}

#[test]
fn cifar10_cnn_matches_the_reference() {
    let net = cifar10_cnn();
    assert_eq!(net.layout.count, 605_226);
    report("Cifar10Cnn", &check_model::<Cifar10Cnn>(&net, 2, 31));
    check_zero_factor_example::<Cifar10Cnn>(&net, 2, 32);
    check_reference_gradient::<Cifar10Cnn>(&net, 33, 4);
}

#[test]
fn every_image_op_and_layer_norm_match_the_reference() {
    let net = image_ops();
    for (size, seed) in [(2, 41), (3, 42)] {
        report("ImageOps", &check_model::<ImageOps>(&net, size, seed));
    }
    check_zero_factor_example::<ImageOps>(&net, 3, 43);
    check_reference_gradient::<ImageOps>(&net, 44, 200);
    let net = dense_norm();
    for (size, seed) in [(2, 45), (3, 46)] {
        report("DenseNorm", &check_model::<DenseNorm>(&net, size, seed));
    }
    check_zero_factor_example::<DenseNorm>(&net, 3, 47);
    check_reference_gradient::<DenseNorm>(&net, 48, 100);
}

#[test]
fn residual_cnn_matches_the_reference() {
    let net = residual_cnn();
    assert_eq!(net.layout.count, 10_058);
    for (size, seed) in [(2, 51), (3, 52)] {
        report("ResidualCnn", &check_model::<ResidualCnn>(&net, size, seed));
    }
    check_zero_factor_example::<ResidualCnn>(&net, 3, 53);
    check_reference_gradient::<ResidualCnn>(&net, 54, 20);
}

#[test]
fn embedding_net_matches_the_reference() {
    let net = embedding_net();
    assert_eq!(net.layout.count, 160_098);
    for (size, seed) in [(2, 61), (3, 62)] {
        report("EmbeddingNet", &check_model::<EmbeddingNet>(&net, size, seed));
    }
    check_zero_factor_example::<EmbeddingNet>(&net, 3, 63);
    check_reference_gradient::<EmbeddingNet>(&net, 64, 40);
}

#[test]
fn lstm_net_matches_the_reference() {
    let net = lstm_net();
    assert_eq!(net.layout.count, 1_081_002);
    report("LstmNet", &check_model::<LstmNet>(&net, 2, 71));
    check_zero_factor_example::<LstmNet>(&net, 2, 72);
    check_reference_gradient::<LstmNet>(&net, 73, 4);
}

#[test]
fn a_small_embedding_lstm_model_matches_the_reference() {
    let net = tiny_seq();
    for (size, seed) in [(2, 81), (3, 82)] {
        report("TinySeq", &check_model::<TinySeq>(&net, size, seed));
    }
    check_zero_factor_example::<TinySeq>(&net, 3, 83);
    check_reference_gradient::<TinySeq>(&net, 84, 200);
}

#[test]
fn one_workspace_serves_batches_of_1_4_and_2() {
    // Poisson sampling gives every step its own batch size; a stale value of a larger batch must
    // never reach a smaller one.
    fn run<M: DpModel>(net: &Network, seed: u64)
    where
        M::Input: reference::harness::TestInput,
    {
        let mut ws = Workspace::new::<M>(1);
        for (k, size) in [1, 4, 2].into_iter().enumerate() {
            report(M::NAME, &check_model_in::<M>(net, &mut ws, size, seed + k as u64, |_| {}));
        }
    }
    run::<MnistCnn>(&mnist_cnn(), 91);
    run::<ResidualCnn>(&residual_cnn(), 94);
    run::<ImageOps>(&image_ops(), 97);
    run::<TinySeq>(&tiny_seq(), 100);
    run::<EmbeddingNet>(&embedding_net(), 103);
}

#[test]
fn forced_ghost_and_forced_direct_norms_match_the_reference() {
    for (size, seed) in [(2, 111), (3, 112)] {
        report("MnistCnnGhost", &check_model::<MnistCnnGhost>(&mnist_cnn_of::<MnistCnnGhost>(), size, seed));
        report(
            "MnistCnnDirect",
            &check_model::<MnistCnnDirect>(&mnist_cnn_of::<MnistCnnDirect>(), size, seed),
        );
        report(
            "TinySeqGhost",
            &check_model::<TinySeqGhost>(&embedding_lstm_mean_linear::<TinySeqGhost>(), size, seed),
        );
        report(
            "TinySeqDirect",
            &check_model::<TinySeqDirect>(&embedding_lstm_mean_linear::<TinySeqDirect>(), size, seed),
        );
    }
    report("LstmNetGhost", &check_model::<LstmNetGhost>(&lstm_net_of::<LstmNetGhost>(), 2, 113));
    report("LstmNetDirect", &check_model::<LstmNetDirect>(&lstm_net_of::<LstmNetDirect>(), 2, 113));
    let strategies = |layers: &[dp::LayerInfo]| layers.iter().filter_map(|l| l.strategy).collect::<Vec<_>>();
    assert!(strategies(MnistCnnGhost::LAYERS).iter().all(|s| *s == dp::NormStrategy::Ghost));
    assert!(strategies(MnistCnnDirect::LAYERS).iter().all(|s| *s == dp::NormStrategy::Direct));
    for (layers, forced) in [
        (LstmNetGhost::LAYERS, dp::NormStrategy::Ghost),
        (LstmNetDirect::LAYERS, dp::NormStrategy::Direct),
        (TinySeqGhost::LAYERS, dp::NormStrategy::Ghost),
        (TinySeqDirect::LAYERS, dp::NormStrategy::Direct),
    ] {
        let strategies = strategies(layers);
        assert_eq!(strategies[0], dp::NormStrategy::TokenGrouped, "{layers:?}");
        assert!(strategies[1..].iter().all(|s| *s == forced), "{layers:?}");
    }
    // The clipped sums checked above: a direct layer at several positions (the convs, the LSTMs) is
    // the weighted sum of its kept per-example gradients; a ghost layer, and a direct one at one
    // position (the linear layers), is the book-keeping product.
    let kept = |layers: &[dp::LayerInfo]| {
        layers.iter().filter(|l| l.strategy.is_some()).map(|l| l.kept_gradients).collect::<Vec<_>>()
    };
    assert_eq!(kept(MnistCnnDirect::LAYERS), [true, true, false, false]);
    assert_eq!(kept(MnistCnnGhost::LAYERS), [false; 4]);
    assert_eq!(kept(LstmNetDirect::LAYERS), [false, true, false]);
    assert_eq!(kept(TinySeqDirect::LAYERS), [false, true, false]);
    assert_eq!(kept(LstmNetGhost::LAYERS), [false; 3]);
}

// ---------------------------------------------------------------------------------------------
// GELU and SiLU: their derivatives need their inputs, so they never run in a layer's output pass.

/// A standalone gelu on the input (no gradient needed), gelu and silu after linear layers, and silu
/// then relu in a row.
#[dp_model(input = [5], loss = mse)]
struct GeluSilu {
    #[layer(gelu)]
    squash: Gelu,
    #[layer(linear(out = 6), gelu)]
    fc1: Linear,
    #[layer(linear(out = 4), silu, relu)]
    fc2: Linear,
    #[layer(linear(out = 2))]
    fc3: Linear,
}

fn gelu_silu() -> Network {
    Network::new(
        vec![
            Op::Act(Activation::Gelu),
            Op::Linear { name: "fc1", out: 6, bias: true },
            Op::Act(Activation::Gelu),
            Op::Linear { name: "fc2", out: 4, bias: true },
            Op::Act(Activation::Silu),
            Op::Act(Activation::Relu),
            Op::Linear { name: "fc3", out: 2, bias: true },
        ],
        GeluSilu::INPUT_SHAPE,
        GeluSilu::LOSS,
        GeluSilu::PARAMS,
    )
}

/// gelu on a value that is also read by `+` (its backward writes a partial gradient that is added
/// in), and silu after the sum (after an op that could fuse it, had its derivative come from the
/// output).
#[dp_model(input = [4], loss = cross_entropy(classes = 3))]
mod gelu_residual {
    pub struct GeluResidual {
        #[layer(linear(out = 6))]
        a: Linear,
        #[layer(linear(out = 6))]
        b: Linear,
        #[layer(linear(out = 3))]
        head: Linear,
    }

    impl GeluResidual {
        fn forward(&self, x: Input) -> Output {
            let h = self.a(x);
            let g = h.gelu();
            self.head((self.b(g) + h).silu())
        }
    }
}
use gelu_residual::GeluResidual;

fn gelu_residual() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "a", out: 6, bias: true },
            Op::Residual(vec![Op::Act(Activation::Gelu), Op::Linear { name: "b", out: 6, bias: true }]),
            Op::Act(Activation::Silu),
            Op::Linear { name: "head", out: 3, bias: true },
        ],
        GeluResidual::INPUT_SHAPE,
        GeluResidual::LOSS,
        GeluResidual::PARAMS,
    )
}

#[test]
fn gelu_and_silu_match_the_reference() {
    for (size, seed) in [(1, 121), (3, 122), (64, 123)] {
        report("GeluSilu", &check_model::<GeluSilu>(&gelu_silu(), size, seed));
        report("GeluResidual", &check_model::<GeluResidual>(&gelu_residual(), size, seed));
    }
    check_zero_factor_example::<GeluSilu>(&gelu_silu(), 3, 124);
    check_zero_factor_example::<GeluResidual>(&gelu_residual(), 3, 125);
    check_reference_gradient::<GeluSilu>(&gelu_silu(), 126, 60);
    check_reference_gradient::<GeluResidual>(&gelu_residual(), 127, 60);
    assert!(GeluSilu::LAYERS.iter().any(|l| l.op == "gelu" && l.flops_per_example > 0));
}

// ---------------------------------------------------------------------------------------------
// The norms contract of `DpModel::per_example_norms`: it overwrites every entry of `sq_norms`.

/// `per_example_norms` gives the same norms whatever `sq_norms` held before: zeros, garbage of every
/// size and sign, or NaN. A norm kernel that added into its column without it being cleared would
/// report garbage or NaN for the examples of this batch.
fn norms_ignore_what_the_buffer_held<M: DpModel>(seed: u64)
where
    M::Input: reference::harness::TestInput,
{
    use rand::SeedableRng;
    use reference::harness::TestInput;
    let size = 3;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let inputs = <M::Input as TestInput>::random(&mut rng, size, M::input_len(), M::VOCAB);
    let labels: Vec<f32> = (0..size * M::LOSS.label_len())
        .map(|i| match M::LOSS {
            Loss::CrossEntropy { classes } => (i % classes) as f32,
            Loss::BinaryCrossEntropy => (i % 2) as f32,
            Loss::MeanSquaredError { .. } => 0.25 * i as f32 - 0.5,
        })
        .collect();
    let batch = Batch { inputs: &inputs, labels: &labels, size };
    let groups = M::GROUPS.len();
    let mut ws = Workspace::new::<M>(size);
    let mut losses = vec![0.0f32; size];
    let mut norms_after = |fill: &dyn Fn(usize) -> f32| {
        let mut sq_norms: Vec<f32> = (0..size * groups).map(fill).collect();
        model.per_example_norms(&mut ws, batch, &mut losses, &mut sq_norms);
        sq_norms
    };
    let clean = norms_after(&|_| 0.0);
    assert!(clean.iter().all(|v| v.is_finite() && *v > 0.0), "{}: {clean:?}", M::NAME);
    let garbage = |k: usize| [1e30, -3.5, f32::MAX, -1e-20, f32::INFINITY][k % 5];
    for (held, fill) in [("garbage", &garbage as &dyn Fn(usize) -> f32), ("NaN", &|_| f32::NAN)] {
        let got = norms_after(fill);
        for (k, (g, c)) in got.iter().zip(&clean).enumerate() {
            assert!(
                (g - c).abs() <= 1e-5 * c.abs(),
                "{}: group {} of example {} is {g} over a buffer of {held}, {c} over zeros",
                M::NAME,
                M::GROUPS[k % groups],
                k / groups,
            );
        }
    }
}

#[test]
fn per_example_norms_overwrite_every_entry_of_the_buffer() {
    norms_ignore_what_the_buffer_held::<AdultFfnn>(131); // ghost linear
    norms_ignore_what_the_buffer_held::<MnistCnnDirect>(132); // direct conv and linear
    norms_ignore_what_the_buffer_held::<MnistCnnGhost>(133); // ghost conv
    norms_ignore_what_the_buffer_held::<ImageOps>(134); // group and layer norm, grouped conv
    norms_ignore_what_the_buffer_held::<DenseNorm>(135);
    norms_ignore_what_the_buffer_held::<ResidualCnn>(136);
    norms_ignore_what_the_buffer_held::<TinySeqGhost>(137); // embedding, ghost LSTM
    norms_ignore_what_the_buffer_held::<TinySeqDirect>(138); // direct LSTM
    norms_ignore_what_the_buffer_held::<GeluSilu>(139);
}
