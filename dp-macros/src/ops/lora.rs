//! `lora(rank = r, alpha = a)`, an argument of `linear`: the layer's weight and bias are frozen and two
//! trained adapters are added beside them (PEFT's LoRA): A `[r, in]` (initialised like a linear
//! layer's weight) and B `[out, r]` (zero, so training starts from the base layer), with
//! `y = W x + b + (alpha/r) · B A x`.
//!
//! The layer is lowered to existing ops ([`crate::ir::lower`]): the frozen base `linear`, the adapters
//! as two bias-free `linear`s named `<layer>.lora_A` and `<layer>.lora_B` (so their parameters are
//! `<layer>.lora_A.weight` and `<layer>.lora_B.weight`, each its own parameter group with the planner's
//! norms, ghost or direct, on vectors and position-wise on sequences), and a [`LoraSum`] that adds the
//! scaled adapter path to the base.

use super::activation::function::Act;
use super::rules::OpRules;
use crate::args::{arguments, positive_int};
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::memory::{Buf, GradTarget, Stored};
use crate::plan::planner::Planner;
use crate::shape::{show, Shape};
use crate::syntax::{OpSyntax, Spanned, ValueSyntax};
use syn::Lit;

/// The adapters of a LoRA `linear`.
#[derive(Debug, Clone, Copy)]
pub struct Lora {
    pub rank: Spanned<usize>,
    pub alpha: f64,
}

impl Lora {
    /// `alpha / rank`, the factor of the adapter path.
    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank.value as f64) as f32
    }

    /// Reads `lora(rank = r, alpha = a)`; `None` after reporting an error.
    pub fn parse(cx: &mut Ctxt, value: &ValueSyntax) -> Option<Lora> {
        let ValueSyntax::Call(op) = value else {
            cx.error(
                value.span(),
                format!("`lora` expects `lora(rank = r, alpha = a)`, found `{}`", value.text()),
            );
            return None;
        };
        if op.name != "lora" {
            cx.error(op.span(), format!("expected `lora(rank = r, alpha = a)`, found `{}`", op.text()));
            return None;
        }
        let [rank, alpha] = arguments(cx, op, ["rank", "alpha"]);
        let rank = match rank {
            Some(a) => positive_int(cx, "rank", &a.value),
            None => {
                cx.error(op.span(), "`lora` needs its rank: write `lora(rank = 8, alpha = 16)`");
                None
            }
        };
        // PEFT's default alpha is 8.
        let alpha = alpha.map_or(Some(8.0), |a| positive_number(cx, "alpha", &a.value));
        Some(Lora { rank: rank?, alpha: alpha? })
    }
}

/// A positive, finite number written as an integer or a float literal.
fn positive_number(cx: &mut Ctxt, key: &str, value: &ValueSyntax) -> Option<f64> {
    let parsed = match value {
        ValueSyntax::Lit(Lit::Int(i)) => i.base10_parse::<f64>().ok(),
        ValueSyntax::Lit(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(v) if v > 0.0 && v.is_finite() => Some(v),
        _ => {
            cx.error(value.span(), format!("`{key}` expects a positive number, found `{}`", value.text()));
            None
        }
    }
}

/// `base + scale · adapter`: the output of a LoRA `linear`, with the activation after it fused.
#[derive(Debug, Clone, Copy)]
pub struct LoraSum {
    pub scale: f32,
}

/// `act(base + scale · adapter)`.
#[derive(Debug, Clone)]
pub struct LoraSumStep {
    /// The layer (its field), which names its tensors: `<layer>.weight`, `<layer>.lora_A.weight`, ...
    pub layer: String,
    /// The base layer's output and the adapter path's (B A x).
    pub inputs: [Buf; 2],
    pub output: usize,
    pub len: usize,
    pub scale: f32,
    pub act: Act,
    pub grad: Option<usize>,
    /// The base's gradient (δ) and the adapter path's (scale · δ).
    pub targets: [Option<GradTarget>; 2],
}

impl OpRules for LoraSum {
    type Step = LoraSumStep;
    /// Made by lowering `linear(..., lora(...))`, never written.
    const NAMES: &'static [&'static str] = &[];

    fn field_type(_: &str) -> &'static str {
        "Linear"
    }

    fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Self> {
        cx.error(op.span(), "the sum of a LoRA layer is not written; use `linear(out = N, lora(rank = r))`");
        None
    }

    fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
        let (base, adapter) = (inputs[0], inputs[1]);
        if base != adapter {
            // Unreachable by construction (both are `out` wide at the same positions); said, not assumed.
            cx.error(
                node.span,
                format!(
                    "LoRA adapter output {} does not match the base layer's {}",
                    show(adapter),
                    show(base)
                ),
            );
            return None;
        }
        Some(base.clone())
    }

    fn param_count(&self, _: &[&Shape]) -> usize {
        0
    }

    fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<LoraSumStep> {
        let (i, field) = (node.index, node.field);
        let len = pl.width(node.output);
        let (act, result) = pl.fuse_activation(node);
        let output = pl.alloc(i, Stored::OfPrecision, format!("{field} output"), len);
        pl.storage[result.0] = Some(Buf::Arena(output));
        let grad = pl.grad_buffer(i, node.output, format!("{field} output gradient"));
        pl.grad[result.0] = grad;
        let (base, adapter) = (node.inputs[0], node.inputs[1]);
        let inputs = [pl.storage_of(base), pl.storage_of(adapter)];
        let targets = [pl.target(node, base), pl.target(node, adapter)];
        pl.cost(i, 4 * len as u64, None);
        let layer = field.to_string();
        Some(LoraSumStep { layer, inputs, output, len, scale: self.scale, act, grad, targets })
    }
}
