//! CPU kernels for dp: dense products and the fused element-wise passes around them.
//!
//! Kernels take plain slices and explicit dimensions; the code `#[dp_model]` generates passes the
//! static shapes as literals so that each call site specialises.

pub mod activation;
pub mod arena;
pub mod attention;
pub mod conv;
pub mod conv_chunks;
pub mod conv_folded;
pub mod dense;
pub mod embedding;
pub mod embedding_mean;
pub mod fast_math;
pub mod gemm;
pub mod gemm_bf16;
pub mod loss;
pub mod lstm;
pub mod norm_layers;
pub mod patches;
pub mod per_example;
pub mod pool;
pub mod sequence;

#[cfg(test)]
mod test_support;

pub use activation::Activation;
pub use gemm::{sgemm, Op};
