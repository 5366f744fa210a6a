//! The loss a model is compiled with: `loss = cross_entropy(classes = K)`, `binary_cross_entropy` or
//! `mse`.

use super::ast::{LossDef, LossKind};
use crate::args::{arguments, did_you_mean, positive_int};
use crate::ctxt::Ctxt;
use crate::syntax::ValueSyntax;

/// Every loss name `loss = ...` accepts.
pub const KNOWN_LOSSES: [&str; 3] = ["cross_entropy", "binary_cross_entropy", "mse"];

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
