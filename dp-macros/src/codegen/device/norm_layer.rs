//! Group norm (and layer norm over a whole image or vector, one group) on the device: one launch
//! forward with the fused activation after it in place, one backward that also writes each example's
//! affine gradients, which the norms, the clipped sum and the plain sum then read as kept gradients.
//!
//! Layer norm over a sequence (`rows` rows of `dim` values) is group norm over `n·rows` "examples" of
//! `dim` channels of one value in one group; its backward's per-position affine gradients go to the
//! device's scratch and are summed over the rows into each example's.

use super::emit::{accumulate, arena, lit, per_group, read, rt, scratch};
use super::scratch::sequence_affine;
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Act;
use crate::ops::norm_layer::{NormDims, NormStep};
use crate::plan::memory::Stored;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// The group norm dimensions and its examples: `n`, or `n · rows` for a layer norm over a sequence.
fn dims(s: &NormStep) -> (TokenStream, TokenStream) {
    let ((channels, plane, groups), examples) = match s.dims {
        NormDims::Group { channels, plane, groups } => ((channels, plane, groups), quote!(n)),
        NormDims::Layer { rows, dim } => {
            let rows = lit(rows);
            ((dim, 1, 1), quote!(n * #rows))
        }
    };
    let (rt, c, p, g) = (rt(), lit(channels), lit(plane), lit(groups));
    (quote!(&#rt::GroupNormDims { channels: #c, plane: #p, groups: #g }), examples)
}

/// The affine weight's span and the bias's after it.
fn affine(plan: &Plan, s: &NormStep) -> (TokenStream, TokenStream) {
    let w = &plan.params[s.weight];
    let rt = rt();
    let (start, mid, len) = (lit(w.offset), lit(w.offset + w.len), lit(w.len));
    (
        quote!(#rt::Span::new(#rt::Region::Params, #start, #len)),
        quote!(#rt::Span::new(#rt::Region::Params, #mid, #len)),
    )
}

pub fn forward(plan: &Plan, s: &NormStep) -> TokenStream {
    let ((d, examples), x, y) = (dims(s), read(plan, s.input), arena(plan, s.output));
    let (mean, rstd) = (arena(plan, s.mean), arena(plan, s.rstd));
    let (w, b) = affine(plan, s);
    let act = (s.act != Act::Identity).then(|| {
        let (f, len) = (act(s.act), lit(s.dims.len()));
        quote!(dev.activation(#y, #y, n * #len, #f)?;)
    });
    quote! {
        dev.group_norm_forward(#x, #d, #examples, #w, #b, #y, #mean, #rstd)?;
        #act
    }
}

pub fn backward(plan: &Plan, s: &NormStep) -> TokenStream {
    let ((d, examples), x, dy) = (dims(s), read(plan, s.input), arena(plan, s.grad));
    let act_back = (s.act != Act::Identity).then(|| {
        let (y, f, len) = (arena(plan, s.output), act(s.act), lit(s.dims.len()));
        quote!(dev.activation_backward(#dy, #y, n * #len, #f)?;)
    });
    let (mean, rstd, (w, _)) = (arena(plan, s.mean), arena(plan, s.rstd), affine(plan, s));
    let (dx, kept, acc) =
        (arena(plan, s.input_grad.write), arena(plan, s.affine), accumulate(plan, s.input_grad));
    let backward = match s.dims {
        NormDims::Group { .. } => {
            quote!(dev.group_norm_backward(#x, #dy, #w, #mean, #rstd, #d, n, #dx, #kept)?;)
        }
        NormDims::Layer { rows, dim } => {
            let positions = scratch(sequence_affine(plan), rows * 2 * dim, Stored::F32);
            let (rows, width2) = (lit(rows), lit(2 * dim));
            quote! {
                dev.group_norm_backward(#x, #dy, #w, #mean, #rstd, #d, #examples, #dx, #positions)?;
                dev.sequence_sums(#positions, n, #rows, #width2, 1.0f32, #kept)?;
            }
        }
    };
    quote! {
        #act_back
        #backward
        #acc
    }
}

/// The weight and bias gradients together (the bias follows the weight in the parameters, as in each
/// example's kept gradients).
fn affine_grad(plan: &Plan, s: &NormStep) -> TokenStream {
    let w = &plan.params[s.weight];
    let rt = rt();
    let (start, len) = (lit(w.offset), lit(2 * w.len));
    quote!(#rt::Span::new(#rt::Region::Grad, #start, #len))
}

pub fn norms(plan: &Plan, s: &NormStep) -> TokenStream {
    let (kept, width2) = (arena(plan, s.affine), lit(2 * s.dims.width()));
    let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(s.group));
    quote!(dev.kept_sq_norms(#kept, #width2, ::core::option::Option::None, n, #sq, #groups, #group)?;)
}

fn sum(plan: &Plan, s: &NormStep, factors: TokenStream) -> TokenStream {
    let (kept, width2, g) = (arena(plan, s.affine), lit(2 * s.dims.width()), affine_grad(plan, s));
    quote!(dev.kept_weighted_sum(#kept, n, #width2, #factors, #g)?;)
}

pub fn clipped_sum(plan: &Plan, s: &NormStep) -> TokenStream {
    let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(s.group));
    sum(plan, s, quote!(::core::option::Option::Some((#f, #groups, #group))))
}

pub fn gradient_sum(plan: &Plan, s: &NormStep) -> TokenStream {
    sum(plan, s, quote!(::core::option::Option::None))
}
