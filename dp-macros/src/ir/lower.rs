//! One op of a field's chain as graph nodes, the same for both front ends (a chain of fields and a
//! `forward` body). Most ops are one node; a LoRA `linear` is the frozen base, its two adapters and
//! their sum (see `crate::ops::lora`).

use super::{Node, ValueId};
use crate::ops::linear::Linear;
use crate::ops::lora::LoraSum;
use crate::ops::Op;
use crate::parse::ast::OpDef;
use crate::syntax::Spanned;

/// Appends the nodes of `op`, an op of field `field` (frozen or not) reading `input`, to `nodes`;
/// returns the value they produce. Values are numbered by node (value 0 is the model's input); a
/// LoRA layer's adapters get fields of their own (`<field>.lora_A`, `<field>.lora_B`), appended to
/// `fields`.
pub fn lower_op(
    nodes: &mut Vec<Node>,
    fields: &mut Vec<String>,
    field: usize,
    frozen: bool,
    op: &OpDef,
    input: ValueId,
) -> ValueId {
    let mut push = |op_: Op, inputs: Vec<ValueId>, field: usize, frozen: bool, text: String| {
        let output = ValueId(nodes.len() + 1);
        let frozen = frozen && op_.is_parameterised();
        nodes.push(Node { op: op_, inputs, output, field, span: op.span, text, frozen });
        output
    };
    let Op::Linear(linear @ Linear { lora: Some(lora), .. }) = op.op else {
        return push(op.op, vec![input], field, frozen, op.text.clone());
    };
    // The base: the layer as written, without its adapters, always frozen.
    let base = push(Op::Linear(Linear { lora: None, ..linear }), vec![input], field, true, op.text.clone());
    let mut adapter_field = |suffix: &str| {
        fields.push(format!("{}.{suffix}", fields[field]));
        fields.len() - 1
    };
    let (field_a, field_b) = (adapter_field("lora_A"), adapter_field("lora_B"));
    let rank = lora.rank;
    let a = Linear {
        out: Spanned { value: rank.value, span: rank.span },
        declared_in: None,
        bias: false,
        norms: linear.norms,
        lora: None,
        zero_weight: false,
    };
    let b = Linear { out: linear.out, zero_weight: true, ..a };
    let a = push(Op::Linear(a), vec![input], field_a, frozen, format!("lora_A(rank = {})", rank.value));
    let b = push(Op::Linear(b), vec![a], field_b, frozen, format!("lora_B(out = {})", linear.out.value));
    let text = format!("base + {}/{} · lora_B(lora_A(x))", lora.alpha, rank.value);
    push(Op::LoraSum(LoraSum { scale: lora.scale() }), vec![base, b], field, false, text)
}
