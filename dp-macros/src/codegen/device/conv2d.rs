//! `conv2d` on the device, by patches: `im2col` into the device's scratch, then per example
//! `Y_i = W·P_i` as one strided batch of products (the weight shared, stride 0) and the bias and
//! activation in one launch over the NCHW output. Backward, the patch gradients `Wᵀ·δ_i` folded back by
//! `col2im`. Where the CPU's planner chose the direct norm (and for every grouped conv), the norms form
//! each example's weight gradient `δ_i·P_iᵀ` (a second strided batch) and bias gradient (δ's row sums)
//! and keep them in scratch; the clipped sum is their weighted sum. Where it chose the ghost norm (small
//! outputs, many channels), an ungrouped conv keeps none: its norms are `Σ (δ_iᵀδ_i) ⊙ (P_iᵀP_i)` from
//! two strided batches of Gram products, and its clipped sum is one product over the batch, the
//! patches unfolded with the batch folded into their columns and each δ_i scaled by its factor side by
//! side, in f32. The plain sum forms none either: that product unscaled, in the precision.
//!
//! A grouped conv (`G` groups) unfolds the whole image as an ungrouped one would: its patch rows are
//! channel-major, so group `q`'s rows (its `in_c/G` channels) are one contiguous `d × T` block of
//! each example's patches, as its output channels are one `out_c/G × T` block of the output and its
//! weight (and each kept weight gradient, laid out as the parameter) one `out_c/G × d` block. Every
//! product is then the ungrouped one on these blocks, in a loop over the groups run by the emitted
//! code (not unrolled: a depthwise conv has as many groups as channels), each a strided batch over
//! the examples.

use super::emit::{accumulate, arena, grad, lit, param, per_group, read, rt, scratch};
use super::scratch::{conv as conv_scratch, ConvScratch};
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Act;
use crate::ops::conv2d::ConvStep;
use crate::plan::memory::Stored;
use crate::plan::Plan;
use dp_spec::Conv2dGeometry;
use proc_macro2::TokenStream;
use quote::quote;

fn geom(g: &Conv2dGeometry) -> TokenStream {
    let rt = rt();
    let (in_c, in_h, in_w, out_c, kh, kw) =
        (lit(g.in_c), lit(g.in_h), lit(g.in_w), lit(g.out_c), lit(g.kh), lit(g.kw));
    let (stride, padding, dilation, groups) = (lit(g.stride), lit(g.padding), lit(g.dilation), lit(g.groups));
    quote! {
        &#rt::Conv2dGeometry {
            in_c: #in_c, in_h: #in_h, in_w: #in_w, out_c: #out_c, kh: #kh, kw: #kw,
            stride: #stride, padding: #padding, dilation: #dilation, groups: #groups,
        }
    }
}

/// `c_i (+)= op(a_i)·op(b_i)` for every example, `a`, `b` and `c` advancing by their strides. Every
/// product of a device conv may round its operands: the forward, the backward to the input, the
/// per-example gradients, which are kept and both normed and summed, and a ghost norm's Gram matrices
/// (whose clipped sum then rounds its f32 operands alike).
#[allow(clippy::too_many_arguments)]
pub(super) fn batched(
    (m, nn, k): (usize, usize, usize),
    (a, at, sa): (TokenStream, bool, usize),
    (b, bt, sb): (TokenStream, bool, usize),
    (c, sc): (TokenStream, usize),
) -> TokenStream {
    let rt = rt();
    let (m, nn, k, sa, sb, sc) = (lit(m), lit(nn), lit(k), lit(sa), lit(sb), lit(sc));
    quote! {
        dev.gemm_batched(#rt::BatchedGemm {
            gemm: #rt::Gemm {
                m: #m, n: #nn, k: #k,
                a: #a, a_transposed: #at,
                b: #b, b_transposed: #bt,
                c: #c, accumulate: false,
                operands: #rt::Operands::OfPrecision,
            },
            batch: n, stride_a: #sa, stride_b: #sb, stride_c: #sc,
        })?;
    }
}

/// The span `span` from `group · step` values on (`group` the emitted loop's counter); shorter than
/// an operand only when the batch is empty, which the product then refuses.
fn from_group(span: TokenStream, step: usize) -> TokenStream {
    let (rt, step) = (rt(), lit(step));
    quote!({
        let whole = #span;
        #rt::Span { offset: whole.offset + group * #step, len: whole.len.saturating_sub(group * #step), ..whole }
    })
}

/// [`batched`] for every group of a conv of `groups`: its operands each advanced by their `step`
/// (values per group) in a loop over the groups; for one group the product alone.
#[allow(clippy::type_complexity)]
fn grouped(
    groups: usize,
    dims: (usize, usize, usize),
    (a, at, sa, step_a): (TokenStream, bool, usize, usize),
    (b, bt, sb, step_b): (TokenStream, bool, usize, usize),
    (c, sc, step_c): (TokenStream, usize, usize),
) -> TokenStream {
    if groups == 1 {
        return batched(dims, (a, at, sa), (b, bt, sb), (c, sc));
    }
    let product = batched(
        dims,
        (from_group(a, step_a), at, sa),
        (from_group(b, step_b), bt, sb),
        (from_group(c, step_c), sc),
    );
    let groups = lit(groups);
    quote!(for group in 0..#groups { #product })
}

fn patches(plan: &Plan, s: &ConvStep, at: &ConvScratch) -> (TokenStream, TokenStream) {
    let cols = scratch(at.cols, s.geom.patches_len(), Stored::OfPrecision);
    let (x, g) = (read(plan, s.input), geom(&s.geom));
    (quote!(dev.im2col(#x, #g, n, #cols)?;), cols)
}

pub fn forward(plan: &Plan, s: &ConvStep) -> TokenStream {
    let g = &s.geom;
    let (t, d, o, og) = (g.positions(), g.patch_len(), g.out_c, g.out_per_group());
    let (unfold, cols) = patches(plan, s, &conv_scratch(plan, s));
    let (w, y) = (param(plan, s.weight), arena(plan, s.output));
    let product = grouped(
        g.groups,
        (og, t, d),
        (w, false, 0, og * d),
        (cols, false, g.patches_len(), d * t),
        (y.clone(), g.output_len(), og * t),
    );
    let epilogue = (s.bias.is_some() || s.act != Act::Identity).then(|| {
        let bias = match s.bias {
            Some(slot) => {
                let b = param(plan, slot);
                quote!(::core::option::Option::Some(#b))
            }
            None => quote!(::core::option::Option::None),
        };
        let (f, o, t) = (act(s.act), lit(o), lit(t));
        quote!(dev.channel_bias_activation(#y, #bias, n, #o, #t, #f)?;)
    });
    quote!(#unfold #product #epilogue)
}

pub fn backward(plan: &Plan, s: &ConvStep) -> TokenStream {
    let g = &s.geom;
    let (t, d, og) = (g.positions(), g.patch_len(), g.out_per_group());
    let delta = arena(plan, s.delta);
    let act_back = (s.act != Act::Identity).then(|| {
        let (y, f, len) = (arena(plan, s.output), act(s.act), lit(g.output_len()));
        quote!(dev.activation_backward(#delta, #y, n * #len, #f)?;)
    });
    let input_grad = s.input_grad.map(|target| {
        let at = conv_scratch(plan, s);
        let (w, cols, dx) = (
            param(plan, s.weight),
            scratch(at.cols, g.patches_len(), Stored::OfPrecision),
            arena(plan, target.write),
        );
        let product = grouped(
            g.groups,
            (d, t, og),
            (w, true, 0, og * d),
            (delta.clone(), false, g.output_len(), og * t),
            (cols.clone(), g.patches_len(), d * t),
        );
        let (geom, acc) = (geom(g), accumulate(plan, target));
        quote!(#product dev.col2im(#cols, #geom, n, #dx)?; #acc)
    });
    quote!(#act_back #input_grad)
}

/// Each example's weight and bias gradients into the conv's kept scratch.
fn per_example_gradients(plan: &Plan, s: &ConvStep) -> (TokenStream, ConvScratch) {
    let g = &s.geom;
    let (t, d, o, og) = (g.positions(), g.patch_len(), g.out_c, g.out_per_group());
    let at = conv_scratch(plan, s);
    let (unfold, cols) = patches(plan, s, &at);
    let (delta, kept_w) = (arena(plan, s.delta), scratch(at.weight, g.weight_len(), Stored::F32));
    let product = grouped(
        g.groups,
        (og, d, t),
        (delta.clone(), false, g.output_len(), og * t),
        (cols, true, g.patches_len(), d * t),
        (kept_w, g.weight_len(), og * d),
    );
    let bias = s.bias.map(|_| {
        let (kept_b, rows, t) = (scratch(at.bias, o, Stored::F32), lit(o), lit(t));
        quote!(dev.row_sums(#delta, n * #rows, #t, #kept_b)?;)
    });
    (quote!(#unfold #product #bias), at)
}

/// The weighted (clipped) or plain sum of the kept gradients into the gradient.
fn kept_sum(plan: &Plan, s: &ConvStep, at: &ConvScratch, factors: TokenStream) -> TokenStream {
    let g = &s.geom;
    let (kept_w, gw, wl) =
        (scratch(at.weight, g.weight_len(), Stored::F32), grad(plan, s.weight), lit(g.weight_len()));
    let bias = s.bias.map(|slot| {
        let (kept_b, gb, o) = (scratch(at.bias, g.out_c, Stored::F32), grad(plan, slot), lit(g.out_c));
        quote!(dev.kept_weighted_sum(#kept_b, n, #o, #factors, #gb)?;)
    });
    quote!(dev.kept_weighted_sum(#kept_w, n, #wl, #factors, #gw)?; #bias)
}

pub fn norms(plan: &Plan, s: &ConvStep) -> TokenStream {
    if super::scratch::ghost_on_device(s) {
        return ghost_norms(plan, s);
    }
    let g = &s.geom;
    let (form, at) = per_example_gradients(plan, s);
    let (kept_w, wl) = (scratch(at.weight, g.weight_len(), Stored::F32), lit(g.weight_len()));
    let bias = match s.bias {
        Some(_) => {
            let (kept_b, o) = (scratch(at.bias, g.out_c, Stored::F32), lit(g.out_c));
            quote!(::core::option::Option::Some((#kept_b, #o)))
        }
        None => quote!(::core::option::Option::None),
    };
    let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(s.group));
    quote! {
        #form
        dev.kept_sq_norms(#kept_w, #wl, #bias, n, #sq, #groups, #group)?;
    }
}

/// The clipped sum reads the gradients the norms kept; by the ghost norm, none were kept: the plain
/// sum's one product over the batch with each example's δ scaled by its factor.
pub fn clipped_sum(plan: &Plan, s: &ConvStep) -> TokenStream {
    let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(s.group));
    if super::scratch::ghost_on_device(s) {
        return folded_sum(plan, s, Some(quote!((#f, #groups, #group))));
    }
    kept_sum(plan, s, &conv_scratch(plan, s), quote!(::core::option::Option::Some((#f, #groups, #group))))
}

/// The span `span` from `group · step · n` values on (`group` the emitted loop's counter, `n` the
/// batch): a group's rows of a matrix whose rows hold every example side by side.
fn from_group_folded(span: TokenStream, step: usize) -> TokenStream {
    let (rt, step) = (rt(), lit(step));
    quote!({
        let whole = #span;
        #rt::Span { offset: whole.offset + group * #step * n, len: whole.len.saturating_sub(group * #step * n), ..whole }
    })
}

/// The plain sum (no norms ran, nothing is clipped): the weight gradient as one product over every
/// example's positions at once, `Σ_i δ_i·P_iᵀ = [δ_0 … δ_{n−1}]·[P_0 … P_{n−1}]ᵀ`, the patches
/// unfolded with the batch folded into their columns and δ's examples laid side by side (per group,
/// its rows of both); no per-example weight gradient is formed. The bias gradient is δ's row sums
/// per example, then their sum.
pub fn gradient_sum(plan: &Plan, s: &ConvStep) -> TokenStream {
    folded_sum(plan, s, None)
}

/// [`gradient_sum`]'s one product, with `factors` (the clipped sum of a conv by the ghost norm) `c_i·δ_i`
/// side by side and an example of factor 0 zeroed in both operands (its NaN never reaches the sum);
/// the bias gradient then the weighted sum of the row sums its norms kept.
fn folded_sum(plan: &Plan, s: &ConvStep, factors: Option<TokenStream>) -> TokenStream {
    let rt = rt();
    let g = &s.geom;
    let (t, d, o, og) = (g.positions(), g.patch_len(), g.out_c, g.out_per_group());
    let at = conv_scratch(plan, s);
    // Clipped, the operands are f32 (the scaled gradient is never rounded to bf16 on its way into the
    // sum) and so is the product; plain, both are stored in the precision and multiplied in it.
    let (cols, folded, operands) = match factors {
        Some(_) => {
            let at = super::scratch::ghost_folded(plan);
            let cols = scratch(at, g.patches_len(), Stored::F32);
            (cols, scratch(at + g.patches_len(), g.output_len(), Stored::F32), quote!(#rt::Operands::F32))
        }
        None => (
            scratch(at.cols, g.patches_len(), Stored::OfPrecision),
            scratch(super::scratch::folded_delta(plan), g.output_len(), Stored::OfPrecision),
            quote!(#rt::Operands::OfPrecision),
        ),
    };
    let (x, geometry, delta, gw) = (read(plan, s.input), geom(g), arena(plan, s.delta), grad(plan, s.weight));
    let (a, b, c) = match g.groups {
        1 => (folded.clone(), cols.clone(), gw),
        _ => (
            from_group_folded(folded.clone(), og * t),
            from_group_folded(cols.clone(), d * t),
            from_group(gw, og * d),
        ),
    };
    let (og_lit, d_lit, t_lit, o_lit) = (lit(og), lit(d), lit(t), lit(o));
    let product = quote! {
        dev.gemm(#rt::Gemm {
            m: #og_lit, n: #d_lit, k: n * #t_lit,
            a: #a, a_transposed: false,
            b: #b, b_transposed: true,
            c: #c, accumulate: true,
            operands: #operands,
        })?;
    };
    let product = match g.groups {
        1 => product,
        groups => {
            let groups = lit(groups);
            quote!(for group in 0..#groups { #product })
        }
    };
    let weighted = match &factors {
        Some(f) => quote!(::core::option::Option::Some(#f)),
        None => quote!(::core::option::Option::None),
    };
    let bias = s.bias.map(|slot| {
        let (kept_b, gb) = (scratch(at.bias, o, Stored::F32), grad(plan, slot));
        let row_sums = factors.is_none().then(|| quote!(dev.row_sums(#delta, n * #o_lit, #t_lit, #kept_b)?;));
        quote! {
            #row_sums
            dev.kept_weighted_sum(#kept_b, n, #o_lit, #weighted, #gb)?;
        }
    });
    quote! {
        dev.im2col_folded(#x, #geometry, n, #weighted, #cols)?;
        dev.fold_examples(#delta, (n, #o_lit, #t_lit), #weighted, #folded)?;
        #product
        #bias
    }
}

/// The ghost norm of an ungrouped conv: per example the Gram matrices `δ_iᵀδ_i` and `P_iᵀP_i` (two
/// strided batches of products, `T × T` each), then `|δ_i·P_iᵀ|² = Σ (δ_iᵀδ_i) ⊙ (P_iᵀP_i)` and the
/// bias's `|Σ_t δ_i[:, t]|²` in one block per example; the bias's row sums kept for the clipped sum.
fn ghost_norms(plan: &Plan, s: &ConvStep) -> TokenStream {
    let g = &s.geom;
    let (t, d, o) = (g.positions(), g.patch_len(), g.out_c);
    let at = conv_scratch(plan, s);
    let (unfold, cols) = patches(plan, s, &at);
    let grams = super::scratch::grams(plan);
    let (gram_d, gram_p) = (scratch(grams, t * t, Stored::F32), scratch(grams + t * t, t * t, Stored::F32));
    let delta = arena(plan, s.delta);
    let gram_of_patches = batched(
        (t, t, d),
        (cols.clone(), true, g.patches_len()),
        (cols, false, g.patches_len()),
        (gram_p.clone(), t * t),
    );
    let gram_of_delta = batched(
        (t, t, o),
        (delta.clone(), true, g.output_len()),
        (delta.clone(), false, g.output_len()),
        (gram_d.clone(), t * t),
    );
    let (t_lit, o_lit, tt) = (lit(t), lit(o), lit(t * t));
    let (bias_sums, bias) = match s.bias {
        Some(_) => {
            let kept_b = scratch(at.bias, o, Stored::F32);
            (
                quote!(dev.row_sums(#delta, n * #o_lit, #t_lit, #kept_b)?;),
                quote!(::core::option::Option::Some((#kept_b, #o_lit))),
            )
        }
        None => (quote!(), quote!(::core::option::Option::None)),
    };
    let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(s.group));
    quote! {
        #unfold
        #gram_of_patches
        #gram_of_delta
        #bias_sums
        dev.gram_sq_norms((#gram_d, #gram_p), #tt, #bias, n, #sq, #groups, #group)?;
    }
}
