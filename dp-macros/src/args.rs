//! Typed reading of argument values and argument lists (every op reads its arguments with these), and
//! "did you mean" suggestions.

use crate::ctxt::Ctxt;
use crate::syntax::{ArgSyntax, OpSyntax, Spanned, ValueSyntax};
use syn::Lit;

/// A norm strategy forced by `norms = ghost | direct` (otherwise the planner chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormChoice {
    Ghost,
    Direct,
}

/// A positive integer (a dimension, a width, a class count).
pub fn positive_int(cx: &mut Ctxt, key: &str, value: &ValueSyntax) -> Option<Spanned<usize>> {
    let span = value.span();
    let found = match value {
        ValueSyntax::Lit(Lit::Int(int)) => match int.base10_parse::<usize>() {
            Ok(0) => {
                cx.error(span, format!("`{key}` must be at least 1, found 0"));
                return None;
            }
            Ok(v) => return Some(Spanned { value: v, span }),
            Err(_) if int.base10_digits().starts_with('-') => "a negative integer",
            Err(_) => "an integer that does not fit in usize",
        },
        ValueSyntax::Lit(Lit::Str(_)) => "a string",
        ValueSyntax::Lit(Lit::Float(_)) => "a floating-point number",
        ValueSyntax::Lit(Lit::Bool(_)) => "a boolean",
        ValueSyntax::Lit(_) => "a literal of another type",
        ValueSyntax::List { .. } => "a list",
        ValueSyntax::Call(_) => "a name",
        ValueSyntax::Other(_) => "an expression",
    };
    cx.error(span, format!("`{key}` expects a positive integer literal, found {found} `{}`", value.text()));
    None
}

/// `true` or `false`.
pub fn boolean(cx: &mut Ctxt, key: &str, value: &ValueSyntax) -> Option<bool> {
    if let ValueSyntax::Lit(Lit::Bool(b)) = value {
        return Some(b.value);
    }
    cx.error(value.span(), format!("`{key}` expects `true` or `false`, found `{}`", value.text()));
    None
}

/// `norms = ghost | direct`.
pub fn norm_choice(cx: &mut Ctxt, value: &ValueSyntax) -> Option<NormChoice> {
    if let ValueSyntax::Call(op) = value {
        if op.args.is_empty() {
            match op.name.to_string().as_str() {
                "ghost" => return Some(NormChoice::Ghost),
                "direct" => return Some(NormChoice::Direct),
                _ => {}
            }
        }
    }
    cx.error(value.span(), format!("`norms` expects `ghost` or `direct`, found `{}`", value.text()));
    None
}

/// A positive integer the op cannot do without; the error shows how to write it.
pub fn required(
    cx: &mut Ctxt,
    op: &OpSyntax,
    arg: Option<&ArgSyntax>,
    key: &str,
    example: &str,
) -> Option<Spanned<usize>> {
    match arg {
        Some(a) => positive_int(cx, key, &a.value),
        None => {
            cx.error(op.span(), format!("`{}` needs `{key}`: write e.g. `{example}`", op.name));
            None
        }
    }
}

/// An integer argument with a default (which carries the span of the op's name).
pub fn optional(
    cx: &mut Ctxt,
    arg: Option<&ArgSyntax>,
    default: Spanned<usize>,
    read: fn(&mut Ctxt, &str, &ValueSyntax) -> Option<Spanned<usize>>,
) -> Option<Spanned<usize>> {
    match arg {
        Some(a) => read(cx, &a.key.to_string(), &a.value),
        None => Some(default),
    }
}

/// An integer that may be 0 (padding).
pub fn non_negative_int(cx: &mut Ctxt, key: &str, value: &ValueSyntax) -> Option<Spanned<usize>> {
    if let ValueSyntax::Lit(Lit::Int(int)) = value {
        if let Ok(v) = int.base10_parse::<usize>() {
            return Some(Spanned { value: v, span: value.span() });
        }
    }
    cx.error(
        value.span(),
        format!("`{key}` expects a non-negative integer literal, found `{}`", value.text()),
    );
    None
}

/// The kernels normalise with PyTorch's ε = 1e-5; `eps` may be written, but only with that value.
pub fn pytorch_eps(cx: &mut Ctxt, value: &ValueSyntax) -> Option<()> {
    let parsed = match value {
        ValueSyntax::Lit(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
        _ => None,
    };
    if parsed == Some(1e-5) {
        return Some(());
    }
    cx.error(
        value.span(),
        format!(
            "`eps` must be 1e-5 (PyTorch's default, which the normalisation kernels use), found `{}`",
            value.text()
        ),
    );
    None
}

/// Splits an argument list by key: reports unknown and duplicate keys; returns one slot per known key.
pub fn arguments<'a, const N: usize>(
    cx: &mut Ctxt,
    op: &'a OpSyntax,
    known: [&str; N],
) -> [Option<&'a ArgSyntax>; N] {
    let mut slots = [None; N];
    for arg in &op.args {
        let key = arg.key.to_string();
        match known.iter().position(|k| *k == key) {
            Some(i) if slots[i].is_some() => cx.error(arg.key.span(), format!("duplicate argument `{key}`")),
            Some(i) => slots[i] = Some(arg),
            None if N == 0 => cx
                .error(arg.key.span(), format!("unknown argument `{key}`: `{}` takes no arguments", op.name)),
            None => cx.error(
                arg.key.span(),
                format!(
                    "unknown argument `{key}` for `{}`{}; its arguments are {}",
                    op.name,
                    did_you_mean(&key, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default(),
                    known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    slots
}

/// The closest candidate within a small edit distance, if any.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let (d, c) = candidates.iter().map(|c| (edit_distance(word, c), *c)).min_by_key(|(d, _)| *d)?;
    (d <= (word.len().max(c.len()) / 3).max(2)).then_some(c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(edit_distance("lineer", "linear"), 1);
        assert_eq!(did_you_mean("lienar", &["linear", "relu"]), Some("linear"));
        assert_eq!(did_you_mean("conv2d", &["linear", "relu", "tanh"]), None);
    }
}
