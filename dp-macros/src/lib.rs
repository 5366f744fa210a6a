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
/// On an inline `mod` holding the struct and an `impl` with `fn forward(&self, x: Input) -> Output`,
/// the forward (let bindings, `self.field(value)`, `+`, `.relu()`/`.tanh()`/`.sigmoid()`) gives the
/// graph instead of the field order (a residual network).
///
/// Arguments: `input = [d, ...]` (one example's shape) and `loss = cross_entropy(classes = K)`,
/// `binary_cross_entropy` (one logit) or `mse`. Ops: `linear(out = N, in = M, bias = false)` (`in` and
/// `bias` optional), `relu`, `tanh`, `sigmoid`, `flatten`, `conv2d(out, kernel, stride = 1, padding = 0, dilation = 1,
/// groups = 1, bias = true)`, `max_pool2d(kernel, stride = kernel, padding = 0)`, `avg_pool2d(...)`,
/// `global_avg_pool`, `group_norm(groups)`, `layer_norm`; `linear` and `conv2d` take
/// `norms = ghost | direct` to force their norm strategy. Field order is forward order; a field's type
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
    if let Ok(module) = syn::parse2::<syn::ItemMod>(item.clone()) {
        return compile_module(cx, args, module);
    }
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

/// The residual front end: `#[dp_model]` on an inline module with the struct and its `forward`.
fn compile_module(
    mut cx: ctxt::Ctxt,
    args: proc_macro2::TokenStream,
    module: syn::ItemMod,
) -> syn::Result<proc_macro2::TokenStream> {
    let Some(parsed) = parse::forward::parse_graph_model(&mut cx, args, module) else {
        cx.finish()?;
        unreachable!("parsing fails only with an error");
    };
    let checked = check::check(&mut cx, &parsed.model, &parsed.graph);
    cx.finish()?;
    let checked = checked.expect("checking fails only with an error");
    let plan = plan::plan(&parsed.graph, &checked);
    let generated = codegen::generate(&parsed.model, &plan);
    let syn::ItemMod { attrs, vis, ident, content, .. } = parsed.module;
    let items = content.map(|(_, items)| items).unwrap_or_default();
    Ok(quote::quote! {
        #(#attrs)*
        #vis mod #ident {
            #(#items)*
            #generated
        }
    })
}
