//! `mean` over the sequence axis on the device (one that an embedding did not fuse, e.g. after an
//! LSTM): each example's sum over time times `1/T` forward, the output gradient times `1/T` at every
//! position backward (as the CPU's `dp_kernels::sequence`). `first`: each example's position 0 copied
//! forward; backward the gradient at position 0 and zeros elsewhere (overwriting, as the CPU's).

use super::emit::{accumulate, arena, lit, read};
use crate::ops::mean::{MeanStep, Pooling};
use crate::plan::Plan;
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// `1/T` as the CPU's kernels take it (0 for an empty sequence), as an `f32` literal (Rust prints the
/// shortest form that reads back as the same value).
fn scale(s: &MeanStep) -> Literal {
    let scale = if s.steps == 0 { 0.0 } else { 1.0 / s.steps as f32 };
    Literal::f32_suffixed(scale)
}

pub fn forward(plan: &Plan, s: &MeanStep) -> TokenStream {
    let (t, d, scale) = (lit(s.steps), lit(s.dim), scale(s));
    let (x, out) = (read(plan, s.input), arena(plan, s.output));
    match s.pooling {
        Pooling::Mean => quote!(dev.sequence_sums(#x, n, #t, #d, #scale, #out)?;),
        Pooling::First => {
            let stride = lit(s.steps * s.dim);
            quote!(dev.copy_strided(#x, #stride, #out, #d, n, #d)?;)
        }
    }
}

pub fn backward(plan: &Plan, s: &MeanStep) -> TokenStream {
    let Some((out_grad, target)) = s.grads else { return quote!() };
    let (t, d, scale) = (lit(s.steps), lit(s.dim), scale(s));
    let (dout, dx, add) = (arena(plan, out_grad), arena(plan, target.write), accumulate(plan, target));
    let backward = match s.pooling {
        Pooling::Mean => quote!(dev.sequence_broadcast(#dout, n, #t, #d, #scale, #dx)?;),
        Pooling::First => {
            let len = lit(s.steps * s.dim);
            quote! {
                dev.zero(#dx, n * #len)?;
                dev.copy_strided(#dout, #d, #dx, #len, n, #d)?;
            }
        }
    };
    quote! {
        #backward
        #add
    }
}
