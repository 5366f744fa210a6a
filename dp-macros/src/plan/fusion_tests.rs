//! Unit tests of activation fusion: an activation whose derivative needs its input (GELU, SiLU, exact
//! GELU) is never fused into the layer before it, whatever that layer is; it stays a step of its own
//! whose input is the layer's kept output. The CPU's and the device's fused backwards take the
//! derivative from the output, and the device program relies on it for conv2d, norms and adds.

use crate::ops::activation::function::{Act, Derivative};
use crate::ops::Step;
use crate::plan::memory::Buf;
use proc_macro2::TokenStream;
use quote::quote;

/// conv2d → GELU, group norm → SiLU, residual add → exact GELU, layer norm → GELU, linear → SiLU.
fn model() -> (TokenStream, TokenStream) {
    (
        quote!(input = [2, 4, 4], loss = cross_entropy(classes = 2)),
        quote! {
            mod m {
                pub struct M {
                    #[layer(conv2d(out = 2, kernel = 3, padding = 1), gelu)]
                    conv: Conv2d,
                    #[layer(group_norm(groups = 2), silu)]
                    gn: GroupNorm,
                    #[layer(layer_norm, gelu)]
                    ln: LayerNorm,
                    #[layer(flatten, linear(out = 2), silu)]
                    head: Linear,
                }
                impl M {
                    fn forward(&self, x: Input) -> Output {
                        let h = self.conv(x);
                        let h = (h + self.gn(h)).gelu_exact();
                        self.head(self.ln(h))
                    }
                }
            }
        },
    )
}

/// The activation a layer step fused, if the step is one that fuses.
fn fused(step: &Step) -> Option<Act> {
    match step {
        Step::Linear(s) => Some(s.act),
        Step::Conv2d(s) => Some(s.act),
        Step::Norm(s) => Some(s.act),
        Step::Add(s) => Some(s.act),
        Step::LoraSum(s) => Some(s.act),
        Step::Activation(_)
        | Step::Flatten(_)
        | Step::Embedding(_)
        | Step::Lstm(_)
        | Step::PositionEmbedding(_)
        | Step::Attention(_)
        | Step::Pool2d(_)
        | Step::GlobalAvgPool(_)
        | Step::Mean(_)
        | Step::Patches(_) => None,
    }
}

#[test]
fn activations_from_their_input_are_steps_of_their_own_reading_the_layer_output() {
    let (args, item) = model();
    let plan = crate::plan_of(args.clone(), item.clone());
    for step in &plan.steps {
        if let Some(act) = fused(step) {
            assert_eq!(act, Act::Identity, "an activation was fused into {step:?}");
        }
    }
    let standalone: Vec<(Act, Buf)> = plan
        .steps
        .iter()
        .filter_map(|s| if let Step::Activation(a) = s { Some((a.act, a.input)) } else { None })
        .collect();
    let acts: Vec<Act> = standalone.iter().map(|&(a, _)| a).collect();
    assert_eq!(acts, [Act::Gelu, Act::Silu, Act::GeluExact, Act::Gelu, Act::Silu]);
    assert!(acts.iter().all(|a| a.derivative() == Derivative::FromInput));
    // Each reads a stored buffer (the layer's output, kept for the backward), never the batch input.
    assert!(standalone.iter().all(|&(_, input)| matches!(input, Buf::Arena(_))));
    // The model has a device program, whose backward takes each one's derivative from its input.
    let code = crate::expand(args, item).to_string();
    assert_eq!(code.matches("dev . activation_backward_from_input").count(), 5, "{code}");
}
