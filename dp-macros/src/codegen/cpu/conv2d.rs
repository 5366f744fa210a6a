//! `conv2d` on the CPU. Patches and δ rows live in shared scratch and are re-derived by each pass that
//! reads them (`im2col` from the kept input, `output_grad_by_group` from the kept NCHW δ), chunk by
//! chunk inside `dp_kernels::conv_chunks`, which also decides whether a conv's chunks fold into one
//! product (few positions: `dp_kernels::conv_folded`). A conv with kept gradients forms them in its
//! norms and its clipped sum is their weighted sum.

use super::activation::{fused_backward, fused_forward};
use super::emit::{
    accumulate, grad_slices, kept_clipped_sum, lit, optional_param, param, per_task_scratch, read, scratch,
    scratch_or_empty, strategy, write, zero_group,
};
use super::kernels;
use crate::ops::conv2d::ConvStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use dp_spec::Conv2dGeometry;
use proc_macro2::TokenStream;
use quote::quote;

fn geom(g: &Conv2dGeometry) -> TokenStream {
    let conv = kernels::conv();
    let (in_c, in_h, in_w, out_c, kh, kw) =
        (lit(g.in_c), lit(g.in_h), lit(g.in_w), lit(g.out_c), lit(g.kh), lit(g.kw));
    let (stride, padding, dilation, groups) = (lit(g.stride), lit(g.padding), lit(g.dilation), lit(g.groups));
    quote! {
        #conv::Conv2dGeometry {
            in_c: #in_c, in_h: #in_h, in_w: #in_w, out_c: #out_c, kh: #kh, kw: #kw,
            stride: #stride, padding: #padding, dilation: #dilation, groups: #groups,
        }
    }
}

pub fn forward(plan: &Plan, s: &ConvStep) -> TokenStream {
    let (g, x, w, y) = (geom(&s.geom), read(s.input), param(plan, s.weight), write(s.output));
    let bias = optional_param(plan, s.bias);
    let (patches, rows) = (per_task_scratch(plan), scratch_or_empty(plan.scratch.rows));
    let act = fused_forward(s.act, s.output, s.geom.output_len());
    let chunks = kernels::conv_chunks();
    quote! {{
        let geom = #g;
        #chunks::conv2d_forward(&geom, n, #x, #w, #bias, #patches, #rows, #y, precision);
        #act
    }}
}

pub fn backward(plan: &Plan, s: &ConvStep) -> TokenStream {
    let act = fused_backward(s.act, s.delta, s.output, s.geom.output_len());
    let input_grad = s.input_grad.map(|t| {
        let (g, delta, w) = (geom(&s.geom), read(Buf::Arena(s.delta)), param(plan, s.weight));
        let (patches, rows, dx) =
            (per_task_scratch(plan), scratch_or_empty(plan.scratch.rows), write(t.write));
        let (acc, chunks) = (accumulate(t), kernels::conv_chunks());
        quote! {{
            let geom = #g;
            #chunks::conv2d_backward_input(&geom, n, #delta, #w, #patches, #rows, #dx, precision);
            #acc
        }}
    });
    quote!(#act #input_grad)
}

/// The kernel adds every group's norms into the column: zeroed first. With kept gradients it also
/// writes each example's gradient for the clipped sum.
pub fn norms(plan: &Plan, s: &ConvStep) -> TokenStream {
    let (groups, gidx) = (lit(plan.groups.len()), lit(s.group));
    let (g, x, delta) = (geom(&s.geom), read(s.input), read(Buf::Arena(s.delta)));
    let patches = per_task_scratch(plan);
    let zero = zero_group(plan, s.group);
    let (bias, chunks) = (s.bias.is_some(), kernels::conv_chunks());
    let call = match s.kept {
        Some(kept) => {
            let kept = write(kept);
            quote! {
                #chunks::conv2d_kept_norms_sq(
                    &#g, #bias, n, #x, #delta, #patches, #kept, &mut sq_norms[#gidx..], #groups, precision,
                );
            }
        }
        None => {
            let (strat, slots) = (strategy(s.strategy), scratch(plan.scratch.norms));
            quote! {
                #chunks::conv2d_norms_sq(
                    &#g, #strat, #bias, n, #x, #delta, #patches, #slots, &mut sq_norms[#gidx..], #groups, precision,
                );
            }
        }
    };
    quote! {{
        #zero
        #call
    }}
}

/// The clipped sum: the weighted sum of the kept gradients, or the book-keeping product.
pub fn clipped_sum(plan: &Plan, s: &ConvStep) -> TokenStream {
    match s.kept {
        Some(kept) => kept_clipped_sum(plan, kept, s.group, s.weight, s.bias.unwrap_or(s.weight)),
        None => weight_gradient(plan, s, true),
    }
}

/// The clipped sum (`clipped = true`, the group's factors) or the plain sum of the weight gradient.
pub fn weight_gradient(plan: &Plan, s: &ConvStep, clipped: bool) -> TokenStream {
    let (groups, gidx) = (lit(plan.groups.len()), lit(s.group));
    let (g, x, delta) = (geom(&s.geom), read(s.input), read(Buf::Arena(s.delta)));
    let (patches, rows) = (per_task_scratch(plan), scratch_or_empty(plan.scratch.rows));
    let slices = grad_slices(plan, s.weight, s.bias);
    let factors = if clipped {
        quote!(::core::option::Option::Some((&factors[#gidx..], #groups)))
    } else {
        quote!(::core::option::Option::None)
    };
    let chunks = kernels::conv_chunks();
    quote! {{
        #slices
        #chunks::conv2d_weight_gradient(&#g, n, #x, #delta, #factors, #patches, #rows, gw, gb, precision);
    }}
}
