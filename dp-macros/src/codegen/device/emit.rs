//! The vocabulary of the emitted device code: spans of the runtime's regions, arena buffers at their
//! device offsets ([`super::layout`]: every `F32` buffer first) scaled by the batch size `n`.

use super::layout::Layout;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::Plan;
use proc_macro2::{Ident, Span as CallSite, TokenStream};
use quote::quote;

pub use crate::codegen::cpu::emit::lit;

/// `::dp::__private::runtime::device`, by the alias `__d` every device pass declares
/// ([`prelude`]).
pub fn rt() -> TokenStream {
    quote!(__d)
}

/// The alias the emitted device statements name the runtime's device module by.
pub fn prelude() -> TokenStream {
    quote!(
        use ::dp::__private::runtime::device as __d;
    )
}

/// A span of `region` (a `Region` variant's name).
pub fn region(region: TokenStream, offset: TokenStream, len: TokenStream) -> TokenStream {
    let rt = rt();
    quote!(#rt::Span::new(#rt::Region::#region, #offset, #len))
}

/// Arena buffer `k`: `len · n` values at its device offset times `n` ([`Layout`]), marked as the plan
/// stores it.
pub fn arena(plan: &Plan, k: usize) -> TokenStream {
    let b = &plan.buffers[k];
    stored(arena_span(Layout::of(plan).offset(b.offset, b.len), b.len), b.stored)
}

/// `len` values per example of the device's own scratch at device offset `offset` per example
/// ([`super::scratch`]), marked `stored`.
pub fn scratch(offset: usize, len: usize, stored_as: Stored) -> TokenStream {
    stored(arena_span(offset, len), stored_as)
}

fn arena_span(offset: usize, len: usize) -> TokenStream {
    let (offset, len) = (lit(offset), lit(len));
    region(quote!(Arena), quote!(#offset * n), quote!(#len * n))
}

/// An arena span with its storage mark: `Span::new` is f32 in every precision.
fn stored(span: TokenStream, stored: Stored) -> TokenStream {
    match stored {
        Stored::F32 => span,
        Stored::OfPrecision => quote!(#span.of_precision()),
    }
}

/// A step's input: the batch's inputs or an arena buffer.
pub fn read(plan: &Plan, buf: Buf) -> TokenStream {
    match buf {
        Buf::Input => {
            let len = lit(plan.input_len);
            region(quote!(Inputs), quote!(0), quote!(n * #len))
        }
        Buf::Arena(k) => arena(plan, k),
    }
}

/// A parameter tensor's values.
pub fn param(plan: &Plan, slot: usize) -> TokenStream {
    let s = &plan.params[slot];
    let (offset, len) = (lit(s.offset), lit(s.len));
    region(quote!(Params), quote!(#offset), quote!(#len))
}

/// A parameter tensor's gradient (the gradient is laid out as the trained parameters).
pub fn grad(plan: &Plan, slot: usize) -> TokenStream {
    let s = &plan.params[slot];
    let (offset, len) = (lit(s.offset), lit(s.len));
    region(quote!(Grad), quote!(#offset), quote!(#len))
}

/// The whole `SqNorms` or `Factors` region of the batch.
pub fn per_group(plan: &Plan, which: &str) -> TokenStream {
    let (groups, which) = (lit(plan.groups.len()), Ident::new(which, CallSite::call_site()));
    region(quote!(#which), quote!(0), quote!(n * #groups))
}

/// After a gradient target was written: adds it into the input's own gradient when the input has
/// other readers.
pub fn accumulate(plan: &Plan, t: GradTarget) -> TokenStream {
    match t.add_into {
        Some(g) => {
            let (dst, src, len) = (arena(plan, g), arena(plan, t.write), lit(plan.buffers[t.write].len));
            quote!(dev.add_into(#dst, #src, #len * n)?;)
        }
        None => quote!(),
    }
}
