//! `+` on the CPU: one loop forward (the fused activation after it); the gradient copied to both
//! inputs backward.

use super::activation::{fused_backward, fused_forward};
use super::emit::{accumulate, buf_ident, read, write};
use crate::ops::add::AddStep;
use crate::plan::memory::Buf;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(s: &AddStep) -> TokenStream {
    let (a, b, y) = (read(s.inputs[0]), read(s.inputs[1]), buf_ident(s.output));
    let act = fused_forward(s.act, s.output, s.len);
    quote! {
        for ((y, a), b) in #y.iter_mut().zip((#a).iter()).zip((#b).iter()) {
            *y = *a + *b;
        }
        #act
    }
}

pub fn backward(s: &AddStep) -> TokenStream {
    let Some(grad) = s.grad else { return quote!() };
    let act = fused_backward(s.act, grad, s.output, s.len);
    // The later reading of a value read twice was given the direct write: emit it first.
    let copies = s.targets.iter().rev().flatten().map(|&t| {
        let (dx, g, acc) = (write(t.write), read(Buf::Arena(grad)), accumulate(t));
        quote!((#dx).copy_from_slice(#g); #acc)
    });
    quote!(#act #(#copies)*)
}
