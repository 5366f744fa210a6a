//! Noise for the clipped gradient sum.
//!
//! - [`gaussian`]: N(0, 1) per coordinate in floating point (scaled by σC in the optimizer pass), from
//!   ChaCha20 uniforms with 53 random bits (ziggurat; Box–Muller as the reference);
//! - [`chacha`]: the ChaCha20 keystream sixteen blocks at a time, for the bulk draw of [`gaussian`];
//! - [`discrete_gaussian`]: the exact discrete Gaussian sampler of Canonne, Kamath and Steinke (2020),
//!   in integer arithmetic only;
//! - [`secure`]: the secure mode against floating-point attacks (Mironov 2012): per-example clipped
//!   gradients on an integer grid, an exact integer sum, discrete Gaussian noise.

pub mod chacha;
pub mod discrete_gaussian;
pub mod gaussian;
pub mod secure;

pub use discrete_gaussian::DiscreteGaussian;
pub use gaussian::GaussianNoise;
pub use secure::SecureAggregator;
