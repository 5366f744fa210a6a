//! The sum of a LoRA `linear` on the CPU: `y = act(base + s · adapter)` in one loop; backward, the
//! base's gradient is δ and the adapter path's s · δ.

use super::activation::{fused_backward, fused_forward};
use super::emit::{accumulate, buf_ident, read, write};
use crate::ops::lora::LoraSumStep;
use crate::plan::memory::Buf;
use proc_macro2::{Literal, TokenStream};
use quote::quote;

pub fn forward(s: &LoraSumStep) -> TokenStream {
    let (base, adapter, y) = (read(s.inputs[0]), read(s.inputs[1]), buf_ident(s.output));
    let (act, scale) = (fused_forward(s.act, s.output, s.len), Literal::f32_suffixed(s.scale));
    quote! {
        for ((y, a), b) in #y.iter_mut().zip((#base).iter()).zip((#adapter).iter()) {
            *y = *a + #scale * *b;
        }
        #act
    }
}

pub fn backward(s: &LoraSumStep) -> TokenStream {
    let Some(grad) = s.grad else { return quote!() };
    let act = fused_backward(s.act, grad, s.output, s.len);
    let scale = Literal::f32_suffixed(s.scale);
    let [base, adapter] = s.targets;
    let base = base.map(|t| {
        let (dx, g, acc) = (write(t.write), read(Buf::Arena(grad)), accumulate(t));
        quote!((#dx).copy_from_slice(#g); #acc)
    });
    let adapter = adapter.map(|t| {
        let (dx, g, acc) = (write(t.write), read(Buf::Arena(grad)), accumulate(t));
        quote! {
            for (d, g) in (#dx).iter_mut().zip((#g).iter()) {
                *d = #scale * *g;
            }
            #acc
        }
    });
    quote!(#act #base #adapter)
}
