//! An element-wise activation (`relu`, `tanh`, `sigmoid`, ...; the functions are in [`function`]).
//!
//! Fused into the layer before it when the planner can ([`Planner::fuse_activation`]); otherwise a
//! step of its own whose backward works in place on its input's gradient when it is that input's
//! only reader.

pub mod function;

use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::Shape;
use crate::syntax::OpSyntax;
use function::Act;

/// An activation op.
#[derive(Debug, Clone, Copy)]
pub struct Activation(pub Act);

/// An activation that no layer could absorb.
#[derive(Debug, Clone)]
pub struct ActivationStep {
    pub input: Buf,
    pub output: usize,
    pub len: usize,
    pub act: Act,
    /// The gradient buffer of the output, if trained upstream; shared with the input's gradient
    /// (backward in place) unless `target` is set.
    pub grad: Option<usize>,
    /// When the input has other readers: the backward copies `grad` here and works in place there.
    pub target: Option<GradTarget>,
}

impl OpRules for Activation {
    type Step = ActivationStep;
    const NAMES: &'static [&'static str] = Act::NAMES;

    fn field_type(name: &str) -> &'static str {
        Act::from_name(name).expect("an activation name").variant()
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(Activation(Act::from_name(&op.name.to_string()).expect("dispatched by name")))
    }

    fn shape(&self, _: &mut Ctxt, _: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        Some(inputs[0].clone())
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<ActivationStep> {
        let x = node.input();
        let len = pl.width(x);
        let output = pl.alloc(node.index, Stored::OfPrecision, format!("{} {}", node.field, node.text), len);
        pl.cost(node.index, 2 * len as u64, None);
        pl.storage[node.output.0] = Some(Buf::Arena(output));
        let input = pl.storage_of(x);
        let (grad, target) = if pl.uses[x.0] == 1 {
            pl.sole_reader(x);
            (pl.grad[x.0].filter(|_| pl.needs_grad[x.0]), None)
        } else {
            let grad =
                pl.grad_buffer(node.index, node.output, format!("{} {} gradient", node.field, node.text));
            (grad, pl.target(node, x))
        };
        pl.grad[node.output.0] = grad;
        Some(ActivationStep { input, output, len, act: self.0, grad, target })
    }
}
