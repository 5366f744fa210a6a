//! `linear(out = N, in = M, bias = B, norms = ghost | direct, lora(rank = r, alpha = a))`: y = a·Wᵀ + b
//! over a flat vector `[d]`,
//! or position-wise over a sequence `[T, d] → [T, N]` (the same weight at every position), with the
//! activation after it fused into its output pass.
//!
//! On a vector (one position per example) its ghost norm is the Goodfellow identity
//! ‖g_W‖² = ‖a‖²‖δ‖², ‖g_b‖² = ‖δ‖². On a sequence it is a `dp_spec::PositionalLayer` of T positions,
//! like an LSTM weight: the per-example gradient Σ_t δ_t a_tᵀ, its norm by ghost norms over the T×T
//! Gram matrices or directly, as the planner's cost model (or `norms`) chooses. The clipped sum is one
//! GEMM over all B·T rows with each example's rows scaled by its factor, or, for a direct layer on a
//! sequence that keeps the per-example gradients its norm forms (within the planner's cap), their
//! weighted sum. The gradient of its output is
//! its δ buffer, which the element-wise ops between it and the next layer work on in place, so a
//! chain needs no other gradient buffers.
//!
//! With `lora(...)` the layer is lowered before checking into a frozen base and trained adapters
//! (`super::lora`); every node it becomes is a plain linear layer or their sum.

use super::activation::function::Act;
use super::lora::Lora;
use super::rules::OpRules;
use crate::args::{arguments, boolean, norm_choice, positive_int, NormChoice};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::params::Init;
use crate::plan::planner::{Planner, SharedScratch};
use crate::shape::{show, Shape};
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::cost::{kept_sum_flops, norm_flops, scratch_len};
use dp_spec::{NormStrategy, PositionalLayer, Strategy};

/// `linear(out = N, in = M, bias = B)`.
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    pub out: Spanned<usize>,
    /// The input width the user declared, checked against the inferred one.
    pub declared_in: Option<Spanned<usize>>,
    pub bias: bool,
    /// A norm strategy forced by `norms = ghost | direct`.
    pub norms: Option<NormChoice>,
    /// `lora(rank = r, alpha = a)`: lowered into a frozen base and trained adapters.
    pub lora: Option<Lora>,
    /// The weight starts at zero (a LoRA B matrix, so that the adapted layer starts as its base).
    pub zero_weight: bool,
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
    /// Positions per example: 1 on a vector, T on a sequence `[T, d]`.
    pub positions: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub act: Act,
    pub weight: usize,
    /// Index into `Plan::params`.
    pub bias: Option<usize>,
    /// Where δ·W goes: the gradient buffer of the layer's input, if anything upstream is trained.
    pub input_grad: Option<GradTarget>,
    pub strategy: Strategy,
    /// The per-example gradients `[B][weight, bias]` kept by the direct norm for the clipped sum.
    pub kept: Option<usize>,
}

impl OpRules for Linear {
    type Step = DenseStep;
    const NAMES: &'static [&'static str] = &["linear"];

    fn field_type(_: &str) -> &'static str {
        "Linear"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [out, declared_in, bias, norms, lora] = arguments(cx, op, ["out", "in", "bias", "norms", "lora"]);
        let lora = lora.map(|a| Lora::parse(cx, &a.value).ok_or(())).transpose();
        let norms = norms.map(|a| norm_choice(cx, &a.value).ok_or(())).transpose();
        let declared_in = declared_in.map(|a| positive_int(cx, "in", &a.value));
        let bias = bias.map(|a| boolean(cx, "bias", &a.value));
        let out = match out {
            Some(a) => positive_int(cx, "out", &a.value),
            None => {
                cx.error(op.span(), "`linear` needs its output width: write `linear(out = N)`");
                None
            }
        };
        Some(Linear {
            out: out?,
            declared_in: declared_in.map(|d| d.ok_or(())).transpose().ok()?,
            bias: bias.map(|b| b.ok_or(())).transpose().ok()?.unwrap_or(true),
            norms: norms.ok()?,
            lora: lora.ok()?,
            zero_weight: false,
        })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        if x.len() > 2 {
            cx.error(
                node.span,
                format!(
                    "`linear` takes a flat vector [d] or a sequence [T, d] (applied at every position) per \
                     example, but its input has shape {}; insert `flatten` before it",
                    show(x)
                ),
            );
            return Some(vec![self.out.value]);
        }
        let width = *x.last().expect("an input shape has an axis");
        if let Some(declared) = self.declared_in {
            if declared.value != width {
                cx.error(
                    declared.span,
                    format!(
                        "declared `in = {}`, but the input of this layer has width {width}",
                        declared.value
                    ),
                );
            }
        }
        Some(match x.len() {
            2 => vec![x[0], self.out.value],
            _ => vec![self.out.value],
        })
    }

    fn param_count(&self, inputs: &[&Shape]) -> usize {
        let width = *inputs[0].last().expect("an input shape has an axis");
        self.out.value * width + if self.bias { self.out.value } else { 0 }
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<DenseStep> {
        let (i, x, field) = (node.index, node.input(), node.field);
        let shape = pl.shape(x);
        let (n_in, n_out) = (*shape.last().expect("an input shape has an axis"), self.out.value);
        let positions = if shape.len() == 2 { shape[0] } else { 1 };
        let (act, result) = pl.fuse_activation(node);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} output"), positions * n_out);
        let delta = pl.alloc(i, Stored::OfPrecision, format!("{field} delta"), positions * n_out);
        pl.storage[result.0] = Some(Buf::Arena(output));
        pl.grad[result.0] = Some(delta);
        let group = pl.group(field);
        let bound = 1.0 / (n_in as f32).sqrt();
        let weight_init = match self.zero_weight {
            true => Init::Constant(0.0),
            false => Init::Uniform { bound },
        };
        let weight = pl.param(format!("{field}.weight"), vec![n_out, n_in], weight_init);
        let bias = self.bias.then(|| pl.param(format!("{field}.bias"), vec![n_out], Init::Uniform { bound }));
        let layer = PositionalLayer::new(positions, n_in, n_out);
        let strategy = Planner::strategy(self.norms, &layer);
        let kept_len = n_in * n_out + if self.bias { n_out } else { 0 };
        let kept = pl.kept_gradients(i, field, strategy, positions, kept_len);
        // On a vector the ghost norm is the Goodfellow identity, which needs no slot; kept gradients
        // need neither norm slots nor the clipping scratch.
        if kept.is_none() {
            if strategy == Strategy::Direct || positions > 1 {
                pl.need(SharedScratch::Norms, i, scratch_len(strategy, &layer));
            }
            pl.need_clip_scratch(i, positions * (n_in + n_out));
        }
        let input = pl.storage_of(x);
        let input_grad = pl.target(node, x);
        // The forward GEMM, the weight-gradient GEMM (or the weighted sum of the kept gradients), the
        // input-gradient GEMM when something upstream is trained, the norms and the bias + activation
        // pass.
        let mac = 2 * (positions * n_in * n_out) as u64;
        let gemms = 1 + u64::from(kept.is_none()) + u64::from(input_grad.is_some());
        let clipped_sum = if kept.is_some() { kept_sum_flops(kept_len) } else { 0 };
        let norm_flops = match (strategy, positions) {
            (Strategy::Ghost, 1) => 2 * (n_in + n_out) as u64,
            _ => norm_flops(strategy, positions, n_in, n_out),
        };
        let epilogue = 2 * (positions * n_out) as u64;
        pl.cost(i, gemms * mac + clipped_sum + norm_flops + epilogue, Some(NormStrategy::from(strategy)));
        Some(DenseStep {
            group,
            input,
            output,
            delta,
            positions,
            inputs: n_in,
            outputs: n_out,
            act,
            weight,
            bias,
            input_grad,
            strategy,
            kept,
        })
    }
}
