//! `conv2d(out, kernel, stride = 1, padding = 0, dilation = 1, groups = 1, bias = true, norms = ..)`
//! over `[C, H, W]`, with the activation after it fused into its output pass.
//!
//! A conv keeps its output and its output gradient δ (NCHW) per example; its patches (im2col) and δ
//! regrouped as the per-example `Δ` are re-derived into shared scratch whenever a pass needs them
//! (patches: forward, norms, clipped sum, and the backward's patch gradients; `Δ`: the clipped sum,
//! which scales it, and for a grouped conv the norms too — an ungrouped conv's read-only passes read
//! δ in place), so they cost the arena only once, at the largest layer, and the clipped sum never
//! consumes a buffer another pass reads. A direct conv keeps the per-example gradients its norm forms
//! (weight and bias, when they fit the planner's cap): its clipped sum is then their weighted sum,
//! with no patches and no product.

use super::activation::function::Act;
use super::rules::OpRules;
use crate::args::{
    arguments, boolean, non_negative_int, norm_choice, optional, positive_int, required, NormChoice,
};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::params::Init;
use crate::plan::planner::{Planner, SharedScratch};
use crate::shape::{image, Shape};
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::cost::{kept_sum_flops, norm_flops, scratch_len};
use dp_spec::{Conv2dGeometry, NormStrategy, PositionalLayer, Strategy};

/// `conv2d(...)`. Defaulted arguments carry the span of the op's name.
#[derive(Debug, Clone, Copy)]
pub struct Conv2d {
    pub out: Spanned<usize>,
    pub kernel: Spanned<usize>,
    pub stride: Spanned<usize>,
    pub padding: Spanned<usize>,
    pub dilation: Spanned<usize>,
    pub groups: Spanned<usize>,
    pub bias: bool,
    pub norms: Option<NormChoice>,
}

/// A convolution with its fused activation.
#[derive(Debug, Clone)]
pub struct ConvStep {
    pub group: usize,
    pub geom: Conv2dGeometry,
    pub input: Buf,
    pub output: usize,
    /// The output gradient, NCHW; δ of the pre-activation after the backward.
    pub delta: usize,
    pub act: Act,
    pub weight: usize,
    pub bias: Option<usize>,
    pub input_grad: Option<GradTarget>,
    pub strategy: Strategy,
    /// The per-example gradients `[B][weight, bias]` kept by the direct norm for the clipped sum.
    pub kept: Option<usize>,
}

impl OpRules for Conv2d {
    type Step = ConvStep;
    const NAMES: &'static [&'static str] = &["conv2d"];

    fn field_type(_: &str) -> &'static str {
        "Conv2d"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let default = |value: usize| Spanned { value, span: op.span() };
        let [out, kernel, stride, padding, dilation, groups, bias, norms] =
            arguments(cx, op, ["out", "kernel", "stride", "padding", "dilation", "groups", "bias", "norms"]);
        let out = required(cx, op, out, "out", "conv2d(out = 16, kernel = 3)");
        let kernel = required(cx, op, kernel, "kernel", "conv2d(out = 16, kernel = 3)");
        let stride = optional(cx, stride, default(1), positive_int);
        let padding = optional(cx, padding, default(0), non_negative_int);
        let dilation = optional(cx, dilation, default(1), positive_int);
        let groups = optional(cx, groups, default(1), positive_int);
        let bias = match bias {
            Some(a) => boolean(cx, "bias", &a.value),
            None => Some(true),
        };
        let norms = match norms {
            Some(a) => Some(norm_choice(cx, &a.value)?),
            None => None,
        };
        Some(Conv2d {
            out: out?,
            kernel: kernel?,
            stride: stride?,
            padding: padding?,
            dilation: dilation?,
            groups: groups?,
            bias: bias?,
            norms,
        })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let [c, h, w] = image(cx, node.span, "conv2d", inputs[0])?;
        let groups = self.groups.value;
        let mut ok = true;
        if !c.is_multiple_of(groups) || !self.out.value.is_multiple_of(groups) {
            cx.error(
                self.groups.span,
                format!(
                    "`groups = {groups}` must divide the input channels ({c}) and the output channels ({})",
                    self.out.value
                ),
            );
            ok = false;
        }
        let spanned = self.dilation.value * (self.kernel.value - 1) + 1;
        let (ph, pw) = (h + 2 * self.padding.value, w + 2 * self.padding.value);
        if spanned > ph || spanned > pw {
            let dilated = if self.dilation.value > 1 {
                format!(" (dilation {} makes it span {spanned})", self.dilation.value)
            } else {
                String::new()
            };
            cx.error(
                self.kernel.span,
                format!(
                    "conv2d kernel {}{dilated} is larger than its input: {}x{} with padding {} is {ph}x{pw}",
                    self.kernel.value, h, w, self.padding.value
                ),
            );
            ok = false;
        }
        ok.then(|| {
            let (oh, ow) = ((ph - spanned) / self.stride.value + 1, (pw - spanned) / self.stride.value + 1);
            vec![self.out.value, oh, ow]
        })
    }

    fn param_count(&self, inputs: &[&Shape]) -> usize {
        let (out, k) = (self.out.value, self.kernel.value);
        out * (inputs[0][0] / self.groups.value) * k * k + if self.bias { out } else { 0 }
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<ConvStep> {
        let (i, x, field) = (node.index, node.input(), node.field);
        let in_shape = pl.shape(x);
        let geom = Conv2dGeometry {
            in_c: in_shape[0],
            in_h: in_shape[1],
            in_w: in_shape[2],
            out_c: self.out.value,
            kh: self.kernel.value,
            kw: self.kernel.value,
            stride: self.stride.value,
            padding: self.padding.value,
            dilation: self.dilation.value,
            groups: self.groups.value,
        };
        debug_assert_eq!(pl.shape(node.output), &[geom.out_c, geom.out_h(), geom.out_w()]);
        let (t, d, p) = (geom.positions(), geom.patch_len(), geom.out_per_group());
        let (act, result) = pl.fuse_activation(node);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} output"), geom.output_len());
        let delta = pl.alloc(i, Stored::OfPrecision, format!("{field} delta"), geom.output_len());
        pl.storage[result.0] = Some(Buf::Arena(output));
        pl.grad[result.0] = Some(delta);
        let group = pl.group(field);
        let bound = 1.0 / (d as f32).sqrt();
        let weight_shape = vec![geom.out_c, geom.in_c / geom.groups, geom.kh, geom.kw];
        let weight = pl.param(format!("{field}.weight"), weight_shape, Init::Uniform { bound });
        let bias =
            self.bias.then(|| pl.param(format!("{field}.bias"), vec![geom.out_c], Init::Uniform { bound }));
        let strategy = Planner::strategy(self.norms, &PositionalLayer::new(t, d, p));
        let kept_len = geom.weight_len() + if self.bias { geom.out_c } else { 0 };
        let kept = pl.kept_gradients(i, field, strategy, t, kept_len);
        pl.need(SharedScratch::Patches, i, geom.patches_len());
        if geom.folds() {
            // Only a folded conv's passes lay out a chunk's outputs or output gradients as rows.
            pl.need(SharedScratch::Rows, i, geom.output_len());
        }
        if kept.is_none() {
            pl.need(SharedScratch::Norms, i, scratch_len(strategy, &geom.layer()));
        }
        let input = pl.storage_of(x);
        let input_grad = pl.target(node, x);
        // Forward, weight gradient (unless the clipped sum is the weighted sum of the kept gradients)
        // and (when something upstream is trained) input gradient products, then the norms of every
        // group and the bias.
        let product = 2 * (t * geom.out_c * d) as u64;
        let products = 1 + u64::from(kept.is_none()) + u64::from(input_grad.is_some());
        let clipped_sum = if kept.is_some() { kept_sum_flops(kept_len) } else { 0 };
        let norms = geom.groups as u64 * norm_flops(strategy, t, d, p)
            + if self.bias { geom.output_len() as u64 } else { 0 };
        pl.cost(i, products * product + clipped_sum + norms, Some(NormStrategy::from(strategy)));
        Some(ConvStep { group, geom, input, output, delta, act, weight, bias, input_grad, strategy, kept })
    }
}
