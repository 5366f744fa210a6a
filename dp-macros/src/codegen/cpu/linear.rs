//! `linear` on the CPU: a GEMM with the bias and activation in its output pass (over all B·T rows on
//! a sequence); on a vector ghost norms by the Goodfellow identity or direct ones, on a sequence the
//! positional norms of `per_example` (ghost over the T×T Grams, or direct, possibly keeping the
//! per-example gradients); the clipped sum as one GEMM over the rows of δ scaled by the factors, or the
//! weighted sum of the kept gradients.

use super::activation::fused_backward;
use super::emit::{
    accumulate, act, buf_ident, grad_slices, kept_clipped_sum, lit, optional_param, param, position_rows,
    read, scratch, strategy, write, zero_group,
};
use super::kernels;
use crate::ops::linear::DenseStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use dp_spec::Strategy;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(plan: &Plan, d: &DenseStep) -> TokenStream {
    let (a, w, y) = (read(d.input), param(plan, d.weight), write(d.output));
    let bias = optional_param(plan, d.bias);
    let (n_in, n_out, f, dense) = (lit(d.inputs), lit(d.outputs), act(d.act), kernels::dense());
    let rows = position_rows(d.positions);
    quote! {
        #dense::linear_forward(#a, #w, #bias, #rows, #n_in, #n_out, #f, #y, precision);
    }
}

pub fn backward(plan: &Plan, d: &DenseStep) -> TokenStream {
    let n_out = lit(d.outputs);
    let act_back = fused_backward(d.act, d.delta, d.output, d.positions * d.outputs);
    let rows = position_rows(d.positions);
    let input_grad = d.input_grad.map(|t| {
        let (delta, w, ga, n_in) =
            (read(Buf::Arena(d.delta)), param(plan, d.weight), write(t.write), lit(d.inputs));
        let (acc, dense) = (accumulate(t), kernels::dense());
        quote!(#dense::linear_input_grad(#delta, #w, #rows, #n_in, #n_out, #ga, precision); #acc)
    });
    quote!(#act_back #input_grad)
}

pub fn gradient_sum(plan: &Plan, d: &DenseStep) -> TokenStream {
    let (a, delta, n_in, n_out) = (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
    let (slices, dense, rows) =
        (grad_slices(plan, d.weight, d.bias), kernels::dense(), position_rows(d.positions));
    quote! {{
        #slices
        #dense::linear_grad_add(#a, #delta, #rows, #n_in, #n_out, gw, gb);
    }}
}

/// Ghost norms on a vector overwrite the column; the positional kernels add into it after it is zeroed.
pub fn norms(plan: &Plan, d: &DenseStep) -> TokenStream {
    let groups = lit(plan.groups.len());
    let (a, delta, n_in, n_out) = (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
    let gidx = lit(d.group);
    if let Some(kept) = d.kept {
        let (k, zero, t) = (kernels::per_example(), zero_group(plan, d.group), lit(d.positions));
        let (has_bias, kept) = (d.bias.is_some(), write(kept));
        return quote! {{
            let layer = #k::PositionalLayer::new(#t, #n_in, #n_out);
            #zero
            #k::kept_direct_norms_sq(&layer, n, #a, #delta, #has_bias, #kept, &mut sq_norms[#gidx..], #groups, precision);
        }};
    }
    match (d.strategy, d.positions) {
        (Strategy::Ghost, 1) => {
            let (has_bias, dense) = (d.bias.is_some(), kernels::dense());
            quote! {
                #dense::linear_ghost_sq_norms(
                    #a, #delta, n, #n_in, #n_out, #has_bias, sq_norms, #groups, #gidx,
                );
            }
        }
        (chosen, positions) => {
            let k = kernels::per_example();
            let slots = scratch(plan.scratch.norms);
            let zero = zero_group(plan, d.group);
            let bias = d
                .bias
                .map(|_| quote!(#k::bias_norms_sq(&layer, n, #delta, &mut sq_norms[#gidx..], #groups);));
            let (t, strategy) = (lit(positions), strategy(chosen));
            quote! {{
                let layer = #k::PositionalLayer::new(#t, #n_in, #n_out);
                #zero
                #k::norms_sq(#strategy, &layer, n, #a, #delta, #slots, &mut sq_norms[#gidx..], #groups);
                #bias
            }}
        }
    }
}

pub fn clipped_sum(plan: &Plan, d: &DenseStep) -> TokenStream {
    if let Some(kept) = d.kept {
        return kept_clipped_sum(plan, kept, d.group, d.weight, d.bias.unwrap_or(d.weight));
    }
    let groups = lit(plan.groups.len());
    let scratch = buf_ident(plan.clip_scratch);
    let (a, delta, n_in, n_out) = (read(d.input), read(Buf::Arena(d.delta)), lit(d.inputs), lit(d.outputs));
    let (slices, group, dense) = (grad_slices(plan, d.weight, d.bias), lit(d.group), kernels::dense());
    let (rows, t) = (position_rows(d.positions), lit(d.positions));
    quote! {{
        #slices
        let (scratch_a, scratch_delta) = #scratch.split_at_mut(#rows * #n_in);
        #dense::linear_clipped_grad_add(
            #a, #delta, #rows, #t, #n_in, #n_out, factors, #groups, #group, scratch_a, scratch_delta, gw, gb,
        );
    }}
}
