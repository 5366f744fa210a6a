//! The CPU backend: every step a call into `dp-kernels` with literal dimensions, buffers carved from
//! the workspace arena at the plan's offsets. One module per op, as in `crate::ops`.

mod activation;
mod add;
mod attention;
mod conv2d;
mod embedding;
pub mod emit;
mod flatten;
pub mod kernels;
mod linear;
mod lora;
mod loss;
mod lstm;
mod mean;
mod norm_layer;
mod patches;
mod pool;
mod position_embedding;

use super::backend::Backend;
use crate::ops::{Layer, Step};
use crate::parse::ast::LossKind;
use crate::plan::Plan;
use proc_macro2::TokenStream;

/// The CPU backend.
pub struct Cpu;

impl Backend for Cpu {
    fn loss(&self, plan: &Plan, loss: LossKind) -> TokenStream {
        loss::loss(plan, loss)
    }

    fn forward(&self, plan: &Plan, step: &Step) -> TokenStream {
        match step {
            Step::Linear(s) => linear::forward(plan, s),
            Step::Conv2d(s) => conv2d::forward(plan, s),
            Step::Norm(s) => norm_layer::forward(plan, s),
            Step::Embedding(s) => embedding::forward(plan, s),
            Step::Lstm(s) => lstm::forward(plan, s),
            Step::PositionEmbedding(s) => position_embedding::forward(plan, s),
            Step::Attention(s) => attention::forward(plan, s),
            Step::Activation(s) => activation::forward(s),
            Step::Flatten(_) => TokenStream::new(),
            Step::Pool2d(s) => pool::forward(s),
            Step::GlobalAvgPool(s) => pool::global_forward(s),
            Step::Add(s) => add::forward(s),
            Step::Mean(s) => mean::forward(s),
            Step::Patches(s) => patches::forward(s),
            Step::LoraSum(s) => lora::forward(s),
        }
    }

    fn backward(&self, plan: &Plan, step: &Step) -> TokenStream {
        match step {
            Step::Linear(s) => linear::backward(plan, s),
            Step::Conv2d(s) => conv2d::backward(plan, s),
            Step::Norm(s) => norm_layer::backward(plan, s),
            Step::Embedding(_) => embedding::backward(),
            Step::Lstm(s) => lstm::backward(plan, s),
            Step::PositionEmbedding(s) => position_embedding::backward(s),
            Step::Attention(s) => attention::backward(plan, s),
            Step::Activation(s) => activation::backward(s),
            Step::Flatten(s) => flatten::backward(s),
            Step::Pool2d(s) => pool::backward(s),
            Step::GlobalAvgPool(s) => pool::global_backward(s),
            Step::Add(s) => add::backward(s),
            Step::Mean(s) => mean::backward(s),
            Step::Patches(s) => patches::backward(s),
            Step::LoraSum(s) => lora::backward(s),
        }
    }

    fn gradient_sum(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream {
        match layer {
            Layer::Linear(s) => linear::gradient_sum(plan, s),
            Layer::Conv2d(s) => conv2d::weight_gradient(plan, s, false),
            Layer::Norm(s) => norm_layer::gradient_sum(plan, s),
            Layer::Embedding(s) => embedding::gradient_sum(plan, s),
            Layer::Lstm(s) => lstm::gradient_sum(plan, s),
            Layer::PositionEmbedding(s) => position_embedding::gradient_sum(plan, s),
            Layer::Attention(s) => attention::gradient_sum(plan, s),
        }
    }

    fn norms(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream {
        match layer {
            Layer::Linear(s) => linear::norms(plan, s),
            Layer::Conv2d(s) => conv2d::norms(plan, s),
            Layer::Norm(s) => norm_layer::norms(plan, s),
            Layer::Embedding(s) => embedding::norms(plan, s),
            Layer::Lstm(s) => lstm::norms(plan, s),
            Layer::PositionEmbedding(s) => position_embedding::norms(plan, s),
            Layer::Attention(s) => attention::norms(plan, s),
        }
    }

    fn clipped_sum(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream {
        match layer {
            Layer::Linear(s) => linear::clipped_sum(plan, s),
            Layer::Conv2d(s) => conv2d::clipped_sum(plan, s),
            Layer::Norm(s) => norm_layer::clipped_sum(plan, s),
            Layer::Embedding(s) => embedding::clipped_sum(plan, s),
            Layer::Lstm(s) => lstm::clipped_sum(plan, s),
            Layer::PositionEmbedding(s) => position_embedding::clipped_sum(plan, s),
            Layer::Attention(s) => attention::clipped_sum(plan, s),
        }
    }
}
