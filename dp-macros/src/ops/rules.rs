//! What every op knows about itself, pass by pass.

use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::planner::Planner;
use crate::shape::Shape;
use crate::syntax::OpSyntax;

/// The rules of one op: its arguments, its shape rule and parameter count, and its plan step with its
/// cost. Every method is required, so an op states each rule instead of inheriting a guess.
/// Emission is the backends' (`codegen::backend::Backend`), over the op's [`OpRules::Step`].
pub trait OpRules: Sized {
    /// What planning leaves for the emitters: buffers, parameter slots, dimensions.
    type Step;

    /// The names `#[layer(...)]` accepts for this op (none for an op only `forward` writes).
    const NAMES: &'static [&'static str];

    /// The type a field holding the op written `name` must have (`Linear`, `Relu`).
    fn field_type(name: &str) -> &'static str;

    /// Reads the op's arguments; `None` after reporting an error.
    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self>;

    /// The output shape of one example; `None` when it cannot be known (after reporting why).
    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape>;

    /// Trainable parameters, given the input shapes.
    fn param_count(&self, inputs: &[&Shape]) -> usize;

    /// Buffers, parameters, norm strategy and FLOPs of the node (through the planner's services), and
    /// the step the emitters run, if the op needs one.
    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<Self::Step>;
}
