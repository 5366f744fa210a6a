//! Noise for the clipped gradient sum.
//!
//! - [`gaussian`]: N(0, σ²C²) per coordinate in floating point, from ChaCha20 uniforms with 53 random
//!   bits (Box–Muller);
//! - [`discrete_gaussian`]: the exact discrete Gaussian sampler of Canonne, Kamath and Steinke (2020),
//!   in integer arithmetic only;
//! - [`secure`]: the secure mode against floating-point attacks (Mironov 2012): per-example clipped
//!   gradients on an integer grid, an exact integer sum, discrete Gaussian noise.

pub mod discrete_gaussian;
pub mod gaussian;
pub mod secure;

pub use discrete_gaussian::DiscreteGaussian;
pub use gaussian::GaussianNoise;
pub use secure::SecureAggregator;
