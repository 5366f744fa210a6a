//! `lstm(hidden = H)` on the device (zero initial state, gates i, f, g, o, one bias), the CPU's
//! algorithm as launches:
//!
//! - forward: the input projection of every position of every example as one product (the batch and
//!   the time axis folded into M), then the recurrence (`lstm_forward`): by default a runtime loop over
//!   time (never unrolled: the expansion is the same size for 7 steps as for 256) of the recurrent
//!   product `[n, h] × [h, 4h]` and one launch of the gates (`lstm_forward_step`), which also saves
//!   `c_t` and `h_{t−1}` for the backward; the GPU runs it as one kernel;
//! - backward through time (`lstm_backward`): by default a loop from the last step of the product
//!   `δ_{t+1}·W_hh` (the gradient reaching `h_t` through the next step) and one launch of the gates'
//!   gradients, on the GPU one kernel; then the input gradient `δ·W_ih` as one product over all
//!   positions;
//! - norms: each example's gradients `δ_iᵀ·X_i` and `δ_iᵀ·H_prev,i` (two strided batches of products
//!   into the device's scratch) and its bias gradient (δ's sums over time), kept for the clipped sum,
//!   which is their weighted sum (an example with factor 0 skipped, its NaN never read). Whatever the
//!   CPU's planner chose (ghost or direct norms), the device keeps the gradients, as for a conv;
//! - plain sum: `δᵀ·X`, `δᵀ·H_prev` and δ's column sums over all positions at once.
//!
//! The plan's step scratch (`6h` per example, f32) holds the recurrent product forward and the
//! recurrent and cell gradients backward; the product's operand, `h_{t−1}` forward and the step's gate
//! gradients backward, is the device's own (`scratch::LstmScratch::operand`), stored in the precision:
//! only that product reads it, and in bf16 it rounds it anyway.

use super::conv2d::batched;
use super::emit::{accumulate, arena, grad, lit, param, per_group, read, region, rt, scratch};
use super::linear::{gemm, Product};
use super::scratch::{lstm as lstm_scratch, lstm_weights_len, LstmScratch};
use crate::ops::lstm::LstmStep;
use crate::plan::memory::Stored;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// `const DIMS: LstmDims` for the launches of the gate kernels.
fn dims(s: &LstmStep) -> TokenStream {
    let rt = rt();
    let (steps, input, hidden) = (lit(s.dims.steps), lit(s.dims.input), lit(s.dims.hidden));
    quote!(const DIMS: #rt::LstmDims = #rt::LstmDims { steps: #steps, input: #input, hidden: #hidden };)
}

pub fn forward(plan: &Plan, s: &LstmStep) -> TokenStream {
    let rt = rt();
    let (t, d, h, g4) = (s.dims.steps, s.dims.input, s.dims.hidden, 4 * s.dims.hidden);
    let (x, w_ih, w_hh, bias) =
        (read(plan, s.x), param(plan, s.w_ih), param(plan, s.w_hh), param(plan, s.bias));
    let (gates, cells, hprev, out, step_scratch) = (
        arena(plan, s.gates),
        arena(plan, s.cells),
        arena(plan, s.hprev),
        arena(plan, s.output),
        arena(plan, s.scratch),
    );
    let operand = scratch(lstm_scratch(plan, s).operand, g4, Stored::OfPrecision);
    let (tl, dl, hl, g4l) = (lit(t), lit(d), lit(h), lit(g4));
    let projection = gemm(
        quote!(n * #tl),
        quote!(#g4l),
        quote!(#dl),
        (x, false),
        (w_ih, true),
        quote!(gates),
        false,
        Product::ForwardOrBackward,
    );
    let dims = dims(s);
    quote! {{
        #dims
        let (gates, step_scratch) = (#gates, #step_scratch);
        let (hidden, recurrent) = (#operand.sub(0, n * #hl), step_scratch.sub(n * #hl, n * #g4l));
        #projection
        let step = #rt::LstmForwardStep {
            saved: #rt::LstmSaved { gates, cells: #cells, hprev: #hprev },
            bias: #bias,
            recurrent,
            hidden,
            out: #out,
        };
        dev.lstm_forward(&step, #w_hh, &DIMS, n)?;
    }}
}

pub fn backward(plan: &Plan, s: &LstmStep) -> TokenStream {
    let rt = rt();
    let (t, d, h, g4) = (s.dims.steps, s.dims.input, s.dims.hidden, 4 * s.dims.hidden);
    let (tl, dl, hl, g4l) = (lit(t), lit(d), lit(h), lit(g4));
    let (w_ih, w_hh) = (param(plan, s.w_ih), param(plan, s.w_hh));
    let (gates, cells, dout, delta, step_scratch) = (
        arena(plan, s.gates),
        arena(plan, s.cells),
        arena(plan, s.output_grad),
        arena(plan, s.delta),
        arena(plan, s.scratch),
    );
    let operand = scratch(lstm_scratch(plan, s).operand, g4, Stored::OfPrecision);
    // Nothing upstream trained (`Err`): the CPU writes a discarded buffer, the device skips the product.
    let input_grad = s.input_grad.ok().map(|target| {
        let dx = arena(plan, target.write);
        let product = gemm(
            quote!(n * #tl),
            quote!(#dl),
            quote!(#g4l),
            (quote!(delta), false),
            (w_ih, false),
            dx,
            false,
            Product::ForwardOrBackward,
        );
        let add = accumulate(plan, target);
        quote!(#product #add)
    });
    let dims = dims(s);
    quote! {{
        #dims
        let (delta, step_scratch) = (#delta, #step_scratch);
        let (step_delta, recurrent, cell_grad) = (
            #operand,
            step_scratch.sub(n * #g4l, n * #hl),
            step_scratch.sub(n * (#g4l + #hl), n * #hl),
        );
        let step = #rt::LstmBackwardStep {
            gates: #gates,
            cells: #cells,
            dout: #dout,
            recurrent,
            cell_grad,
            step_delta,
            delta,
        };
        dev.lstm_backward(&step, #w_hh, &DIMS, n)?;
        #input_grad
    }}
}

/// The gradient of both weights, `W_ih` then `W_hh`, as one span (the planner allocates the LSTM's
/// tensors one after the other: `W_ih`, `W_hh`, bias).
fn weights_grad(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (ih, hh) = (&plan.params[s.w_ih], &plan.params[s.w_hh]);
    assert_eq!(hh.offset, ih.offset + ih.len, "an LSTM's two weights are adjacent in the parameters");
    let (offset, len) = (lit(ih.offset), lit(ih.len + hh.len));
    region(quote!(Grad), quote!(#offset), quote!(#len))
}

/// Each example's gradients into the LSTM's kept scratch.
fn per_example_gradients(plan: &Plan, s: &LstmStep) -> (TokenStream, LstmScratch) {
    let (t, d, h, g4) = (s.dims.steps, s.dims.input, s.dims.hidden, 4 * s.dims.hidden);
    let (ih, weights) = (s.dims.weight_ih_len(), lstm_weights_len(s));
    let at = lstm_scratch(plan, s);
    let (x, hprev, delta) = (read(plan, s.x), arena(plan, s.hprev), arena(plan, s.delta));
    let kept_w = scratch(at.weights, weights, Stored::F32);
    let g_ih =
        batched((g4, d, t), (delta.clone(), true, t * g4), (x, false, t * d), (kept_w.clone(), weights));
    let (ih_l, weights_l) = (lit(ih), lit(weights));
    let kept_hh = quote!(#kept_w.sub(#ih_l, n * #weights_l - #ih_l));
    let g_hh = batched((g4, h, t), (delta.clone(), true, t * g4), (hprev, false, t * h), (kept_hh, weights));
    let (kept_b, tl, g4l) = (scratch(at.bias, g4, Stored::F32), lit(t), lit(g4));
    let bias = quote!(dev.sequence_sums(#delta, n, #tl, #g4l, 1.0f32, #kept_b)?;);
    (quote!(#g_ih #g_hh #bias), at)
}

/// The weighted (clipped) or plain sum of the kept gradients into the gradient.
fn kept_sum(plan: &Plan, s: &LstmStep, at: &LstmScratch, factors: TokenStream) -> TokenStream {
    let (weights, g4) = (lstm_weights_len(s), 4 * s.dims.hidden);
    let (kept_w, kept_b) = (scratch(at.weights, weights, Stored::F32), scratch(at.bias, g4, Stored::F32));
    let (gw, gb, wl, g4l) = (weights_grad(plan, s), grad(plan, s.bias), lit(weights), lit(g4));
    quote! {
        dev.kept_weighted_sum(#kept_w, n, #wl, #factors, #gw)?;
        dev.kept_weighted_sum(#kept_b, n, #g4l, #factors, #gb)?;
    }
}

pub fn norms(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (form, at) = per_example_gradients(plan, s);
    let (weights, g4) = (lstm_weights_len(s), 4 * s.dims.hidden);
    let (kept_w, kept_b, wl, g4l) =
        (scratch(at.weights, weights, Stored::F32), scratch(at.bias, g4, Stored::F32), lit(weights), lit(g4));
    let (sq, groups, group) = (per_group(plan, "SqNorms"), lit(plan.groups.len()), lit(s.group));
    quote! {
        #form
        dev.kept_sq_norms(#kept_w, #wl, ::core::option::Option::Some((#kept_b, #g4l)), n, #sq, #groups, #group)?;
    }
}

/// The clipped sum reads the gradients the norms kept.
pub fn clipped_sum(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (f, groups, group) = (per_group(plan, "Factors"), lit(plan.groups.len()), lit(s.group));
    kept_sum(plan, s, &lstm_scratch(plan, s), quote!(::core::option::Option::Some((#f, #groups, #group))))
}

/// The plain sum over all positions at once: `δᵀ·X`, `δᵀ·H_prev` and δ's column sums.
pub fn gradient_sum(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (t, d, h, g4) = (s.dims.steps, s.dims.input, s.dims.hidden, 4 * s.dims.hidden);
    let (tl, dl, hl, g4l) = (lit(t), lit(d), lit(h), lit(g4));
    let (x, hprev, delta) = (read(plan, s.x), arena(plan, s.hprev), arena(plan, s.delta));
    let (g_ih, g_hh, g_b) = (grad(plan, s.w_ih), grad(plan, s.w_hh), grad(plan, s.bias));
    let positions = quote!(n * #tl);
    let sum = Product::GradientSum;
    let ih = gemm(
        quote!(#g4l),
        quote!(#dl),
        positions.clone(),
        (delta.clone(), true),
        (x, false),
        g_ih,
        true,
        sum,
    );
    let hh =
        gemm(quote!(#g4l), quote!(#hl), positions, (delta.clone(), true), (hprev, false), g_hh, true, sum);
    quote! {
        #ih
        #hh
        dev.column_sums_add(#delta, n * #tl, #g4l, #g_b)?;
    }
}
