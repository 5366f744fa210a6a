//! The `#[dp_model]` compiler: parse → graph IR → shape inference → plan → Rust code.
//!
//! - [`parse`]: attribute syntax to a typed AST with spans;
//! - [`ir`]: the graph IR (ops with typed attributes over SSA values);
//! - [`check`]: shapes of one example, parameter counts, the loss against the output;
//! - [`plan`]: fusion, the per-layer norm strategy, FLOPs and bytes, the static memory plan;
//! - [`codegen`]: the emitted `DpModel` implementation.
//!
//! Errors from every pass are collected in a [`ctxt::Ctxt`] and reported together, each on the span of
//! the token that causes it.

mod check;
mod codegen;
mod ctxt;
mod ir;
mod parse;
mod plan;

#[cfg(test)]
mod snapshot_tests;

use proc_macro::TokenStream;

/// Compiles a struct whose fields carry `#[layer(...)]` op chains into a `dp::DpModel`.
///
/// ```ignore
/// #[dp_model(input = [104], loss = cross_entropy(classes = 2))]
/// pub struct AdultFfnn {
///     #[layer(linear(out = 50), relu)]
///     fc1: Linear,
///     #[layer(linear(out = 2))]
///     fc2: Linear,
/// }
/// ```
///
/// Arguments: `input = [d, ...]` (one example's shape) and `loss = cross_entropy(classes = K)`,
/// `binary_cross_entropy` (one logit) or `mse`. Ops: `linear(out = N, in = M, bias = false)` (`in` and
/// `bias` optional), `relu`, `tanh`, `sigmoid`, `flatten`. Field order is forward order; a field's type
/// names the kind of its parameterised op (`Linear`), or of its first op if it has no parameters.
#[proc_macro_attribute]
pub fn dp_model(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into()).into()
}

/// The expansion on `proc_macro2` tokens (unit-testable): the generated code, or every error found.
fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    match compile(args, item) {
        Ok(tokens) => tokens,
        Err(e) => e.to_compile_error(),
    }
}

fn compile(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let mut cx = ctxt::Ctxt::new();
    let Some(model) = parse::parse_model(&mut cx, args, item) else {
        cx.finish()?;
        unreachable!("parsing fails only with an error");
    };
    let graph = ir::Graph::from_sequential(&model);
    let checked = check::check(&mut cx, &model, &graph);
    cx.finish()?;
    let checked = checked.expect("checking fails only with an error");
    let plan = plan::plan(&graph, &checked);
    Ok(codegen::generate(&model, &plan))
}
