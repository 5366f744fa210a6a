//! The device backend: every planned step as calls of the runtime's `DeviceOps` primitives (one
//! matrix product or one element-wise launch each) with the plan's literal shapes and offsets, buffers
//! named by region and offset instead of host slices. A model gets a device program only when every
//! one of its steps has device primitives ([`unsupported`] says which step stops it); the others keep
//! the trait's defaults, which refuse with that reason.
//!
//! The emitted statements share the names `dev` (the `&mut dyn DeviceOps`) and `n` (the batch size).

mod add;
mod attention;
mod conv2d;
mod embedding;
pub(crate) mod emit;
mod layout;
mod linear;
mod lora;
mod lstm;
mod mean;
mod norm_layer;
mod patches;
mod pool;
mod position_embedding;
mod positional;
mod scratch;
mod unary;

use super::backend::Backend;
use crate::ops::{Layer, Step};
use crate::parse::ast::LossKind;
use crate::plan::Plan;
pub use emit::prelude;
use emit::{arena, lit, region, rt};
pub use layout::Layout;
use proc_macro2::TokenStream;
use quote::quote;

/// The device backend.
pub struct Device;

/// Why the model has no device program: the first step without device primitives. Every step has
/// them now, so this is `None`; a new step must say here whether it has them (the match lists every
/// step), and a model with a step that has none keeps the trait's refusing defaults.
pub fn unsupported(plan: &Plan) -> Option<String> {
    plan.steps.iter().find_map(|step| match step {
        // A layer's fused activation takes its derivative from the output; one that needs its input
        // (GELU, SiLU) is never fused (`Graph::fusion`) but is a step of its own, reading the layer's
        // kept output (`plan/fusion_tests.rs`).
        Step::Linear(_)
        | Step::Activation(_)
        | Step::Flatten(_)
        | Step::Conv2d(_)
        | Step::Norm(_)
        | Step::Embedding(_)
        | Step::Lstm(_)
        | Step::PositionEmbedding(_)
        | Step::Attention(_)
        | Step::Pool2d(_)
        | Step::GlobalAvgPool(_)
        | Step::Add(_)
        | Step::Mean(_)
        | Step::Patches(_)
        | Step::LoraSum(_) => None,
    })
}

impl Backend for Device {
    fn loss(&self, plan: &Plan, loss: LossKind) -> TokenStream {
        let rt = rt();
        let kind = match loss {
            LossKind::CrossEntropy { classes } => {
                let k = lit(classes.value);
                quote!(#rt::DeviceLoss::SoftmaxCrossEntropy { classes: #k })
            }
            LossKind::BinaryCrossEntropy => quote!(#rt::DeviceLoss::BinaryCrossEntropyWithLogits),
            LossKind::MeanSquaredError => {
                let k = lit(plan.output_len);
                quote!(#rt::DeviceLoss::MeanSquaredError { outputs: #k })
            }
        };
        let label_len = lit(match loss {
            LossKind::MeanSquaredError => plan.output_len,
            _ => 1,
        });
        let (out, grad) = (emit::read(plan, plan.output), arena(plan, plan.output_grad));
        let (labels, losses) = (
            region(quote!(Labels), quote!(0), quote!(n * #label_len)),
            region(quote!(Losses), quote!(0), quote!(n)),
        );
        quote!(dev.loss(#kind, #out, #labels, n, #losses, #grad)?;)
    }

    fn forward(&self, plan: &Plan, step: &Step) -> TokenStream {
        match step {
            Step::Linear(s) => linear::forward(plan, s),
            Step::Activation(s) => unary::activation_forward(plan, s),
            Step::Flatten(_) => TokenStream::new(),
            Step::Embedding(s) => embedding::forward(plan, s),
            Step::Conv2d(s) => conv2d::forward(plan, s),
            Step::Pool2d(s) => pool::forward(plan, s),
            Step::GlobalAvgPool(s) => pool::global_forward(plan, s),
            Step::Norm(s) => norm_layer::forward(plan, s),
            Step::Add(s) => add::forward(plan, s),
            Step::Lstm(s) => lstm::forward(plan, s),
            Step::Mean(s) => mean::forward(plan, s),
            Step::PositionEmbedding(s) => position_embedding::forward(plan, s),
            Step::Patches(s) => patches::forward(plan, s),
            Step::Attention(s) => attention::forward(plan, s),
            Step::LoraSum(s) => lora::forward(plan, s),
        }
    }

    fn backward(&self, plan: &Plan, step: &Step) -> TokenStream {
        match step {
            Step::Linear(s) => linear::backward(plan, s),
            Step::Activation(s) => unary::activation_backward(plan, s),
            Step::Flatten(s) => unary::flatten_backward(plan, s),
            // Nothing upstream of token ids is trained: its δ is written by its reader.
            Step::Embedding(_) => TokenStream::new(),
            Step::Conv2d(s) => conv2d::backward(plan, s),
            Step::Pool2d(s) => pool::backward(plan, s),
            Step::GlobalAvgPool(s) => pool::global_backward(plan, s),
            Step::Norm(s) => norm_layer::backward(plan, s),
            Step::Add(s) => add::backward(plan, s),
            Step::Lstm(s) => lstm::backward(plan, s),
            Step::Mean(s) => mean::backward(plan, s),
            Step::PositionEmbedding(s) => position_embedding::backward(plan, s),
            Step::Patches(s) => patches::backward(plan, s),
            Step::Attention(s) => attention::backward(plan, s),
            Step::LoraSum(s) => lora::backward(plan, s),
        }
    }

    fn gradient_sum(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream {
        match layer {
            Layer::Linear(s) => linear::gradient_sum(plan, s),
            Layer::Embedding(s) => embedding::sum(plan, s, false),
            Layer::Conv2d(s) => conv2d::gradient_sum(plan, s),
            Layer::Norm(s) => norm_layer::gradient_sum(plan, s),
            Layer::Lstm(s) => lstm::gradient_sum(plan, s),
            Layer::PositionEmbedding(s) => position_embedding::gradient_sum(plan, s),
            Layer::Attention(s) => attention::gradient_sum(plan, s),
        }
    }

    fn norms(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream {
        match layer {
            Layer::Linear(s) => linear::norms(plan, s),
            Layer::Embedding(s) => embedding::norms(plan, s),
            Layer::Conv2d(s) => conv2d::norms(plan, s),
            Layer::Norm(s) => norm_layer::norms(plan, s),
            Layer::Lstm(s) => lstm::norms(plan, s),
            Layer::PositionEmbedding(s) => position_embedding::norms(plan, s),
            Layer::Attention(s) => attention::norms(plan, s),
        }
    }

    fn clipped_sum(&self, plan: &Plan, layer: Layer<'_>) -> TokenStream {
        match layer {
            Layer::Linear(s) => linear::clipped_sum(plan, s),
            Layer::Embedding(s) => embedding::sum(plan, s, true),
            Layer::Conv2d(s) => conv2d::clipped_sum(plan, s),
            Layer::Norm(s) => norm_layer::clipped_sum(plan, s),
            Layer::Lstm(s) => lstm::clipped_sum(plan, s),
            Layer::PositionEmbedding(s) => position_embedding::clipped_sum(plan, s),
            Layer::Attention(s) => attention::clipped_sum(plan, s),
        }
    }
}
