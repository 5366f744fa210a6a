//! Parameter counts of the founding paper's models (appendix B of Subramani et al. 2021), their
//! parameter names and shapes (PyTorch's), and the norm strategy of every layer: the one
//! `dp_kernels::per_example::choose_strategy` picks from the layer's static T, d, p under the
//! compiler's 1 MiB per-layer, per-example cap.

use dp::__private::kernels::per_example::{choose_strategy, Strategy, DIRECT_MEMORY_CAP_BYTES as CAP};
use dp::models::{Cifar10Cnn, MnistCnn, ResidualCnn};
use dp::prelude::*;
use dp::NormStrategy;

fn strategies<M: DpModel>() -> Vec<(&'static str, NormStrategy)> {
    M::LAYERS.iter().filter_map(|l| l.strategy.map(|s| (l.name, s))).collect()
}

fn kernel_choice(t: usize, d: usize, p: usize) -> NormStrategy {
    match choose_strategy(t, d, p, CAP) {
        Strategy::Ghost => NormStrategy::Ghost,
        Strategy::Direct => NormStrategy::Direct,
    }
}

#[test]
fn mnist_cnn() {
    assert_eq!(MnistCnn::PARAM_COUNT, 26_010);
    let shapes: Vec<(&str, &[usize])> = MnistCnn::PARAMS.iter().map(|p| (p.name, p.shape)).collect();
    assert_eq!(
        shapes,
        [
            ("conv1.weight", &[16, 1, 8, 8][..]),
            ("conv1.bias", &[16]),
            ("conv2.weight", &[32, 16, 4, 4]),
            ("conv2.bias", &[32]),
            ("fc1.weight", &[32, 512]),
            ("fc1.bias", &[32]),
            ("fc2.weight", &[10, 32]),
            ("fc2.bias", &[10]),
        ]
    );
    let outputs: Vec<&[usize]> = MnistCnn::LAYERS.iter().map(|l| l.output_shape).collect();
    assert_eq!(
        outputs,
        [
            &[16, 14, 14][..],
            &[16, 14, 14],
            &[16, 13, 13],
            &[32, 5, 5],
            &[32, 5, 5],
            &[32, 4, 4],
            &[512],
            &[32],
            &[32],
            &[10]
        ]
    );
    // conv1: T = 14², d = 64, p = 16; conv2: T = 5², d = 256, p = 32; fc: T = 1.
    assert_eq!(
        strategies::<MnistCnn>(),
        [
            ("conv1", kernel_choice(196, 64, 16)),
            ("conv2", kernel_choice(25, 256, 32)),
            ("fc1", kernel_choice(1, 512, 32)),
            ("fc2", kernel_choice(1, 32, 10)),
        ]
    );
    assert_eq!(
        strategies::<MnistCnn>().iter().map(|s| s.1).collect::<Vec<_>>(),
        [NormStrategy::Direct, NormStrategy::Ghost, NormStrategy::Ghost, NormStrategy::Ghost]
    );
    println!("{}", MnistCnn::describe());
    println!("WORKSPACE_PER_EXAMPLE = {} f32", MnistCnn::WORKSPACE_PER_EXAMPLE);
}

#[test]
fn cifar10_cnn() {
    assert_eq!(Cifar10Cnn::PARAM_COUNT, 605_226);
    assert_eq!(Cifar10Cnn::GROUPS, ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "conv7", "conv8"]);
    assert_eq!(Cifar10Cnn::PARAMS[14].shape, [10, 256, 3, 3]);
    assert_eq!(Cifar10Cnn::LAYERS.last().unwrap().output_shape, [10]);
    // (T, d, p) of conv1..conv8.
    let dims = [
        (1024, 27, 32),
        (1024, 288, 32),
        (256, 288, 64),
        (256, 576, 64),
        (64, 576, 128),
        (64, 1152, 128),
        (16, 1152, 256),
        (16, 2304, 10),
    ];
    let want: Vec<NormStrategy> = dims.iter().map(|&(t, d, p)| kernel_choice(t, d, p)).collect();
    let got: Vec<NormStrategy> = strategies::<Cifar10Cnn>().iter().map(|s| s.1).collect();
    assert_eq!(got, want);
    use NormStrategy::{Direct, Ghost};
    assert_eq!(got, [Direct, Direct, Direct, Direct, Ghost, Ghost, Ghost, Direct]);
    // Every direct conv keeps its per-example gradients for the clipped sum (354 kB per example
    // together, under the 1 MiB cap).
    let kept: Vec<bool> =
        Cifar10Cnn::LAYERS.iter().filter(|l| l.strategy.is_some()).map(|l| l.kept_gradients).collect();
    assert_eq!(kept, got.iter().map(|&s| s == Direct).collect::<Vec<_>>());
    println!("{}", Cifar10Cnn::describe());
    println!("WORKSPACE_PER_EXAMPLE = {} f32", Cifar10Cnn::WORKSPACE_PER_EXAMPLE);
}

#[test]
fn residual_cnn() {
    assert_eq!(ResidualCnn::PARAM_COUNT, 10_058);
    assert_eq!(
        ResidualCnn::GROUPS,
        [
            "stem",
            "stem_norm",
            "block1_conv1",
            "block1_norm1",
            "block1_conv2",
            "block1_norm2",
            "block2_conv1",
            "block2_norm1",
            "block2_conv2",
            "block2_norm2",
            "head"
        ]
    );
    assert_eq!(ResidualCnn::PARAMS[2].name, "stem_norm.weight");
    assert_eq!(ResidualCnn::PARAMS[2].shape, [16]);
    let convs: Vec<NormStrategy> = ResidualCnn::LAYERS
        .iter()
        .filter(|l| l.op.starts_with("conv2d"))
        .map(|l| l.strategy.unwrap())
        .collect();
    assert_eq!(convs[0], kernel_choice(1024, 27, 16));
    assert!(convs[1..].iter().all(|&s| s == kernel_choice(1024, 144, 16)));
    assert!(ResidualCnn::LAYERS.iter().filter(|l| l.op.starts_with("conv2d")).all(|l| l.kept_gradients));
    println!("{}", ResidualCnn::describe());
    println!("WORKSPACE_PER_EXAMPLE = {} f32", ResidualCnn::WORKSPACE_PER_EXAMPLE);
}
