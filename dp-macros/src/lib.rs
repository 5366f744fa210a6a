//! The `#[dp_model]` compiler: parse → graph IR → shape inference → plan → Rust code.
//!
//! An op is one module of [`ops`] (its arguments, shape rule, parameter count, plan step and cost);
//! the passes are drivers that apply every op's rule in turn:
//!
//! - [`parse`]: attribute syntax to a typed AST with spans (the grammar in [`syntax`], typed
//!   arguments in [`args`]);
//! - [`ir`]: the graph IR (ops with typed attributes over SSA values);
//! - [`check`]: shapes of one example, parameter counts, the loss against the output;
//! - [`plan`]: the per-op plan steps through the planner's shared services (memory, gradient routing,
//!   fusion, scratch sharing), FLOPs and bytes, the static memory plan;
//! - [`codegen`]: the emitted `DpModel` implementation, each step's statements from a backend.
//!
//! Errors from every pass are collected in a [`ctxt::Ctxt`] and reported together, each on the span of
//! the token that causes it.

// This page documents the compiler's private passes for its developers (`cargo doc
// --document-private-items` renders the links); a proc-macro crate exports nothing else to link.
#![allow(rustdoc::private_intra_doc_links)]

mod args;
mod check;
mod codegen;
mod ctxt;
mod ir;
mod ops;
mod parse;
mod plan;
mod shape;
mod syntax;

#[cfg(test)]
mod sequence_tests;
#[cfg(test)]
mod snapshot_tests;

use proc_macro::TokenStream;

/// Compiles a struct whose fields carry `#[layer(...)]` op chains into a `dp::DpModel`.
///
/// (Runnable versions of this model are in the `dp` crate's README and `src/models/`.)
///
/// ```text
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
/// the forward (let bindings, `self.field(value)`, `+`, `.relu()`, `.tanh()`, `.sigmoid()`, `.gelu()`, `.silu()`,
/// `.gelu_exact()`) gives the
/// graph instead of the field order (a residual network).
///
/// Arguments: `input = [d, ...]` (one example's shape) and `loss = cross_entropy(classes = K)`,
/// `binary_cross_entropy` (one logit) or `mse`. Ops: `linear(out = N, in = M, bias = false)` (`in` and
/// `bias` optional; on a sequence `[T, d]` applied at every position), `relu`, `tanh`, `sigmoid`, `gelu`
/// (tanh form), `gelu_exact` (erf form), `silu`, `flatten`, `conv2d(out, kernel, stride = 1, padding = 0, dilation = 1,
/// groups = 1, bias = true)`, `max_pool2d(kernel, stride = kernel, padding = 0)`, `avg_pool2d(...)`,
/// `global_avg_pool`, `group_norm(groups)`, `layer_norm`; `linear` and `conv2d` take
/// `norms = ghost | direct` to force their norm strategy; `linear` takes `lora(rank = r, alpha = a)`
/// (its weight and bias frozen, PEFT's adapters `<field>.lora_A`/`lora_B` trained). `frozen` in a
/// field's chain (`#[layer(linear(out = 50), relu, frozen)]`) keeps its parameters as initialised or
/// loaded. Field order is forward order; a field's type
/// names the kind of its parameterised op (`Linear`), or of its first op if it has no parameters.
///
/// Sequence models: `input = tokens(len = T, vocab = V)` declares `T` token ids per example
/// (`type Input = u32`, `VOCAB = V`; the trainer rejects a dataset with an id ≥ V before any step, so
/// the kernels never see one). `embedding(dim = D, vocab = V)` (`vocab` optional, checked) must read
/// the token input: `[T] → [T, D]`, table `<field>.weight` `[V, D]`, N(0, 1) init, token-grouped norms.
/// `mean` averages a sequence `[T, D] → [D]`. `lstm(hidden = H, norms = ghost | direct)` maps
/// `[T, d] → [T, H]` (zero initial state, gates i, f, g, o; `<field>.weight_ih_l0` `[4H, d]`,
/// `<field>.weight_hh_l0` `[4H, H]` and one bias `<field>.bias_ih_l0` `[4H]`, PyTorch's
/// `bias_ih_l0 + bias_hh_l0`; U(−1/√H, 1/√H) init), one parameter group.
///
/// Transformer ops on a sequence `[T, d]`: `position_embedding` (`x + P`, table `<field>.weight`
/// `[T, d]`), `multi_head_attention(heads = H, causal = false, norms = ghost | direct)` (PyTorch's
/// `nn.MultiheadAttention` as self-attention: `<field>.in_proj_weight` `[3d, d]`, `in_proj_bias`,
/// `out_proj.weight` `[d, d]`, `out_proj.bias`, one group), `layer_norm` (over each position), `mean`
/// and `first` (the first position) pooling `[T, d] → [d]`, and `patches(size = P)` (an image
/// `[C, H, W]` as the sequence of its patches `[(H/P)·(W/P), C·P·P]`).
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
    let (model, plan, module) = front_end_and_plan(args, item)?;
    let generated = codegen::generate(&model, &plan);
    let Some(module) = module else { return Ok(generated) };
    let syn::ItemMod { attrs, vis, ident, content, .. } = module;
    let items = content.map(|(_, items)| items).unwrap_or_default();
    Ok(quote::quote! {
        #(#attrs)*
        #vis mod #ident {
            #(#items)*
            #generated
        }
    })
}

/// The pipeline, written once: a front end (a struct, or an inline `mod` with a `forward`, whose
/// other items are returned to be kept) to a graph, then check and plan.
fn front_end_and_plan(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<(parse::ast::ModelDef, plan::Plan, Option<syn::ItemMod>)> {
    let mut cx = ctxt::Ctxt::new();
    let (model, graph, module) = match syn::parse2::<syn::ItemMod>(item.clone()) {
        Ok(module) => match parse::forward::parse_graph_model(&mut cx, args, module) {
            Some(parsed) => (parsed.model, parsed.graph, Some(parsed.module)),
            None => return Err(failed(cx)),
        },
        Err(_) => match parse::parse_model(&mut cx, args, item) {
            Some(model) => {
                let graph = ir::Graph::from_sequential(&model);
                (model, graph, None)
            }
            None => return Err(failed(cx)),
        },
    };
    let checked = check::check(&mut cx, &model, &graph);
    cx.finish()?;
    let checked = checked.expect("checking fails only with an error");
    let plan = plan::plan(&graph, &checked);
    Ok((model, plan, module))
}

/// The errors of a pass that gave up (it does so only after reporting why).
fn failed(cx: ctxt::Ctxt) -> syn::Error {
    cx.finish().expect_err("a pass gives up only after reporting an error")
}

/// The plan of a model as the macro would compile it (for the unit tests of the passes).
#[cfg(test)]
fn plan_of(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> plan::Plan {
    front_end_and_plan(args, item).expect("the model compiles").1
}
