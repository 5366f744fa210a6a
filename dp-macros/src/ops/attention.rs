//! `multi_head_attention(heads = H, causal = false, norms = ghost | direct)`: self-attention over a
//! sequence `[T, d] → [T, d]`, PyTorch's `nn.MultiheadAttention(d, H, batch_first=True)` called as
//! `attn(x, x, x)` (with `attn_mask` the upper triangle when `causal`).
//!
//! Parameters, one group, with PyTorch's names, layouts and initialisation: `<field>.in_proj_weight`
//! `[3d, d]` (Xavier uniform), `<field>.in_proj_bias` `[3d]` (0), `<field>.out_proj.weight` `[d, d]`
//! (U(−1/√d, 1/√d)), `<field>.out_proj.bias` `[d]` (0). Both projections are position-wise linear
//! layers (T positions each, `dp_spec::PositionalLayer`), so each gets its own norm strategy from the
//! cost model, as a position-wise `linear` does; the core between them
//! (`dp_kernels::attention`) has no parameters. The group's squared norm is the sum of the four
//! tensors'.

use super::rules::OpRules;
use crate::args::{arguments, boolean, norm_choice, required, NormChoice};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::params::Init;
use crate::plan::planner::{Planner, SharedScratch};
use crate::shape::{show, Shape};
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::cost::{norm_flops, scratch_len};
use dp_spec::{NormStrategy, PositionalLayer, Strategy};

/// `multi_head_attention(heads = H, causal = B, norms = ...)`.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub heads: Spanned<usize>,
    pub causal: bool,
    /// Overrides the planner's choice for both projections.
    pub norms: Option<NormChoice>,
}

/// One attention layer.
#[derive(Debug, Clone)]
pub struct AttentionStep {
    pub group: usize,
    pub steps: usize,
    pub dim: usize,
    pub heads: usize,
    pub causal: bool,
    pub input: Buf,
    /// `[T, 3d]`: q, k, v, and its gradient (the input projection's δ).
    pub qkv: usize,
    pub qkv_grad: usize,
    /// `[H, T, T]` attention probabilities.
    pub probs: usize,
    /// `[T, d]` the heads' context (the output projection's input) and its gradient.
    pub context: usize,
    pub context_grad: usize,
    /// `[T, d]` the output and its gradient (the output projection's δ).
    pub output: usize,
    pub output_grad: usize,
    /// `[T, T]` per example for the backward.
    pub scratch: usize,
    /// Where the input's gradient goes: a target, or a buffer that is thrown away.
    pub input_grad: Result<GradTarget, usize>,
    /// Parameter slots: in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias (consecutive).
    pub in_weight: usize,
    pub in_bias: usize,
    pub out_weight: usize,
    pub out_bias: usize,
    pub in_strategy: Strategy,
    pub out_strategy: Strategy,
}

impl OpRules for Attention {
    type Step = AttentionStep;
    const NAMES: &'static [&'static str] = &["multi_head_attention"];

    fn field_type(_: &str) -> &'static str {
        "MultiHeadAttention"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [heads, causal, norms] = arguments(cx, op, ["heads", "causal", "norms"]);
        let heads = required(cx, op, heads, "heads", "multi_head_attention(heads = 4)");
        let causal = causal.map(|a| boolean(cx, "causal", &a.value));
        let norms = norms.map(|a| norm_choice(cx, &a.value));
        Some(Attention {
            heads: heads?,
            causal: causal.map(|c| c.ok_or(())).transpose().ok()?.unwrap_or(false),
            norms: norms.map(|n| n.ok_or(())).transpose().ok()?,
        })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        if x.len() != 2 {
            cx.error(
                node.span,
                format!(
                    "`multi_head_attention` takes a sequence [T, d] per example, but its input has shape {}; \
                     use an embedding, or `linear` on patches",
                    show(x)
                ),
            );
            return None;
        }
        if !x[1].is_multiple_of(self.heads.value) {
            cx.error(
                self.heads.span,
                format!(
                    "`heads = {}` must divide the width {} of the input {}",
                    self.heads.value,
                    x[1],
                    show(x)
                ),
            );
            return None;
        }
        Some(x.clone())
    }

    fn param_count(&self, inputs: &[&Shape]) -> usize {
        let d = inputs[0][1];
        4 * d * d + 4 * d
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<AttentionStep> {
        let (i, x, out, field) = (node.index, node.input(), node.output, node.field);
        let (steps, dim, heads) = (pl.shape(x)[0], pl.shape(x)[1], self.heads.value);
        let input = pl.storage_of(x);
        let qkv = pl.alloc(i, Stored::OfPrecision, format!("{field} q, k, v"), 3 * steps * dim);
        let qkv_grad = pl.alloc(i, Stored::OfPrecision, format!("{field} q, k, v gradient"), 3 * steps * dim);
        let probs = pl.alloc(
            i,
            Stored::OfPrecision,
            format!("{field} attention probabilities"),
            heads * steps * steps,
        );
        let context = pl.alloc(i, Stored::OfPrecision, format!("{field} context"), steps * dim);
        let context_grad = pl.alloc(i, Stored::OfPrecision, format!("{field} context gradient"), steps * dim);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} output"), steps * dim);
        let output_grad = pl.alloc(i, Stored::OfPrecision, format!("{field} output gradient"), steps * dim);
        let scratch = pl.alloc(i, Stored::OfPrecision, format!("{field} score gradient"), steps * steps);
        pl.storage[out.0] = Some(Buf::Arena(output));
        pl.grad[out.0] = Some(output_grad);
        let input_grad = match pl.target(node, x) {
            Some(target) => Ok(target),
            None => {
                Err(pl.alloc(i, Stored::OfPrecision, format!("{field} input gradient (unused)"), steps * dim))
            }
        };
        let group = pl.group(field);
        // PyTorch: xavier_uniform_ on in_proj_weight, the Linear default on out_proj.weight, biases 0.
        let xavier = (6.0 / (dim + 3 * dim) as f32).sqrt();
        let in_weight =
            pl.param(format!("{field}.in_proj_weight"), vec![3 * dim, dim], Init::Uniform { bound: xavier });
        let in_bias = pl.param(format!("{field}.in_proj_bias"), vec![3 * dim], Init::Constant(0.0));
        let bound = 1.0 / (dim as f32).sqrt();
        let out_weight =
            pl.param(format!("{field}.out_proj.weight"), vec![dim, dim], Init::Uniform { bound });
        let out_bias = pl.param(format!("{field}.out_proj.bias"), vec![dim], Init::Constant(0.0));
        let (in_layer, out_layer) =
            (PositionalLayer::new(steps, dim, 3 * dim), PositionalLayer::new(steps, dim, dim));
        let in_strategy = Planner::strategy(self.norms, &in_layer);
        let out_strategy = Planner::strategy(self.norms, &out_layer);
        let slot = scratch_len(in_strategy, &in_layer).max(scratch_len(out_strategy, &out_layer));
        pl.need(SharedScratch::Norms, i, slot);
        pl.need_clip_scratch(i, steps * (dim + 3 * dim));
        let (t, d) = (steps as u64, dim as u64);
        // Each projection: forward, input-gradient and weight-gradient products; the core; the norms.
        let projections = 3 * 2 * t * (3 * d * d + d * d);
        // The core: Q·Kᵀ and P·V forward, dV, dP, dQ and dK backward, each 2·T²·d over the heads.
        let core = 12 * t * t * d;
        let norms = norm_flops(in_strategy, steps, dim, 3 * dim) + norm_flops(out_strategy, steps, dim, dim);
        let softmax = 8 * (heads * steps * steps) as u64;
        pl.cost(i, projections + core + norms + softmax, Some(NormStrategy::from(in_strategy)));
        Some(AttentionStep {
            group,
            steps,
            dim,
            heads,
            causal: self.causal,
            input,
            qkv,
            qkv_grad,
            probs,
            context,
            context_grad,
            output,
            output_grad,
            scratch,
            input_grad,
            in_weight,
            in_bias,
            out_weight,
            out_bias,
            in_strategy,
            out_strategy,
        })
    }
}
