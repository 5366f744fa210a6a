//! The loss against the model's output.

use crate::ctxt::Ctxt;
use crate::ir::Graph;
use crate::parse::ast::LossKind;
use crate::shape::{show, Shape};

/// The loss against the model's output; returns the number of outputs per example.
pub fn check_loss(cx: &mut Ctxt, graph: &Graph, out: &Shape) -> Option<usize> {
    let width: usize = out.iter().product();
    match graph.loss.kind {
        LossKind::CrossEntropy { classes } => {
            if out.len() != 1 {
                cx.error(graph.loss.span, format!("cross_entropy needs a flat vector of logits, but the model's output has shape {}; add `flatten`", show(out)));
                None
            } else if classes.value != width {
                cx.error(
                    classes.span,
                    format!(
                        "cross_entropy over {} classes, but the last layer produces {width} outputs",
                        classes.value
                    ),
                );
                None
            } else {
                Some(width)
            }
        }
        LossKind::BinaryCrossEntropy => {
            if width != 1 {
                cx.error(
                    graph.loss.span,
                    format!("binary_cross_entropy takes one logit per example, but the last layer produces shape {}", show(out)),
                );
                None
            } else {
                Some(1)
            }
        }
        LossKind::MeanSquaredError => Some(width),
    }
}
