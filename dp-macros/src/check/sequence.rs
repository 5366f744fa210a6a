//! Checking of sequence models: token ids reach only an embedding, an embedding reads only token ids,
//! and the shapes of `embedding`, `mean` and `lstm`.

use super::shapes::{show, Shape};
use crate::ctxt::Ctxt;
use crate::ir::{Graph, Node, Op};
use crate::parse::ast::{EmbeddingAttrs, InputKind, LstmAttrs, ModelDef};

/// Token ids are integers: every reader of a token input must be an embedding, and an embedding must
/// read the token input (whose vocabulary it takes, checking a declared `vocab`).
pub fn check_tokens(cx: &mut Ctxt, model: &ModelDef, graph: &Graph) {
    let tokens = match model.input_kind {
        InputKind::Tokens { vocab, .. } => Some(vocab),
        InputKind::Dense => None,
    };
    for node in &graph.nodes {
        let reads_input = node.inputs.contains(&graph.input);
        match (&node.op, tokens) {
            (Op::Embedding(attrs), Some(vocab)) if reads_input => {
                if let Some(declared) = attrs.declared_vocab {
                    if declared.value != vocab.value {
                        cx.error(
                            declared.span,
                            format!(
                                "declared `vocab = {}`, but the token input's vocabulary is {} \
                                 (`input = tokens(.., vocab = {})`)",
                                declared.value, vocab.value, vocab.value
                            ),
                        );
                    }
                }
            }
            (Op::Embedding(_), Some(_)) => cx.error(
                node.span,
                "`embedding` looks up token ids, so it must read the model's token input; here it reads \
                 the output of another layer",
            ),
            (Op::Embedding(_), None) => cx.error(
                node.span,
                format!(
                    "`embedding` looks up token ids, but this model's input is dense `{}`; declare the \
                     input as `input = tokens(len = T, vocab = V)`",
                    show(&model.input.iter().map(|d| d.value).collect::<Vec<_>>())
                ),
            ),
            (_, Some(_)) if reads_input => cx.error(
                node.span,
                format!(
                    "`{}` cannot read token ids: a model with `input = tokens(...)` starts with \
                     `embedding(dim = D)`",
                    node.text
                ),
            ),
            _ => {}
        }
    }
}

/// `embedding`: `[T]` token ids to `[T, dim]`; `None` (after the token check has reported why) when
/// it does not read a token input.
pub fn embedding_shape(attrs: &EmbeddingAttrs, x: &Shape) -> Option<Shape> {
    attrs.vocab?;
    (x.len() == 1).then(|| vec![x[0], attrs.dim.value])
}

/// `mean` over the sequence axis: `[T, D]` to `[D]`.
pub fn mean_shape(cx: &mut Ctxt, node: &Node, x: &Shape) -> Option<Shape> {
    if x.len() != 2 {
        cx.error(
            node.span,
            format!("`mean` averages a sequence [T, d] over its steps, but its input has shape {}", show(x)),
        );
        return None;
    }
    Some(vec![x[1]])
}

/// `lstm`: `[T, d]` to `[T, hidden]`.
pub fn lstm_shape(cx: &mut Ctxt, node: &Node, attrs: &LstmAttrs, x: &Shape) -> Option<Shape> {
    if x.len() != 2 {
        cx.error(
            node.span,
            format!(
                "lstm expects a sequence [T, d], but its input has shape {}; flatten or use an embedding",
                show(x)
            ),
        );
        return None;
    }
    Some(vec![x[0], attrs.hidden.value])
}

/// Trainable parameters of a sequence op reading a value of shape `x`.
pub fn param_count(op: &Op, x: &Shape) -> usize {
    match op {
        Op::Embedding(attrs) => attrs.vocab.unwrap_or(0) * attrs.dim.value,
        Op::Lstm(attrs) => {
            let h = attrs.hidden.value;
            4 * h * (x[1] + h + 1)
        }
        _ => 0,
    }
}
