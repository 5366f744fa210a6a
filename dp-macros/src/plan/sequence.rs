//! Planning of the sequence ops: `embedding`, `mean` over the sequence axis and `lstm`.
//!
//! - An embedding's norm groups equal tokens ([`NormStrategy::TokenGrouped`], cost ~T·dim), its
//!   clipped sum is a scatter-add of `c_i·δ` rows: nothing of size vocab is ever formed per example.
//! - An LSTM's two weights are layers applied at T positions, each with its own strategy (the cost
//!   model of [`super::per_example`], or the user's `norms = ghost | direct`); weights and bias are ONE
//!   parameter group. Its saved gates are dead after the backward pass, so the norms use them as
//!   scratch when a slot fits, and the clipped sum scales a copy of δ there (δ itself is kept, so a
//!   clipped sum can be repeated on the same workspace).

use super::per_example::{choose_strategy, norm_flops, scratch_len};
use super::{Buf, Builder, NormStrategy, ParamSlot, Step};
use crate::check::Shape;
use crate::ir::{Node, Op};
use crate::parse::ast::ForcedStrategy;

/// A token embedding.
#[derive(Debug, Clone)]
pub struct EmbeddingStep {
    /// The IR node it comes from.
    pub node: usize,
    pub group: usize,
    pub vocab: usize,
    pub dim: usize,
    /// T: tokens per example.
    pub steps: usize,
    /// Index into `Plan::params`.
    pub weight: usize,
    /// `[T, dim]` rows looked up.
    pub output: usize,
    /// `[T, dim]` gradient of the output.
    pub delta: usize,
    /// One norm slot per example (`T` positions as u32, one row accumulator).
    pub scratch: usize,
    pub flops: u64,
}

/// Mean over the sequence axis.
#[derive(Debug, Clone)]
pub struct MeanStep {
    pub node: usize,
    pub input: Buf,
    pub output: usize,
    pub steps: usize,
    pub dim: usize,
    /// Gradients of output and input, when something upstream is trained.
    pub grads: Option<(usize, usize)>,
    pub flops: u64,
}

/// One LSTM layer.
#[derive(Debug, Clone)]
pub struct LstmStep {
    pub node: usize,
    pub group: usize,
    pub steps: usize,
    pub input: usize,
    pub hidden: usize,
    /// The input sequence `[T, d]`.
    pub x: Buf,
    /// `[T, h]` hidden states and their gradient.
    pub output: usize,
    pub output_grad: usize,
    /// Saved for the backward: activated gates `[T, 4h]`, cells `[T, h]`, `h_{t−1}` `[T, h]`.
    pub gates: usize,
    pub cells: usize,
    pub hprev: usize,
    /// Gate pre-activation gradients `[T, 4h]`.
    pub delta: usize,
    /// Where `dx` goes: the input's gradient buffer, or a discarded one if nothing upstream is trained.
    pub input_grad: usize,
    /// Forward/backward scratch (and the norm slots when the gates cannot hold them).
    pub scratch: usize,
    /// The buffer the norm kernels use as slots: `gates` or `scratch`.
    pub norm_scratch: usize,
    /// A copy of the model's input the clipped sum may zero rows of (only when `x` is the input).
    pub input_copy: Option<usize>,
    pub w_ih: usize,
    pub w_hh: usize,
    pub bias: usize,
    pub ih_strategy: NormStrategy,
    pub hh_strategy: NormStrategy,
    pub flops: u64,
}

/// The planner's tables a sequence op adds to.
pub(super) struct Tables<'a> {
    pub(super) builder: &'a mut Builder,
    pub(super) storage: &'a mut [Option<Buf>],
    pub(super) grad: &'a mut [Option<usize>],
    pub(super) params: &'a mut Vec<ParamSlot>,
    pub(super) param_offset: &'a mut usize,
    pub(super) groups: &'a mut Vec<String>,
}

impl Tables<'_> {
    fn param(&mut self, name: String, shape: Vec<usize>, group: usize, init: Init) -> usize {
        let len = shape.iter().product();
        let (init_bound, normal_std) = match init {
            Init::Uniform(bound) => (bound, None),
            Init::Normal(std) => (0.0, Some(std)),
        };
        self.params.push(ParamSlot {
            name,
            shape,
            offset: *self.param_offset,
            len,
            group,
            init_bound,
            normal_std,
            constant_init: None,
        });
        *self.param_offset += len;
        self.params.len() - 1
    }

    fn group(&mut self, field: &str) -> usize {
        self.groups.push(field.to_string());
        self.groups.len() - 1
    }
}

/// PyTorch's default initialisation of a tensor.
#[derive(Clone, Copy)]
enum Init {
    Uniform(f32),
    Normal(f32),
}

/// Plans one sequence node; returns its step and the workspace bytes per example it adds.
pub(super) fn plan_node(
    t: &mut Tables<'_>,
    index: usize,
    node: &Node,
    field: &str,
    shapes: &[Shape],
) -> (Step, u64) {
    let x = node.inputs[0];
    let input = t.storage[x.0].expect("inputs are planned before their readers");
    let before = t.builder.per_example;
    let step = match node.op {
        Op::Embedding { attrs, vocab } => {
            let (vocab, dim, steps) =
                (vocab.expect("checked: a token input"), attrs.dim.value, shapes[x.0][0]);
            let output = t.builder.alloc(format!("{field} embedding rows"), steps * dim);
            let delta = t.builder.alloc(format!("{field} embedding delta"), steps * dim);
            let scratch = t.builder.alloc(format!("{field} token grouping"), steps + dim);
            t.storage[node.output.0] = Some(Buf::Arena(output));
            t.grad[node.output.0] = Some(delta);
            let group = t.group(field);
            let weight = t.param(format!("{field}.weight"), vec![vocab, dim], group, Init::Normal(1.0));
            // Gather, then the norm (row sums and squares) and the scatter-add of the clipped sum.
            let flops = 5 * (steps * dim) as u64;
            Step::Embedding(EmbeddingStep {
                node: index,
                group,
                vocab,
                dim,
                steps,
                weight,
                output,
                delta,
                scratch,
                flops,
            })
        }
        Op::SequenceMean => {
            let (steps, dim) = (shapes[x.0][0], shapes[x.0][1]);
            let output = t.builder.alloc(format!("{field} mean"), dim);
            t.storage[node.output.0] = Some(Buf::Arena(output));
            let grads = t.grad[x.0].map(|input_grad| {
                let g = t.builder.alloc(format!("{field} mean gradient"), dim);
                t.grad[node.output.0] = Some(g);
                (g, input_grad)
            });
            let flops = 2 * (steps * dim) as u64;
            Step::SequenceMean(MeanStep { node: index, input, output, steps, dim, grads, flops })
        }
        Op::Lstm(attrs) => lstm(t, index, node, field, input, &shapes[x.0], attrs.hidden.value, attrs.norms),
        _ => unreachable!("plan_node is called for sequence ops only"),
    };
    (step, 4 * (t.builder.per_example - before) as u64)
}

#[allow(clippy::too_many_arguments)]
fn lstm(
    t: &mut Tables<'_>,
    index: usize,
    node: &Node,
    field: &str,
    x: Buf,
    shape: &Shape,
    hidden: usize,
    forced: Option<ForcedStrategy>,
) -> Step {
    let (steps, input, h) = (shape[0], shape[1], hidden);
    let g4 = 4 * h;
    let (ih_strategy, hh_strategy) = match forced {
        Some(ForcedStrategy::Ghost) => (NormStrategy::Ghost, NormStrategy::Ghost),
        Some(ForcedStrategy::Direct) => (NormStrategy::Direct, NormStrategy::Direct),
        None => (choose_strategy(steps, input, g4), choose_strategy(steps, h, g4)),
    };
    let b = &mut *t.builder;
    let output = b.alloc(format!("{field} hidden states"), steps * h);
    let output_grad = b.alloc(format!("{field} hidden-state gradient"), steps * h);
    let gates = b.alloc(format!("{field} gates"), steps * g4);
    let cells = b.alloc(format!("{field} cells"), steps * h);
    let hprev = b.alloc(format!("{field} previous hidden states"), steps * h);
    let delta = b.alloc(format!("{field} gate delta"), steps * g4);
    let slot = scratch_len(ih_strategy, steps, input, g4).max(scratch_len(hh_strategy, steps, h, g4)).max(1);
    let gates_hold_a_slot = steps * g4 >= slot;
    // Backward scratch (6h) is the larger of forward (5h) and backward.
    let scratch_len = (6 * h).max(if gates_hold_a_slot { 0 } else { slot });
    let scratch = b.alloc(format!("{field} scratch"), scratch_len);
    let norm_scratch = if gates_hold_a_slot { gates } else { scratch };
    let input_grad = match t.grad[node.inputs[0].0] {
        Some(g) => g,
        None => b.alloc(format!("{field} input gradient (unused)"), steps * input),
    };
    let input_copy = (x == Buf::Input).then(|| b.alloc(format!("{field} input copy"), steps * input));
    t.storage[node.output.0] = Some(Buf::Arena(output));
    t.grad[node.output.0] = Some(output_grad);
    let group = t.group(field);
    // PyTorch draws every LSTM tensor from U(−1/√h, 1/√h).
    let bound = Init::Uniform(1.0 / (h as f32).sqrt());
    let w_ih = t.param(format!("{field}.weight_ih_l0"), vec![g4, input], group, bound);
    let w_hh = t.param(format!("{field}.weight_hh_l0"), vec![g4, h], group, bound);
    let bias = t.param(format!("{field}.bias_ih_l0"), vec![g4], group, bound);
    let (tt, pd) = (steps as u64, (g4 * (input + h)) as u64);
    let products = 2 * tt * pd;
    let flops = products                                       // forward
        + 2 * tt * (g4 * h) as u64 + 2 * tt * (g4 * input) as u64 // backward: recurrent and dx
        + products + tt * g4 as u64                            // weight gradients (clipped sum)
        + norm_flops(ih_strategy, steps, input, g4)
        + norm_flops(hh_strategy, steps, h, g4)
        + tt * g4 as u64                                       // bias norm
        + 30 * tt * h as u64; // gate non-linearities, forward and backward
    Step::Lstm(LstmStep {
        node: index,
        group,
        steps,
        input,
        hidden: h,
        x,
        output,
        output_grad,
        gates,
        cells,
        hprev,
        delta,
        input_grad,
        scratch,
        norm_scratch,
        input_copy,
        w_ih,
        w_hh,
        bias,
        ih_strategy,
        hh_strategy,
        flops,
    })
}

/// The plan-table entry (strategy, FLOPs per example) of the sequence step planned for node `index`.
/// An LSTM whose weights use different strategies shows the one of its larger weight.
pub fn table_entry(steps: &[Step], index: usize) -> (Option<NormStrategy>, u64) {
    for step in steps {
        match step {
            Step::Embedding(s) if s.node == index => return (Some(NormStrategy::TokenGrouped), s.flops),
            Step::SequenceMean(s) if s.node == index => return (None, s.flops),
            Step::Lstm(s) if s.node == index => {
                let shown = if s.input >= s.hidden { s.ih_strategy } else { s.hh_strategy };
                return (Some(shown), s.flops);
            }
            _ => {}
        }
    }
    unreachable!("every sequence node has a step")
}
