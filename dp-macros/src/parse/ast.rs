//! The parsed model: what the user declared, with typed attributes and the span of every token an
//! error may need to point at. No shapes yet (that is the checker's job).

use crate::ops::Op;
pub use crate::syntax::Spanned;
use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// The whole `#[dp_model]` struct.
pub struct ModelDef {
    /// The struct's own attributes (doc comments, ...), kept on the generated struct.
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    /// The shape of one example's input (`[T]` for token ids).
    pub input: Vec<Spanned<usize>>,
    /// Dense `f32` features or integer token ids.
    pub input_kind: InputKind,
    pub loss: LossDef,
    pub fields: Vec<FieldDef>,
}

/// The loss the model is compiled with.
#[derive(Debug, Clone, Copy)]
pub enum LossKind {
    CrossEntropy { classes: Spanned<usize> },
    BinaryCrossEntropy,
    MeanSquaredError,
}

/// A loss and the span of its name.
pub struct LossDef {
    pub kind: LossKind,
    pub span: Span,
}

/// One field: a named chain of ops.
pub struct FieldDef {
    pub name: Ident,
    pub ops: Vec<OpDef>,
    /// The span of `frozen` in the chain, when the field's parameters are not trained.
    pub frozen: Option<Span>,
}

/// One op of a field's chain.
pub struct OpDef {
    pub op: Op,
    /// The span of the op's name.
    pub span: Span,
    /// The op as written, normalised (`linear(out = 50)`).
    pub text: String,
}

/// What one example's input holds.
#[derive(Debug, Clone, Copy)]
pub enum InputKind {
    /// `f32` features of the declared shape.
    Dense,
    /// `u32` token ids, `len` of them per example, each below `vocab`.
    Tokens { vocab: Spanned<usize> },
}

impl InputKind {
    /// The vocabulary size of a token input.
    pub fn vocab(&self) -> Option<usize> {
        match self {
            InputKind::Dense => None,
            InputKind::Tokens { vocab, .. } => Some(vocab.value),
        }
    }
}
