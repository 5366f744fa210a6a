//! `position_embedding`: a learned table `[T, d]` added to a sequence `[T, d]`, PyTorch's
//! `x + nn.Embedding(T, d).weight` (parameter `<field>.weight`, N(0, 1) like `nn.Embedding`).
//!
//! Its per-example gradient is the output gradient itself (`[T, d]`, already formed), so the norm is
//! the stored gradient's square and the clipped sum `Σ_i c_i δ_i`; the input's gradient is δ.

use super::rules::OpRules;
use crate::args::arguments;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::params::Init;
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::OpSyntax;
use dp_spec::NormStrategy;

/// `position_embedding`.
#[derive(Debug, Clone, Copy)]
pub struct PositionEmbedding;

/// The table added to the sequence.
#[derive(Debug, Clone)]
pub struct PositionEmbeddingStep {
    pub group: usize,
    pub input: Buf,
    pub output: usize,
    /// The output gradient: every example's gradient of the table.
    pub delta: usize,
    /// `T·d`.
    pub len: usize,
    pub weight: usize,
    /// Where δ is copied for the input, when something upstream is trained.
    pub input_grad: Option<GradTarget>,
}

impl OpRules for PositionEmbedding {
    type Step = PositionEmbeddingStep;
    const NAMES: &'static [&'static str] = &["position_embedding"];

    fn field_type(_: &str) -> &'static str {
        "PositionEmbedding"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [] = arguments(cx, op, []);
        Some(PositionEmbedding)
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        if x.len() != 2 {
            cx.error(
                node.span,
                format!(
                    "`position_embedding` adds a table [T, d] to a sequence [T, d], but its input has shape {}",
                    show(x)
                ),
            );
            return None;
        }
        Some(x.clone())
    }

    fn param_count(&self, inputs: &[&Shape]) -> usize {
        inputs[0].iter().product()
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<PositionEmbeddingStep> {
        let (i, x, out, field) = (node.index, node.input(), node.output, node.field);
        let shape = pl.shape(x).clone();
        let len = shape.iter().product();
        let input = pl.storage_of(x);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} output"), len);
        let delta = pl.alloc(i, Stored::OfPrecision, format!("{field} output gradient"), len);
        pl.storage[out.0] = Some(Buf::Arena(output));
        pl.grad[out.0] = Some(delta);
        let input_grad = pl.target(node, x);
        let group = pl.group(field);
        let weight = pl.param(format!("{field}.weight"), shape, Init::Normal { std: 1.0 });
        // The addition, the input gradient's copy, the norm and the clipped sum.
        pl.cost(i, 5 * len as u64, Some(NormStrategy::Direct));
        Some(PositionEmbeddingStep { group, input, output, delta, len, weight, input_grad })
    }
}
