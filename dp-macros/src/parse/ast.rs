//! The parsed model: what the user declared, with typed attributes and the span of every token an
//! error may need to point at. No shapes yet (that is the checker's job).

pub use super::conv::{Conv2dAttrs, NormChoice, NormLayerAttrs, Pool2dAttrs, PoolKind};
use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// A `usize` written in the source, with where it was written.
#[derive(Debug, Clone, Copy)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// The whole `#[dp_model]` struct.
pub struct ModelDef {
    /// The struct's own attributes (doc comments, ...), kept on the generated struct.
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    /// The shape of one example's input.
    pub input: Vec<Spanned<usize>>,
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
}

/// One op of a field's chain.
pub struct OpDef {
    pub kind: OpKind,
    /// The span of the op's name.
    pub span: Span,
    /// The op as written, normalised (`linear(out = 50)`).
    pub text: String,
}

/// The ops the compiler knows, with their typed attributes.
#[derive(Debug, Clone, Copy)]
pub enum OpKind {
    Linear(LinearAttrs),
    Activation(ActivationKind),
    Flatten,
    Conv2d(Conv2dAttrs),
    Pool2d(Pool2dAttrs),
    GlobalAvgPool,
    /// `group_norm` (`groups: Some`) or `layer_norm`.
    Norm(NormLayerAttrs),
}

/// `linear(out = N, in = M, bias = B)`.
#[derive(Debug, Clone, Copy)]
pub struct LinearAttrs {
    pub out: Spanned<usize>,
    /// The input width the user declared, checked against the inferred one.
    pub declared_in: Option<Spanned<usize>>,
    pub bias: bool,
    /// A norm strategy forced by `norms = ghost | direct`.
    pub norms: Option<NormChoice>,
}

/// Element-wise activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationKind {
    Relu,
    Tanh,
    Sigmoid,
}
