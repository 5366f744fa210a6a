//! Unit tests of the planner's kept per-example gradients: which direct layers keep them, the cap on
//! their total, and the fallback to the book-keeping clipped sum it decides statically.

use crate::ops::conv2d::ConvStep;
use crate::ops::Step;
use proc_macro2::TokenStream;
use quote::quote;

/// Two convs forced to direct norms whose gradients (weight and bias) take 590,336 bytes per
/// example each: the first fits `KEPT_GRADIENTS_CAP_BYTES` (1 MiB), both together do not.
fn two_wide_convs() -> (TokenStream, TokenStream) {
    (
        quote!(input = [128, 4, 4], loss = cross_entropy(classes = 2)),
        quote! {
            pub struct Wide {
                #[layer(conv2d(out = 128, kernel = 3, padding = 1, norms = direct), relu)]
                a: Conv2d,
                #[layer(conv2d(out = 128, kernel = 3, padding = 1, norms = direct), relu)]
                b: Conv2d,
                #[layer(global_avg_pool, linear(out = 2, norms = direct))]
                head: Linear,
            }
        },
    )
}

fn convs(plan: &crate::plan::Plan) -> Vec<&ConvStep> {
    plan.steps.iter().filter_map(|s| if let Step::Conv2d(c) = s { Some(c) } else { None }).collect()
}

#[test]
fn kept_gradients_stop_at_the_cap_and_the_rest_fall_back_to_book_keeping() {
    let (args, item) = two_wide_convs();
    let plan = crate::plan_of(args.clone(), item.clone());
    let convs = convs(&plan);
    let len = 128 * 1152 + 128;
    assert_eq!(4 * len as u64, 590_336);
    let kept = convs[0].kept.expect("the first conv keeps its gradients");
    assert_eq!(plan.buffers[kept].len, len);
    assert_eq!(convs[1].kept, None, "both would exceed the cap: the second falls back");
    // The fallback needs a direct norm slot; the linear head (one position) keeps nothing.
    let slot = plan.buffers[plan.scratch.norms.expect("a norm slot for the fallback")].len;
    assert_eq!(slot, 128 * 1152);
    let flags: Vec<bool> =
        plan.layers.iter().filter(|l| l.strategy.is_some()).map(|l| l.kept_gradients).collect();
    assert_eq!(flags, [true, false, false]);
    // The kept conv's clipped sum is the weighted sum; the other's is the product over its patches
    // (plus both convs' non-private gradient sums).
    let code = crate::expand(args, item).to_string();
    let count = |what: &str| code.matches(what).count();
    assert_eq!(count("conv2d_kept_norms_sq"), 1);
    assert_eq!(count("conv2d_norms_sq"), 1);
    assert_eq!(count("stored_clipped_sum"), 1);
    assert_eq!(count("conv2d_weight_gradient"), 3);
}

#[test]
fn a_frozen_direct_layer_keeps_nothing() {
    let plan = crate::plan_of(
        quote!(input = [3, 8, 8], loss = cross_entropy(classes = 2)),
        quote! {
            pub struct Frozen {
                #[layer(frozen, conv2d(out = 4, kernel = 3, norms = direct), relu)]
                a: Conv2d,
                #[layer(conv2d(out = 4, kernel = 3, norms = direct), relu)]
                b: Conv2d,
                #[layer(global_avg_pool, linear(out = 2))]
                head: Linear,
            }
        },
    );
    assert!(plan.layers[0].op.ends_with("(frozen)"), "{}", plan.layers[0].op);
    let convs = convs(&plan);
    assert_eq!(convs[0].kept, None);
    assert!(convs[1].kept.is_some());
}
