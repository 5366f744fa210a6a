//! The model's input: `input = [d, ...]` (dense `f32` features) or `input = tokens(len = T, vocab = V)`
//! (token ids), and the vocabulary it gives every embedding.

use super::ast::{FieldDef, InputKind};
use crate::args::{arguments, positive_int};
use crate::ctxt::Ctxt;
use crate::ops::Op;
use crate::syntax::{OpSyntax, Spanned};

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

/// Gives every embedding of the model the token input's vocabulary.
pub fn resolve_vocab(fields: &mut [FieldDef], input: &InputKind) {
    for op in fields.iter_mut().flat_map(|f| f.ops.iter_mut()) {
        if let Op::Embedding(embedding) = &mut op.op {
            embedding.vocab = input.vocab();
        }
    }
}
