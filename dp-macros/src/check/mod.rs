//! Checking: shape inference for ONE example through the graph (each op's shape rule), parameter
//! counts, token inputs, and the loss against the last layer. Every mismatch is reported on the span
//! of the token that causes it.

mod loss;
mod tokens;

use crate::ctxt::Ctxt;
use crate::ir::Graph;
use crate::parse::ast::{ModelDef, Spanned};
use crate::shape::Shape;

/// What checking proves about a graph.
pub struct Checked {
    /// The shape of every value for one example, indexed by `ValueId`.
    pub shapes: Vec<Shape>,
    /// Trainable parameters of each node, indexed like `Graph::nodes`.
    pub node_params: Vec<usize>,
    /// Outputs per example (the loss's `output_len`).
    pub output_len: usize,
}

/// Infers shapes and checks the loss; `None` after reporting every problem found.
pub fn check(cx: &mut Ctxt, model: &ModelDef, graph: &Graph) -> Option<Checked> {
    let input: Vec<usize> = model.input.iter().map(|d: &Spanned<usize>| d.value).collect();
    tokens::check_tokens(cx, model, graph);
    let shapes = infer(cx, graph, input)?;
    let node_params = graph
        .nodes
        .iter()
        .map(|n| n.op.param_count(&n.inputs.iter().map(|v| &shapes[v.0]).collect::<Vec<_>>()))
        .collect::<Vec<_>>();
    if !graph.nodes.iter().any(|n| n.op.is_parameterised()) {
        cx.error(
            model.ident.span(),
            format!(
                "model `{}` has no parameterised layer (such as `linear`): there is nothing to train",
                model.ident
            ),
        );
    } else if graph.nodes.iter().all(|n| n.frozen || !n.op.is_parameterised()) {
        cx.error(
            model.ident.span(),
            format!(
                "every parameterised layer of model `{}` is `frozen`: there is nothing to train; remove \
                 `frozen` from at least one field",
                model.ident
            ),
        );
    }
    let output_len = loss::check_loss(cx, graph, &shapes[graph.output.0]);
    if cx.has_errors() {
        return None;
    }
    Some(Checked { shapes, node_params, output_len: output_len? })
}

/// Every value's shape, or `None` when a node could not be typed (after reporting why). Inference goes
/// on after a mismatch whenever the output shape is still known, so later errors are reported too.
fn infer(cx: &mut Ctxt, graph: &Graph, input: Shape) -> Option<Vec<Shape>> {
    let mut shapes: Vec<Option<Shape>> = vec![None; graph.value_count];
    shapes[graph.input.0] = Some(input);
    for (i, node) in graph.nodes.iter().enumerate() {
        let inputs: Option<Vec<&Shape>> = node.inputs.iter().map(|v| shapes[v.0].as_ref()).collect();
        let out = node.op.shape(cx, &graph.view(i), &inputs?)?;
        shapes[node.output.0] = Some(out);
    }
    shapes.into_iter().collect()
}
