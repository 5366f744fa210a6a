//! `position_embedding` on the device: the `[T, d]` table added to every example (a copy, then the
//! table as the bias of `n` rows of `T·d` values, no activation). Its per-example gradient IS the kept
//! output gradient δ (`n × T·d`), so the norms, the clipped sum and the plain sum read δ as kept
//! gradients; backward, δ is copied to the input's gradient.

use super::emit::{accumulate, arena, grad, lit, param, per_group, read};
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Act;
use crate::ops::position_embedding::PositionEmbeddingStep;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (x, table, y, len, identity) =
        (read(plan, s.input), param(plan, s.weight), arena(plan, s.output), lit(s.len), act(Act::Identity));
    quote! {
        dev.copy(#y, #x, n * #len)?;
        dev.bias_activation(#y, ::core::option::Option::Some(#table), n, #len, #identity)?;
    }
}

pub fn backward(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let Some(target) = s.input_grad else { return quote!() };
    let (delta, dx, len, add) =
        (arena(plan, s.delta), arena(plan, target.write), lit(s.len), accumulate(plan, target));
    quote! {
        dev.copy(#dx, #delta, n * #len)?;
        #add
    }
}

pub fn norms(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (delta, len) = (arena(plan, s.delta), lit(s.len));
    let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(s.group));
    quote!(dev.kept_sq_norms(#delta, #len, ::core::option::Option::None, n, #sq, #groups, #group)?;)
}

fn sum(plan: &Plan, s: &PositionEmbeddingStep, factors: TokenStream) -> TokenStream {
    let (delta, len, g) = (arena(plan, s.delta), lit(s.len), grad(plan, s.weight));
    quote!(dev.kept_weighted_sum(#delta, n, #len, #factors, #g)?;)
}

pub fn clipped_sum(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(s.group));
    sum(plan, s, quote!(::core::option::Option::Some((#f, #groups, #group))))
}

pub fn gradient_sum(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    sum(plan, s, quote!(::core::option::Option::None))
}
