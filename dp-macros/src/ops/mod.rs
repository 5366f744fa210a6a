//! The ops, one module each: its arguments, shape rule, parameter count, plan step and cost, behind
//! [`OpRules`]. The [`ops!`] table below is the one list of them; it generates the IR's [`Op`], the
//! planned [`Step`], the parameterised steps' [`Layer`] and the dispatch of every rule, so that every
//! match over ops is exhaustive and static (adding an op without a rule, or a parameterised op without
//! norms in a backend, does not compile).
//!
//! Emission is not here: a backend (`codegen::backend::Backend`) emits each `Step`.

pub mod activation;
pub mod add;
pub mod attention;
pub mod conv2d;
pub mod embedding;
pub mod flatten;
pub mod global_avg_pool;
pub mod linear;
pub mod lora;
pub mod lstm;
pub mod mean;
pub mod norm_layer;
pub mod patches;
pub mod pool2d;
pub mod position_embedding;
pub mod rules;

use crate::args::did_you_mean;
use crate::ctxt::Ctxt;
use crate::ir::view::NodeView;
use crate::plan::planner::Planner;
use crate::shape::Shape;
use crate::syntax::OpSyntax;
pub use rules::OpRules;

/// `layers`: the parameterised ops (each owns a parameter group, so each step is a [`Layer`] whose
/// norms and clipped sum every backend must emit); `others`: the ops without parameters.
macro_rules! ops {
    (
        layers { $($layer:ident($layer_ty:ty),)* }
        others { $($other:ident($other_ty:ty),)* }
    ) => {
        /// An operation of the IR, with its typed arguments.
        #[derive(Debug, Clone, Copy)]
        pub enum Op {
            $($layer($layer_ty),)*
            $($other($other_ty),)*
        }

        /// One step of the planned program (the backward runs them in reverse).
        #[derive(Debug, Clone)]
        pub enum Step {
            $($layer(<$layer_ty as OpRules>::Step),)*
            $($other(<$other_ty as OpRules>::Step),)*
        }

        /// A step that owns a parameter group.
        #[derive(Debug, Clone, Copy)]
        pub enum Layer<'a> {
            $($layer(&'a <$layer_ty as OpRules>::Step),)*
        }

        impl Step {
            /// The step as a parameterised layer, if it is one.
            pub fn layer(&self) -> Option<Layer<'_>> {
                match self {
                    $(Step::$layer(s) => Some(Layer::$layer(s)),)*
                    $(Step::$other(_) => None,)*
                }
            }
        }

        impl Layer<'_> {
            /// The layer's parameter group (the column of `sq_norms` its norms fill).
            pub fn group(&self) -> usize {
                match self {
                    $(Layer::$layer(s) => s.group,)*
                }
            }
        }

        impl Op {
            /// Every layer name `#[layer(...)]` accepts.
            pub fn known_names() -> Vec<&'static str> {
                [$(<$layer_ty as OpRules>::NAMES,)* $(<$other_ty as OpRules>::NAMES,)*].concat()
            }

            /// The field type an op name stands for and whether that op has parameters; `None` for
            /// names that are not layers.
            pub fn field_type(name: &str) -> Option<(&'static str, bool)> {
                $(if <$layer_ty as OpRules>::NAMES.contains(&name) {
                    return Some((<$layer_ty as OpRules>::field_type(name), true));
                })*
                $(if <$other_ty as OpRules>::NAMES.contains(&name) {
                    return Some((<$other_ty as OpRules>::field_type(name), false));
                })*
                None
            }

            /// The op written `op`, if its name is known (`Some(None)` after reporting an error in
            /// its arguments).
            fn parse_known(cx: &mut Ctxt, op: &OpSyntax, name: &str) -> Option<Option<Op>> {
                $(if <$layer_ty as OpRules>::NAMES.contains(&name) {
                    return Some(<$layer_ty as OpRules>::parse(cx, op).map(Op::$layer));
                })*
                $(if <$other_ty as OpRules>::NAMES.contains(&name) {
                    return Some(<$other_ty as OpRules>::parse(cx, op).map(Op::$other));
                })*
                None
            }

            /// Whether the op owns trainable parameters (and therefore a parameter group).
            pub fn is_parameterised(&self) -> bool {
                match self {
                    $(Op::$layer(_) => true,)*
                    $(Op::$other(_) => false,)*
                }
            }

            /// The output shape of one example (see [`OpRules::shape`]).
            pub fn shape(&self, cx: &mut Ctxt, node: &NodeView, inputs: &[&Shape]) -> Option<Shape> {
                match self {
                    $(Op::$layer(op) => op.shape(cx, node, inputs),)*
                    $(Op::$other(op) => op.shape(cx, node, inputs),)*
                }
            }

            /// Trainable parameters (see [`OpRules::param_count`]).
            pub fn param_count(&self, inputs: &[&Shape]) -> usize {
                match self {
                    $(Op::$layer(op) => op.param_count(inputs),)*
                    $(Op::$other(op) => op.param_count(inputs),)*
                }
            }

            /// The node's plan (see [`OpRules::plan`]).
            pub fn plan(&self, pl: &mut Planner<'_>, node: &NodeView) -> Option<Step> {
                match self {
                    $(Op::$layer(op) => op.plan(pl, node).map(Step::$layer),)*
                    $(Op::$other(op) => op.plan(pl, node).map(Step::$other),)*
                }
            }
        }
    };
}

ops! {
    layers {
        Linear(linear::Linear),
        Conv2d(conv2d::Conv2d),
        Norm(norm_layer::NormLayer),
        Embedding(embedding::Embedding),
        Lstm(lstm::Lstm),
        PositionEmbedding(position_embedding::PositionEmbedding),
        Attention(attention::Attention),
    }
    others {
        Activation(activation::Activation),
        Flatten(flatten::Flatten),
        Pool2d(pool2d::Pool2d),
        GlobalAvgPool(global_avg_pool::GlobalAvgPool),
        Add(add::Add),
        Mean(mean::Mean),
        Patches(patches::Patches),
        LoraSum(lora::LoraSum),
    }
}

impl Op {
    /// One op of a `#[layer(...)]` chain; `None` after reporting an error.
    pub fn parse(cx: &mut Ctxt, op: &OpSyntax) -> Option<Op> {
        let name = op.name.to_string();
        if let Some(parsed) = Op::parse_known(cx, op, &name) {
            return parsed;
        }
        if name.starts_with("batch_norm") || name.starts_with("batchnorm") {
            cx.error(
                op.span(),
                format!(
                    "`{name}` mixes the examples of a batch (it normalises with batch statistics), which \
                     breaks the per-example privacy guarantee of DP-SGD; use `group_norm` instead"
                ),
            );
            return None;
        }
        let known = Op::known_names();
        cx.error(
            op.span(),
            format!(
                "unknown layer `{name}`{}; known layers: {}",
                did_you_mean(&name, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default(),
                known.join(", ")
            ),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_one_op_with_a_field_type() {
        let names = Op::known_names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a name in two ops: {names:?}");
        for name in &names {
            let (field_type, _) = Op::field_type(name).expect("a known name has a field type");
            assert!(field_type.chars().next().is_some_and(char::is_uppercase), "{name}: {field_type}");
        }
        assert_eq!(Op::field_type("gelu"), Some(("Gelu", false)));
        assert_eq!(Op::field_type("lstm"), Some(("Lstm", true)));
        assert_eq!(Op::field_type("batch_norm"), None);
    }
}
