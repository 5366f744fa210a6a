//! `frozen` in a field's chain (`#[layer(linear(out = 10), relu, frozen)]`): the field's parameters
//! stay as initialised or loaded; they get no gradient, no per-example norm and no noise.

use super::ast::OpDef;
use crate::ctxt::Ctxt;
use crate::syntax::OpSyntax;
use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::Token;

/// The word that marks a field as frozen.
const FROZEN: &str = "frozen";

/// The chain without its `frozen` marker, and the marker's span if it was there. A marker with
/// arguments, or written twice, is an error on that token.
pub fn split_frozen(
    cx: &mut Ctxt,
    field: &syn::Ident,
    chain: Punctuated<OpSyntax, Token![,]>,
) -> (Punctuated<OpSyntax, Token![,]>, Option<Span>) {
    let mut frozen = None;
    let mut ops = Punctuated::new();
    for op in chain {
        if op.name != FROZEN {
            ops.push(op);
            continue;
        }
        if !op.args.is_empty() {
            cx.error(op.span(), format!("`{FROZEN}` takes no arguments (field `{field}`)"));
        } else if frozen.is_some() {
            cx.error(op.span(), format!("field `{field}` is marked `{FROZEN}` twice"));
        }
        frozen.get_or_insert(op.span());
    }
    (ops, frozen)
}

/// `frozen` freezes parameters, so the field must hold a parameterised layer.
pub fn check_frozen_field(cx: &mut Ctxt, field: &syn::Ident, ops: &[OpDef], frozen: Span) {
    if !ops.iter().any(|op| op.op.is_parameterised()) {
        let written: Vec<&str> = ops.iter().map(|op| op.text.as_str()).collect();
        cx.error(
            frozen,
            format!(
                "`{FROZEN}` on field `{field}`, which has no parameters to freeze (`{}`); `{FROZEN}` applies \
                 to a parameterised layer such as `linear` or `conv2d`",
                written.join(", ")
            ),
        );
    }
}
