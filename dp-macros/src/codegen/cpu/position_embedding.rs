//! `position_embedding` on the CPU: the table added to every example; its per-example gradient is the
//! kept output gradient, so the norms and the clipped sum read it as a stored gradient.

use super::emit::{accumulate, lit, param, read, write, zero_group};
use super::kernels;
use crate::ops::position_embedding::PositionEmbeddingStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// `&mut grad[..]` over the table.
fn table_grad(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let w = &plan.params[s.weight];
    let (start, end) = (lit(w.offset), lit(w.offset + w.len));
    quote!(&mut grad[#start..#end])
}

pub fn forward(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (x, table, y, len, module) =
        (read(s.input), param(plan, s.weight), write(s.output), lit(s.len), kernels::sequence());
    quote!(#module::add_table_forward(n, #len, #x, #table, #y);)
}

pub fn backward(s: &PositionEmbeddingStep) -> TokenStream {
    let Some(target) = s.input_grad else { return quote!() };
    let (delta, dx, len, add) =
        (read(Buf::Arena(s.delta)), write(target.write), lit(s.len), accumulate(target));
    quote! {
        (#dx)[..n * #len].copy_from_slice(&(#delta)[..n * #len]);
        #add
    }
}

pub fn gradient_sum(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (delta, len, g, dense) =
        (read(Buf::Arena(s.delta)), lit(s.len), table_grad(plan, s), kernels::dense());
    quote!(#dense::column_sums_add(#delta, n, #len, #g);)
}

/// The kernel adds the stored gradients' squares into the column: zeroed first.
pub fn norms(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (groups, gidx, len) = (lit(plan.groups.len()), lit(s.group), lit(s.len));
    let (delta, zero, module) =
        (read(Buf::Arena(s.delta)), zero_group(plan, s.group), kernels::per_example());
    quote! {
        #zero
        #module::stored_norms_sq(n, #len, #delta, &mut sq_norms[#gidx..], #groups);
    }
}

pub fn clipped_sum(plan: &Plan, s: &PositionEmbeddingStep) -> TokenStream {
    let (groups, gidx, len) = (lit(plan.groups.len()), lit(s.group), lit(s.len));
    let (delta, g, module) = (read(Buf::Arena(s.delta)), table_grad(plan, s), kernels::per_example());
    quote!(#module::stored_clipped_sum(n, #len, #delta, &factors[#gidx..], #groups, #g);)
}
