//! The CNN on MNIST.

use crate::dp_model;

/// The founding paper's MNIST CNN: 26,010 parameters.
///
/// Subramani, Vadivelu, Kamath, "Enabling Fast Differentially Private SGD via Just-in-Time Compilation
/// and Vectorization" (NeurIPS 2021), appendix B, after Papernot et al. (2020): conv 1→16 (8×8,
/// stride 2, padding 3), relu, max-pool 2 stride 1, conv 16→32 (4×4, stride 2), relu, max-pool 2
/// stride 1, flatten (512), linear 32, relu, linear 10.
#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
pub struct MnistCnn {
    #[layer(conv2d(out = 16, kernel = 8, stride = 2, padding = 3), relu, max_pool2d(kernel = 2, stride = 1))]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 4, stride = 2), relu, max_pool2d(kernel = 2, stride = 1))]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32), relu)]
    fc1: Linear,
    #[layer(linear(out = 10))]
    fc2: Linear,
}
