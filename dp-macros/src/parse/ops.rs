//! Gives meaning to an op or a loss: its name picks the kind, its arguments become typed attributes.

use super::ast::{ActivationKind, LinearAttrs, LossDef, LossKind, OpDef, OpKind};
use super::conv;
use super::syntax::{OpSyntax, ValueSyntax};
use super::values::{arguments, boolean, did_you_mean, positive_int};
use crate::ctxt::Ctxt;

/// Every layer name `#[layer(...)]` accepts.
pub const KNOWN_LAYERS: [&str; 11] = [
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "flatten",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "group_norm",
    "layer_norm",
];

/// Every loss name `loss = ...` accepts.
pub const KNOWN_LOSSES: [&str; 3] = ["cross_entropy", "binary_cross_entropy", "mse"];

/// The layer kind (a field's type) an op name stands for, and whether that op has parameters; `None`
/// for names that are not layers.
pub fn layer_kind(name: &str) -> Option<(&'static str, bool)> {
    match name {
        "linear" => Some(("Linear", true)),
        "relu" => Some(("Relu", false)),
        "tanh" => Some(("Tanh", false)),
        "sigmoid" => Some(("Sigmoid", false)),
        "flatten" => Some(("Flatten", false)),
        "conv2d" => Some(("Conv2d", true)),
        "max_pool2d" => Some(("MaxPool2d", false)),
        "avg_pool2d" => Some(("AvgPool2d", false)),
        "global_avg_pool" => Some(("GlobalAvgPool", false)),
        "group_norm" => Some(("GroupNorm", true)),
        "layer_norm" => Some(("LayerNorm", true)),
        _ => None,
    }
}

/// One op of a `#[layer(...)]` chain; `None` after reporting an error.
pub fn op_def(cx: &mut Ctxt, op: &OpSyntax) -> Option<OpDef> {
    let name = op.name.to_string();
    let kind = match name.as_str() {
        "linear" => {
            let [out, declared_in, bias, norms] = arguments(cx, op, ["out", "in", "bias", "norms"]);
            let norms = norms.map(|a| conv::norm_choice(cx, &a.value).ok_or(())).transpose();
            let declared_in = declared_in.map(|a| positive_int(cx, "in", &a.value));
            let bias = bias.map(|a| boolean(cx, "bias", &a.value));
            let out = match out {
                Some(a) => positive_int(cx, "out", &a.value),
                None => {
                    cx.error(op.span(), "`linear` needs its output width: write `linear(out = N)`");
                    None
                }
            };
            OpKind::Linear(LinearAttrs {
                out: out?,
                declared_in: declared_in.map(|d| d.ok_or(())).transpose().ok()?,
                bias: bias.map(|b| b.ok_or(())).transpose().ok()?.unwrap_or(true),
                norms: norms.ok()?,
            })
        }
        "relu" | "tanh" | "sigmoid" | "flatten" => {
            let [] = arguments(cx, op, []);
            match name.as_str() {
                "relu" => OpKind::Activation(ActivationKind::Relu),
                "tanh" => OpKind::Activation(ActivationKind::Tanh),
                "sigmoid" => OpKind::Activation(ActivationKind::Sigmoid),
                _ => OpKind::Flatten,
            }
        }
        _ if conv::is_image_op(&name) => match conv::image_op(cx, op)? {
            conv::ImageOp::Conv2d(attrs) => OpKind::Conv2d(attrs),
            conv::ImageOp::Pool2d(attrs) => OpKind::Pool2d(attrs),
            conv::ImageOp::GlobalAvgPool => OpKind::GlobalAvgPool,
            conv::ImageOp::Norm(attrs) => OpKind::Norm(attrs),
        },
        _ if name.starts_with("batch_norm") || name.starts_with("batchnorm") => {
            cx.error(
                op.span(),
                format!(
                    "`{name}` mixes the examples of a batch (it normalises with batch statistics), which \
                     breaks the per-example privacy guarantee of DP-SGD; use `group_norm` instead"
                ),
            );
            return None;
        }
        _ => {
            cx.error(
                op.span(),
                format!(
                    "unknown layer `{name}`{}; known layers: {}",
                    did_you_mean(&name, &KNOWN_LAYERS)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default(),
                    KNOWN_LAYERS.join(", ")
                ),
            );
            return None;
        }
    };
    Some(OpDef { kind, span: op.span(), text: op.text() })
}

/// The value of `loss = ...`; `None` after reporting an error.
pub fn loss_def(cx: &mut Ctxt, value: &ValueSyntax) -> Option<LossDef> {
    let ValueSyntax::Call(op) = value else {
        cx.error(
            value.span(),
            format!("`loss` expects a loss such as `cross_entropy(classes = 10)`, found `{}`", value.text()),
        );
        return None;
    };
    let name = op.name.to_string();
    let kind = match name.as_str() {
        "cross_entropy" => {
            let [classes] = arguments(cx, op, ["classes"]);
            let Some(classes) = classes else {
                cx.error(
                    op.span(),
                    "`cross_entropy` needs its class count: write `cross_entropy(classes = K)`",
                );
                return None;
            };
            LossKind::CrossEntropy { classes: positive_int(cx, "classes", &classes.value)? }
        }
        "binary_cross_entropy" => {
            let [] = arguments(cx, op, []);
            LossKind::BinaryCrossEntropy
        }
        "mse" => {
            let [] = arguments(cx, op, []);
            LossKind::MeanSquaredError
        }
        _ => {
            cx.error(
                op.span(),
                format!(
                    "unknown loss `{name}`{}; known losses: {}",
                    did_you_mean(&name, &KNOWN_LOSSES)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default(),
                    KNOWN_LOSSES.join(", ")
                ),
            );
            return None;
        }
    };
    Some(LossDef { kind, span: op.span() })
}
