//! `group_norm(groups, eps = 1e-5)` and `layer_norm(eps = 1e-5)`, each with an affine weight and bias
//! and the activation after it fused into its output pass.
//!
//! The per-example affine gradients are formed in the backward (2·width per example, so "direct" is
//! always the cheap strategy) and kept for the norms and the clipped sum.

use super::activation::function::Act;
use super::rules::OpRules;
use crate::args::{arguments, pytorch_eps, required};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::params::Init;
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::{OpSyntax, Spanned};
use dp_spec::NormStrategy;

/// `group_norm(groups)`, or `layer_norm` (`groups: None`).
#[derive(Debug, Clone, Copy)]
pub struct NormLayer {
    pub groups: Option<Spanned<usize>>,
}

/// The normalisation a norm layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormDims {
    /// `dp_kernels::norm_layers::GroupNormDims` (also layer norm over `[C, H, W]` or `[D]`).
    Group { channels: usize, plane: usize, groups: usize },
    /// `dp_kernels::norm_layers::LayerNormDims`: each of `rows` rows over its `dim` values.
    Layer { rows: usize, dim: usize },
}

impl NormDims {
    /// Mean/rstd values per example.
    pub fn stats_len(&self) -> usize {
        match *self {
            NormDims::Group { groups, .. } => groups,
            NormDims::Layer { rows, .. } => rows,
        }
    }
    /// Values per example.
    pub fn len(&self) -> usize {
        match *self {
            NormDims::Group { channels, plane, .. } => channels * plane,
            NormDims::Layer { rows, dim } => rows * dim,
        }
    }
    /// Width of the affine weight (and bias).
    pub fn width(&self) -> usize {
        match *self {
            NormDims::Group { channels, .. } => channels,
            NormDims::Layer { dim, .. } => dim,
        }
    }
}

/// Group norm or layer norm with its affine and a fused activation.
#[derive(Debug, Clone)]
pub struct NormStep {
    pub group: usize,
    pub dims: NormDims,
    pub input: Buf,
    pub output: usize,
    pub grad: usize,
    pub act: Act,
    pub mean: usize,
    pub rstd: usize,
    /// `[B][2·width]`: the weight gradient then the bias gradient of each example.
    pub affine: usize,
    /// Parameter slot of the weight; the bias follows it in the buffer.
    pub weight: usize,
    /// Where the input gradient goes: a target, or a buffer that is thrown away.
    pub input_grad: GradTarget,
}

/// The width of a norm layer's affine weight (and bias): the channels of an image or a vector, the
/// last axis of a sequence `[T, D]`.
fn affine_width(input: &Shape) -> usize {
    match input.len() {
        2 => input[1],
        _ => input[0],
    }
}

impl OpRules for NormLayer {
    type Step = NormStep;
    const NAMES: &'static [&'static str] = &["group_norm", "layer_norm"];

    fn field_type(name: &str) -> &'static str {
        if name == "group_norm" {
            "GroupNorm"
        } else {
            "LayerNorm"
        }
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        if op.name == "group_norm" {
            let [groups, eps] = arguments(cx, op, ["groups", "eps"]);
            let groups = required(cx, op, groups, "groups", "group_norm(groups = 4)");
            let eps = eps.map_or(Some(()), |a| pytorch_eps(cx, &a.value));
            eps?;
            Some(NormLayer { groups: Some(groups?) })
        } else {
            let [eps] = arguments(cx, op, ["eps"]);
            eps.map_or(Some(()), |a| pytorch_eps(cx, &a.value))?;
            Some(NormLayer { groups: None })
        }
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let x = inputs[0];
        match self.groups {
            Some(groups) => {
                if x.len() < 2 {
                    cx.error(
                        node.span,
                        format!(
                            "`group_norm` takes [C, H, W] (or [C, L]) per example, but its input has shape {}",
                            show(x)
                        ),
                    );
                    return None;
                }
                if !x[0].is_multiple_of(groups.value) {
                    cx.error(
                        groups.span,
                        format!("`groups = {}` must divide the {} channels of the input", groups.value, x[0]),
                    );
                    return None;
                }
            }
            None => {
                if x.is_empty() || x.len() > 3 {
                    cx.error(
                        node.span,
                        format!(
                            "`layer_norm` takes [D], [T, D] or [C, H, W] per example, but its input has shape {}",
                            show(x)
                        ),
                    );
                    return None;
                }
            }
        }
        Some(x.clone())
    }

    fn param_count(&self, inputs: &[&Shape]) -> usize {
        2 * affine_width(inputs[0])
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<NormStep> {
        let (i, x, field) = (node.index, node.input(), node.field);
        let in_shape = pl.shape(x);
        let dims = match (self.groups, in_shape.len()) {
            (Some(g), _) => NormDims::Group {
                channels: in_shape[0],
                plane: in_shape[1..].iter().product(),
                groups: g.value,
            },
            (None, 2) => NormDims::Layer { rows: in_shape[0], dim: in_shape[1] },
            (None, _) => {
                NormDims::Group { channels: in_shape[0], plane: in_shape[1..].iter().product(), groups: 1 }
            }
        };
        let len = dims.len();
        let (act, result) = pl.fuse_activation(node);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} output"), len);
        let grad = pl.alloc(i, Stored::OfPrecision, format!("{field} output gradient"), len);
        let mean = pl.alloc(i, Stored::F32, format!("{field} mean"), dims.stats_len());
        let rstd = pl.alloc(i, Stored::F32, format!("{field} rstd"), dims.stats_len());
        let affine =
            pl.alloc(i, Stored::F32, format!("{field} per-example affine gradients"), 2 * dims.width());
        pl.storage[result.0] = Some(Buf::Arena(output));
        pl.grad[result.0] = Some(grad);
        let group = pl.group(field);
        let weight = pl.param(format!("{field}.weight"), vec![dims.width()], Init::Constant(1.0));
        pl.param(format!("{field}.bias"), vec![dims.width()], Init::Constant(0.0));
        let input = pl.storage_of(x);
        let input_grad = match pl.target(node, x) {
            Some(t) => t,
            None => GradTarget {
                write: pl.alloc(i, Stored::OfPrecision, format!("{field} unused input gradient"), len),
                add_into: None,
            },
        };
        pl.cost(i, 16 * len as u64 + 4 * dims.width() as u64, Some(NormStrategy::Direct));
        Some(NormStep { group, dims, input, output, grad, act, mean, rstd, affine, weight, input_grad })
    }
}
