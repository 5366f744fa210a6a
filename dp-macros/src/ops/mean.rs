//! `mean`: the mean over the sequence axis, `[T, D] → [D]`.

use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget};
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::OpSyntax;

/// `mean`.
#[derive(Debug, Clone, Copy)]
pub struct Mean;

/// Mean over the sequence axis.
#[derive(Debug, Clone)]
pub struct MeanStep {
    pub input: Buf,
    pub output: usize,
    pub steps: usize,
    pub dim: usize,
    /// The output's gradient and where the input's goes, when something upstream is trained.
    pub grads: Option<(usize, GradTarget)>,
}

impl OpRules for Mean {
    type Step = MeanStep;
    const NAMES: &'static [&'static str] = &["mean"];

    fn field_type(_: &str) -> &'static str {
        "Mean"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(Mean)
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        if x.len() != 2 {
            cx.error(
                node.span,
                format!(
                    "`mean` averages a sequence [T, d] over its steps, but its input has shape {}",
                    show(x)
                ),
            );
            return None;
        }
        Some(vec![x[1]])
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<MeanStep> {
        let (i, x, out, field) = (node.index, node.input(), node.output, node.field);
        let (steps, dim) = (pl.shape(x)[0], pl.shape(x)[1]);
        let input = pl.storage_of(x);
        let output = pl.alloc(i, format!("{field} mean"), dim);
        pl.storage[out.0] = Some(Buf::Arena(output));
        let out_grad = pl.grad_buffer(i, out, format!("{field} mean gradient"));
        pl.grad[out.0] = out_grad;
        let target = pl.target(node, x);
        pl.cost(i, 2 * (steps * dim) as u64, None);
        Some(MeanStep { input, output, steps, dim, grads: out_grad.zip(target) })
    }
}
