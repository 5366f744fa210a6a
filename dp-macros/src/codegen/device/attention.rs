//! `multi_head_attention` on the device, the CPU's algorithm (`dp_kernels::attention`) as launches:
//!
//! - the projections are position-wise linear layers over all `n·T` rows: one product each forward
//!   and backward to its input, the biases by `bias_activation`;
//! - the core, per head (a runtime loop, never unrolled), as strided batches over the examples
//!   reading and writing the head's columns in place (`gemm_batched_rows`: `q`, `k`, `v` inside the
//!   `[T, 3d]` rows, the context inside `[T, d]` rows): `S = Q_h K_hᵀ` into the probabilities, one
//!   `attention_softmax` over every example's and head's rows (the scale `1/√d_h` and the causal mask
//!   in it), `O_h = P V_h`; backward `dV = Pᵀ dO`, `dP = dO V_hᵀ` into the device's scratch, one
//!   `attention_softmax_backward` (`scale·dS`), `dQ = (scale·dS) K_h`, `dK = (scale·dS)ᵀ Q_h`. The
//!   core's products are f32 in every precision, as the CPU's;
//! - norms: each example's gradients of the four tensors (`δqkv_iᵀ X_i`, `δy_iᵀ C_i` as strided
//!   batches, the biases as a row of ones times δ) kept in the device's scratch in the parameters'
//!   order, so that one `kept_sq_norms` gives the group's column (both projections' norms added, as
//!   the CPU adds them) and one `kept_weighted_sum` the clipped sum. These products are f32 in every
//!   precision, as the CPU's norms and clipped sum of attention are. Whatever the CPU's planner chose
//!   for each projection (ghost or direct norms), the device keeps the gradients, as for a conv;
//! - plain sum: both projections over all positions at once.

use super::emit::{accumulate, arena, grad, lit, param, per_group, read, region, rt, scratch};
use super::linear::{gemm, Product};
use super::scratch::{attention as attention_scratch, attention_kept_len, AttentionScratch};
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Act;
use crate::ops::attention::AttentionStep;
use crate::plan::memory::Stored;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// One operand of [`in_rows`]: its span (already offset to the head's first column), whether it is
/// stored transposed, its stride between examples and the row length it is stored with.
type Operand = (TokenStream, bool, usize, usize);

/// `c_i = op(a_i)·op(b_i)` for every example, each operand stored inside rows of its leading
/// dimension.
fn in_rows(
    (m, nn, k): (usize, usize, usize),
    (a, at, sa, lda): Operand,
    (b, bt, sb, ldb): Operand,
    (c, sc, ldc): (TokenStream, usize, usize),
    operands: TokenStream,
) -> TokenStream {
    let rt = rt();
    let (m, nn, k, sa, sb, sc) = (lit(m), lit(nn), lit(k), lit(sa), lit(sb), lit(sc));
    let (lda, ldb, ldc) = (lit(lda), lit(ldb), lit(ldc));
    quote! {
        dev.gemm_batched_rows(
            #rt::BatchedGemm {
                gemm: #rt::Gemm {
                    m: #m, n: #nn, k: #k,
                    a: #a, a_transposed: #at,
                    b: #b, b_transposed: #bt,
                    c: #c, accumulate: false,
                    operands: #operands,
                },
                batch: n, stride_a: #sa, stride_b: #sb, stride_c: #sc,
            },
            #rt::LeadingDims { a: #lda, b: #ldb, c: #ldc },
        )?;
    }
}

/// The core's products: f32 in every precision, as the CPU's `sgemm_strided_serial`.
fn core() -> TokenStream {
    let rt = rt();
    quote!(#rt::Operands::F32)
}

/// `from(span, at)`: the span from `at` on (a head's first column, a tensor in the kept block); empty
/// past the span's end (a batch of 0, whose products then refuse their empty spans with an error).
fn from() -> TokenStream {
    let rt = rt();
    quote!(let from = |s: #rt::Span, at: usize| s.sub(at.min(s.len), s.len.saturating_sub(at));)
}

/// The statements the core's passes share: [`from`], and `scale`, `1/√d_h` as the CPU computes it.
fn prelude(s: &AttentionStep) -> TokenStream {
    let (from, dh) = (from(), lit(s.dim / s.heads));
    quote! {
        #from
        let scale = 1.0f32 / (#dh as f32).sqrt();
    }
}

/// `y = x·Wᵀ + b` over the `n·T` rows.
fn projection(
    (rows, inputs, outputs): (usize, usize, usize),
    x: TokenStream,
    w: TokenStream,
    b: TokenStream,
    y: TokenStream,
) -> TokenStream {
    let (rows, inputs, outputs, identity) = (lit(rows), lit(inputs), lit(outputs), act(Act::Identity));
    let product = gemm(
        quote!(n * #rows),
        quote!(#outputs),
        quote!(#inputs),
        (x, false),
        (w, true),
        y.clone(),
        false,
        Product::ForwardOrBackward,
    );
    quote! {
        #product
        dev.bias_activation(#y, ::core::option::Option::Some(#b), n * #rows, #outputs, #identity)?;
    }
}

pub fn forward(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (t, d, heads) = (s.steps, s.dim, s.heads);
    let (dh, tt, qkv_rows) = (d / heads, t * t, t * 3 * d);
    let (x, qkv, probs, ctx, y) = (
        read(plan, s.input),
        arena(plan, s.qkv),
        arena(plan, s.probs),
        arena(plan, s.context),
        arena(plan, s.output),
    );
    let into_qkv =
        projection((t, d, 3 * d), x, param(plan, s.in_weight), param(plan, s.in_bias), quote!(qkv));
    let into_y = projection((t, d, d), quote!(ctx), param(plan, s.out_weight), param(plan, s.out_bias), y);
    let (dl, dhl, ttl, hl, tl) = (lit(d), lit(dh), lit(tt), lit(heads), lit(t));
    let scores = in_rows(
        (t, t, dh),
        (quote!(from(qkv, h * #dhl)), false, qkv_rows, 3 * d),
        (quote!(from(qkv, #dl + h * #dhl)), true, qkv_rows, 3 * d),
        (quote!(from(probs, h * #ttl)), heads * tt, t),
        core(),
    );
    let context = in_rows(
        (t, dh, t),
        (quote!(from(probs, h * #ttl)), false, heads * tt, t),
        (quote!(from(qkv, 2 * #dl + h * #dhl)), false, qkv_rows, 3 * d),
        (quote!(from(ctx, h * #dhl)), t * d, d),
        core(),
    );
    let (prelude, causal) = (prelude(s), s.causal);
    quote! {{
        #prelude
        let (qkv, probs, ctx) = (#qkv, #probs, #ctx);
        #into_qkv
        for h in 0..#hl {
            #scores
        }
        dev.attention_softmax(probs, n * #hl, #tl, scale, #causal)?;
        for h in 0..#hl {
            #context
        }
        #into_y
    }}
}

pub fn backward(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (t, d, heads) = (s.steps, s.dim, s.heads);
    let (dh, tt, qkv_rows) = (d / heads, t * t, t * 3 * d);
    let at = attention_scratch(plan, s);
    let (dy, qkv, probs, dctx, dqkv, ds) = (
        arena(plan, s.output_grad),
        arena(plan, s.qkv),
        arena(plan, s.probs),
        arena(plan, s.context_grad),
        arena(plan, s.qkv_grad),
        scratch(at.scores, heads * tt, Stored::OfPrecision),
    );
    let (dl, d3l, dhl, ttl, hl, tl) = (lit(d), lit(3 * d), lit(dh), lit(tt), lit(heads), lit(t));
    let into_dctx = gemm(
        quote!(n * #tl),
        quote!(#dl),
        quote!(#dl),
        (dy, false),
        (param(plan, s.out_weight), false),
        quote!(dctx),
        false,
        Product::ForwardOrBackward,
    );
    let dv = in_rows(
        (t, dh, t),
        (quote!(from(probs, h * #ttl)), true, heads * tt, t),
        (quote!(from(dctx, h * #dhl)), false, t * d, d),
        (quote!(from(dqkv, 2 * #dl + h * #dhl)), qkv_rows, 3 * d),
        core(),
    );
    let dp = in_rows(
        (t, t, dh),
        (quote!(from(dctx, h * #dhl)), false, t * d, d),
        (quote!(from(qkv, 2 * #dl + h * #dhl)), true, qkv_rows, 3 * d),
        (quote!(from(ds, h * #ttl)), heads * tt, t),
        core(),
    );
    let dq = in_rows(
        (t, dh, t),
        (quote!(from(ds, h * #ttl)), false, heads * tt, t),
        (quote!(from(qkv, #dl + h * #dhl)), false, qkv_rows, 3 * d),
        (quote!(from(dqkv, h * #dhl)), qkv_rows, 3 * d),
        core(),
    );
    let dk = in_rows(
        (t, dh, t),
        (quote!(from(ds, h * #ttl)), true, heads * tt, t),
        (quote!(from(qkv, h * #dhl)), false, qkv_rows, 3 * d),
        (quote!(from(dqkv, #dl + h * #dhl)), qkv_rows, 3 * d),
        core(),
    );
    // Nothing upstream trained (`Err`): the CPU writes a discarded buffer, the device skips the product.
    let input_grad = s.input_grad.ok().map(|target| {
        let product = gemm(
            quote!(n * #tl),
            quote!(#dl),
            quote!(#d3l),
            (quote!(dqkv), false),
            (param(plan, s.in_weight), false),
            arena(plan, target.write),
            false,
            Product::ForwardOrBackward,
        );
        let add = accumulate(plan, target);
        quote!(#product #add)
    });
    let prelude = prelude(s);
    quote! {{
        #prelude
        let (qkv, probs, dctx, dqkv, ds) = (#qkv, #probs, #dctx, #dqkv, #ds);
        #into_dctx
        for h in 0..#hl {
            #dv
            #dp
        }
        dev.attention_softmax_backward(probs, ds, n * #hl, #tl, scale)?;
        for h in 0..#hl {
            #dq
            #dk
        }
        #input_grad
    }}
}

/// The gradient of the four tensors as one span (the planner allocates them one after the other:
/// `in_proj_weight`, `in_proj_bias`, `out_proj.weight`, `out_proj.bias`).
fn group_grad(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let slots = [s.in_weight, s.in_bias, s.out_weight, s.out_bias];
    let first = plan.params[s.in_weight].offset;
    let mut end = first;
    for slot in slots {
        assert_eq!(plan.params[slot].offset, end, "an attention layer's four tensors are adjacent");
        end += plan.params[slot].len;
    }
    let (offset, len) = (lit(first), lit(end - first));
    region(quote!(Grad), quote!(#offset), quote!(#len))
}

/// Each example's gradients of the four tensors into the layer's kept scratch, in the parameters'
/// order: the weights as strided batches `δ_iᵀ·X_i`, the biases as `1ᵀ·δ_i` (a row of ones in the
/// score scratch, free once the backward has run). All f32 in every precision: the CPU forms
/// attention's norms and clipped sum from the f32 δ and inputs (`per_example::norms_sq`,
/// `linear_clipped_grad_add`), so the device keeps the gradients the CPU norms and sums.
fn per_example_gradients(plan: &Plan, s: &AttentionStep) -> (TokenStream, AttentionScratch) {
    let (t, d) = (s.steps, s.dim);
    let (kept_len, in_w, out_w) = (attention_kept_len(s), 3 * d * d, d * d);
    let (at, rt) = (attention_scratch(plan, s), rt());
    let (x, dqkv, ctx, dy) =
        (read(plan, s.input), arena(plan, s.qkv_grad), arena(plan, s.context), arena(plan, s.output_grad));
    let (kept, ones) =
        (scratch(at.kept, kept_len, Stored::F32), scratch(at.scores, s.heads * t * t, Stored::OfPrecision));
    let (in_b_at, out_w_at, out_b_at) = (lit(in_w), lit(in_w + 3 * d), lit(in_w + 3 * d + out_w));
    let f32 = quote!(#rt::Operands::F32);
    let g_in_w = in_rows(
        (3 * d, d, t),
        (dqkv.clone(), true, t * 3 * d, 3 * d),
        (x, false, t * d, d),
        (quote!(kept), kept_len, d),
        f32.clone(),
    );
    let g_out_w = in_rows(
        (d, d, t),
        (dy.clone(), true, t * d, d),
        (ctx, false, t * d, d),
        (quote!(from(kept, #out_w_at)), kept_len, d),
        f32.clone(),
    );
    let bias = |delta: TokenStream, width: usize, at: proc_macro2::Literal| {
        in_rows(
            (1, width, t),
            (quote!(ones), false, 0, t),
            (delta, false, t * width, width),
            (quote!(from(kept, #at)), kept_len, width),
            f32.clone(),
        )
    };
    let (g_in_b, g_out_b) = (bias(dqkv, 3 * d, in_b_at), bias(dy, d, out_b_at));
    let (from, tl) = (from(), lit(t));
    let form = quote! {
        #from
        let (kept, ones) = (#kept, #ones);
        dev.fill(ones, #tl, 1.0f32)?;
        #g_in_w
        #g_in_b
        #g_out_w
        #g_out_b
    };
    (form, at)
}

pub fn norms(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (form, at) = per_example_gradients(plan, s);
    let kept_len = attention_kept_len(s);
    let (kept, len) = (scratch(at.kept, kept_len, Stored::F32), lit(kept_len));
    let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(s.group));
    quote! {{
        #form
        dev.kept_sq_norms(#kept, #len, ::core::option::Option::None, n, #sq, #groups, #group)?;
    }}
}

/// The clipped sum reads the gradients the norms kept: one weighted sum for the four tensors.
pub fn clipped_sum(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let kept_len = attention_kept_len(s);
    let at = attention_scratch(plan, s);
    let (kept, len, g) = (scratch(at.kept, kept_len, Stored::F32), lit(kept_len), group_grad(plan, s));
    let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(s.group));
    quote! {
        dev.kept_weighted_sum(#kept, n, #len, ::core::option::Option::Some((#f, #groups, #group)), #g)?;
    }
}

/// The plain sum over all positions at once: each projection's `δᵀ·X` and δ's column sums.
pub fn gradient_sum(plan: &Plan, s: &AttentionStep) -> TokenStream {
    let (t, d) = (s.steps, s.dim);
    let (x, dqkv, ctx, dy) =
        (read(plan, s.input), arena(plan, s.qkv_grad), arena(plan, s.context), arena(plan, s.output_grad));
    let (tl, dl, d3l) = (lit(t), lit(d), lit(3 * d));
    let rows = quote!(n * #tl);
    let sum = Product::GradientSum;
    let (g_in_w, g_in_b) = (grad(plan, s.in_weight), grad(plan, s.in_bias));
    let (g_out_w, g_out_b) = (grad(plan, s.out_weight), grad(plan, s.out_bias));
    let in_w =
        gemm(quote!(#d3l), quote!(#dl), rows.clone(), (dqkv.clone(), true), (x, false), g_in_w, true, sum);
    let out_w =
        gemm(quote!(#dl), quote!(#dl), rows.clone(), (dy.clone(), true), (ctx, false), g_out_w, true, sum);
    quote! {
        #in_w
        dev.column_sums_add(#dqkv, #rows, #d3l, #g_in_b)?;
        #out_w
        dev.column_sums_add(#dy, #rows, #dl, #g_out_b)?;
    }
}
