//! Shapes of the image ops (`conv2d`, pooling, `global_avg_pool`, group/layer norm) and of the residual
//! `+`, each error on the span of the argument that makes the geometry impossible.

use super::shapes::{show, Shape};
use crate::ctxt::Ctxt;
use crate::ir::{Node, Op};
use crate::parse::ast::{Conv2dAttrs, NormLayerAttrs, Pool2dAttrs, PoolKind};

/// The output shape of an image op or `+`; `None` when it cannot be known (after reporting why).
pub fn node_shape(cx: &mut Ctxt, node: &Node, inputs: &[&Shape]) -> Option<Shape> {
    match node.op {
        Op::Conv2d(attrs) => conv2d(cx, node, attrs, inputs[0]),
        Op::Pool2d(attrs) => pool2d(cx, node, attrs, inputs[0]),
        Op::GlobalAvgPool => {
            let [c, _, _] = image(cx, node, "global_avg_pool", inputs[0])?;
            Some(vec![c])
        }
        Op::Norm(attrs) => norm(cx, node, attrs, inputs[0]),
        Op::Add => {
            let (a, b) = (inputs[0], inputs[1]);
            if a != b {
                cx.error(
                    node.span,
                    format!(
                        "`+` adds values of one shape, but the left side is {} and the right side {}",
                        show(a),
                        show(b)
                    ),
                );
                return None;
            }
            Some(a.clone())
        }
        _ => unreachable!("not an image op"),
    }
}

/// Trainable parameters of an image op.
pub fn param_count(node: &Node, input: &Shape) -> usize {
    match node.op {
        Op::Conv2d(a) => {
            let (out, k) = (a.out.value, a.kernel.value);
            out * (input[0] / a.groups.value) * k * k + if a.bias { out } else { 0 }
        }
        Op::Norm(_) => 2 * affine_width(input),
        _ => 0,
    }
}

/// The width of a norm layer's affine weight (and bias): the channels of an image or a vector, the
/// last axis of a sequence `[T, D]`.
pub fn affine_width(input: &Shape) -> usize {
    match input.len() {
        2 => input[1],
        _ => input[0],
    }
}

fn image(cx: &mut Ctxt, node: &Node, op: &str, x: &Shape) -> Option<[usize; 3]> {
    match x.as_slice() {
        &[c, h, w] => Some([c, h, w]),
        _ => {
            cx.error(
                node.span,
                format!("`{op}` takes an image [C, H, W] per example, but its input has shape {}", show(x)),
            );
            None
        }
    }
}

fn conv2d(cx: &mut Ctxt, node: &Node, a: Conv2dAttrs, x: &Shape) -> Option<Shape> {
    let [c, h, w] = image(cx, node, "conv2d", x)?;
    let groups = a.groups.value;
    let mut ok = true;
    if c % groups != 0 || a.out.value % groups != 0 {
        cx.error(
            a.groups.span,
            format!(
                "`groups = {groups}` must divide the input channels ({c}) and the output channels ({})",
                a.out.value
            ),
        );
        ok = false;
    }
    let spanned = a.dilation.value * (a.kernel.value - 1) + 1;
    let (ph, pw) = (h + 2 * a.padding.value, w + 2 * a.padding.value);
    if spanned > ph || spanned > pw {
        let dilated = if a.dilation.value > 1 {
            format!(" (dilation {} makes it span {spanned})", a.dilation.value)
        } else {
            String::new()
        };
        cx.error(
            a.kernel.span,
            format!(
                "conv2d kernel {}{dilated} is larger than its input: {}x{} with padding {} is {ph}x{pw}",
                a.kernel.value, h, w, a.padding.value
            ),
        );
        ok = false;
    }
    ok.then(|| {
        let (oh, ow) = ((ph - spanned) / a.stride.value + 1, (pw - spanned) / a.stride.value + 1);
        vec![a.out.value, oh, ow]
    })
}

fn pool2d(cx: &mut Ctxt, node: &Node, a: Pool2dAttrs, x: &Shape) -> Option<Shape> {
    let name = match a.kind {
        PoolKind::Max => "max_pool2d",
        PoolKind::Avg => "avg_pool2d",
    };
    let [c, h, w] = image(cx, node, name, x)?;
    let (k, p) = (a.kernel.value, a.padding.value);
    if 2 * p > k {
        cx.error(
            a.padding.span,
            format!("{name} padding {p} is more than half the kernel {k} (PyTorch's limit)"),
        );
        return None;
    }
    let (ph, pw) = (h + 2 * p, w + 2 * p);
    if k > ph || k > pw {
        cx.error(
            a.kernel.span,
            format!("{name} kernel {k} is larger than its input: {h}x{w} with padding {p} is {ph}x{pw}"),
        );
        return None;
    }
    Some(vec![c, (ph - k) / a.stride.value + 1, (pw - k) / a.stride.value + 1])
}

fn norm(cx: &mut Ctxt, node: &Node, a: NormLayerAttrs, x: &Shape) -> Option<Shape> {
    match a.groups {
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
            if x[0] % groups.value != 0 {
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
