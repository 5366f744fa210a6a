//! `max_pool2d(kernel, stride = kernel, padding = 0)` and `avg_pool2d(...)` over `[C, H, W]`.

use super::rules::OpRules;
use crate::args::{arguments, non_negative_int, optional, positive_int, required};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::{image, Shape};
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::Pool2dGeometry;

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "max_pool2d",
            PoolKind::Avg => "avg_pool2d",
        }
    }
}

/// A pooling op.
#[derive(Debug, Clone, Copy)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub kernel: Spanned<usize>,
    pub stride: Spanned<usize>,
    pub padding: Spanned<usize>,
}

/// Max or average pooling.
#[derive(Debug, Clone)]
pub struct PoolStep {
    pub kind: PoolKind,
    pub geom: Pool2dGeometry,
    pub input: Buf,
    pub output: usize,
    /// Max pooling's argmax (`u32` in an `f32` buffer).
    pub argmax: Option<usize>,
    pub grad: Option<usize>,
    pub target: Option<GradTarget>,
}

impl OpRules for Pool2d {
    type Step = PoolStep;
    const NAMES: &'static [&'static str] = &["max_pool2d", "avg_pool2d"];

    fn field_type(name: &str) -> &'static str {
        if name == "max_pool2d" {
            "MaxPool2d"
        } else {
            "AvgPool2d"
        }
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let name = op.name.to_string();
        let [kernel, stride, padding] = arguments(cx, op, ["kernel", "stride", "padding"]);
        let example = format!("{name}(kernel = 2)");
        let kernel = required(cx, op, kernel, "kernel", &example)?;
        let stride = optional(cx, stride, kernel, positive_int)?;
        let padding = optional(cx, padding, Spanned { value: 0, span: op.span() }, non_negative_int)?;
        let kind = if name == "max_pool2d" { PoolKind::Max } else { PoolKind::Avg };
        Some(Pool2d { kind, kernel, stride, padding })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let name = self.kind.name();
        let [c, h, w] = image(cx, node.span, name, inputs[0])?;
        let (k, p) = (self.kernel.value, self.padding.value);
        if 2 * p > k {
            cx.error(
                self.padding.span,
                format!("{name} padding {p} is more than half the kernel {k} (PyTorch's limit)"),
            );
            return None;
        }
        let (ph, pw) = (h + 2 * p, w + 2 * p);
        if k > ph || k > pw {
            cx.error(
                self.kernel.span,
                format!("{name} kernel {k} is larger than its input: {h}x{w} with padding {p} is {ph}x{pw}"),
            );
            return None;
        }
        Some(vec![c, (ph - k) / self.stride.value + 1, (pw - k) / self.stride.value + 1])
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<PoolStep> {
        let (i, x, field) = (node.index, node.input(), node.field);
        let in_shape = pl.shape(x);
        let (in_len, out_len) = (pl.width(x), pl.width(node.output));
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} {}", node.text), out_len);
        let argmax = (self.kind == PoolKind::Max)
            .then(|| pl.alloc(i, Stored::F32, format!("{field} argmax"), out_len));
        pl.storage[node.output.0] = Some(Buf::Arena(output));
        let grad = pl.grad_buffer(i, node.output, format!("{field} {} gradient", node.text));
        pl.grad[node.output.0] = grad;
        let input = pl.storage_of(x);
        let target = pl.target(node, x);
        let k = self.kernel.value as u64;
        pl.cost(i, out_len as u64 * k * k + (in_len + out_len) as u64, None);
        Some(PoolStep {
            kind: self.kind,
            geom: Pool2dGeometry {
                channels: in_shape[0],
                in_h: in_shape[1],
                in_w: in_shape[2],
                kernel: self.kernel.value,
                stride: self.stride.value,
                padding: self.padding.value,
            },
            input,
            output,
            argmax,
            grad,
            target,
        })
    }
}
