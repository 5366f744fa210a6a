//! Planning: from a checked graph to the program the code generator emits.
//!
//! - Fusion: an activation that is the only reader of a linear layer's output runs in that layer's
//!   GEMM epilogue; its pre-activation is never stored (every derivative is taken from the output).
//! - Norm strategy per parameterised layer. A linear layer that sees one position per example uses the
//!   Goodfellow identity ‖g_W‖² = ‖a‖²‖δ‖², ‖g_b‖² = ‖δ‖² ([`NormStrategy::Ghost`]).
//! - The static memory plan: every buffer is a per-example length at a per-example offset of one arena;
//!   at run time a buffer of a batch of B lives at `offset·B .. (offset + len)·B`. Forward values and
//!   output gradients δ are all kept (book-keeping: the clipped sum reuses them without a second
//!   backward). The gradient of a value is stored in the δ buffer of the linear layer that produced it
//!   (element-wise ops between them work in place), so a chain needs no other gradient buffers.
//! - FLOPs and bytes per example, per layer, for `describe()`.

pub mod per_example;
pub mod sequence;

use crate::check::Checked;
use crate::ir::{Graph, Op, ValueId};
use crate::parse::ast::ActivationKind;

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buf {
    /// The caller's input slice.
    Input,
    /// Buffer `k` of the memory plan.
    Arena(usize),
}

/// One buffer of the arena, per example.
#[derive(Debug, Clone)]
pub struct Buffer {
    /// What it holds, e.g. `fc1 output` (for the plan's documentation).
    pub purpose: String,
    /// Offset in `f32`s per example (times B at run time).
    pub offset: usize,
    /// Length in `f32`s per example.
    pub len: usize,
}

/// The element-wise function a step applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

impl From<ActivationKind> for Act {
    fn from(kind: ActivationKind) -> Act {
        match kind {
            ActivationKind::Relu => Act::Relu,
            ActivationKind::Tanh => Act::Tanh,
            ActivationKind::Sigmoid => Act::Sigmoid,
        }
    }
}

/// How a layer's per-example gradient norms are obtained (mirrors the runtime's `NormStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormStrategy {
    Ghost,
    /// Per-example gradients formed explicitly (layers applied at many positions).
    Direct,
    /// Embedding rows of equal tokens added before squaring.
    TokenGrouped,
}

/// One parameter tensor in the flat buffer.
#[derive(Debug, Clone)]
pub struct ParamSlot {
    /// `fc1.weight`, `fc1.bias`.
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    pub group: usize,
    /// PyTorch's default init draws U(−bound, bound), bound = 1/√fan_in for weight and bias.
    pub init_bound: f32,
    /// When set, PyTorch's init is N(0, std²) instead (embedding tables).
    pub normal_std: Option<f32>,
}

/// A linear layer with its fused epilogue.
#[derive(Debug, Clone)]
pub struct DenseStep {
    pub group: usize,
    pub input: Buf,
    /// Arena buffer of act(a·Wᵀ + b).
    pub output: usize,
    /// Arena buffer of δ (the gradient of the pre-activation), kept for norms and clipped sums.
    pub delta: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub act: Act,
    pub weight: usize,
    /// Index into `Plan::params`.
    pub bias: Option<usize>,
    /// Where δ·W goes: the gradient buffer of the layer's input, if anything upstream is trained.
    pub input_grad: Option<usize>,
    pub strategy: NormStrategy,
}

/// An activation that no linear layer could absorb.
#[derive(Debug, Clone)]
pub struct ActivationStep {
    pub input: Buf,
    pub output: usize,
    pub len: usize,
    pub act: Act,
    /// The shared gradient buffer of input and output (backward runs in place), if trained upstream.
    pub grad: Option<usize>,
}

/// One step of the forward program (the backward runs them in reverse).
#[derive(Debug, Clone)]
pub enum Step {
    Dense(DenseStep),
    Activation(ActivationStep),
    Embedding(sequence::EmbeddingStep),
    SequenceMean(sequence::MeanStep),
    Lstm(sequence::LstmStep),
}

/// A row of the plan table (one per IR node).
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub field: String,
    pub op: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub strategy: Option<NormStrategy>,
    pub flops_per_example: u64,
    pub bytes_per_example: u64,
}

/// Everything code generation needs.
pub struct Plan {
    pub steps: Vec<Step>,
    pub buffers: Vec<Buffer>,
    /// Arena `f32`s per example (the sum of all buffer lengths).
    pub workspace_per_example: usize,
    pub params: Vec<ParamSlot>,
    pub param_count: usize,
    /// Group names (the parameterised fields), in buffer order.
    pub groups: Vec<String>,
    pub layers: Vec<LayerPlan>,
    /// The model's output and the buffer its loss gradient is written into.
    pub output: Buf,
    pub output_grad: usize,
    pub output_len: usize,
    pub input_len: usize,
    /// The clipping scratch: `max(in + out)` per example, shared by every linear layer.
    pub clip_scratch: usize,
}

struct Builder {
    buffers: Vec<Buffer>,
    per_example: usize,
}

impl Builder {
    fn alloc(&mut self, purpose: String, len: usize) -> usize {
        self.buffers.push(Buffer { purpose, offset: self.per_example, len });
        self.per_example += len;
        self.buffers.len() - 1
    }
}

/// Lowers a checked graph into steps, parameters and the memory plan.
pub fn plan(graph: &Graph, checked: &Checked) -> Plan {
    let uses = graph.use_counts();
    assert!(uses.iter().all(|&u| u <= 1), "the planner handles graphs whose values have one reader");
    let shapes = &checked.shapes;
    let width = |v: ValueId| -> usize { shapes[v.0].iter().product() };
    let mut b = Builder { buffers: Vec::new(), per_example: 0 };
    let mut storage: Vec<Option<Buf>> = vec![None; graph.value_count];
    let mut grad: Vec<Option<usize>> = vec![None; graph.value_count];
    storage[graph.input.0] = Some(Buf::Input);
    let (mut steps, mut params, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    let mut layer_bytes = vec![0u64; graph.nodes.len()];
    let mut dense_nodes = Vec::new();
    let mut param_offset = 0;
    let mut skip_next = false;
    for (i, node) in graph.nodes.iter().enumerate() {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        let x = node.inputs[0];
        let field = &graph.fields[node.field];
        match node.op {
            Op::Linear(attrs) => {
                let (n_in, n_out) = (width(x), attrs.out.value);
                let fused = graph.nodes.get(i + 1).and_then(|next| match next.op {
                    Op::Activation(act) if next.inputs[0] == node.output => {
                        Some((Act::from(act), next.output))
                    }
                    _ => None,
                });
                let (act, result) = fused.unwrap_or((Act::Identity, node.output));
                skip_next = fused.is_some();
                let output = b.alloc(format!("{field} output"), n_out);
                let delta = b.alloc(format!("{field} delta"), n_out);
                layer_bytes[i] = 4 * 2 * n_out as u64;
                storage[result.0] = Some(Buf::Arena(output));
                grad[result.0] = Some(delta);
                let group = groups.len();
                groups.push(field.clone());
                let bound = 1.0 / (n_in as f32).sqrt();
                let weight = params.len();
                params.push(ParamSlot {
                    name: format!("{field}.weight"),
                    shape: vec![n_out, n_in],
                    offset: param_offset,
                    len: n_out * n_in,
                    group,
                    init_bound: bound,
                    normal_std: None,
                });
                param_offset += n_out * n_in;
                let bias = attrs.bias.then(|| {
                    params.push(ParamSlot {
                        name: format!("{field}.bias"),
                        shape: vec![n_out],
                        offset: param_offset,
                        len: n_out,
                        group,
                        init_bound: bound,
                        normal_std: None,
                    });
                    param_offset += n_out;
                    params.len() - 1
                });
                dense_nodes.push((i, n_in + n_out));
                steps.push(Step::Dense(DenseStep {
                    group,
                    input: storage[x.0].expect("inputs are planned before their readers"),
                    output,
                    delta,
                    inputs: n_in,
                    outputs: n_out,
                    act,
                    weight,
                    bias,
                    input_grad: grad[x.0],
                    strategy: NormStrategy::Ghost,
                }));
            }
            Op::Activation(act) => {
                let len = width(x);
                let output = b.alloc(format!("{field} {}", node.text), len);
                layer_bytes[i] = 4 * len as u64;
                storage[node.output.0] = Some(Buf::Arena(output));
                grad[node.output.0] = grad[x.0];
                steps.push(Step::Activation(ActivationStep {
                    input: storage[x.0].expect("inputs are planned before their readers"),
                    output,
                    len,
                    act: act.into(),
                    grad: grad[x.0],
                }));
            }
            Op::Flatten => {
                storage[node.output.0] = storage[x.0];
                grad[node.output.0] = grad[x.0];
            }
            Op::Embedding { .. } | Op::SequenceMean | Op::Lstm(_) => {
                let mut tables = sequence::Tables {
                    builder: &mut b,
                    storage: &mut storage,
                    grad: &mut grad,
                    params: &mut params,
                    param_offset: &mut param_offset,
                    groups: &mut groups,
                };
                let (step, bytes) = sequence::plan_node(&mut tables, i, node, field, shapes);
                layer_bytes[i] = bytes;
                steps.push(step);
            }
        }
    }
    // The clipping scratch holds c⊙Δ and the masked A of one layer at a time; it is counted at the
    // layer that sets its size.
    let widest = dense_nodes.iter().copied().max_by_key(|&(_, len)| len).unwrap_or((0, 0));
    let clip_scratch = b.alloc("clipping scratch".to_string(), widest.1);
    layer_bytes[widest.0] += 4 * widest.1 as u64;
    let layers = layer_table(graph, checked, &steps, &dense_nodes, &layer_bytes);
    Plan {
        output: storage[graph.output.0].expect("the output is planned"),
        output_grad: grad[graph.output.0]
            .expect("checking guarantees a trained layer upstream of the output"),
        output_len: checked.output_len,
        input_len: width(graph.input),
        steps,
        workspace_per_example: b.per_example,
        buffers: b.buffers,
        params,
        param_count: param_offset,
        groups,
        layers,
        clip_scratch,
    }
}

/// FLOPs per example: a linear layer does its forward GEMM, the weight-gradient GEMM, the input-gradient
/// GEMM when something upstream is trained, and the ghost norms (two squared norms); element-wise ops
/// cost one forward and one backward operation per element.
fn layer_table(
    graph: &Graph,
    checked: &Checked,
    steps: &[Step],
    dense_nodes: &[(usize, usize)],
    layer_bytes: &[u64],
) -> Vec<LayerPlan> {
    let dense: Vec<&DenseStep> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Dense(d) => Some(d),
            _ => None,
        })
        .collect();
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let input_shape = checked.shapes[node.inputs[0].0].clone();
            let output_shape = checked.shapes[node.output.0].clone();
            let len: usize = output_shape.iter().product();
            let (strategy, flops) = match node.op {
                Op::Linear(_) => {
                    let d = dense[dense_nodes
                        .iter()
                        .position(|&(n, _)| n == i)
                        .expect("every linear is a dense step")];
                    let mac = 2 * (d.inputs * d.outputs) as u64;
                    let gemms = 2 + u64::from(d.input_grad.is_some());
                    (Some(d.strategy), gemms * mac + 2 * (d.inputs + d.outputs) as u64 + 2 * d.outputs as u64)
                }
                Op::Activation(_) => (None, 2 * len as u64),
                Op::Flatten => (None, 0),
                Op::Embedding { .. } | Op::SequenceMean | Op::Lstm(_) => sequence::table_entry(steps, i),
            };
            LayerPlan {
                field: graph.fields[node.field].clone(),
                op: node.text.clone(),
                input_shape,
                output_shape,
                params: checked.node_params[i],
                strategy,
                flops_per_example: flops,
                bytes_per_example: layer_bytes[i],
            }
        })
        .collect()
}
