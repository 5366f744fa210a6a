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

/// The same CNN with tanh activations (26,010 parameters): the tempered sigmoid of Papernot et al.,
/// "Tempered Sigmoid Activations for Deep Learning with Differential Privacy" (AAAI 2021), whose
/// best member is tanh (scale 2, temperature 2, offset 1). Bounded activations keep the gradients
/// from exploding when clipping cuts them, which is where ReLU loses accuracy under DP-SGD; that paper
/// reports 98.1% on MNIST at ε = 2.93 with this architecture.
#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
pub struct MnistCnnTanh {
    #[layer(conv2d(out = 16, kernel = 8, stride = 2, padding = 3), tanh, max_pool2d(kernel = 2, stride = 1))]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 4, stride = 2), tanh, max_pool2d(kernel = 2, stride = 1))]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32), tanh)]
    fc1: Linear,
    #[layer(linear(out = 10))]
    fc2: Linear,
}
