//! `+` in `forward`: the element-wise sum of two values of one shape (a residual connection), with
//! the activation after it fused.

use super::activation::function::Act;
use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::OpSyntax;

/// `a + b`.
#[derive(Debug, Clone, Copy)]
pub struct Add;

/// `act(a + b)`.
#[derive(Debug, Clone)]
pub struct AddStep {
    pub inputs: [Buf; 2],
    pub output: usize,
    pub len: usize,
    pub act: Act,
    pub grad: Option<usize>,
    pub targets: [Option<GradTarget>; 2],
}

impl OpRules for Add {
    type Step = AddStep;
    /// Written `+` in `forward`, never as a layer.
    const NAMES: &'static [&'static str] = &[];

    fn field_type(_: &str) -> &'static str {
        "Add"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(Add)
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let (a, b) = (inputs[0], inputs[1]);
        if a != b {
            cx.error(
                node.span,
                format!(
                    "`+` adds values of one shape, but the left side is {} and the right side {}",
                    show(a),
                    show(b)
                ),
            );
            return None;
        }
        Some(a.clone())
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<AddStep> {
        let (i, field) = (node.index, node.field);
        let len = pl.width(node.output);
        let (act, result) = pl.fuse_activation(node);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} sum"), len);
        pl.storage[result.0] = Some(Buf::Arena(output));
        let grad = pl.grad_buffer(i, node.output, format!("{field} sum gradient"));
        pl.grad[result.0] = grad;
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let inputs = [pl.storage_of(a), pl.storage_of(b)];
        let targets = [pl.target(node, a), pl.target(node, b)];
        pl.cost(i, 3 * len as u64, None);
        Some(AddStep { inputs, output, len, act, grad, targets })
    }
}
