//! Pooling over the sequence axis (`mean`, `first`) on the CPU.

use super::emit::{accumulate, lit, read, write};
use super::kernels;
use crate::ops::mean::{MeanStep, Pooling};
use crate::plan::memory::Buf;
use proc_macro2::Ident;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(s: &MeanStep) -> TokenStream {
    let (t, d, x, out, module) =
        (lit(s.steps), lit(s.dim), read(s.input), write(s.output), kernels::sequence());
    let kernel = kernel(s, "forward");
    quote!(#module::#kernel(n, #t, #d, #x, #out);)
}

pub fn backward(s: &MeanStep) -> TokenStream {
    let Some((out_grad, target)) = s.grads else { return quote!() };
    let (t, d, module) = (lit(s.steps), lit(s.dim), kernels::sequence());
    let (dout, dx, add) = (read(Buf::Arena(out_grad)), write(target.write), accumulate(target));
    let kernel = kernel(s, "backward");
    quote! {
        #module::#kernel(n, #t, #d, #dout, #dx);
        #add
    }
}

/// `dp_kernels::sequence::{mean,first}_of_sequence_{pass}`.
fn kernel(s: &MeanStep, pass: &str) -> Ident {
    let name = match s.pooling {
        Pooling::Mean => format!("mean_over_sequence_{pass}"),
        Pooling::First => format!("first_of_sequence_{pass}"),
    };
    Ident::new(&name, proc_macro2::Span::call_site())
}
