//! Shape inference of one example, op by op.

use crate::ctxt::Ctxt;
use crate::ir::{Graph, Node, Op};
use crate::parse::ast::LossKind;

/// The shape of one example's value (the batch axis is never part of it).
pub type Shape = Vec<usize>;

pub fn show(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Every value's shape, or `None` when a node could not be typed (after reporting why). Inference goes
/// on after a mismatch whenever the output shape is still known, so later errors are reported too.
pub fn infer(cx: &mut Ctxt, graph: &Graph, input: Shape) -> Option<Vec<Shape>> {
    let mut shapes: Vec<Option<Shape>> = vec![None; graph.value_count];
    shapes[graph.input.0] = Some(input);
    for node in &graph.nodes {
        let inputs: Option<Vec<&Shape>> = node.inputs.iter().map(|v| shapes[v.0].as_ref()).collect();
        let inputs = inputs?;
        let out = node_shape(cx, node, &inputs)?;
        shapes[node.output.0] = Some(out);
    }
    shapes.into_iter().collect()
}

fn node_shape(cx: &mut Ctxt, node: &Node, inputs: &[&Shape]) -> Option<Shape> {
    let x = inputs[0];
    match node.op {
        Op::Linear(attrs) => {
            if x.len() != 1 {
                cx.error(
                    node.span,
                    format!(
                        "`linear` takes one flat vector per example, but its input has shape {}; insert `flatten` before it",
                        show(x)
                    ),
                );
                return Some(vec![attrs.out.value]);
            }
            if let Some(declared) = attrs.declared_in {
                if declared.value != x[0] {
                    cx.error(
                        declared.span,
                        format!(
                            "declared `in = {}`, but the input of this layer has width {}",
                            declared.value, x[0]
                        ),
                    );
                }
            }
            Some(vec![attrs.out.value])
        }
        Op::Activation(_) => Some(x.clone()),
        Op::Flatten => Some(vec![x.iter().product()]),
        Op::Conv2d(_) | Op::Pool2d(_) | Op::GlobalAvgPool | Op::Norm(_) | Op::Add => {
            super::conv::node_shape(cx, node, inputs)
        }
    }
}

/// Trainable parameters of one node.
pub fn param_count(node: &Node, shapes: &[Shape]) -> usize {
    match node.op {
        Op::Linear(attrs) => {
            let width: usize = shapes[node.inputs[0].0].iter().product();
            attrs.out.value * width + if attrs.bias { attrs.out.value } else { 0 }
        }
        Op::Activation(_) | Op::Flatten => 0,
        Op::Conv2d(_) | Op::Pool2d(_) | Op::GlobalAvgPool | Op::Norm(_) | Op::Add => {
            super::conv::param_count(node, &shapes[node.inputs[0].0])
        }
    }
}

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
