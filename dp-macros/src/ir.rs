//! The graph IR: ops with typed attributes over SSA values.
//!
//! A sequential model lowers to a chain (field order is forward order), but nothing below this module
//! assumes one: every node names its input values, so a residual add (two inputs) or a value read by
//! two nodes fits the same representation. Shapes are not stored here; the checker infers them.

use crate::parse::ast::{
    ActivationKind, Conv2dAttrs, LinearAttrs, LossDef, ModelDef, NormLayerAttrs, OpKind, Pool2dAttrs,
};
use proc_macro2::Span;

/// An SSA value: written by exactly one node (or the graph input), read by any number of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueId(pub usize);

/// An operation of the IR.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// y = a·Wᵀ + b over the last axis; parameterised.
    Linear(LinearAttrs),
    /// An element-wise activation.
    Activation(ActivationKind),
    /// Reshape one example to a vector (row-major: no data moves).
    Flatten,
    /// 2-D convolution over `[C, H, W]`; parameterised.
    Conv2d(Conv2dAttrs),
    /// Max or average pooling over `[C, H, W]`.
    Pool2d(Pool2dAttrs),
    /// `[C, H, W] → [C]`, each plane's mean.
    GlobalAvgPool,
    /// Group norm or layer norm with an affine weight and bias; parameterised.
    Norm(NormLayerAttrs),
    /// The element-wise sum of two values of one shape (a residual connection).
    Add,
}

impl Op {
    /// The IR op of a parsed op.
    pub fn from_kind(kind: OpKind) -> Op {
        match kind {
            OpKind::Linear(attrs) => Op::Linear(attrs),
            OpKind::Activation(act) => Op::Activation(act),
            OpKind::Flatten => Op::Flatten,
            OpKind::Conv2d(attrs) => Op::Conv2d(attrs),
            OpKind::Pool2d(attrs) => Op::Pool2d(attrs),
            OpKind::GlobalAvgPool => Op::GlobalAvgPool,
            OpKind::Norm(attrs) => Op::Norm(attrs),
        }
    }

    /// Whether the op owns trainable parameters (and therefore a parameter group).
    pub fn is_parameterised(&self) -> bool {
        matches!(self, Op::Linear(_) | Op::Conv2d(_) | Op::Norm(_))
    }
}

/// One node: an op applied to input values, producing one output value.
#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// Index of the model field this node comes from (its name prefixes parameter names).
    pub field: usize,
    /// The span of the op's name in the source.
    pub span: Span,
    /// The op as written, for the plan table.
    pub text: String,
}

/// A model's forward program, nodes in a valid execution (topological) order.
pub struct Graph {
    /// Field names, indexed by `Node::field`.
    pub fields: Vec<String>,
    pub nodes: Vec<Node>,
    /// Number of values; value 0 is the model input.
    pub value_count: usize,
    pub input: ValueId,
    /// The value the loss reads.
    pub output: ValueId,
    pub loss: LossDef,
}

impl Graph {
    /// Lowers a sequential model: each op reads the value the previous op wrote.
    pub fn from_sequential(model: &ModelDef) -> Graph {
        let input = ValueId(0);
        let mut current = input;
        let mut nodes = Vec::new();
        for (field, def) in model.fields.iter().enumerate() {
            for op in &def.ops {
                let output = ValueId(nodes.len() + 1);
                let ir_op = Op::from_kind(op.kind);
                nodes.push(Node {
                    op: ir_op,
                    inputs: vec![current],
                    output,
                    field,
                    span: op.span,
                    text: op.text.clone(),
                });
                current = output;
            }
        }
        Graph {
            fields: model.fields.iter().map(|f| f.name.to_string()).collect(),
            value_count: nodes.len() + 1,
            nodes,
            input,
            output: current,
            loss: LossDef { kind: model.loss.kind, span: model.loss.span },
        }
    }

    /// How many nodes read each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.value_count];
        for node in &self.nodes {
            node.inputs.iter().for_each(|v| uses[v.0] += 1);
        }
        uses[self.output.0] += 1;
        uses
    }
}
