//! The small CNN that Tramèr & Boneh train on ScatterNet features of MNIST-shaped images.

use crate::dp_model;

/// A CNN on the 81×7×7 scattering features (J = 2, L = 8) of a 28×28 image: 33,228 parameters.
///
/// Tramèr & Boneh, "Differentially Private Learning Needs Better Features (or Much More Data)"
/// (ICLR 2021), the "ScatterNet+CNN" of their MNIST and Fashion-MNIST results (98.7% and 89.7% at
/// ε = 3), as in their code (github.com/ftramer/Handcrafted-DP, `models.py`, `MNIST_CNN` with 81
/// input channels): group normalisation of the features (27 groups of 3 channels), conv 81→16 (3×3,
/// stride 2, padding 1), tanh, conv 16→32 (3×3, padding 1), tanh, flatten (512), linear 32, tanh,
/// linear 10. One difference: their group norm has no affine parameters; ours learns a per-channel
/// scale and shift (162 of the parameters).
///
/// Its input is not an image: `dp::data::scattering::Scattering2d::new(28, 28, 2, 8)` turns each image
/// into these features, once, before training (a fixed per-example function: no privacy cost).
#[dp_model(input = [81, 7, 7], loss = cross_entropy(classes = 10))]
pub struct ScatterCnn {
    #[layer(group_norm(groups = 27))]
    norm: GroupNorm,
    #[layer(conv2d(out = 16, kernel = 3, stride = 2, padding = 1), tanh)]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 3, padding = 1), tanh)]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32), tanh)]
    fc1: Linear,
    #[layer(linear(out = 10))]
    fc2: Linear,
}
