//! Element-wise activations on the CPU: a step of their own, or fused into a layer's output pass.

use super::emit::{accumulate, act, lit, read, write};
use super::kernels;
use crate::ops::activation::function::Act;
use crate::ops::activation::ActivationStep;
use crate::plan::memory::{Buf, GradTarget};
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(s: &ActivationStep) -> TokenStream {
    let (x, y, len, f, module) = (read(s.input), write(s.output), lit(s.len), act(s.act), kernels::activation());
    quote!(#module::activation_forward(#x, #y, n * #len, #f);)
}

pub fn backward(s: &ActivationStep) -> TokenStream {
    match (s.grad, s.target) {
        (Some(grad), Some(target)) => to_target(s, grad, target),
        (Some(grad), None) => {
            let (g, y, len, f, module) =
                (write(grad), read(Buf::Arena(s.output)), lit(s.len), act(s.act), kernels::activation());
            quote!(#module::activation_backward(#g, #y, n * #len, #f);)
        }
        (None, _) => quote!(),
    }
}

/// The backward of an activation whose input has other readers: copy, then in place on the copy.
fn to_target(s: &ActivationStep, grad: usize, t: GradTarget) -> TokenStream {
    let module = kernels::activation();
    let (dx, g, y, len, f, acc) =
        (write(t.write), read(Buf::Arena(grad)), read(Buf::Arena(s.output)), lit(s.len), act(s.act), accumulate(t));
    quote! {
        (#dx).copy_from_slice(#g);
        #module::activation_backward(#dx, #y, n * #len, #f);
        #acc
    }
}

/// A fused activation applied in place on a layer's output (`len` values per example).
pub fn fused_forward(a: Act, output: usize, len: usize) -> TokenStream {
    if a == Act::Identity {
        return quote!();
    }
    let (module, y, len, f) = (kernels::activation(), write(output), lit(len), act(a));
    quote!(#module::bias_activation_forward(#y, n, #len, ::core::option::Option::None, #f);)
}

/// The fused activation's backward, in place on the output gradient (from the kept output).
pub fn fused_backward(a: Act, grad: usize, output: usize, len: usize) -> TokenStream {
    if a == Act::Identity {
        return quote!();
    }
    let (module, g, y, len, f) = (kernels::activation(), write(grad), read(Buf::Arena(output)), lit(len), act(a));
    quote!(#module::activation_backward(#g, #y, n * #len, #f);)
}
