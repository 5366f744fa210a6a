//! A small residual CNN with group norm (beyond the founding paper).

/// A residual CNN of the kind that does well on DP image benchmarks today (group norm instead of
/// batch norm, which would mix the examples of a batch): 10,058 parameters on CIFAR-10 shapes.
///
/// Beyond the founding paper (Subramani et al. 2021); after He et al., "Deep Residual Learning for
/// Image Recognition" (CVPR 2016), with Wu & He's group normalization (ECCV 2018) as in De et al.,
/// "Unlocking High-Accuracy Differentially Private Image Classification through Scale" (2022): a stem
/// conv 3→16 + group norm + relu, two residual blocks (conv, group norm, relu, conv, group norm, then
/// the skip connection added and relu), global average pooling and a linear layer to 10 classes.
#[crate::dp_model(input = [3, 32, 32], loss = cross_entropy(classes = 10))]
pub mod residual_cnn {
    /// The residual CNN (see the module).
    pub struct ResidualCnn {
        #[layer(conv2d(out = 16, kernel = 3, padding = 1))]
        stem: Conv2d,
        #[layer(group_norm(groups = 4), relu)]
        stem_norm: GroupNorm,
        #[layer(conv2d(out = 16, kernel = 3, padding = 1))]
        block1_conv1: Conv2d,
        #[layer(group_norm(groups = 4), relu)]
        block1_norm1: GroupNorm,
        #[layer(conv2d(out = 16, kernel = 3, padding = 1))]
        block1_conv2: Conv2d,
        #[layer(group_norm(groups = 4))]
        block1_norm2: GroupNorm,
        #[layer(conv2d(out = 16, kernel = 3, padding = 1))]
        block2_conv1: Conv2d,
        #[layer(group_norm(groups = 4), relu)]
        block2_norm1: GroupNorm,
        #[layer(conv2d(out = 16, kernel = 3, padding = 1))]
        block2_conv2: Conv2d,
        #[layer(group_norm(groups = 4))]
        block2_norm2: GroupNorm,
        #[layer(global_avg_pool, linear(out = 10))]
        head: Linear,
    }

    impl ResidualCnn {
        fn forward(&self, x: Input) -> Output {
            let h = self.stem_norm(self.stem(x));
            let r = self.block1_norm2(self.block1_conv2(self.block1_norm1(self.block1_conv1(h))));
            let h = (h + r).relu();
            let r = self.block2_norm2(self.block2_conv2(self.block2_norm1(self.block2_conv1(h))));
            let h = (h + r).relu();
            self.head(h)
        }
    }
}
