//! The token grammar of `#[dp_model(...)]` and `#[layer(...)]`, before any meaning is given to it.
//!
//! ```text
//! op    := IDENT [ "(" arg,* ")" ]          e.g. linear(out = 50, in = 104, bias = false)
//! arg   := IDENT "=" value                  IDENT may be a keyword (`in`)
//!        | IDENT "(" arg,* ")"              a nested op without a key, read as `IDENT = IDENT(...)`
//!                                           (`lora(rank = 8)` in `linear(out = 64, lora(rank = 8))`)
//! value := LITERAL | "[" value,* "]" | op | EXPR
//! ```

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, parenthesized, token, Ident, Lit, Token};

/// A value written in the source, with where it was written.
#[derive(Debug, Clone, Copy)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// An op or a call-like value: a name with optional arguments.
pub struct OpSyntax {
    pub name: Ident,
    pub args: Punctuated<ArgSyntax, Token![,]>,
}

/// `key = value`.
pub struct ArgSyntax {
    pub key: Ident,
    pub value: ValueSyntax,
}

/// The right-hand side of an argument.
pub enum ValueSyntax {
    Lit(Lit),
    List { span: Span, items: Punctuated<ValueSyntax, Token![,]> },
    Call(OpSyntax),
    Other(syn::Expr),
}

impl Parse for OpSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = Ident::parse_any(input)?;
        let args = if input.peek(token::Paren) {
            let content;
            parenthesized!(content in input);
            Punctuated::parse_terminated(&content)?
        } else {
            Punctuated::new()
        };
        Ok(OpSyntax { name, args })
    }
}

impl Parse for ArgSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        if input.peek(token::Paren) {
            let content;
            parenthesized!(content in input);
            let args = Punctuated::parse_terminated(&content)?;
            return Ok(ArgSyntax {
                key: key.clone(),
                value: ValueSyntax::Call(OpSyntax { name: key, args }),
            });
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(ArgSyntax { key, value })
    }
}

impl Parse for ValueSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Lit) {
            Ok(ValueSyntax::Lit(input.parse()?))
        } else if input.peek(token::Bracket) {
            let content;
            let bracket = bracketed!(content in input);
            Ok(ValueSyntax::List {
                span: bracket.span.join(),
                items: Punctuated::parse_terminated(&content)?,
            })
        } else if input.peek(Ident::peek_any) {
            Ok(ValueSyntax::Call(input.parse()?))
        } else {
            Ok(ValueSyntax::Other(input.parse()?))
        }
    }
}

impl ValueSyntax {
    /// The span covering the whole value, for error messages.
    pub fn span(&self) -> Span {
        match self {
            ValueSyntax::Lit(lit) => lit.span(),
            ValueSyntax::List { span, .. } => *span,
            ValueSyntax::Call(op) => op.span(),
            ValueSyntax::Other(expr) => syn::spanned::Spanned::span(expr),
        }
    }

    /// The value as written, normalised (`out = 50`), for plan tables and messages.
    pub fn text(&self) -> String {
        match self {
            ValueSyntax::Lit(lit) => lit.to_token_stream().to_string(),
            ValueSyntax::List { items, .. } => {
                let items: Vec<String> = items.iter().map(ValueSyntax::text).collect();
                format!("[{}]", items.join(", "))
            }
            ValueSyntax::Call(op) => op.text(),
            ValueSyntax::Other(expr) => expr.to_token_stream().to_string(),
        }
    }
}

impl OpSyntax {
    /// The span of the op's name (errors about the op as a whole point here).
    pub fn span(&self) -> Span {
        self.name.span()
    }

    /// The op as written, normalised: `linear(out = 50)`, `relu`.
    pub fn text(&self) -> String {
        if self.args.is_empty() {
            return self.name.to_string();
        }
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| match &a.value {
                ValueSyntax::Call(op) if op.name == a.key && !op.args.is_empty() => op.text(),
                value => format!("{} = {}", a.key, value.text()),
            })
            .collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keyword_keys_nested_calls_and_lists() {
        let op: OpSyntax = syn::parse_quote!(linear(out = 50, in = 104, bias = false));
        assert_eq!(op.text(), "linear(out = 50, in = 104, bias = false)");
        let arg: ArgSyntax = syn::parse_quote!(loss = cross_entropy(classes = 2));
        assert_eq!(arg.value.text(), "cross_entropy(classes = 2)");
        let arg: ArgSyntax = syn::parse_quote!(input = [1, 28, 28]);
        assert_eq!(arg.value.text(), "[1, 28, 28]");
        let arg: ArgSyntax = syn::parse_quote!(out = -5);
        assert!(matches!(arg.value, ValueSyntax::Lit(_)), "syn reads a negative number as one literal");
        let arg: ArgSyntax = syn::parse_quote!(out = (5));
        assert!(matches!(arg.value, ValueSyntax::Other(_)));
        let op: OpSyntax = syn::parse_quote!(linear(out = 4, lora(rank = 2, alpha = 4)));
        assert_eq!(op.text(), "linear(out = 4, lora(rank = 2, alpha = 4))");
        assert!(matches!(&op.args[1].value, ValueSyntax::Call(lora) if lora.name == "lora"));
    }
}
