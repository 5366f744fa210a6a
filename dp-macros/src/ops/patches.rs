//! `patches(size = P)`: an image `[C, H, W]` to the sequence of its `P×P` patches
//! `[(H/P)·(W/P), C·P·P]` (a vision transformer's tokens; `dp_kernels::patches` for the order). No
//! parameters; a position-wise `linear` after it is torchvision ViT's `conv_proj`.

use super::rules::OpRules;
use crate::args::{arguments, required};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::{OpSyntax, Spanned};

/// `patches(size = P)`.
#[derive(Debug, Clone, Copy)]
pub struct Patches {
    pub size: Spanned<usize>,
}

/// The patching of one image.
#[derive(Debug, Clone)]
pub struct PatchesStep {
    /// `[C, H, W]` and P.
    pub dims: [usize; 4],
    pub input: Buf,
    pub output: usize,
    /// The output's gradient and where the input's goes, when something upstream is trained.
    pub grads: Option<(usize, GradTarget)>,
}

impl OpRules for Patches {
    type Step = PatchesStep;
    const NAMES: &'static [&'static str] = &["patches"];

    fn field_type(_: &str) -> &'static str {
        "Patches"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        let [size] = arguments(cx, op, ["size"]);
        Some(Patches { size: required(cx, op, size, "size", "patches(size = 4)")? })
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        let p = self.size.value;
        if x.len() != 3 {
            cx.error(
                node.span,
                format!(
                    "`patches` cuts an image [C, H, W] into patches, but its input has shape {}",
                    show(x)
                ),
            );
            return None;
        }
        if !x[1].is_multiple_of(p) || !x[2].is_multiple_of(p) {
            cx.error(
                self.size.span,
                format!("`size = {p}` must divide the height and width of the image {}", show(x)),
            );
            return None;
        }
        Some(vec![(x[1] / p) * (x[2] / p), x[0] * p * p])
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<PatchesStep> {
        let (i, x, out, field) = (node.index, node.input(), node.output, node.field);
        let shape = pl.shape(x);
        let dims = [shape[0], shape[1], shape[2], self.size.value];
        let len = pl.width(x);
        let input = pl.storage_of(x);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} patches"), len);
        pl.storage[out.0] = Some(Buf::Arena(output));
        let out_grad = pl.grad_buffer(i, out, format!("{field} patches gradient"));
        pl.grad[out.0] = out_grad;
        let target = pl.target(node, x);
        pl.cost(i, 0, None);
        Some(PatchesStep { dims, input, output, grads: out_grad.zip(target) })
    }
}
