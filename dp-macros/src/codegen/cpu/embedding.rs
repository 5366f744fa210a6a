//! `embedding` on the CPU: a gather forward; token-grouped norms and a scatter-add clipped sum. With a
//! sequence mean fused in (`EmbeddingStep::mean`), the `dp_kernels::embedding_mean` kernels: a summing
//! gather, norms from token counts, and the same scatter-add of one row per example.

use super::emit::{grad_range, lit, param, read, write, zero_group};
use super::kernels;
use crate::ops::embedding::EmbeddingStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(plan: &Plan, s: &EmbeddingStep) -> TokenStream {
    let (v, d, t, table, out) =
        (lit(s.vocab), lit(s.dim), lit(s.steps), param(plan, s.weight), write(s.output));
    match s.mean {
        true => {
            let module = kernels::embedding_mean();
            quote!(#module::embedding_mean_forward(#v, #d, n, #t, inputs, #table, #out);)
        }
        false => {
            let module = kernels::embedding();
            quote!(#module::embedding_forward(#v, #d, inputs, #table, #out);)
        }
    }
}

/// None: its δ is written by its reader, and nothing upstream of token ids is trained.
pub fn backward() -> TokenStream {
    quote!()
}

pub fn gradient_sum(plan: &Plan, s: &EmbeddingStep) -> TokenStream {
    let (v, d, t) = (lit(s.vocab), lit(s.dim), lit(s.steps));
    let (delta, g) = (read(Buf::Arena(s.delta)), grad_range(plan, s.weight, s.weight));
    match s.mean {
        true => {
            let module = kernels::embedding_mean();
            quote!(#module::embedding_mean_backward(#v, #d, n, #t, inputs, #delta, #g);)
        }
        false => {
            let module = kernels::embedding();
            quote!(#module::embedding_backward(#v, #d, n, #t, inputs, #delta, #g);)
        }
    }
}

/// The kernel adds into the column: zeroed first.
pub fn norms(plan: &Plan, s: &EmbeddingStep) -> TokenStream {
    let groups = lit(plan.groups.len());
    let (v, d, t) = (lit(s.vocab), lit(s.dim), lit(s.steps));
    let scratch = plan.scratch.norms.expect("the planner sized the norm scratch");
    let (delta, slot, g) = (read(Buf::Arena(s.delta)), lit(plan.buffers[scratch].len), lit(s.group));
    let (scratch, zero) = (write(scratch), zero_group(plan, s.group));
    let (module, kernel) = match s.mean {
        true => (kernels::embedding_mean(), quote!(embedding_mean_norms_sq)),
        false => (kernels::embedding(), quote!(embedding_norms_sq)),
    };
    quote! {{
        #zero
        const _: () = ::core::assert!(#module::norm_scratch_len(#t, #d) <= #slot);
        #module::#kernel(#v, #d, n, #t, inputs, #delta, #scratch, &mut sq_norms[#g..], #groups);
    }}
}

pub fn clipped_sum(plan: &Plan, s: &EmbeddingStep) -> TokenStream {
    let groups = lit(plan.groups.len());
    let (v, d, t, g) = (lit(s.vocab), lit(s.dim), lit(s.steps), lit(s.group));
    let (delta, grad) = (read(Buf::Arena(s.delta)), grad_range(plan, s.weight, s.weight));
    let (module, kernel) = match s.mean {
        true => (kernels::embedding_mean(), quote!(embedding_mean_clipped_sum)),
        false => (kernels::embedding(), quote!(embedding_clipped_sum)),
    };
    quote! {
        #module::#kernel(#v, #d, n, #t, inputs, #delta, &factors[#g..], #groups, #grad);
    }
}
