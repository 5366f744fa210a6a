//! Checking: shape inference for ONE example through the graph, parameter counts, and the loss
//! against the last layer. Every mismatch is reported on the span of the token that causes it.

mod conv;
mod shapes;

use crate::ctxt::Ctxt;
use crate::ir::Graph;
use crate::parse::ast::{ModelDef, Spanned};

pub use shapes::Shape;

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
    let shapes = shapes::infer(cx, graph, input)?;
    let node_params = graph.nodes.iter().map(|n| shapes::param_count(n, &shapes)).collect::<Vec<_>>();
    if !graph.nodes.iter().any(|n| n.op.is_parameterised()) {
        cx.error(
            model.ident.span(),
            format!(
                "model `{}` has no parameterised layer (such as `linear`): there is nothing to train",
                model.ident
            ),
        );
    }
    let output_len = shapes::check_loss(cx, graph, &shapes[graph.output.0]);
    if cx.has_errors() {
        return None;
    }
    Some(Checked { shapes, node_params, output_len: output_len? })
}
