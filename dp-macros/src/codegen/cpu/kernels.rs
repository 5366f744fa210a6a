//! Where the CPU kernels live, named once: the emitted code reaches `dp-kernels` through the facade
//! (`::dp::__private::kernels`), so a user depends on `dp` alone.

use proc_macro2::TokenStream;
use quote::quote;

/// `::dp::__private::kernels`.
pub fn root() -> TokenStream {
    quote!(::dp::__private::kernels)
}

macro_rules! kernel_modules {
    ($($module:ident),* $(,)?) => {
        $(
            #[doc = concat!("`::dp::__private::kernels::", stringify!($module), "`.")]
            pub fn $module() -> TokenStream {
                let root = root();
                quote!(#root::$module)
            }
        )*
    };
}

kernel_modules!(
    activation,
    arena,
    attention,
    conv,
    conv_chunks,
    dense,
    embedding,
    embedding_mean,
    loss,
    lstm,
    norm_layers,
    patches,
    per_example,
    pool,
    sequence,
);
