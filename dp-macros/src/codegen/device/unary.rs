//! The steps without parameters that the device has primitives for: an activation of its own (its
//! derivative from its output or, for GELU and SiLU, from its input, which the plan keeps) and
//! `flatten` (nothing forward; a copy of the gradient backward when its input has other readers).

use super::emit::{accumulate, arena, lit, read};
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Derivative;
use crate::ops::activation::ActivationStep;
use crate::ops::flatten::GradCopyStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

pub fn activation_forward(plan: &Plan, s: &ActivationStep) -> TokenStream {
    let (x, y, len, f) = (read(plan, s.input), arena(plan, s.output), lit(s.len), act(s.act));
    quote!(dev.activation(#x, #y, n * #len, #f)?;)
}

/// `grad ← grad ⊙ act'`, the derivative from the kept output or, when it needs it, the input.
fn in_place(plan: &Plan, s: &ActivationStep, grad: TokenStream) -> TokenStream {
    let (len, f) = (lit(s.len), act(s.act));
    match s.act.derivative() {
        Derivative::FromOutput => {
            let y = read(plan, Buf::Arena(s.output));
            quote!(dev.activation_backward(#grad, #y, n * #len, #f)?;)
        }
        Derivative::FromInput => {
            let x = read(plan, s.input);
            quote!(dev.activation_backward_from_input(#grad, #x, n * #len, #f)?;)
        }
    }
}

pub fn activation_backward(plan: &Plan, s: &ActivationStep) -> TokenStream {
    let len = lit(s.len);
    match (s.grad, s.target) {
        (Some(grad), Some(target)) => {
            let (dx, g, acc) = (arena(plan, target.write), arena(plan, grad), accumulate(plan, target));
            let backward = in_place(plan, s, dx.clone());
            quote! {
                dev.copy(#dx, #g, n * #len)?;
                #backward
                #acc
            }
        }
        (Some(grad), None) => in_place(plan, s, arena(plan, grad)),
        (None, _) => quote!(),
    }
}

pub fn flatten_backward(plan: &Plan, s: &GradCopyStep) -> TokenStream {
    let (dx, g, len, acc) = (
        arena(plan, s.target.write),
        arena(plan, s.grad),
        lit(plan.buffers[s.grad].len),
        accumulate(plan, s.target),
    );
    quote!(dev.copy(#dx, #g, n * #len)?; #acc)
}
