//! `+` on the device: a copy and an add forward (the fused activation after them in place); backward,
//! the gradient copied to each input that needs one, in the CPU's order (the later reading of a value
//! read twice was given the direct write: it goes first).

use super::emit::{accumulate, arena, lit, read};
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Act;
use crate::ops::add::AddStep;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

pub fn forward(plan: &Plan, s: &AddStep) -> TokenStream {
    let (a, b, y, len) =
        (read(plan, s.inputs[0]), read(plan, s.inputs[1]), arena(plan, s.output), lit(s.len));
    let act = (s.act != Act::Identity).then(|| {
        let f = act(s.act);
        quote!(dev.activation(#y, #y, n * #len, #f)?;)
    });
    quote! {
        dev.copy(#y, #a, n * #len)?;
        dev.add_into(#y, #b, n * #len)?;
        #act
    }
}

pub fn backward(plan: &Plan, s: &AddStep) -> TokenStream {
    let Some(grad) = s.grad else { return quote!() };
    let (g, len) = (arena(plan, grad), lit(s.len));
    let act_back = (s.act != Act::Identity).then(|| {
        let (y, f) = (arena(plan, s.output), act(s.act));
        quote!(dev.activation_backward(#g, #y, n * #len, #f)?;)
    });
    let copies = s.targets.iter().rev().flatten().map(|&t| {
        let (dx, acc) = (arena(plan, t.write), accumulate(plan, t));
        quote!(dev.copy(#dx, #g, n * #len)?; #acc)
    });
    quote!(#act_back #(#copies)*)
}
