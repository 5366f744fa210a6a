//! Max, average and global average pooling on the device: one launch forward, one backward (the
//! gradient overwrites the input's, then joins its other readers').

use super::emit::{accumulate, arena, lit, read, rt};
use crate::ops::global_avg_pool::GlobalPoolStep;
use crate::ops::pool2d::{PoolKind, PoolStep};
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

fn geom(s: &PoolStep) -> TokenStream {
    let (rt, g) = (rt(), &s.geom);
    let (c, h, w) = (lit(g.channels), lit(g.in_h), lit(g.in_w));
    let (kernel, stride, padding) = (lit(g.kernel), lit(g.stride), lit(g.padding));
    quote! {
        &#rt::Pool2dGeometry { channels: #c, in_h: #h, in_w: #w, kernel: #kernel, stride: #stride, padding: #padding }
    }
}

fn argmax(plan: &Plan, s: &PoolStep) -> TokenStream {
    arena(plan, s.argmax.expect("max pooling keeps its argmax"))
}

pub fn forward(plan: &Plan, s: &PoolStep) -> TokenStream {
    let (g, x, y) = (geom(s), read(plan, s.input), arena(plan, s.output));
    match s.kind {
        PoolKind::Max => {
            let am = argmax(plan, s);
            quote!(dev.max_pool_forward(#x, #g, n, #y, #am)?;)
        }
        PoolKind::Avg => quote!(dev.avg_pool_forward(#x, #g, n, #y)?;),
    }
}

pub fn backward(plan: &Plan, s: &PoolStep) -> TokenStream {
    let (Some(grad), Some(t)) = (s.grad, s.target) else { return quote!() };
    let (g, dy, dx, acc) = (geom(s), arena(plan, grad), arena(plan, t.write), accumulate(plan, t));
    let call = match s.kind {
        PoolKind::Max => {
            let am = argmax(plan, s);
            quote!(dev.max_pool_backward(#dy, #am, #g, n, #dx)?;)
        }
        PoolKind::Avg => quote!(dev.avg_pool_backward(#dy, #g, n, #dx)?;),
    };
    quote!(#call #acc)
}

pub fn global_forward(plan: &Plan, s: &GlobalPoolStep) -> TokenStream {
    let (c, p, x, y) = (lit(s.channels), lit(s.plane), read(plan, s.input), arena(plan, s.output));
    quote!(dev.global_avg_pool_forward(#x, n, #c, #p, #y)?;)
}

pub fn global_backward(plan: &Plan, s: &GlobalPoolStep) -> TokenStream {
    let (Some(grad), Some(t)) = (s.grad, s.target) else { return quote!() };
    let (c, p, dy, dx, acc) =
        (lit(s.channels), lit(s.plane), arena(plan, grad), arena(plan, t.write), accumulate(plan, t));
    quote!(dev.global_avg_pool_backward(#dy, n, #c, #p, #dx)?; #acc)
}
