//! The losses on the CPU: each example's loss and its gradient in one pass.

use super::emit::{lit, read, write};
use super::kernels;
use crate::parse::ast::LossKind;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

pub fn loss(plan: &Plan, loss: LossKind) -> TokenStream {
    let (out, g, module) = (read(plan.output), write(plan.output_grad), kernels::loss());
    match loss {
        LossKind::CrossEntropy { classes } => {
            let k = lit(classes.value);
            quote!(#module::softmax_cross_entropy(#out, labels, n, #k, losses, #g);)
        }
        LossKind::BinaryCrossEntropy => {
            quote!(#module::binary_cross_entropy_with_logits(#out, labels, n, losses, #g);)
        }
        LossKind::MeanSquaredError => {
            let k = lit(plan.output_len);
            quote!(#module::mean_squared_error(#out, labels, n, #k, losses, #g);)
        }
    }
}
