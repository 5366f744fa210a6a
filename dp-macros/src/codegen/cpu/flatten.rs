//! `flatten` on the CPU: nothing moves forward; a copy of the gradient backward when its input has
//! other readers.

use super::emit::{accumulate, read, write};
use crate::ops::flatten::GradCopyStep;
use crate::plan::memory::Buf;
use proc_macro2::TokenStream;
use quote::quote;

pub fn backward(s: &GradCopyStep) -> TokenStream {
    let (dx, g, acc) = (write(s.target.write), read(Buf::Arena(s.grad)), accumulate(s.target));
    quote!((#dx).copy_from_slice(#g); #acc)
}
