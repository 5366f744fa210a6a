//! `mean` over the sequence axis on the CPU.

use super::emit::{accumulate, lit, read, write};
use super::kernels;
use crate::ops::mean::MeanStep;
use crate::plan::memory::Buf;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(s: &MeanStep) -> TokenStream {
    let (t, d, x, out, module) =
        (lit(s.steps), lit(s.dim), read(s.input), write(s.output), kernels::sequence());
    quote!(#module::mean_over_sequence_forward(n, #t, #d, #x, #out);)
}

pub fn backward(s: &MeanStep) -> TokenStream {
    let Some((out_grad, target)) = s.grads else { return quote!() };
    let (t, d, module) = (lit(s.steps), lit(s.dim), kernels::sequence());
    let (dout, dx, add) = (read(Buf::Arena(out_grad)), write(target.write), accumulate(target));
    quote! {
        #module::mean_over_sequence_backward(n, #t, #d, #dout, #dx);
        #add
    }
}
