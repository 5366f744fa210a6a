//! `lstm(hidden = H, norms = ghost | direct)`: one LSTM layer over a sequence `[T, d] → [T, H]` (zero
//! initial state, gates i, f, g, o).
//!
//! Its two weights are layers applied at T positions, each with its own strategy (the cost model of
//! `dp_spec::cost`, or the user's `norms`); weights and bias are ONE parameter group. Its saved gates
//! are dead after the backward pass, so the norms use them as slots when one fits (else the shared
//! norm scratch), and the clipped sum scales a copy of δ there (δ itself is kept, so a clipped sum can
//! be repeated on the same workspace). When both weights' norms are direct, the LSTM keeps the
//! per-example gradients they form (both weights and the bias, within the planner's cap): its clipped
//! sum is then their weighted sum, without the two products over all T·B positions.

use super::rules::OpRules;
use crate::args::{arguments, norm_choice, positive_int, NormChoice};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::params::Init;
use crate::plan::planner::{Planner, SharedScratch};
use crate::shape::{show, Shape};
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::cost::{kept_sum_flops, norm_flops, scratch_len};
use dp_spec::{LstmDims, NormStrategy, Strategy};

/// `lstm(hidden = H, norms = ghost | direct)`.
#[derive(Debug, Clone, Copy)]
pub struct Lstm {
    pub hidden: Spanned<usize>,
    /// Overrides the planner's choice for both weights.
    pub norms: Option<NormChoice>,
}

/// One LSTM layer.
#[derive(Debug, Clone)]
pub struct LstmStep {
    pub group: usize,
    pub dims: LstmDims,
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
    /// other readers (and the gradients are not kept).
    pub input_copy: Option<usize>,
    /// The per-example gradients `[B][W_ih, W_hh, bias]` kept by the direct norms for the clipped sum.
    pub kept: Option<usize>,
    pub w_ih: usize,
    pub w_hh: usize,
    pub bias: usize,
    pub ih_strategy: Strategy,
    pub hh_strategy: Strategy,
}

impl OpRules for Lstm {
    type Step = LstmStep;
    const NAMES: &'static [&'static str] = &["lstm"];

    fn field_type(_: &str) -> &'static str {
        "Lstm"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [hidden, norms] = arguments(cx, op, ["hidden", "norms"]);
        let norms = norms.map(|a| norm_choice(cx, &a.value));
        let hidden = match hidden {
            Some(a) => positive_int(cx, "hidden", &a.value),
            None => {
                cx.error(op.span(), "`lstm` needs its hidden width: write `lstm(hidden = H)`");
                None
            }
        };
        Some(Lstm { hidden: hidden?, norms: norms.map(|n| n.ok_or(())).transpose().ok()? })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        if x.len() != 2 {
            cx.error(
                node.span,
                format!(
                    "lstm expects a sequence [T, d], but its input has shape {}; flatten or use an embedding",
                    show(x)
                ),
            );
            return None;
        }
        Some(vec![x[0], self.hidden.value])
    }

    fn param_count(&self, inputs: &[&Shape]) -> usize {
        let h = self.hidden.value;
        4 * h * (inputs[0][1] + h + 1)
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<LstmStep> {
        let (i, x_id, out, field) = (node.index, node.input(), node.output, node.field);
        let x = pl.storage_of(x_id);
        let (steps, input, h) = (pl.shape(x_id)[0], pl.shape(x_id)[1], self.hidden.value);
        let (g4, dims) = (4 * h, LstmDims { steps, input, hidden: h });
        let (ih_layer, hh_layer) = (dims.input_layer(), dims.recurrent_layer());
        let ih_strategy = Planner::strategy(self.norms, &ih_layer);
        let hh_strategy = Planner::strategy(self.norms, &hh_layer);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} hidden states"), steps * h);
        let output_grad =
            pl.alloc(i, Stored::OfPrecision, format!("{field} hidden-state gradient"), steps * h);
        let gates = pl.alloc(i, Stored::F32, format!("{field} gates"), steps * g4);
        let cells = pl.alloc(i, Stored::F32, format!("{field} cells"), steps * h);
        let hprev = pl.alloc(i, Stored::F32, format!("{field} previous hidden states"), steps * h);
        let delta = pl.alloc(i, Stored::F32, format!("{field} gate delta"), steps * g4);
        // The backward's scratch (6h per example) also covers the forward's (5h).
        let scratch = pl.alloc(i, Stored::F32, format!("{field} scratch"), 6 * h);
        // Both weights' gradients are formed only when both norms are direct.
        let forms_gradients = match (ih_strategy, hh_strategy) {
            (Strategy::Direct, Strategy::Direct) => Strategy::Direct,
            _ => Strategy::Ghost,
        };
        let kept_len = g4 * (input + h + 1);
        let kept = pl.kept_gradients(i, field, forms_gradients, steps, kept_len);
        let slot = scratch_len(ih_strategy, &ih_layer).max(scratch_len(hh_strategy, &hh_layer)).max(1);
        let norms_in_gates = steps * g4 >= slot;
        if !norms_in_gates && kept.is_none() {
            pl.need(SharedScratch::Norms, i, slot);
        }
        let input_grad = match pl.target(node, x_id) {
            Some(target) => Ok(target),
            None => Err(pl.alloc(
                i,
                Stored::OfPrecision,
                format!("{field} input gradient (unused)"),
                steps * input,
            )),
        };
        let private_input = (x == Buf::Input || pl.uses[x_id.0] > 1) && kept.is_none();
        let input_copy =
            private_input.then(|| pl.alloc(i, Stored::F32, format!("{field} input copy"), steps * input));
        pl.storage[out.0] = Some(Buf::Arena(output));
        pl.grad[out.0] = Some(output_grad);
        let group = pl.group(field);
        // PyTorch draws every LSTM tensor from U(−1/√h, 1/√h).
        let bound = 1.0 / (h as f32).sqrt();
        let w_ih = pl.param(format!("{field}.weight_ih_l0"), vec![g4, input], Init::Uniform { bound });
        let w_hh = pl.param(format!("{field}.weight_hh_l0"), vec![g4, h], Init::Uniform { bound });
        let bias = pl.param(format!("{field}.bias_ih_l0"), vec![g4], Init::Uniform { bound });
        let (tt, pd) = (steps as u64, (g4 * (input + h)) as u64);
        let products = 2 * tt * pd;
        let input_grad_flops = if input_grad.is_ok() { 2 * tt * (g4 * input) as u64 } else { 0 };
        let clipped_sum = match kept {
            Some(_) => kept_sum_flops(kept_len), // weighted sum of the kept gradients
            None => products + tt * g4 as u64,   // weight-gradient products
        };
        let flops = products                                   // forward
            + 2 * tt * (g4 * h) as u64 + input_grad_flops      // backward: recurrent product and dx
            + clipped_sum
            + norm_flops(ih_strategy, steps, input, g4)
            + norm_flops(hh_strategy, steps, h, g4)
            + tt * g4 as u64                                   // bias norm
            + 30 * tt * h as u64; // gate non-linearities, forward and backward
                                  // The table shows the strategy of the larger weight.
        let shown = if input >= h { ih_strategy } else { hh_strategy };
        pl.cost(i, flops, Some(NormStrategy::from(shown)));
        Some(LstmStep {
            group,
            dims,
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
            kept,
            w_ih,
            w_hh,
            bias,
            ih_strategy,
            hh_strategy,
        })
    }
}
