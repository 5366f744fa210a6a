//! `lstm` on the CPU: one call into the kernels' loop over time (forward and backward through time),
//! never unrolled, so its expansion has the same size for 5 steps as for 256.

use super::emit::{
    accumulate, buf_ident, grad_range, kept_clipped_sum, lit, param, read, strategy, write, zero_group,
};
use super::kernels;
use crate::ops::lstm::LstmStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// The buffer the norm kernels take their slots from: the dead gates, or the shared norm scratch.
fn norm_scratch(plan: &Plan, s: &LstmStep) -> usize {
    if s.norms_in_gates {
        s.gates
    } else {
        plan.scratch.norms.expect("the planner sized the norm scratch")
    }
}

/// `const DIMS: LstmDims = ...;` plus compile-time checks that the planned scratch fits the kernels
/// (the norm slots, or the kept gradients).
fn dims(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (steps, input, hidden) = (lit(s.dims.steps), lit(s.dims.input), lit(s.dims.hidden));
    let scratch = lit(plan.buffers[s.scratch].len);
    let lstm = kernels::lstm();
    let norms_fit = match s.kept {
        Some(kept) => {
            let kept = lit(plan.buffers[kept].len);
            quote!(#lstm::kept_len(&DIMS) == #kept)
        }
        None => {
            let norm_slot = lit(plan.buffers[norm_scratch(plan, s)].len);
            let (s_ih, s_hh) = (strategy(s.ih_strategy), strategy(s.hh_strategy));
            quote!(#lstm::norm_scratch_len(&DIMS, #s_ih, #s_hh) <= #norm_slot)
        }
    };
    quote! {
        const DIMS: #lstm::LstmDims = #lstm::LstmDims { steps: #steps, input: #input, hidden: #hidden };
        const _: () = ::core::assert!(
            #lstm::backward_scratch_len(&DIMS, 1) <= #scratch
                && #lstm::forward_scratch_len(&DIMS, 1) <= #scratch
                && #norms_fit
        );
    }
}

/// Splits an LSTM's gradient into `(g_ih, g_hh, g_b)`.
fn grads(plan: &Plan, s: &LstmStep) -> TokenStream {
    let all = grad_range(plan, s.w_ih, s.bias);
    let (ih, hh) = (lit(plan.params[s.w_ih].len), lit(plan.params[s.w_hh].len));
    quote! {
        let (g_ih, rest) = (#all).split_at_mut(#ih);
        let (g_hh, g_b) = rest.split_at_mut(#hh);
    }
}

pub fn forward(plan: &Plan, s: &LstmStep) -> TokenStream {
    let dims = dims(plan, s);
    let (x, w_ih, w_hh, bias) = (read(s.x), param(plan, s.w_ih), param(plan, s.w_hh), param(plan, s.bias));
    let (gates, cells, hprev) = (write(s.gates), write(s.cells), write(s.hprev));
    let (out, scratch, lstm) = (write(s.output), write(s.scratch), kernels::lstm());
    quote! {{
        #dims
        #lstm::lstm_forward(
            &DIMS,
            n,
            #x,
            #w_ih,
            #w_hh,
            #bias,
            #lstm::LstmSaved { gates: #gates, cells: #cells, hprev: #hprev },
            #out,
            #scratch,
            precision,
        );
    }}
}

pub fn backward(plan: &Plan, s: &LstmStep) -> TokenStream {
    let dims = dims(plan, s);
    let (dout, w_ih, w_hh) = (read(Buf::Arena(s.output_grad)), param(plan, s.w_ih), param(plan, s.w_hh));
    let (gates, cells) = (read(Buf::Arena(s.gates)), read(Buf::Arena(s.cells)));
    let (dx, add) = match s.input_grad {
        Ok(target) => (write(target.write), accumulate(target)),
        Err(discarded) => (write(discarded), quote!()),
    };
    let (delta, scratch, lstm) = (write(s.delta), write(s.scratch), kernels::lstm());
    quote! {{
        #dims
        #lstm::lstm_backward(&DIMS, n, #dout, #w_ih, #w_hh, #gates, #cells, #delta, #dx, #scratch, precision);
        #add
    }}
}

pub fn gradient_sum(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (dims, grads) = (dims(plan, s), grads(plan, s));
    let (x, hprev, delta) = (read(s.x), read(Buf::Arena(s.hprev)), read(Buf::Arena(s.delta)));
    let lstm = kernels::lstm();
    quote! {{
        #dims
        #grads
        #lstm::lstm_weight_gradients(&DIMS, n, #x, #hprev, #delta, g_ih, g_hh, g_b);
    }}
}

/// The kernel adds both weights' and the bias's norms into the column: zeroed first. With kept
/// gradients it also writes each example's whole gradient for the clipped sum.
pub fn norms(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (groups, g) = (lit(plan.groups.len()), lit(s.group));
    let dims = dims(plan, s);
    let (x, hprev, delta) = (read(s.x), read(Buf::Arena(s.hprev)), read(Buf::Arena(s.delta)));
    let (zero, lstm) = (zero_group(plan, s.group), kernels::lstm());
    let call = match s.kept {
        Some(kept) => {
            let kept = write(kept);
            quote!(#lstm::lstm_kept_norms_sq(&DIMS, n, #x, #hprev, #delta, #kept, &mut sq_norms[#g..], #groups, precision);)
        }
        None => {
            let (s_ih, s_hh) = (strategy(s.ih_strategy), strategy(s.hh_strategy));
            let scratch = write(norm_scratch(plan, s));
            quote! {
                #lstm::lstm_norms_sq(
                    &DIMS, n, #s_ih, #s_hh, #x, #hprev, #delta, #scratch, &mut sq_norms[#g..], #groups,
                );
            }
        }
    };
    quote! {{
        #zero
        #dims
        #call
    }}
}

/// With kept gradients, their weighted sum. Otherwise the clipped sum by book-keeping,
/// `dp_kernels::lstm::lstm_clipped_sum`: it scales δ by the factors
/// and zeroes the input and `h_{t−1}` rows of examples with factor 0 (so NaN there cannot reach the
/// sum), consuming all three. δ is kept (the kernel scales a copy in the dead gates buffer), and the
/// input is consumed in place only when the LSTM is its sole reader, else in a private copy; zeroing
/// those rows again is harmless, so the clipped sum can be repeated.
pub fn clipped_sum(plan: &Plan, s: &LstmStep) -> TokenStream {
    if let Some(kept) = s.kept {
        return kept_clipped_sum(plan, kept, s.group, s.w_ih, s.bias);
    }
    let groups = lit(plan.groups.len());
    let (dims, grads, g) = (dims(plan, s), grads(plan, s), lit(s.group));
    let (delta, hprev, scaled) = (read(Buf::Arena(s.delta)), write(s.hprev), write(s.gates));
    let (x, copy_input) = match (s.x, s.input_copy) {
        (_, Some(copy)) => {
            let (copy, source) = (buf_ident(copy), read(s.x));
            (quote!(&mut #copy[..]), quote!(#copy.copy_from_slice(#source);))
        }
        (Buf::Arena(k), None) => (write(k), quote!()),
        (Buf::Input, None) => unreachable!("an LSTM on the model input keeps a copy"),
    };
    let (gates, lstm) = (buf_ident(s.gates), kernels::lstm());
    quote! {{
        #dims
        #grads
        #copy_input
        #gates.copy_from_slice(#delta);
        #lstm::lstm_clipped_sum(&DIMS, n, &factors[#g..], #groups, #x, #hprev, #scaled, g_ih, g_hh, g_b);
    }}
}
