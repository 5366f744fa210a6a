//! Element-wise activations on the CPU: a step of their own, or fused into a layer's output pass.

use super::emit::{accumulate, act, lit, read, write};
use super::kernels;
use crate::ops::activation::function::{Act, Derivative};
use crate::ops::activation::ActivationStep;
use crate::plan::memory::{Buf, GradTarget};
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(s: &ActivationStep) -> TokenStream {
    let (x, y, len, f, module) =
        (read(s.input), write(s.output), lit(s.len), act(s.act), kernels::activation());
    quote!(#module::activation_forward(#x, #y, n * #len, #f);)
}

pub fn backward(s: &ActivationStep) -> TokenStream {
    match (s.grad, s.target) {
        (Some(grad), Some(target)) => to_target(s, grad, target),
        (Some(grad), None) => in_place(s, write(grad)),
        (None, _) => quote!(),
    }
}

/// `grad ← grad ⊙ act'`, the derivative taken from the kept output or, when it needs it, the input.
fn in_place(s: &ActivationStep, grad: TokenStream) -> TokenStream {
    let (len, f, module) = (lit(s.len), act(s.act), kernels::activation());
    match s.act.derivative() {
        Derivative::FromOutput => {
            let y = read(Buf::Arena(s.output));
            quote!(#module::activation_backward(#grad, #y, n * #len, #f);)
        }
        Derivative::FromInput => {
            let x = read(s.input);
            quote!(#module::activation_backward_from_input(#grad, #x, n * #len, #f);)
        }
    }
}

/// The backward of an activation whose input has other readers: copy, then in place on the copy.
fn to_target(s: &ActivationStep, grad: usize, t: GradTarget) -> TokenStream {
    let (dx, g, acc) = (write(t.write), read(Buf::Arena(grad)), accumulate(t));
    let backward = in_place(s, dx.clone());
    quote! {
        (#dx).copy_from_slice(#g);
        #backward
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

/// The fused activation's backward, in place on the output gradient (from the kept output: the
/// planner fuses only activations whose derivative comes from it).
pub fn fused_backward(a: Act, grad: usize, output: usize, len: usize) -> TokenStream {
    if a == Act::Identity {
        return quote!();
    }
    assert_eq!(a.derivative(), Derivative::FromOutput, "{a:?} is fused but needs its input");
    let (module, g, y, len, f) =
        (kernels::activation(), write(grad), read(Buf::Arena(output)), lit(len), act(a));
    quote!(#module::activation_backward(#g, #y, n * #len, #f);)
}
