//! CPU kernels for dp: dense products and the fused element-wise passes around them.
//!
//! Kernels take plain slices and explicit dimensions; the code `#[dp_model]` generates passes the
//! static shapes as literals so that each call site specialises.

pub mod activation;
pub mod arena;
pub mod dense;
pub mod gemm;
pub mod loss;

pub use activation::Activation;
pub use gemm::{sgemm, Op};
