//! The passes of the generated `DpModel`, each a walk over the planned steps that asks the backend for
//! every step's statements: forward in order, the loss and the backward in reverse, then the
//! per-layer passes (plain gradient sum, norms, clipped sum) over the trained parameterised layers.

use super::backend::Backend;
use crate::ops::Layer;
use crate::parse::ast::LossKind;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// The forward program: every step's kernel in order.
pub fn forward(backend: &impl Backend, plan: &Plan) -> TokenStream {
    let steps = plan.steps.iter().map(|step| backend.forward(plan, step));
    quote!(#(#steps)*)
}

/// The loss and its gradient, then the backward program: steps in reverse, each output gradient δ
/// left in its layer's buffer for the norms and the clipped sum.
pub fn backward(backend: &impl Backend, plan: &Plan, loss: LossKind) -> TokenStream {
    let loss = backend.loss(plan, loss);
    let steps = plan
        .steps
        .iter()
        .zip(&plan.roles)
        .rev()
        .filter(|(_, role)| role.backward)
        .map(|(step, _)| backend.backward(plan, step));
    quote!(#loss #(#steps)*)
}

/// Non-private accumulation: grad += Σ_i g_i, layer by layer.
pub fn gradient_sum(backend: &impl Backend, plan: &Plan) -> TokenStream {
    let layers = layers(plan).into_iter().map(|layer| backend.gradient_sum(plan, layer));
    quote!(#(#layers)*)
}

/// Every example's squared gradient norm of every group, from the kept activations and output
/// gradients. Each group's column is written by exactly one layer's norms.
pub fn norms(backend: &impl Backend, plan: &Plan) -> TokenStream {
    let layers = layers(plan);
    let mut writers = vec![0; plan.groups.len()];
    layers.iter().for_each(|layer| writers[layer.group()] += 1);
    assert!(
        writers.iter().all(|&w| w == 1),
        "every parameter group needs exactly one norm kernel writing its column: {writers:?}"
    );
    let layers = layers.into_iter().map(|layer| backend.norms(plan, layer));
    quote!(#(#layers)*)
}

/// The clipped sum by book-keeping, layer by layer.
pub fn clipped_sum(backend: &impl Backend, plan: &Plan) -> TokenStream {
    let layers = layers(plan).into_iter().map(|layer| backend.clipped_sum(plan, layer));
    quote!(#(#layers)*)
}

/// The trained parameterised steps, in forward order (a frozen layer has no group and no gradient).
fn layers(plan: &Plan) -> Vec<Layer<'_>> {
    plan.steps
        .iter()
        .zip(&plan.roles)
        .filter(|(_, role)| !role.frozen)
        .filter_map(|(s, _)| s.layer())
        .collect()
}
