//! A node as an op's rules see it: where it reads and writes, and how to name and point at it.

use super::value::ValueId;
use proc_macro2::Span;

/// One node of the graph without its op (the op is the receiver of the rule being applied).
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// The node's index in the graph (the row of the plan table it fills).
    pub index: usize,
    pub inputs: &'a [ValueId],
    pub output: ValueId,
    /// The field (or `forward` binding) the node belongs to; prefixes its buffers and parameters.
    pub field: &'a str,
    /// The op as written, `linear(out = 50)`.
    pub text: &'a str,
    /// The span of the op's name, where errors about the op point.
    pub span: Span,
}

impl NodeView<'_> {
    /// The first (for most ops, the only) input.
    pub fn input(&self) -> ValueId {
        self.inputs[0]
    }
}
