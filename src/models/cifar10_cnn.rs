//! The CNN on CIFAR-10.

use crate::dp_model;

/// The founding paper's CIFAR-10 CNN: 605,226 parameters.
///
/// Subramani, Vadivelu, Kamath, "Enabling Fast Differentially Private SGD via Just-in-Time Compilation
/// and Vectorization" (NeurIPS 2021), appendix B, after Papernot et al. (2020): eight 3×3 convolutions
/// with padding 1 (3→32→32, average pool 2, →64→64, average pool 2, →128→128, average pool 2,
/// →256→10), relu after every conv but the last, then a global average pool over the 4×4 logits.
#[dp_model(input = [3, 32, 32], loss = cross_entropy(classes = 10))]
pub struct Cifar10Cnn {
    #[layer(conv2d(out = 32, kernel = 3, padding = 1), relu)]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 3, padding = 1), relu, avg_pool2d(kernel = 2))]
    conv2: Conv2d,
    #[layer(conv2d(out = 64, kernel = 3, padding = 1), relu)]
    conv3: Conv2d,
    #[layer(conv2d(out = 64, kernel = 3, padding = 1), relu, avg_pool2d(kernel = 2))]
    conv4: Conv2d,
    #[layer(conv2d(out = 128, kernel = 3, padding = 1), relu)]
    conv5: Conv2d,
    #[layer(conv2d(out = 128, kernel = 3, padding = 1), relu, avg_pool2d(kernel = 2))]
    conv6: Conv2d,
    #[layer(conv2d(out = 256, kernel = 3, padding = 1), relu)]
    conv7: Conv2d,
    #[layer(conv2d(out = 10, kernel = 3, padding = 1), global_avg_pool)]
    conv8: Conv2d,
}
