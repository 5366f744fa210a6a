//! Code of the sequence ops: token inputs, `embedding`, `mean` over the sequence axis and `lstm`.
//!
//! The LSTM is one call into the kernels' loop over time (forward and backward through time), never
//! unrolled: its expansion has the same size for 5 steps as for 256.

use super::conv::accumulate;
use super::program::{buf_ident, lit, param, read, write};
use crate::parse::ast::{InputKind, ModelDef};
use crate::plan::sequence::{EmbeddingStep, LstmStep, MeanStep};
use crate::plan::{Buf, NormStrategy, Plan, Step};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// `f32` for dense inputs, `u32` for token ids.
pub fn input_type(model: &ModelDef) -> TokenStream {
    match model.input_kind {
        InputKind::Dense => quote!(f32),
        InputKind::Tokens { .. } => quote!(u32),
    }
}

/// The initialisation of N(0, std²) tensors (embedding tables), if the model has any.
pub fn normal_init(plan: &Plan) -> Option<TokenStream> {
    let slots: Vec<TokenStream> = plan
        .params
        .iter()
        .filter_map(|p| {
            let std = p.normal_std?;
            let (start, end, std) = (lit(p.offset), lit(p.offset + p.len), Literal::f32_suffixed(std));
            Some(quote!((#start, #end, #std)))
        })
        .collect();
    if slots.is_empty() {
        return None;
    }
    Some(quote! {
        // PyTorch's default for embedding tables: N(0, 1).
        for (start, end, std) in [#(#slots),*] {
            for v in &mut params[start..end] {
                *v = std * ::dp::__private::kernels::embedding::normal_from_bits(
                    ::dp::__private::RngCore::next_u32(rng),
                    ::dp::__private::RngCore::next_u32(rng),
                );
            }
        }
    })
}

fn strategy(s: NormStrategy) -> TokenStream {
    match s {
        NormStrategy::Direct => quote!(::dp::__private::kernels::per_example::Strategy::Direct),
        _ => quote!(::dp::__private::kernels::per_example::Strategy::Ghost),
    }
}

/// The buffer an LSTM's norm kernels take their slots from.
fn norm_scratch(plan: &Plan, s: &LstmStep) -> usize {
    if s.norms_in_gates {
        s.gates
    } else {
        plan.scratch.norms.expect("the planner sized the norm scratch")
    }
}

/// The shared per-example norm scratch.
fn shared_norm_scratch(plan: &Plan) -> usize {
    plan.scratch.norms.expect("the planner sized the norm scratch")
}

/// `const DIMS: LstmDims = ...;` plus compile-time checks that the planned scratch fits the kernels.
fn lstm_dims(plan: &Plan, s: &LstmStep) -> TokenStream {
    let (steps, input, hidden) = (lit(s.steps), lit(s.input), lit(s.hidden));
    let scratch = lit(plan.buffers[s.scratch].len);
    let norm_slot = lit(plan.buffers[norm_scratch(plan, s)].len);
    let (s_ih, s_hh) = (strategy(s.ih_strategy), strategy(s.hh_strategy));
    quote! {
        const DIMS: ::dp::__private::kernels::lstm::LstmDims =
            ::dp::__private::kernels::lstm::LstmDims { steps: #steps, input: #input, hidden: #hidden };
        const _: () = ::core::assert!(
            ::dp::__private::kernels::lstm::backward_scratch_len(&DIMS, 1) <= #scratch
                && ::dp::__private::kernels::lstm::forward_scratch_len(&DIMS, 1) <= #scratch
                && ::dp::__private::kernels::lstm::norm_scratch_len(&DIMS, #s_ih, #s_hh) <= #norm_slot
        );
    }
}

/// The forward of one sequence step.
pub fn forward(plan: &Plan, step: &Step) -> TokenStream {
    match step {
        Step::Embedding(s) => {
            let EmbeddingStep { vocab, dim, .. } = *s;
            let (v, d, table, out) = (lit(vocab), lit(dim), param(plan, s.weight), write(s.output));
            quote!(::dp::__private::kernels::embedding::embedding_forward(#v, #d, inputs, #table, #out);)
        }
        Step::SequenceMean(s) => {
            let MeanStep { steps, dim, .. } = *s;
            let (t, d, x, out) = (lit(steps), lit(dim), read(s.input), write(s.output));
            quote!(::dp::__private::kernels::sequence::mean_over_sequence_forward(n, #t, #d, #x, #out);)
        }
        Step::Lstm(s) => {
            let dims = lstm_dims(plan, s);
            let (x, w_ih, w_hh, bias) =
                (read(s.x), param(plan, s.w_ih), param(plan, s.w_hh), param(plan, s.bias));
            let (gates, cells, hprev) = (write(s.gates), write(s.cells), write(s.hprev));
            let (out, scratch) = (write(s.output), write(s.scratch));
            quote! {{
                #dims
                ::dp::__private::kernels::lstm::lstm_forward(
                    &DIMS,
                    n,
                    #x,
                    #w_ih,
                    #w_hh,
                    #bias,
                    ::dp::__private::kernels::lstm::LstmSaved { gates: #gates, cells: #cells, hprev: #hprev },
                    #out,
                    #scratch,
                );
            }}
        }
        _ => unreachable!("sequence steps only"),
    }
}

/// The backward of one sequence step (an embedding has none: its δ is written by its reader).
pub fn backward(plan: &Plan, step: &Step) -> TokenStream {
    match step {
        Step::Embedding(_) => quote!(),
        Step::SequenceMean(s) => match s.grads {
            Some((out_grad, target)) => {
                let (t, d) = (lit(s.steps), lit(s.dim));
                let (dout, dx, add) = (read(Buf::Arena(out_grad)), write(target.write), accumulate(target));
                quote! {
                    ::dp::__private::kernels::sequence::mean_over_sequence_backward(n, #t, #d, #dout, #dx);
                    #add
                }
            }
            None => quote!(),
        },
        Step::Lstm(s) => {
            let dims = lstm_dims(plan, s);
            let (dout, w_ih, w_hh) =
                (read(Buf::Arena(s.output_grad)), param(plan, s.w_ih), param(plan, s.w_hh));
            let (gates, cells) = (read(Buf::Arena(s.gates)), read(Buf::Arena(s.cells)));
            let (dx, add) = match s.input_grad {
                Ok(target) => (write(target.write), accumulate(target)),
                Err(discarded) => (write(discarded), quote!()),
            };
            let (delta, scratch) = (write(s.delta), write(s.scratch));
            quote! {{
                #dims
                ::dp::__private::kernels::lstm::lstm_backward(
                    &DIMS, n, #dout, #w_ih, #w_hh, #gates, #cells, #delta, #dx, #scratch,
                );
                #add
            }}
        }
        _ => unreachable!("sequence steps only"),
    }
}

/// `&mut grad[a..b]` over a parameter group's consecutive tensors `first..=last`.
fn grad_range(plan: &Plan, first: usize, last: usize) -> TokenStream {
    let (start, end) =
        (lit(plan.params[first].offset), lit(plan.params[last].offset + plan.params[last].len));
    quote!(&mut grad[#start..#end])
}

/// Splits an LSTM's gradient into `(g_ih, g_hh, g_b)`.
fn lstm_grads(plan: &Plan, s: &LstmStep) -> TokenStream {
    let all = grad_range(plan, s.w_ih, s.bias);
    let (ih, hh) = (lit(plan.params[s.w_ih].len), lit(plan.params[s.w_hh].len));
    quote! {
        let (g_ih, rest) = (#all).split_at_mut(#ih);
        let (g_hh, g_b) = rest.split_at_mut(#hh);
    }
}

fn sequence_steps(plan: &Plan) -> impl Iterator<Item = &Step> {
    plan.steps.iter().filter(|s| matches!(s, Step::Embedding(_) | Step::Lstm(_)))
}

/// Non-private accumulation of the embedding and LSTM gradients.
pub fn gradient_sum(plan: &Plan) -> TokenStream {
    let layers = sequence_steps(plan).map(|step| match step {
        Step::Embedding(s) => {
            let (v, d, t) = (lit(s.vocab), lit(s.dim), lit(s.steps));
            let (delta, g) = (read(Buf::Arena(s.delta)), grad_range(plan, s.weight, s.weight));
            quote!(::dp::__private::kernels::embedding::embedding_backward(#v, #d, n, #t, inputs, #delta, #g);)
        }
        Step::Lstm(s) => {
            let (dims, grads) = (lstm_dims(plan, s), lstm_grads(plan, s));
            let (x, hprev, delta) = (read(s.x), read(Buf::Arena(s.hprev)), read(Buf::Arena(s.delta)));
            quote! {{
                #dims
                #grads
                ::dp::__private::kernels::lstm::lstm_weight_gradients(
                    &DIMS, n, #x, #hprev, #delta, g_ih, g_hh, g_b,
                );
            }}
        }
        _ => unreachable!("filtered"),
    });
    quote!(#(#layers)*)
}

/// Per-example squared norms of the embedding and LSTM groups (the kernels ADD: zero the column first).
pub fn norms(plan: &Plan) -> TokenStream {
    let groups = lit(plan.groups.len());
    let layers = sequence_steps(plan).map(|step| {
        let (group, body) = match step {
            Step::Embedding(s) => {
                let (v, d, t) = (lit(s.vocab), lit(s.dim), lit(s.steps));
                let scratch = shared_norm_scratch(plan);
                let (delta, slot, g) =
                    (read(Buf::Arena(s.delta)), lit(plan.buffers[scratch].len), lit(s.group));
                let scratch = write(scratch);
                let body = quote! {
                    const _: () = ::core::assert!(
                        ::dp::__private::kernels::embedding::norm_scratch_len(#t, #d) <= #slot
                    );
                    ::dp::__private::kernels::embedding::embedding_norms_sq(
                        #v, #d, n, #t, inputs, #delta, #scratch, &mut sq_norms[#g..], #groups,
                    );
                };
                (s.group, body)
            }
            Step::Lstm(s) => {
                let dims = lstm_dims(plan, s);
                let (s_ih, s_hh) = (strategy(s.ih_strategy), strategy(s.hh_strategy));
                let (x, hprev, delta) = (read(s.x), read(Buf::Arena(s.hprev)), read(Buf::Arena(s.delta)));
                let (scratch, g) = (write(norm_scratch(plan, s)), lit(s.group));
                let body = quote! {
                    #dims
                    ::dp::__private::kernels::lstm::lstm_norms_sq(
                        &DIMS, n, #s_ih, #s_hh, #x, #hprev, #delta, #scratch, &mut sq_norms[#g..], #groups,
                    );
                };
                (s.group, body)
            }
            _ => unreachable!("filtered"),
        };
        let g = lit(group);
        quote! {{
            for i in 0..n {
                sq_norms[i * #groups + #g] = 0.0;
            }
            #body
        }}
    });
    quote!(#(#layers)*)
}

/// The clipped sums by book-keeping. The LSTM scales a copy of δ in its (dead) gates buffer and zeroes
/// the input and `h_{t−1}` rows of examples with factor 0, so NaN there cannot reach the sum (the
/// input is zeroed in place only when the LSTM is its sole reader, else in a private copy); zeroing
/// those rows again is harmless, and δ is kept, so the clipped sum can be repeated.
pub fn clipped_sum(plan: &Plan) -> TokenStream {
    let groups = lit(plan.groups.len());
    let layers = sequence_steps(plan).map(|step| match step {
        Step::Embedding(s) => {
            let (v, d, t, g) = (lit(s.vocab), lit(s.dim), lit(s.steps), lit(s.group));
            let (delta, grad) = (read(Buf::Arena(s.delta)), grad_range(plan, s.weight, s.weight));
            quote! {
                ::dp::__private::kernels::embedding::embedding_clipped_sum(
                    #v, #d, n, #t, inputs, #delta, &factors[#g..], #groups, #grad,
                );
            }
        }
        Step::Lstm(s) => {
            let (dims, grads) = (lstm_dims(plan, s), lstm_grads(plan, s));
            let (t, d, h, g4, g) = (lit(s.steps), lit(s.input), lit(s.hidden), lit(4 * s.hidden), lit(s.group));
            let (delta, hprev) = (read(Buf::Arena(s.delta)), write(s.hprev));
            let scaled = buf_ident(s.gates);
            let (x, copy_input) = match (s.x, s.input_copy) {
                (_, Some(copy)) => {
                    let (copy, source) = (buf_ident(copy), read(s.x));
                    (copy.clone(), quote!(#copy.copy_from_slice(#source);))
                }
                (Buf::Arena(k), None) => (buf_ident(k), quote!()),
                (Buf::Input, None) => unreachable!("an LSTM on the model input keeps a copy"),
            };
            quote! {{
                #dims
                #grads
                #copy_input
                #scaled.copy_from_slice(#delta);
                let factors_g = &factors[#g..];
                ::dp::__private::kernels::per_example::scale_examples(1, n, #t, #g4, factors_g, #groups, #scaled);
                ::dp::__private::kernels::per_example::zero_unclipped_examples(
                    1, n, #t, #d, factors_g, #groups, #x,
                );
                ::dp::__private::kernels::per_example::zero_unclipped_examples(
                    1, n, #t, #h, factors_g, #groups, #hprev,
                );
                ::dp::__private::kernels::lstm::lstm_weight_gradients(
                    &DIMS, n, #x, #hprev, #scaled, g_ih, g_hh, g_b,
                );
            }}
        }
        _ => unreachable!("filtered"),
    });
    quote!(#(#layers)*)
}
