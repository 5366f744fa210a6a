//! The graph IR: ops with typed attributes over SSA values.
//!
//! A sequential model lowers to a chain (field order is forward order), but nothing below this module
//! assumes one: every node names its input values, so a residual add (two inputs) or a value read by
//! two nodes fits the same representation. Shapes are not stored here; the checker infers them.

pub mod lower;
pub mod value;
pub mod view;

use crate::ops::activation::function::{Act, Derivative};
use crate::ops::mean::Pooling;
use crate::ops::Op;
use crate::parse::ast::{LossDef, ModelDef};
use proc_macro2::Span;
pub use value::ValueId;
use view::NodeView;

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
    /// Whether the node's parameters are frozen (`frozen` in its field's chain): a layer without a
    /// parameter group, whose backward only carries the gradient through to its input.
    pub frozen: bool,
}

/// A node that alone reads another's output, run inside that node's passes ([`Graph::fusion`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// An activation applied in the layer's output pass; the value it produces.
    Activation(Act, ValueId),
    /// `mean` over the sequence after an embedding; the mean's output.
    SequenceMean(ValueId),
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
        let mut fields: Vec<String> = model.fields.iter().map(|f| f.name.to_string()).collect();
        for (field, def) in model.fields.iter().enumerate() {
            for op in &def.ops {
                current = lower::lower_op(&mut nodes, &mut fields, field, def.frozen.is_some(), op, current);
            }
        }
        Graph {
            fields,
            value_count: nodes.len() + 1,
            nodes,
            input,
            output: current,
            loss: LossDef { kind: model.loss.kind, span: model.loss.span },
        }
    }

    /// Node `i` as an op's rules see it.
    pub fn view(&self, i: usize) -> NodeView<'_> {
        let node = &self.nodes[i];
        NodeView {
            index: i,
            inputs: &node.inputs,
            output: node.output,
            field: &self.fields[node.field],
            text: &node.text,
            span: node.span,
        }
    }

    /// The node that alone reads node `i`'s output and may run inside node `i`'s passes, with the
    /// value the pair produces: an activation whose derivative comes from its output (in a layer's
    /// output pass), or a sequence mean after an embedding (the pair is one op, whose `[T, dim]` rows
    /// and their gradient are never stored). Whether node `i` fuses it is its op's choice.
    pub fn fusion(&self, i: usize, uses: &[usize]) -> Option<Fusion> {
        let node = &self.nodes[i];
        if uses[node.output.0] != 1 {
            return None;
        }
        let next = self.nodes.get(i + 1).filter(|next| next.inputs[0] == node.output)?;
        match (&node.op, &next.op) {
            (_, Op::Activation(activation)) if activation.0.derivative() == Derivative::FromOutput => {
                Some(Fusion::Activation(activation.0, next.output))
            }
            (Op::Embedding(_), Op::Mean(mean)) if mean.pooling == Pooling::Mean => {
                Some(Fusion::SequenceMean(next.output))
            }
            _ => None,
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
