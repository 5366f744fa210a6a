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
//! - A value read by more than one op (a residual connection) has its own gradient buffer: the last
//!   reader in forward order (the first in the backward) writes it, every earlier reader writes a
//!   temporary buffer that is then added into it ([`GradTarget`]). In-place gradient sharing (an
//!   activation or a flatten working on its input's gradient) needs a single reader.
//! - FLOPs and bytes per example, per layer, for `describe()`.
//!
//! Image ops (conv, pooling, norm layers, `+`) are planned in [`conv`]; the shared scratch buffers
//! of their kernels (patches, output-gradient rows, norm scratch) are sized here, once, to the
//! largest need of any layer.

pub mod conv;
pub mod cost;

use crate::check::Checked;
use crate::ir::{Graph, Op, ValueId};
use crate::parse::ast::{ActivationKind, NormChoice};

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
    Direct,
}

impl From<NormChoice> for NormStrategy {
    fn from(choice: NormChoice) -> NormStrategy {
        match choice {
            NormChoice::Ghost => NormStrategy::Ghost,
            NormChoice::Direct => NormStrategy::Direct,
        }
    }
}

/// Where a step's backward writes the gradient of one of its inputs: it overwrites `write`, then,
/// when the input has another reader, `write` is added into the input's own gradient `add_into`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradTarget {
    pub write: usize,
    pub add_into: Option<usize>,
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
    /// A constant initial value instead (norm layers: weight 1, bias 0).
    pub constant_init: Option<f32>,
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
    pub input_grad: Option<GradTarget>,
    pub strategy: NormStrategy,
}

/// An activation that no linear layer could absorb.
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

/// A reshape whose input has other readers: the backward copies the output gradient to the input's.
#[derive(Debug, Clone)]
pub struct GradCopyStep {
    pub grad: usize,
    pub target: GradTarget,
}

/// One step of the forward program (the backward runs them in reverse).
#[derive(Debug, Clone)]
pub enum Step {
    Dense(DenseStep),
    Activation(ActivationStep),
    GradCopy(GradCopyStep),
    Conv(conv::ConvStep),
    Pool(conv::PoolStep),
    GlobalPool(conv::GlobalPoolStep),
    Norm(conv::NormStep),
    Add(conv::AddStep),
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
    /// Scratch shared by the image layers and the direct norms.
    pub scratch: Scratch,
}

/// Shared scratch buffers, each sized to the largest need of any layer (`None` when no layer needs it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scratch {
    /// Conv patches `[groups][B][T][d]` (im2col), also the slots of the conv input-gradient kernel.
    pub patches: Option<usize>,
    /// Conv output gradients as rows `[groups][B][T][p]`.
    pub rows: Option<usize>,
    /// One slot per example of the chosen norm kernels (ghost Gram tiles or a direct gradient).
    pub norms: Option<usize>,
}

/// The planner's state while it walks the graph (shared with the per-op planners).
pub struct Planner<'g> {
    pub graph: &'g Graph,
    pub checked: &'g Checked,
    pub buffers: Vec<Buffer>,
    pub per_example: usize,
    pub storage: Vec<Option<Buf>>,
    pub grad: Vec<Option<usize>>,
    /// Readers of each value (the loss counts as one reader of the output).
    pub uses: Vec<usize>,
    seen: Vec<usize>,
    temps: Vec<Option<usize>>,
    /// Whether a value depends on a trained parameter (and so needs a gradient).
    pub needs_grad: Vec<bool>,
    pub steps: Vec<Step>,
    pub params: Vec<ParamSlot>,
    pub groups: Vec<String>,
    pub param_offset: usize,
    pub layer_bytes: Vec<u64>,
    pub layer_flops: Vec<u64>,
    pub layer_strategy: Vec<Option<NormStrategy>>,
    /// Largest per-example need (and the node that has it) of each shared scratch buffer.
    pub patches_need: (usize, usize),
    pub rows_need: (usize, usize),
    pub norms_need: (usize, usize),
}

impl<'g> Planner<'g> {
    /// Allocates an arena buffer of `len` per example, counted in node `node`'s bytes.
    pub fn alloc(&mut self, node: usize, purpose: String, len: usize) -> usize {
        self.layer_bytes[node] += 4 * len as u64;
        self.alloc_uncounted(purpose, len)
    }

    fn alloc_uncounted(&mut self, purpose: String, len: usize) -> usize {
        self.buffers.push(Buffer { purpose, offset: self.per_example, len });
        self.per_example += len;
        self.buffers.len() - 1
    }

    /// Values of one example of `v`.
    pub fn width(&self, v: ValueId) -> usize {
        self.checked.shapes[v.0].iter().product()
    }

    /// Where value `v` lives (planned before any reader).
    pub fn storage_of(&self, v: ValueId) -> Buf {
        self.storage[v.0].expect("inputs are planned before their readers")
    }

    /// The gradient target of one reading of `x` by node `node` (call once per reading, in forward
    /// order); `None` when nothing upstream of `x` is trained.
    pub fn target(&mut self, node: usize, x: ValueId) -> Option<GradTarget> {
        self.seen[x.0] += 1;
        let own = self.grad[x.0].filter(|_| self.needs_grad[x.0])?;
        if self.seen[x.0] == self.uses[x.0] {
            return Some(GradTarget { write: own, add_into: None });
        }
        let temp = match self.temps[x.0] {
            Some(t) => t,
            None => {
                let field = &self.graph.fields[self.graph.nodes[node].field];
                let t = self.alloc(node, format!("{field} partial gradient"), self.width(x));
                self.temps[x.0] = Some(t);
                t
            }
        };
        Some(GradTarget { write: temp, add_into: Some(own) })
    }

    /// The output gradient buffer of a new value, if it needs one.
    pub fn grad_buffer(&mut self, node: usize, v: ValueId, purpose: String) -> Option<usize> {
        self.needs_grad[v.0].then(|| self.alloc(node, purpose, self.width(v)))
    }

    /// The activation that node `i`'s output flows into alone, to be fused into node `i`.
    pub fn fused_activation(&self, i: usize) -> Option<(Act, ValueId)> {
        let node = &self.graph.nodes[i];
        if self.uses[node.output.0] != 1 {
            return None;
        }
        self.graph.nodes.get(i + 1).and_then(|next| match next.op {
            Op::Activation(act) if next.inputs[0] == node.output => Some((Act::from(act), next.output)),
            _ => None,
        })
    }

    /// Registers a parameter tensor of the newest group.
    pub fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init_bound: f32,
        constant_init: Option<f32>,
    ) -> usize {
        let len = shape.iter().product();
        self.params.push(ParamSlot {
            name,
            shape,
            offset: self.param_offset,
            len,
            group: self.groups.len() - 1,
            init_bound,
            constant_init,
        });
        self.param_offset += len;
        self.params.len() - 1
    }

    /// Records that node `node` needs `len` values per example of a shared scratch buffer.
    pub fn need(slot: &mut (usize, usize), node: usize, len: usize) {
        if len > slot.0 {
            *slot = (len, node);
        }
    }
}

/// The per-example memory a direct norm strategy may use for one layer's gradient: 64 MiB. Layers
/// whose per-example gradient is larger always use ghost norms.
pub const DIRECT_MEMORY_CAP_BYTES: u64 = 64 << 20;

/// Lowers a checked graph into steps, parameters and the memory plan.
pub fn plan(graph: &Graph, checked: &Checked) -> Plan {
    let n_nodes = graph.nodes.len();
    let mut needs_grad = vec![false; graph.value_count];
    for node in &graph.nodes {
        needs_grad[node.output.0] = node.op.is_parameterised() || node.inputs.iter().any(|v| needs_grad[v.0]);
    }
    let mut pl = Planner {
        graph,
        checked,
        buffers: Vec::new(),
        per_example: 0,
        storage: vec![None; graph.value_count],
        grad: vec![None; graph.value_count],
        uses: graph.use_counts(),
        seen: vec![0; graph.value_count],
        temps: vec![None; graph.value_count],
        needs_grad,
        steps: Vec::new(),
        params: Vec::new(),
        groups: Vec::new(),
        param_offset: 0,
        layer_bytes: vec![0; n_nodes],
        layer_flops: vec![0; n_nodes],
        layer_strategy: vec![None; n_nodes],
        patches_need: (0, 0),
        rows_need: (0, 0),
        norms_need: (0, 0),
    };
    pl.storage[graph.input.0] = Some(Buf::Input);
    let mut dense_nodes = Vec::new();
    let mut skip_next = false;
    for (i, node) in graph.nodes.iter().enumerate() {
        if std::mem::take(&mut skip_next) {
            pl.layer_flops[i] = 2 * pl.width(node.output) as u64;
            continue;
        }
        let x = node.inputs[0];
        let field = graph.fields[node.field].clone();
        match node.op {
            Op::Linear(attrs) => {
                let (n_in, n_out) = (pl.width(x), attrs.out.value);
                let fused = pl.fused_activation(i);
                let (act, result) = fused.unwrap_or((Act::Identity, node.output));
                skip_next = fused.is_some();
                let output = pl.alloc(i, format!("{field} output"), n_out);
                let delta = pl.alloc(i, format!("{field} delta"), n_out);
                pl.storage[result.0] = Some(Buf::Arena(output));
                pl.grad[result.0] = Some(delta);
                pl.groups.push(field.clone());
                let group = pl.groups.len() - 1;
                let bound = 1.0 / (n_in as f32).sqrt();
                let weight = pl.param(format!("{field}.weight"), vec![n_out, n_in], bound, None);
                let bias = attrs.bias.then(|| pl.param(format!("{field}.bias"), vec![n_out], bound, None));
                let strategy = attrs
                    .norms
                    .map(NormStrategy::from)
                    .unwrap_or_else(|| cost::choose_strategy(1, n_in, n_out, DIRECT_MEMORY_CAP_BYTES));
                if strategy == NormStrategy::Direct {
                    Planner::need(&mut pl.norms_need, i, cost::direct_scratch_len(n_in, n_out));
                }
                dense_nodes.push((i, n_in + n_out));
                let input = pl.storage_of(x);
                let input_grad = pl.target(i, x);
                let mac = 2 * (n_in * n_out) as u64;
                let gemms = 2 + u64::from(input_grad.is_some());
                let norm_flops = match strategy {
                    NormStrategy::Ghost => 2 * (n_in + n_out) as u64,
                    NormStrategy::Direct => cost::direct_flops(1, n_in, n_out),
                };
                pl.layer_flops[i] = gemms * mac + norm_flops + 2 * n_out as u64;
                pl.layer_strategy[i] = Some(strategy);
                pl.steps.push(Step::Dense(DenseStep {
                    group,
                    input,
                    output,
                    delta,
                    inputs: n_in,
                    outputs: n_out,
                    act,
                    weight,
                    bias,
                    input_grad,
                    strategy,
                }));
            }
            Op::Activation(act) => {
                let len = pl.width(x);
                let output = pl.alloc(i, format!("{field} {}", node.text), len);
                pl.layer_flops[i] = 2 * len as u64;
                pl.storage[node.output.0] = Some(Buf::Arena(output));
                let input = pl.storage_of(x);
                let (grad, target) = if pl.uses[x.0] == 1 {
                    pl.seen[x.0] += 1;
                    (pl.grad[x.0].filter(|_| pl.needs_grad[x.0]), None)
                } else {
                    let grad = pl.grad_buffer(i, node.output, format!("{field} {} gradient", node.text));
                    (grad, pl.target(i, x))
                };
                pl.grad[node.output.0] = grad;
                pl.steps.push(Step::Activation(ActivationStep {
                    input,
                    output,
                    len,
                    act: act.into(),
                    grad,
                    target,
                }));
            }
            Op::Flatten => {
                pl.storage[node.output.0] = pl.storage[x.0];
                if pl.uses[x.0] == 1 || !pl.needs_grad[x.0] {
                    pl.seen[x.0] += 1;
                    pl.grad[node.output.0] = pl.grad[x.0];
                } else {
                    let len = pl.width(x);
                    let grad = pl.alloc(i, format!("{field} flatten gradient"), len);
                    pl.grad[node.output.0] = Some(grad);
                    let target = pl.target(i, x).expect("the input needs a gradient");
                    pl.steps.push(Step::GradCopy(GradCopyStep { grad, target }));
                }
            }
            Op::Conv2d(_) | Op::Pool2d(_) | Op::GlobalAvgPool | Op::Norm(_) | Op::Add => {
                skip_next = conv::plan_node(&mut pl, i);
            }
        }
    }
    // The clipping scratch holds c⊙Δ and the masked A of one linear layer at a time; it is counted at
    // the layer that sets its size.
    let widest = dense_nodes.iter().copied().max_by_key(|&(_, len)| len).unwrap_or((0, 0));
    let clip_scratch = pl.alloc(widest.0, "clipping scratch".to_string(), widest.1);
    let mut scratch = Scratch::default();
    for (slot, (len, node), purpose) in [
        (&mut scratch.patches, pl.patches_need, "conv patches (im2col)"),
        (&mut scratch.rows, pl.rows_need, "conv output gradient rows"),
        (&mut scratch.norms, pl.norms_need, "per-example norm scratch"),
    ] {
        if len > 0 {
            *slot = Some(pl.alloc(node, purpose.to_string(), len));
        }
    }
    let layers = layer_table(&pl);
    let Planner { storage, grad, steps, per_example, buffers, params, param_offset, groups, .. } = pl;
    Plan {
        output: storage[graph.output.0].expect("the output is planned"),
        output_grad: grad[graph.output.0]
            .expect("checking guarantees a trained layer upstream of the output"),
        output_len: checked.output_len,
        input_len: checked.shapes[graph.input.0].iter().product(),
        steps,
        workspace_per_example: per_example,
        buffers,
        params,
        param_count: param_offset,
        groups,
        layers,
        clip_scratch,
        scratch,
    }
}

/// One row per IR node: shapes, parameters, the norm strategy, FLOPs and bytes per example. A linear
/// layer does its forward GEMM, the weight-gradient GEMM, the input-gradient GEMM when something
/// upstream is trained, and its norms; element-wise ops cost one forward and one backward operation
/// per element; the other ops are counted where they are planned.
fn layer_table(pl: &Planner<'_>) -> Vec<LayerPlan> {
    pl.graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| LayerPlan {
            field: pl.graph.fields[node.field].clone(),
            op: node.text.clone(),
            input_shape: pl.checked.shapes[node.inputs[0].0].clone(),
            output_shape: pl.checked.shapes[node.output.0].clone(),
            params: pl.checked.node_params[i],
            strategy: pl.layer_strategy[i],
            flops_per_example: pl.layer_flops[i],
            bytes_per_example: pl.layer_bytes[i],
        })
        .collect()
}
