//! The image ops: `conv2d`, `max_pool2d`, `avg_pool2d`, `global_avg_pool`, `group_norm`, `layer_norm`,
//! and the `norms = ghost | direct` argument that forces a parameterised layer's norm strategy.

use super::ast::Spanned;
use super::syntax::{ArgSyntax, OpSyntax, ValueSyntax};
use super::values::{arguments, boolean, positive_int};
use crate::ctxt::Ctxt;
use syn::Lit;

/// A norm strategy forced by `norms = ghost | direct` (otherwise the planner chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormChoice {
    Ghost,
    Direct,
}

/// `conv2d(out, kernel, stride = 1, padding = 0, dilation = 1, groups = 1, bias = true, norms = ..)`.
/// Defaulted arguments carry the span of the op's name.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dAttrs {
    pub out: Spanned<usize>,
    pub kernel: Spanned<usize>,
    pub stride: Spanned<usize>,
    pub padding: Spanned<usize>,
    pub dilation: Spanned<usize>,
    pub groups: Spanned<usize>,
    pub bias: bool,
    pub norms: Option<NormChoice>,
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// `max_pool2d(kernel, stride = kernel, padding = 0)` and `avg_pool2d(...)`.
#[derive(Debug, Clone, Copy)]
pub struct Pool2dAttrs {
    pub kind: PoolKind,
    pub kernel: Spanned<usize>,
    pub stride: Spanned<usize>,
    pub padding: Spanned<usize>,
}

/// `group_norm(groups, eps = 1e-5)`, or `layer_norm(eps = 1e-5)` (`groups: None`).
#[derive(Debug, Clone, Copy)]
pub struct NormLayerAttrs {
    pub groups: Option<Spanned<usize>>,
}

/// Whether `name` is one of the ops of this module.
pub fn is_image_op(name: &str) -> bool {
    matches!(name, "conv2d" | "max_pool2d" | "avg_pool2d" | "global_avg_pool" | "group_norm" | "layer_norm")
}

/// The parsed op, `None` after reporting an error.
pub enum ImageOp {
    Conv2d(Conv2dAttrs),
    Pool2d(Pool2dAttrs),
    GlobalAvgPool,
    Norm(NormLayerAttrs),
}

/// Parses one of the ops named by [`is_image_op`].
pub fn image_op(cx: &mut Ctxt, op: &OpSyntax) -> Option<ImageOp> {
    let name = op.name.to_string();
    let here = op.span();
    let default = |value: usize| Spanned { value, span: here };
    match name.as_str() {
        "conv2d" => {
            let [out, kernel, stride, padding, dilation, groups, bias, norms] = arguments(
                cx,
                op,
                ["out", "kernel", "stride", "padding", "dilation", "groups", "bias", "norms"],
            );
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
            Some(ImageOp::Conv2d(Conv2dAttrs {
                out: out?,
                kernel: kernel?,
                stride: stride?,
                padding: padding?,
                dilation: dilation?,
                groups: groups?,
                bias: bias?,
                norms,
            }))
        }
        "max_pool2d" | "avg_pool2d" => {
            let [kernel, stride, padding] = arguments(cx, op, ["kernel", "stride", "padding"]);
            let example = format!("{name}(kernel = 2)");
            let kernel = required(cx, op, kernel, "kernel", &example)?;
            let stride = optional(cx, stride, kernel, positive_int)?;
            let padding = optional(cx, padding, default(0), non_negative_int)?;
            let kind = if name == "max_pool2d" { PoolKind::Max } else { PoolKind::Avg };
            Some(ImageOp::Pool2d(Pool2dAttrs { kind, kernel, stride, padding }))
        }
        "global_avg_pool" => {
            let [] = arguments(cx, op, []);
            Some(ImageOp::GlobalAvgPool)
        }
        "group_norm" => {
            let [groups, eps] = arguments(cx, op, ["groups", "eps"]);
            let groups = required(cx, op, groups, "groups", "group_norm(groups = 4)");
            let eps = eps.map_or(Some(()), |a| pytorch_eps(cx, &a.value));
            eps?;
            Some(ImageOp::Norm(NormLayerAttrs { groups: Some(groups?) }))
        }
        _ => {
            let [eps] = arguments(cx, op, ["eps"]);
            eps.map_or(Some(()), |a| pytorch_eps(cx, &a.value))?;
            Some(ImageOp::Norm(NormLayerAttrs { groups: None }))
        }
    }
}

/// `norms = ghost | direct`, also used by `linear`.
pub fn norm_choice(cx: &mut Ctxt, value: &ValueSyntax) -> Option<NormChoice> {
    if let ValueSyntax::Call(op) = value {
        if op.args.is_empty() {
            match op.name.to_string().as_str() {
                "ghost" => return Some(NormChoice::Ghost),
                "direct" => return Some(NormChoice::Direct),
                _ => {}
            }
        }
    }
    cx.error(value.span(), format!("`norms` expects `ghost` or `direct`, found `{}`", value.text()));
    None
}

fn required(
    cx: &mut Ctxt,
    op: &OpSyntax,
    arg: Option<&ArgSyntax>,
    key: &str,
    example: &str,
) -> Option<Spanned<usize>> {
    match arg {
        Some(a) => positive_int(cx, key, &a.value),
        None => {
            cx.error(op.span(), format!("`{}` needs `{key}`: write e.g. `{example}`", op.name));
            None
        }
    }
}

fn optional(
    cx: &mut Ctxt,
    arg: Option<&ArgSyntax>,
    default: Spanned<usize>,
    read: fn(&mut Ctxt, &str, &ValueSyntax) -> Option<Spanned<usize>>,
) -> Option<Spanned<usize>> {
    match arg {
        Some(a) => read(cx, &a.key.to_string(), &a.value),
        None => Some(default),
    }
}

/// An integer that may be 0 (padding).
fn non_negative_int(cx: &mut Ctxt, key: &str, value: &ValueSyntax) -> Option<Spanned<usize>> {
    if let ValueSyntax::Lit(Lit::Int(int)) = value {
        if let Ok(v) = int.base10_parse::<usize>() {
            return Some(Spanned { value: v, span: value.span() });
        }
    }
    cx.error(
        value.span(),
        format!("`{key}` expects a non-negative integer literal, found `{}`", value.text()),
    );
    None
}

/// The kernels normalise with PyTorch's ε = 1e-5; `eps` may be written, but only with that value.
fn pytorch_eps(cx: &mut Ctxt, value: &ValueSyntax) -> Option<()> {
    let parsed = match value {
        ValueSyntax::Lit(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
        _ => None,
    };
    if parsed == Some(1e-5) {
        return Some(());
    }
    cx.error(
        value.span(),
        format!(
            "`eps` must be 1e-5 (PyTorch's default, which the normalisation kernels use), found `{}`",
            value.text()
        ),
    );
    None
}
