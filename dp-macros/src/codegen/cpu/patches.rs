//! `patches` on the CPU: a permutation forward, its inverse backward.

use super::emit::{accumulate, lit, read, write};
use super::kernels;
use crate::ops::patches::PatchesStep;
use crate::plan::memory::Buf;
use proc_macro2::TokenStream;
use quote::quote;

/// `const DIMS: PatchDims = ...;`
fn dims(s: &PatchesStep) -> TokenStream {
    let [c, h, w, p] = s.dims.map(lit);
    let module = kernels::patches();
    quote! {
        const DIMS: #module::PatchDims = #module::PatchDims { channels: #c, height: #h, width: #w, size: #p };
    }
}

pub fn forward(s: &PatchesStep) -> TokenStream {
    let (dims, x, out, module) = (dims(s), read(s.input), write(s.output), kernels::patches());
    quote!({ #dims #module::image_to_patches(&DIMS, n, #x, #out); })
}

pub fn backward(s: &PatchesStep) -> TokenStream {
    let Some((out_grad, target)) = s.grads else { return quote!() };
    let (dims, module) = (dims(s), kernels::patches());
    let (dout, dx, add) = (read(Buf::Arena(out_grad)), write(target.write), accumulate(target));
    quote!({ #dims #module::patches_to_image(&DIMS, n, #dout, #dx); #add })
}
