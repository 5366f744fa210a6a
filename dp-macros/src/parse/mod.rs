//! Parsing: the `#[dp_model(...)]` arguments and the annotated struct become a [`ModelDef`].
//!
//! Every problem is reported into the [`Ctxt`] on the span of the offending token, and parsing goes on
//! with the next field, so one compile shows all the mistakes of a model.

pub mod ast;
pub mod forward;
mod frozen;
pub mod input;
pub mod loss;

use crate::args;
use crate::ctxt::Ctxt;
use crate::ops::Op;
use crate::syntax::{ArgSyntax, OpSyntax, Spanned, ValueSyntax};
use ast::{FieldDef, InputKind, LossDef, ModelDef, OpDef};
use proc_macro2::{Span, TokenStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Fields, ItemStruct, Token};

/// Parses the attribute arguments and the struct; `None` when anything was wrong (errors are in `cx`).
pub fn parse_model(cx: &mut Ctxt, args: TokenStream, item: TokenStream) -> Option<ModelDef> {
    let item: ItemStruct = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => {
            cx.error(e.span(), "#[dp_model] applies to a struct with named fields, one per layer");
            return None;
        }
    };
    let (input, loss) = model_args(cx, args);
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error(
            item.generics.span(),
            "a #[dp_model] struct cannot be generic: every shape must be known when the macro runs",
        );
    }
    let fields = match &item.fields {
        Fields::Named(named) => named.named.iter().filter_map(|f| field_def(cx, f)).collect::<Vec<_>>(),
        Fields::Unnamed(unnamed) => {
            cx.error(
                unnamed.span(),
                "a #[dp_model] struct needs named fields (one per layer, named like `fc1`), not a tuple struct",
            );
            Vec::new()
        }
        Fields::Unit => Vec::new(),
    };
    let no_fields = match &item.fields {
        Fields::Named(named) => named.named.is_empty(),
        Fields::Unit => true,
        Fields::Unnamed(_) => false,
    };
    if no_fields {
        cx.error(
            item.ident.span(),
            format!(
                "model `{}` has no layers: add fields such as `#[layer(linear(out = 10))] fc: Linear`",
                item.ident
            ),
        );
    }
    if cx.has_errors() {
        return None;
    }
    let (input, input_kind) = input?;
    let mut fields = fields;
    input::resolve_vocab(&mut fields, &input_kind);
    Some(ModelDef {
        attrs: item.attrs,
        vis: item.vis,
        ident: item.ident,
        input,
        input_kind,
        loss: loss?,
        fields,
    })
}

/// The shape of one example's input and what it holds.
type InputDef = (Vec<Spanned<usize>>, InputKind);

/// `input = [...]` (or `input = tokens(...)`) and `loss = ...`.
fn model_args(cx: &mut Ctxt, args: TokenStream) -> (Option<InputDef>, Option<LossDef>) {
    let call_site = Span::call_site();
    let parsed = match syn::parse::Parser::parse2(Punctuated::<ArgSyntax, Token![,]>::parse_terminated, args)
    {
        Ok(parsed) => parsed,
        Err(e) => {
            cx.syn_error(e);
            return (None, None);
        }
    };
    let holder = OpSyntax { name: syn::Ident::new("dp_model", call_site), args: parsed };
    let [input, loss] = args::arguments(cx, &holder, ["input", "loss"]);
    let input = match input {
        None => {
            cx.error(
                call_site,
                "#[dp_model] needs the shape of one example: add `input = [...]`, e.g. `input = [104]`",
            );
            None
        }
        Some(arg) => match &arg.value {
            ValueSyntax::Call(op) if op.name == "tokens" => input::token_input(cx, op),
            value => input_shape(cx, value).map(|shape| (shape, InputKind::Dense)),
        },
    };
    let loss = match loss {
        None => {
            cx.error(call_site, "#[dp_model] needs a loss: add e.g. `loss = cross_entropy(classes = 10)`");
            None
        }
        Some(arg) => loss::loss_def(cx, &arg.value),
    };
    (input, loss)
}

fn input_shape(cx: &mut Ctxt, value: &ValueSyntax) -> Option<Vec<Spanned<usize>>> {
    let ValueSyntax::List { items, .. } = value else {
        cx.error(
            value.span(),
            format!("`input` expects a list of dimensions like `[104]`, found `{}`", value.text()),
        );
        return None;
    };
    if items.is_empty() {
        cx.error(value.span(), "`input` needs at least one dimension");
        return None;
    }
    let dims: Vec<_> = items.iter().map(|d| args::positive_int(cx, "input", d)).collect();
    dims.into_iter().collect()
}

/// One field: its `#[layer(...)]` chain, and its type checked against the chain's layer kind.
fn field_def(cx: &mut Ctxt, field: &syn::Field) -> Option<FieldDef> {
    let name = field.ident.clone()?;
    let layer_attrs: Vec<_> = field.attrs.iter().filter(|a| a.path().is_ident("layer")).collect();
    let attr = match layer_attrs.as_slice() {
        [attr] => *attr,
        [] => {
            cx.error(
                name.span(),
                format!("field `{name}` has no `#[layer(...)]` attribute saying what it computes"),
            );
            return None;
        }
        [_, second, ..] => {
            cx.error(
                second.span(),
                format!("field `{name}` has more than one `#[layer(...)]`; put the ops in one list"),
            );
            return None;
        }
    };
    let chain = match attr.parse_args_with(Punctuated::<OpSyntax, Token![,]>::parse_terminated) {
        Ok(chain) => chain,
        Err(e) => {
            cx.syn_error(e);
            return None;
        }
    };
    let (chain, frozen) = frozen::split_frozen(cx, &name, chain);
    if chain.is_empty() {
        let span = match &attr.meta {
            syn::Meta::List(list) => list.delimiter.span().join(),
            _ => attr.path().span(),
        };
        cx.error(
            span,
            format!(
                "field `{name}` has an empty layer chain: list its ops, e.g. `#[layer(linear(out = 10))]`"
            ),
        );
        return None;
    }
    check_field_type(cx, &name, &field.ty, &chain);
    let ops: Vec<Option<OpDef>> = chain
        .iter()
        .map(|op| Some(OpDef { op: Op::parse(cx, op)?, span: op.span(), text: op.text() }))
        .collect();
    let ops: Vec<OpDef> = ops.into_iter().collect::<Option<_>>()?;
    if let Some(span) = frozen {
        frozen::check_frozen_field(cx, &name, &ops, span);
    }
    Some(FieldDef { name, ops, frozen })
}

/// A field's type names the layer kind of its parameterised op (`Linear`), or, for a field without
/// parameters, the kind of its first op (`Relu`, `Flatten`). At most one parameterised op per field:
/// the field is one parameter group and names its tensors (`fc1.weight`). Works on op names, so it is
/// checked even when an op's arguments are wrong; unknown names are reported by `Op::parse`.
fn check_field_type(
    cx: &mut Ctxt,
    name: &syn::Ident,
    ty: &syn::Type,
    chain: &Punctuated<OpSyntax, Token![,]>,
) {
    let kinds: Vec<(&OpSyntax, &str, bool)> =
        chain.iter().filter_map(|op| Op::field_type(&op.name.to_string()).map(|(k, p)| (op, k, p))).collect();
    if kinds.len() != chain.len() {
        return;
    }
    let parameterised: Vec<_> = kinds.iter().filter(|(_, _, p)| *p).collect();
    if let [_, second, ..] = parameterised.as_slice() {
        cx.error(
            second.0.span(),
            format!(
                "field `{name}` already holds a parameterised layer; give `{}` a field of its own",
                second.0.text()
            ),
        );
        return;
    }
    let (expected, why) = match parameterised.first() {
        Some((op, kind, _)) => (*kind, format!("it holds `{}`", op.text())),
        None => (kinds[0].1, format!("its first op is `{}` and it has no parameters", kinds[0].0.text())),
    };
    let found = match ty {
        syn::Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    if found.as_deref() != Some(expected) {
        // Token streams print as `Vec < f32 >`; close the gaps around angle brackets and commas.
        let shown = quote::ToTokens::to_token_stream(ty).to_string();
        let shown = shown.replace(" < ", "<").replace(" >", ">").replace(" ,", ",");
        cx.error(
            ty.span(),
            format!("field `{name}` must have type `{expected}` because {why}, found `{shown}`"),
        );
    }
}
