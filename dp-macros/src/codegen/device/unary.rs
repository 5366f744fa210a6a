//! The steps without parameters that the device has primitives for: an activation of its own (whose
//! derivative its output gives) and `flatten` (nothing forward; a copy of the gradient backward when
//! its input has other readers).

use super::emit::{accumulate, arena, lit, read};
use crate::codegen::cpu::emit::act;
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

pub fn activation_backward(plan: &Plan, s: &ActivationStep) -> TokenStream {
    let (len, f) = (lit(s.len), act(s.act));
    let y = read(plan, Buf::Arena(s.output));
    match (s.grad, s.target) {
        (Some(grad), Some(target)) => {
            let (dx, g, acc) = (arena(plan, target.write), arena(plan, grad), accumulate(plan, target));
            quote! {
                dev.copy(#dx, #g, n * #len)?;
                dev.activation_backward(#dx, #y, n * #len, #f)?;
                #acc
            }
        }
        (Some(grad), None) => {
            let g = arena(plan, grad);
            quote!(dev.activation_backward(#g, #y, n * #len, #f)?;)
        }
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
