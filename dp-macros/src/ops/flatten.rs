//! `flatten`: one example to a vector. Row-major, so no data moves: the output is its input's buffer.

use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::Shape;
use crate::syntax::OpSyntax;

/// `flatten`.
#[derive(Debug, Clone, Copy)]
pub struct Flatten;

/// A flatten whose input has other readers: the backward copies the output gradient to the input's.
#[derive(Debug, Clone)]
pub struct GradCopyStep {
    pub grad: usize,
    pub target: GradTarget,
}

impl OpRules for Flatten {
    type Step = GradCopyStep;
    const NAMES: &'static [&'static str] = &["flatten"];

    fn field_type(_: &str) -> &'static str {
        "Flatten"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(Flatten)
    }

    fn shape(&self, _: &mut Ctxt, _: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        Some(vec![inputs[0].iter().product()])
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<GradCopyStep> {
        let x = node.input();
        pl.storage[node.output.0] = pl.storage[x.0];
        if pl.uses[x.0] == 1 || !pl.needs_grad[x.0] {
            pl.sole_reader(x);
            pl.grad[node.output.0] = pl.grad[x.0];
            return None;
        }
        let grad = pl.alloc(
            node.index,
            Stored::OfPrecision,
            format!("{} flatten gradient", node.field),
            pl.width(x),
        );
        pl.grad[node.output.0] = Some(grad);
        let target = pl.target(node, x).expect("the input needs a gradient");
        Some(GradCopyStep { grad, target })
    }
}
