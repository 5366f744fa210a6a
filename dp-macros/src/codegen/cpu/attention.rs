//! `multi_head_attention` on the CPU: the two projections are position-wise linear layers over all
//! B·T rows (`dense`), the core between them `dp_kernels::attention`; the norms add both projections'
//! positional norms (each with its strategy) and biases into the group's column; the clipped sum is
//! one GEMM per projection with each example's rows scaled by its factor.

use super::emit::{accumulate, buf_ident, lit, param, read, scratch, strategy, write, zero_group};
use super::kernels;
use crate::ops::attention::AttentionStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// `const DIMS: AttentionDims = ...;`
fn dims(s: &AttentionStep) -> TokenStream {
    let (t, d, h, causal, module) = (lit(s.steps), lit(s.dim), lit(s.heads), s.causal, kernels::attention());
    quote! {
        const DIMS: #module::AttentionDims =
            #module::AttentionDims { steps: #t, dim: #d, heads: #h, causal: #causal };
    }
}

/// Splits the group's gradient into `(g_in_w, g_in_b, g_out_w, g_out_b)`.
fn grads(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (first, last) = (&plan.params[s.in_weight], &plan.params[s.out_bias]);
    let (start, end) = (lit(first.offset), lit(last.offset + last.len));
    let (iw, ib, ow) = (
        lit(plan.params[s.in_weight].len),
        lit(plan.params[s.in_bias].len),
        lit(plan.params[s.out_weight].len),
    );
    quote! {
        let (g_in_w, rest) = grad[#start..#end].split_at_mut(#iw);
        let (g_in_b, rest) = rest.split_at_mut(#ib);
        let (g_out_w, g_out_b) = rest.split_at_mut(#ow);
    }
}

pub fn forward(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (dense, attention, root) = (kernels::dense(), kernels::attention(), kernels::root());
    let (t, d, d3) = (lit(s.steps), lit(s.dim), lit(3 * s.dim));
    let (x, w_in, b_in) = (read(s.input), param(plan, s.in_weight), param(plan, s.in_bias));
    let (w_out, b_out) = (param(plan, s.out_weight), param(plan, s.out_bias));
    let (qkv, probs, ctx, y) = (write(s.qkv), write(s.probs), write(s.context), write(s.output));
    let (qkv_r, ctx_r, dims) = (read(Buf::Arena(s.qkv)), read(Buf::Arena(s.context)), dims(s));
    quote! {{
        #dims
        #dense::linear_forward(
            #x, #w_in, ::core::option::Option::Some(#b_in), n * #t, #d, #d3, #root::Activation::Identity, #qkv, precision,
        );
        #attention::attention_forward(&DIMS, n, #qkv_r, #probs, #ctx);
        #dense::linear_forward(
            #ctx_r, #w_out, ::core::option::Option::Some(#b_out), n * #t, #d, #d, #root::Activation::Identity, #y, precision,
        );
    }}
}

pub fn backward(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (dense, attention) = (kernels::dense(), kernels::attention());
    let (t, d, d3, dims) = (lit(s.steps), lit(s.dim), lit(3 * s.dim), dims(s));
    let (dy, w_out, w_in) =
        (read(Buf::Arena(s.output_grad)), param(plan, s.out_weight), param(plan, s.in_weight));
    let (dctx, dctx_r) = (write(s.context_grad), read(Buf::Arena(s.context_grad)));
    let (qkv, probs, dqkv, dqkv_r) =
        (read(Buf::Arena(s.qkv)), read(Buf::Arena(s.probs)), write(s.qkv_grad), read(Buf::Arena(s.qkv_grad)));
    let scratch = write(s.scratch);
    let (dx, add) = match s.input_grad {
        Ok(target) => (write(target.write), accumulate(target)),
        Err(discarded) => (write(discarded), quote!()),
    };
    quote! {{
        #dims
        #dense::linear_input_grad(#dy, #w_out, n * #t, #d, #d, #dctx, precision);
        #attention::attention_backward(&DIMS, n, #qkv, #probs, #dctx_r, #dqkv, #scratch);
        #dense::linear_input_grad(#dqkv_r, #w_in, n * #t, #d, #d3, #dx, precision);
        #add
    }}
}

/// What the backward keeps for the weight gradients, as (input, δ) of each projection: the input
/// projection's `x` and `δqkv`, the output projection's context and `δy`.
fn kept(s: &AttentionStep) -> (TokenStream, TokenStream, TokenStream, TokenStream) {
    (
        read(s.input),
        read(Buf::Arena(s.qkv_grad)),
        read(Buf::Arena(s.context)),
        read(Buf::Arena(s.output_grad)),
    )
}

pub fn gradient_sum(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (dense, grads) = (kernels::dense(), grads(plan, s));
    let (t, d, d3) = (lit(s.steps), lit(s.dim), lit(3 * s.dim));
    let (x, dqkv, ctx, dy) = kept(s);
    quote! {{
        #grads
        #dense::linear_grad_add(#x, #dqkv, n * #t, #d, #d3, g_in_w, ::core::option::Option::Some(g_in_b));
        #dense::linear_grad_add(#ctx, #dy, n * #t, #d, #d, g_out_w, ::core::option::Option::Some(g_out_b));
    }}
}

/// The kernels add the four tensors' norms into the column: zeroed first.
pub fn norms(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let k = kernels::per_example();
    let (groups, g, zero) = (lit(plan.groups.len()), lit(s.group), zero_group(plan, s.group));
    let (t, d, d3) = (lit(s.steps), lit(s.dim), lit(3 * s.dim));
    let (s_in, s_out, slots) =
        (strategy(s.in_strategy), strategy(s.out_strategy), scratch(plan.scratch.norms));
    let (x, dqkv, ctx, dy) = kept(s);
    quote! {{
        #zero
        let in_proj = #k::PositionalLayer::new(#t, #d, #d3);
        let out_proj = #k::PositionalLayer::new(#t, #d, #d);
        #k::norms_sq(#s_in, &in_proj, n, #x, #dqkv, #slots, &mut sq_norms[#g..], #groups);
        #k::bias_norms_sq(&in_proj, n, #dqkv, &mut sq_norms[#g..], #groups);
        #k::norms_sq(#s_out, &out_proj, n, #ctx, #dy, #slots, &mut sq_norms[#g..], #groups);
        #k::bias_norms_sq(&out_proj, n, #dy, &mut sq_norms[#g..], #groups);
    }}
}

/// Both projections by book-keeping through the shared clipping scratch (the kept δ's and inputs are
/// only read, so the clipped sum can be repeated).
pub fn clipped_sum(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (dense, grads) = (kernels::dense(), grads(plan, s));
    let (groups, g, clip) = (lit(plan.groups.len()), lit(s.group), buf_ident(plan.clip_scratch));
    let (t, d, d3) = (lit(s.steps), lit(s.dim), lit(3 * s.dim));
    let (x, dqkv, ctx, dy) = kept(s);
    let some = quote!(::core::option::Option::Some);
    quote! {{
        #grads
        let (scratch_a, scratch_delta) = #clip.split_at_mut(n * #t * #d);
        #dense::linear_clipped_grad_add(
            #x, #dqkv, n * #t, #t, #d, #d3, factors, #groups, #g, scratch_a, scratch_delta, g_in_w, #some(g_in_b),
        );
        #dense::linear_clipped_grad_add(
            #ctx, #dy, n * #t, #t, #d, #d, factors, #groups, #g, scratch_a, scratch_delta, g_out_w, #some(g_out_b),
        );
    }}
}
