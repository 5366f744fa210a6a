//! Group and layer norm on the CPU: the per-example affine gradients are formed in the backward, so
//! their norms and sums read a stored buffer.

use super::activation::{fused_backward, fused_forward};
use super::emit::{accumulate, lit, read, write, zero_group};
use super::kernels;
use crate::ops::norm_layer::{NormDims, NormStep};
use crate::plan::memory::Buf;
use crate::plan::Plan;
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// The dimensions value and the kernel (`group_norm_{pass}` or `layer_norm_{pass}`) of a pass.
fn norm_call(dims: NormDims, pass: &str) -> (TokenStream, TokenStream) {
    let module = kernels::norm_layers();
    match dims {
        NormDims::Group { channels, plane, groups } => {
            let (c, p, g) = (lit(channels), lit(plane), lit(groups));
            let f = Ident::new(&format!("group_norm_{pass}"), Span::call_site());
            (quote!(#module::GroupNormDims { channels: #c, plane: #p, groups: #g }), quote!(#module::#f))
        }
        NormDims::Layer { rows, dim } => {
            let (r, d) = (lit(rows), lit(dim));
            let f = Ident::new(&format!("layer_norm_{pass}"), Span::call_site());
            (quote!(#module::LayerNormDims { rows: #r, dim: #d }), quote!(#module::#f))
        }
    }
}

/// `&p[..]` of the affine weight and of the bias after it.
fn affine(plan: &Plan, s: &NormStep) -> (TokenStream, TokenStream) {
    let w = &plan.params[s.weight];
    let (start, mid, end) = (lit(w.offset), lit(w.offset + w.len), lit(w.offset + 2 * w.len));
    (quote!(&p[#start..#mid]), quote!(&p[#mid..#end]))
}

pub fn forward(plan: &Plan, s: &NormStep) -> TokenStream {
    let (dims, f) = norm_call(s.dims, "forward");
    let (x, y, mean, rstd) = (read(s.input), write(s.output), write(s.mean), write(s.rstd));
    let (w, b) = affine(plan, s);
    let act = fused_forward(s.act, s.output, s.dims.len());
    quote! {
        #f(&#dims, n, #x, #w, #b, #y, #mean, #rstd);
        #act
    }
}

pub fn backward(plan: &Plan, s: &NormStep) -> TokenStream {
    let act = fused_backward(s.act, s.grad, s.output, s.dims.len());
    let (dims, f) = norm_call(s.dims, "backward");
    let (x, dout, mean, rstd) =
        (read(s.input), read(Buf::Arena(s.grad)), read(Buf::Arena(s.mean)), read(Buf::Arena(s.rstd)));
    let (w, _) = affine(plan, s);
    let (dx, affine, acc) = (write(s.input_grad.write), write(s.affine), accumulate(s.input_grad));
    quote! {
        #act
        #f(&#dims, n, #x, #dout, #w, #mean, #rstd, #dx, #affine);
        #acc
    }
}

pub fn gradient_sum(plan: &Plan, s: &NormStep) -> TokenStream {
    let w = &plan.params[s.weight];
    let (start, end, width2) = (lit(w.offset), lit(w.offset + 2 * w.len), lit(2 * w.len));
    let affine = read(Buf::Arena(s.affine));
    quote! {
        for example in (#affine)[..n * #width2].chunks_exact(#width2) {
            for (g, v) in grad[#start..#end].iter_mut().zip(example) {
                *g += *v;
            }
        }
    }
}

/// The kernel adds the stored gradients' squares into the column: zeroed first.
pub fn norms(plan: &Plan, s: &NormStep) -> TokenStream {
    let (groups, gidx, width2) = (lit(plan.groups.len()), lit(s.group), lit(2 * s.dims.width()));
    let (affine, zero, module) =
        (read(Buf::Arena(s.affine)), zero_group(plan, s.group), kernels::per_example());
    quote! {
        #zero
        #module::stored_norms_sq(n, #width2, #affine, &mut sq_norms[#gidx..], #groups);
    }
}

pub fn clipped_sum(plan: &Plan, s: &NormStep) -> TokenStream {
    let w = &plan.params[s.weight];
    let (start, end, width) = (lit(w.offset), lit(w.offset + 2 * w.len), lit(w.len));
    let (groups, gidx) = (lit(plan.groups.len()), lit(s.group));
    let (affine, module) = (read(Buf::Arena(s.affine)), kernels::norm_layers());
    quote! {
        #module::affine_clipped_sum_contiguous(
            #width, n, #affine, &factors[#gidx..], #groups, &mut grad[#start..#end],
        );
    }
}
