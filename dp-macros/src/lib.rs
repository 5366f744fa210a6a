//! The `#[dp_model]` compiler.
use proc_macro::TokenStream;

#[proc_macro_attribute]
pub fn dp_model(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
