//! Pooling over the sequence axis, `[T, D] → [D]`: `mean` (every position) or `first` (the first
//! position, a transformer's class token).

use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::OpSyntax;

/// How the positions are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    First,
}

/// `mean` or `first`.
#[derive(Debug, Clone, Copy)]
pub struct Mean {
    pub pooling: Pooling,
}

/// Pooling over the sequence axis.
#[derive(Debug, Clone)]
pub struct MeanStep {
    pub pooling: Pooling,
    pub input: Buf,
    pub output: usize,
    pub steps: usize,
    pub dim: usize,
    /// The output's gradient and where the input's goes, when something upstream is trained.
    pub grads: Option<(usize, GradTarget)>,
}

impl OpRules for Mean {
    type Step = MeanStep;
    const NAMES: &'static [&'static str] = &["mean", "first"];

    fn field_type(name: &str) -> &'static str {
        if name == "first" {
            "First"
        } else {
            "Mean"
        }
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(Mean { pooling: if op.name == "first" { Pooling::First } else { Pooling::Mean } })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        if x.len() != 2 {
            let what = match self.pooling {
                Pooling::Mean => "`mean` averages a sequence [T, d] over its steps",
                Pooling::First => "`first` takes the first step of a sequence [T, d]",
            };
            cx.error(node.span, format!("{what}, but its input has shape {}", show(x)));
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
        let name = match self.pooling {
            Pooling::Mean => "mean",
            Pooling::First => "first position",
        };
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} {name}"), dim);
        pl.storage[out.0] = Some(Buf::Arena(output));
        let out_grad = pl.grad_buffer(i, out, format!("{field} {name} gradient"));
        pl.grad[out.0] = out_grad;
        let target = pl.target(node, x);
        let flops = match self.pooling {
            Pooling::Mean => 2 * (steps * dim) as u64,
            Pooling::First => 0,
        };
        pl.cost(i, flops, None);
        Some(MeanStep { pooling: self.pooling, input, output, steps, dim, grads: out_grad.zip(target) })
    }
}
