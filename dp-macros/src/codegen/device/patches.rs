//! `patches` on the device: the permutation of images into patches forward, its inverse backward
//! (overwriting the input's gradient, then added into its own when the input has other readers).

use super::emit::{accumulate, arena, lit, read, rt};
use crate::ops::patches::PatchesStep;
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// `const DIMS: PatchDims = ...;`
fn dims(s: &PatchesStep) -> TokenStream {
    let ([c, h, w, p], rt) = (s.dims.map(lit), rt());
    quote!(const DIMS: #rt::PatchDims = #rt::PatchDims { channels: #c, height: #h, width: #w, size: #p };)
}

pub fn forward(plan: &Plan, s: &PatchesStep) -> TokenStream {
    let (dims, x, out) = (dims(s), read(plan, s.input), arena(plan, s.output));
    quote!({ #dims dev.patches_forward(#x, &DIMS, n, #out)?; })
}

pub fn backward(plan: &Plan, s: &PatchesStep) -> TokenStream {
    let Some((out_grad, target)) = s.grads else { return quote!() };
    let (dims, dout, dx, add) =
        (dims(s), arena(plan, out_grad), arena(plan, target.write), accumulate(plan, target));
    quote!({ #dims dev.patches_backward(#dout, &DIMS, n, #dx)?; #add })
}
