//! Token inputs: token ids reach only an embedding, and an embedding reads only token ids.

use crate::ctxt::Ctxt;
use crate::ir::Graph;
use crate::ops::Op;
use crate::parse::ast::{InputKind, ModelDef};
use crate::shape::show;

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
