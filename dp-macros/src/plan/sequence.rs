//! Planning of the sequence ops: `embedding`, `mean` over the sequence axis and `lstm`.
//!
//! - An embedding's norm groups equal tokens ([`NormStrategy::TokenGrouped`], cost ~T·dim), its
//!   clipped sum is a scatter-add of `c_i·δ` rows: nothing of size vocab is ever formed per example.
//! - An LSTM's two weights are layers applied at T positions, each with its own strategy (the cost
//!   model of [`super::cost`], or the user's `norms = ghost | direct`); weights and bias are ONE
//!   parameter group. Its saved gates are dead after the backward pass, so the norms use them as
//!   slots when one fits (else the shared norm scratch), and the clipped sum scales a copy of δ there
//!   (δ itself is kept, so a clipped sum can be repeated on the same workspace).

use super::cost::{choose_strategy, norm_flops, scratch_len};
use super::{Buf, GradTarget, NormStrategy, Planner, Step, DIRECT_MEMORY_CAP_BYTES};
use crate::ir::Op;

/// A token embedding.
#[derive(Debug, Clone)]
pub struct EmbeddingStep {
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
}

/// Mean over the sequence axis.
#[derive(Debug, Clone)]
pub struct MeanStep {
    pub input: Buf,
    pub output: usize,
    pub steps: usize,
    pub dim: usize,
    /// The output's gradient and where the input's goes, when something upstream is trained.
    pub grads: Option<(usize, GradTarget)>,
}

/// One LSTM layer.
#[derive(Debug, Clone)]
pub struct LstmStep {
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
    /// Where `dx` goes: the input's gradient target, or a discarded buffer if nothing upstream is trained.
    pub input_grad: Result<GradTarget, usize>,
    /// Forward/backward scratch.
    pub scratch: usize,
    /// The gates buffer holds one norm slot per example (else the plan's shared norm scratch is used).
    pub norms_in_gates: bool,
    /// A private copy of `x` whose rows the clipped sum may zero, when `x` is the model's input or has
    /// other readers.
    pub input_copy: Option<usize>,
    pub w_ih: usize,
    pub w_hh: usize,
    pub bias: usize,
    pub ih_strategy: NormStrategy,
    pub hh_strategy: NormStrategy,
}

/// Plans sequence node `i` (an embedding, a mean over the sequence or an LSTM).
pub fn plan_node(pl: &mut Planner<'_>, i: usize) {
    let node = &pl.graph.nodes[i];
    let (x, out) = (node.inputs[0], node.output);
    let field = pl.graph.fields[node.field].clone();
    let shape = pl.checked.shapes[x.0].clone();
    let input = pl.storage_of(x);
    let step = match node.op {
        Op::Embedding(attrs) => {
            let (vocab, dim, steps) =
                (attrs.vocab.expect("checked: a token input"), attrs.dim.value, shape[0]);
            pl.target(i, x);
            let output = pl.alloc(i, format!("{field} embedding rows"), steps * dim);
            let delta = pl.grad_buffer(i, out, format!("{field} embedding delta")).expect("trained");
            pl.storage[out.0] = Some(Buf::Arena(output));
            pl.grad[out.0] = Some(delta);
            Planner::need(&mut pl.norms_need, i, steps + dim);
            pl.groups.push(field.clone());
            let group = pl.groups.len() - 1;
            let weight = pl.param(format!("{field}.weight"), vec![vocab, dim], 0.0, None);
            pl.params[weight].normal_std = Some(1.0);
            // Gather, the norm (row sums and squares) and the scatter-add of the clipped sum.
            pl.layer_flops[i] = 5 * (steps * dim) as u64;
            pl.layer_strategy[i] = Some(NormStrategy::TokenGrouped);
            Step::Embedding(EmbeddingStep { group, vocab, dim, steps, weight, output, delta })
        }
        Op::SequenceMean => {
            let (steps, dim) = (shape[0], shape[1]);
            let output = pl.alloc(i, format!("{field} mean"), dim);
            pl.storage[out.0] = Some(Buf::Arena(output));
            let out_grad = pl.grad_buffer(i, out, format!("{field} mean gradient"));
            pl.grad[out.0] = out_grad;
            let target = pl.target(i, x);
            pl.layer_flops[i] = 2 * (steps * dim) as u64;
            let grads = out_grad.zip(target);
            Step::SequenceMean(MeanStep { input, output, steps, dim, grads })
        }
        Op::Lstm(attrs) => {
            lstm(pl, i, input, &shape, attrs.hidden.value, attrs.norms.map(NormStrategy::from))
        }
        _ => unreachable!("plan_node is called for sequence ops only"),
    };
    pl.steps.push(step);
}

fn lstm(
    pl: &mut Planner<'_>,
    i: usize,
    x: Buf,
    shape: &[usize],
    hidden: usize,
    forced: Option<NormStrategy>,
) -> Step {
    let node = &pl.graph.nodes[i];
    let (x_id, out) = (node.inputs[0], node.output);
    let field = pl.graph.fields[node.field].clone();
    let (steps, input, h) = (shape[0], shape[1], hidden);
    let g4 = 4 * h;
    let cap = DIRECT_MEMORY_CAP_BYTES;
    let ih_strategy = forced.unwrap_or_else(|| choose_strategy(steps, input, g4, cap));
    let hh_strategy = forced.unwrap_or_else(|| choose_strategy(steps, h, g4, cap));
    let output = pl.alloc(i, format!("{field} hidden states"), steps * h);
    let output_grad = pl.grad_buffer(i, out, format!("{field} hidden-state gradient")).expect("trained");
    let gates = pl.alloc(i, format!("{field} gates"), steps * g4);
    let cells = pl.alloc(i, format!("{field} cells"), steps * h);
    let hprev = pl.alloc(i, format!("{field} previous hidden states"), steps * h);
    let delta = pl.alloc(i, format!("{field} gate delta"), steps * g4);
    // The backward's scratch (6h per example) also covers the forward's (5h).
    let scratch = pl.alloc(i, format!("{field} scratch"), 6 * h);
    let slot = scratch_len(ih_strategy, steps, input, g4).max(scratch_len(hh_strategy, steps, h, g4)).max(1);
    let norms_in_gates = steps * g4 >= slot;
    if !norms_in_gates {
        Planner::need(&mut pl.norms_need, i, slot);
    }
    let input_grad = match pl.target(i, x_id) {
        Some(target) => Ok(target),
        None => Err(pl.alloc(i, format!("{field} input gradient (unused)"), steps * input)),
    };
    let private_input = x == Buf::Input || pl.uses[x_id.0] > 1;
    let input_copy = private_input.then(|| pl.alloc(i, format!("{field} input copy"), steps * input));
    pl.storage[out.0] = Some(Buf::Arena(output));
    pl.grad[out.0] = Some(output_grad);
    pl.groups.push(field.clone());
    let group = pl.groups.len() - 1;
    // PyTorch draws every LSTM tensor from U(−1/√h, 1/√h).
    let bound = 1.0 / (h as f32).sqrt();
    let w_ih = pl.param(format!("{field}.weight_ih_l0"), vec![g4, input], bound, None);
    let w_hh = pl.param(format!("{field}.weight_hh_l0"), vec![g4, h], bound, None);
    let bias = pl.param(format!("{field}.bias_ih_l0"), vec![g4], bound, None);
    let (tt, pd) = (steps as u64, (g4 * (input + h)) as u64);
    let products = 2 * tt * pd;
    let input_grad_flops = if input_grad.is_ok() { 2 * tt * (g4 * input) as u64 } else { 0 };
    pl.layer_flops[i] = products                               // forward
        + 2 * tt * (g4 * h) as u64 + input_grad_flops          // backward: recurrent product and dx
        + products + tt * g4 as u64                            // weight gradients (clipped sum)
        + norm_flops(ih_strategy, steps, input, g4)
        + norm_flops(hh_strategy, steps, h, g4)
        + tt * g4 as u64                                       // bias norm
        + 30 * tt * h as u64; // gate non-linearities, forward and backward
                              // The table shows the strategy of the larger weight.
    pl.layer_strategy[i] = Some(if input >= h { ih_strategy } else { hh_strategy });
    Step::Lstm(LstmStep {
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
        norms_in_gates,
        input_copy,
        w_ih,
        w_hh,
        bias,
        ih_strategy,
        hh_strategy,
    })
}
