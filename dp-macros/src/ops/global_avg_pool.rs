//! `global_avg_pool`: `[C, H, W] → [C]`, each plane's mean.

use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::{image, Shape};
use crate::syntax::OpSyntax;

/// `global_avg_pool`.
#[derive(Debug, Clone, Copy)]
pub struct GlobalAvgPool;

/// `[C, H, W] → [C]`.
#[derive(Debug, Clone)]
pub struct GlobalPoolStep {
    pub channels: usize,
    pub plane: usize,
    pub input: Buf,
    pub output: usize,
    pub grad: Option<usize>,
    pub target: Option<GradTarget>,
}

impl OpRules for GlobalAvgPool {
    type Step = GlobalPoolStep;
    const NAMES: &'static [&'static str] = &["global_avg_pool"];

    fn field_type(_: &str) -> &'static str {
        "GlobalAvgPool"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(GlobalAvgPool)
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let [c, _, _] = image(cx, node.span, "global_avg_pool", inputs[0])?;
        Some(vec![c])
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<GlobalPoolStep> {
        let (i, x, field) = (node.index, node.input(), node.field);
        let in_shape = pl.shape(x);
        let (channels, plane) = (in_shape[0], in_shape[1] * in_shape[2]);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} global_avg_pool"), channels);
        pl.storage[node.output.0] = Some(Buf::Arena(output));
        let grad = pl.grad_buffer(i, node.output, format!("{field} global_avg_pool gradient"));
        pl.grad[node.output.0] = grad;
        let input = pl.storage_of(x);
        let target = pl.target(node, x);
        pl.cost(i, 2 * (channels * plane) as u64, None);
        Some(GlobalPoolStep { channels, plane, input, output, grad, target })
    }
}
