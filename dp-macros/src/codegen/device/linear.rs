//! `linear` on the device: the products through `gemm` (the batch and any sequence axis folded into
//! M), the bias and activation in one launch after the forward product. At one position with ghost
//! norms, the norms by the Goodfellow identity and the clipped sum as the plain sum over rows scaled by
//! the factors (the inputs of an example with factor 0 zeroed, so that its non-finite values never
//! reach the sum); over a sequence or with direct norms, kept per-example gradients
//! ([`super::positional`]), whatever the CPU's planner chose.

use super::emit::{accumulate, arena, grad, lit, param, per_group, read, rt};
use super::positional::Positional;
use super::scratch::{keeps_positional, positional};
use crate::codegen::cpu::emit::{act, position_rows};
use crate::ops::activation::function::Act;
use crate::ops::linear::DenseStep;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// Which products may round their operands in bf16: the forward's and the backward's to the input,
/// never a weight-gradient sum formed apart from its norms (a ghost linear layer's norms read the
/// unrounded `a` and `δ`).
#[derive(Clone, Copy)]
pub(super) enum Product {
    ForwardOrBackward,
    GradientSum,
}

/// `c (+)= op(a)·op(b)`, the batch size `n` as M or K where `m`/`k` say so.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    m: TokenStream,
    nn: TokenStream,
    k: TokenStream,
    a: (TokenStream, bool),
    b: (TokenStream, bool),
    c: TokenStream,
    accumulate: bool,
    product: Product,
) -> TokenStream {
    let rt = rt();
    let ((a, at), (b, bt)) = (a, b);
    let operands = match product {
        Product::ForwardOrBackward => quote!(#rt::Operands::OfPrecision),
        Product::GradientSum => quote!(#rt::Operands::F32),
    };
    quote! {
        dev.gemm(#rt::Gemm {
            m: #m, n: #nn, k: #k,
            a: #a, a_transposed: #at,
            b: #b, b_transposed: #bt,
            c: #c, accumulate: #accumulate,
            operands: #operands,
        })?;
    }
}

/// The layer as a positional one, when it keeps per-example gradients on the device.
fn as_positional(plan: &Plan, d: &DenseStep) -> Option<Positional> {
    keeps_positional(d).then(|| Positional {
        input: read(plan, d.input),
        delta: arena(plan, d.delta),
        steps: d.positions,
        inputs: d.inputs,
        outputs: d.outputs,
        weight: d.weight,
        bias: d.bias,
        group: d.group,
        kept: positional(plan, d.weight),
    })
}

pub fn forward(plan: &Plan, d: &DenseStep) -> TokenStream {
    let (n_in, n_out, rows) = (lit(d.inputs), lit(d.outputs), position_rows(d.positions));
    let (a, w, y) = (read(plan, d.input), param(plan, d.weight), arena(plan, d.output));
    let product = gemm(
        rows.clone(),
        quote!(#n_out),
        quote!(#n_in),
        (a, false),
        (w, true),
        y.clone(),
        false,
        Product::ForwardOrBackward,
    );
    let epilogue = (d.bias.is_some() || d.act != Act::Identity).then(|| {
        let bias = match d.bias {
            Some(slot) => {
                let b = param(plan, slot);
                quote!(::core::option::Option::Some(#b))
            }
            None => quote!(::core::option::Option::None),
        };
        let f = act(d.act);
        quote!(dev.bias_activation(#y, #bias, #rows, #n_out, #f)?;)
    });
    quote!(#product #epilogue)
}

pub fn backward(plan: &Plan, d: &DenseStep) -> TokenStream {
    let (n_in, n_out, rows) = (lit(d.inputs), lit(d.outputs), position_rows(d.positions));
    let delta = arena(plan, d.delta);
    let act_back = (d.act != Act::Identity).then(|| {
        let (y, f) = (arena(plan, d.output), act(d.act));
        quote!(dev.activation_backward(#delta, #y, #rows * #n_out, #f)?;)
    });
    let input_grad = d.input_grad.map(|t| {
        let (w, ga) = (param(plan, d.weight), arena(plan, t.write));
        let product = gemm(
            rows.clone(),
            quote!(#n_in),
            quote!(#n_out),
            (delta.clone(), false),
            (w, false),
            ga,
            false,
            Product::ForwardOrBackward,
        );
        let acc = accumulate(plan, t);
        quote!(#product #acc)
    });
    quote!(#act_back #input_grad)
}

/// `gw += δᵀ·a`, `gb += Σ_r δ_r` over the rows of `delta` and `a`.
fn weighted_sum(plan: &Plan, d: &DenseStep, a: TokenStream, delta: TokenStream) -> TokenStream {
    let (n_in, n_out) = (lit(d.inputs), lit(d.outputs));
    let gw = grad(plan, d.weight);
    let product = gemm(
        quote!(#n_out),
        quote!(#n_in),
        quote!(n),
        (delta.clone(), true),
        (a, false),
        gw,
        true,
        Product::GradientSum,
    );
    let bias = d.bias.map(|slot| {
        let gb = grad(plan, slot);
        quote!(dev.column_sums_add(#delta, n, #n_out, #gb)?;)
    });
    quote!(#product #bias)
}

pub fn gradient_sum(plan: &Plan, d: &DenseStep) -> TokenStream {
    if let Some(p) = as_positional(plan, d) {
        return p.gradient_sum(plan);
    }
    weighted_sum(plan, d, read(plan, d.input), arena(plan, d.delta))
}

pub fn norms(plan: &Plan, d: &DenseStep) -> TokenStream {
    if let Some(p) = as_positional(plan, d) {
        return p.norms(plan);
    }
    let (n_in, n_out, groups, group) = (lit(d.inputs), lit(d.outputs), lit(plan.groups.len()), lit(d.group));
    let (a, delta, sq, has_bias) =
        (read(plan, d.input), arena(plan, d.delta), per_group(plan, "SqNorms"), d.bias.is_some());
    quote!(dev.linear_ghost_norms(#a, #delta, n, #n_in, #n_out, #has_bias, #sq, #groups, #group)?;)
}

pub fn clipped_sum(plan: &Plan, d: &DenseStep) -> TokenStream {
    if let Some(p) = as_positional(plan, d) {
        return p.clipped_sum(plan);
    }
    let rt = rt();
    let (n_in, n_out, groups, group) = (lit(d.inputs), lit(d.outputs), lit(plan.groups.len()), lit(d.group));
    let (a, delta, factors, scratch) = (
        read(plan, d.input),
        arena(plan, d.delta),
        per_group(plan, "Factors"),
        arena(plan, plan.clip_scratch),
    );
    let sum = weighted_sum(plan, d, quote!(scratch_a), quote!(scratch_delta));
    quote! {{
        let scratch = #scratch;
        let (scratch_a, scratch_delta) = (scratch.sub(0, n * #n_in), scratch.sub(n * #n_in, n * #n_out));
        dev.scale_rows(#delta, scratch_delta, n, 1, #n_out, #factors, #groups, #group, #rt::RowScale::ByFactor)?;
        dev.scale_rows(#a, scratch_a, n, 1, #n_in, #factors, #groups, #group, #rt::RowScale::Copy)?;
        #sum
    }}
}
