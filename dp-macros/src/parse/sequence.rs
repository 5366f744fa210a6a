//! Parsing of sequence models: the token input `tokens(len = T, vocab = V)` and the ops `embedding`,
//! `mean` (over the sequence axis) and `lstm`.

use super::ast::{FieldDef, NormChoice, OpKind, Spanned};
use super::conv::norm_choice;
use super::syntax::OpSyntax;
use super::values::{arguments, positive_int};
use crate::ctxt::Ctxt;

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

/// `embedding(dim = D, vocab = V)`; the vocabulary comes from the token input, `vocab` is checked.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingAttrs {
    pub dim: Spanned<usize>,
    pub declared_vocab: Option<Spanned<usize>>,
    /// The token input's vocabulary, filled in once the model's input is known (`None` on a dense
    /// input, which the checker rejects).
    pub vocab: Option<usize>,
}

/// `lstm(hidden = H, norms = ghost | direct)`.
#[derive(Debug, Clone, Copy)]
pub struct LstmAttrs {
    pub hidden: Spanned<usize>,
    /// Overrides the planner's choice for both weights.
    pub norms: Option<NormChoice>,
}

/// `input = tokens(len = T, vocab = V)`: the shape `[T]` and the token input kind.
pub fn token_input(cx: &mut Ctxt, op: &OpSyntax) -> Option<(Vec<Spanned<usize>>, InputKind)> {
    let [len, vocab] = arguments(cx, op, ["len", "vocab"]);
    let len = match len {
        Some(a) => positive_int(cx, "len", &a.value),
        None => {
            cx.error(
                op.span(),
                "`tokens` needs the sequence length of one example: write `tokens(len = T, vocab = V)`",
            );
            None
        }
    };
    let vocab = match vocab {
        Some(a) => positive_int(cx, "vocab", &a.value),
        None => {
            cx.error(
                op.span(),
                "`tokens` needs the vocabulary size (the largest token id plus one): write \
                 `tokens(len = T, vocab = V)`",
            );
            None
        }
    };
    let (len, vocab) = (len?, vocab?);
    if u32::try_from(vocab.value).is_err() {
        cx.error(vocab.span, format!("`vocab = {}` does not fit token ids stored as u32", vocab.value));
        return None;
    }
    Some((vec![len], InputKind::Tokens { vocab }))
}

/// `embedding(dim = D, vocab = V)`.
pub fn embedding(cx: &mut Ctxt, op: &OpSyntax) -> Option<EmbeddingAttrs> {
    let [dim, vocab] = arguments(cx, op, ["dim", "vocab"]);
    let declared_vocab = vocab.map(|a| positive_int(cx, "vocab", &a.value));
    let dim = match dim {
        Some(a) => positive_int(cx, "dim", &a.value),
        None => {
            cx.error(op.span(), "`embedding` needs its width: write `embedding(dim = D)`");
            None
        }
    };
    Some(EmbeddingAttrs {
        dim: dim?,
        declared_vocab: declared_vocab.map(|v| v.ok_or(())).transpose().ok()?,
        vocab: None,
    })
}

/// `mean`, over the sequence axis.
pub fn mean(cx: &mut Ctxt, op: &OpSyntax) {
    let [] = arguments(cx, op, []);
}

/// `lstm(hidden = H, norms = ghost | direct)`.
pub fn lstm(cx: &mut Ctxt, op: &OpSyntax) -> Option<LstmAttrs> {
    let [hidden, norms] = arguments(cx, op, ["hidden", "norms"]);
    let norms = norms.map(|a| norm_choice(cx, &a.value));
    let hidden = match hidden {
        Some(a) => positive_int(cx, "hidden", &a.value),
        None => {
            cx.error(op.span(), "`lstm` needs its hidden width: write `lstm(hidden = H)`");
            None
        }
    };
    Some(LstmAttrs { hidden: hidden?, norms: norms.map(|n| n.ok_or(())).transpose().ok()? })
}

/// Gives every embedding of the model the token input's vocabulary.
pub fn resolve_vocab(fields: &mut [FieldDef], input: &InputKind) {
    for op in fields.iter_mut().flat_map(|f| f.ops.iter_mut()) {
        if let OpKind::Embedding(attrs) = &mut op.kind {
            attrs.vocab = input.vocab();
        }
    }
}
