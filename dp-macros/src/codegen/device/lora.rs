//! The sum of a LoRA `linear` on the device: `y = act(base + s · adapter)` as a copy, a scaled add and
//! the activation in place; backward, the base's gradient is δ (a copy) and the adapter path's `s · δ`
//! (zeroed, then a scaled add). The base and the adapters are plain linear layers of their own.

use super::emit::{accumulate, arena, lit, read};
use crate::codegen::cpu::emit::act;
use crate::ops::activation::function::Act;
use crate::ops::lora::LoraSumStep;
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::{Literal, TokenStream};
use quote::quote;

pub fn forward(plan: &Plan, s: &LoraSumStep) -> TokenStream {
    let (base, adapter, y) = (read(plan, s.inputs[0]), read(plan, s.inputs[1]), arena(plan, s.output));
    let (len, scale) = (lit(s.len), Literal::f32_suffixed(s.scale));
    let activation = (s.act != Act::Identity).then(|| {
        let f = act(s.act);
        quote!(dev.activation(#y, #y, n * #len, #f)?;)
    });
    quote! {
        dev.copy(#y, #base, n * #len)?;
        dev.add_scaled_into(#y, #adapter, n * #len, #scale)?;
        #activation
    }
}

pub fn backward(plan: &Plan, s: &LoraSumStep) -> TokenStream {
    let Some(grad) = s.grad else { return quote!() };
    let (g, len, scale) = (arena(plan, grad), lit(s.len), Literal::f32_suffixed(s.scale));
    let act_back = (s.act != Act::Identity).then(|| {
        let (y, f) = (read(plan, Buf::Arena(s.output)), act(s.act));
        quote!(dev.activation_backward(#g, #y, n * #len, #f)?;)
    });
    let [base, adapter] = s.targets;
    let base = base.map(|t| {
        let (dx, acc) = (arena(plan, t.write), accumulate(plan, t));
        quote!(dev.copy(#dx, #g, n * #len)?; #acc)
    });
    let adapter = adapter.map(|t| {
        let (dx, acc) = (arena(plan, t.write), accumulate(plan, t));
        quote! {
            dev.zero(#dx, n * #len)?;
            dev.add_scaled_into(#dx, #g, n * #len, #scale)?;
            #acc
        }
    });
    quote!(#act_back #base #adapter)
}
