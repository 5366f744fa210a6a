//! Max, average and global average pooling on the CPU.

use super::emit::{accumulate, lit, read, write};
use super::kernels;
use crate::ops::global_avg_pool::GlobalPoolStep;
use crate::ops::pool2d::{PoolKind, PoolStep};
use crate::plan::memory::Buf;
use proc_macro2::TokenStream;
use quote::quote;

fn geom(s: &PoolStep) -> TokenStream {
    let (pool, g) = (kernels::pool(), &s.geom);
    let (c, h, w) = (lit(g.channels), lit(g.in_h), lit(g.in_w));
    let (kernel, stride, padding) = (lit(g.kernel), lit(g.stride), lit(g.padding));
    quote! {
        #pool::Pool2dGeometry { channels: #c, in_h: #h, in_w: #w, kernel: #kernel, stride: #stride, padding: #padding }
    }
}

/// Max pooling's argmax buffer as the `u32` slice the kernels take.
fn argmax(s: &PoolStep) -> TokenStream {
    let (am, embedding) = (write(s.argmax.expect("max pooling keeps its argmax")), kernels::embedding());
    quote!(#embedding::u32_scratch(#am))
}

pub fn forward(s: &PoolStep) -> TokenStream {
    let (g, x, y, pool) = (geom(s), read(s.input), write(s.output), kernels::pool());
    match s.kind {
        PoolKind::Max => {
            let am = argmax(s);
            quote!(#pool::max_pool2d_forward(&#g, n, #x, #y, #am);)
        }
        PoolKind::Avg => quote!(#pool::avg_pool2d_forward(&#g, n, #x, #y);),
    }
}

pub fn backward(s: &PoolStep) -> TokenStream {
    let (Some(grad), Some(t)) = (s.grad, s.target) else { return quote!() };
    let (g, dout, dx, acc, pool) =
        (geom(s), read(Buf::Arena(grad)), write(t.write), accumulate(t), kernels::pool());
    let call = match s.kind {
        PoolKind::Max => {
            let am = argmax(s);
            quote!(#pool::max_pool2d_backward(&#g, n, #dout, #am, #dx);)
        }
        PoolKind::Avg => quote!(#pool::avg_pool2d_backward(&#g, n, #dout, #dx);),
    };
    quote!(#call #acc)
}

pub fn global_forward(s: &GlobalPoolStep) -> TokenStream {
    let (c, p, x, y, pool) = (lit(s.channels), lit(s.plane), read(s.input), write(s.output), kernels::pool());
    quote!(#pool::global_avg_pool_forward(n, #c, #p, #x, #y);)
}

pub fn global_backward(s: &GlobalPoolStep) -> TokenStream {
    let (Some(grad), Some(t)) = (s.grad, s.target) else { return quote!() };
    let (c, p, dout, dx, acc) =
        (lit(s.channels), lit(s.plane), read(Buf::Arena(grad)), write(t.write), accumulate(t));
    let pool = kernels::pool();
    quote!(#pool::global_avg_pool_backward(n, #c, #p, #dout, #dx); #acc)
}
