//! Unit tests of the planner on residual models: gradient routing, scratch sizing, forward errors.

use super::memory::GradTarget;
use crate::ops::conv2d::ConvStep;
use crate::ops::Step;
use crate::{expand, plan};
use proc_macro2::TokenStream;
use quote::quote;

fn planned_module(args: TokenStream, item: TokenStream) -> plan::Plan {
    crate::plan_of(args, item)
}

fn skip(forward: TokenStream) -> TokenStream {
    quote! {
        mod m {
            pub struct M {
                #[layer(conv2d(out = 2, kernel = 3, padding = 1))]
                a: Conv2d,
                #[layer(conv2d(out = 2, kernel = 3, padding = 1))]
                b: Conv2d,
                #[layer(global_avg_pool, linear(out = 2))]
                head: Linear,
            }
            impl M {
                fn forward(&self, x: Input) -> Output { #forward }
            }
        }
    }
}

fn args() -> TokenStream {
    quote!(input = [2, 4, 4], loss = cross_entropy(classes = 2))
}

#[test]
fn a_value_read_twice_gets_a_partial_gradient_added_into_its_own() {
    let plan = planned_module(args(), skip(quote! { let h = self.a(x); self.head(self.b(h) + h) }));
    let convs: Vec<&ConvStep> =
        plan.steps.iter().filter_map(|s| if let Step::Conv2d(c) = s { Some(c) } else { None }).collect();
    let add = plan.steps.iter().find_map(|s| if let Step::Add(a) = s { Some(a) } else { None }).unwrap();
    let h_grad = convs[0].delta;
    // `b` reads h first (forward order): it writes a partial gradient that is added into h's.
    let b_target = convs[1].input_grad.unwrap();
    assert_eq!(b_target.add_into, Some(h_grad));
    assert!(plan.buffers[b_target.write].purpose.contains("partial gradient"));
    // `+` reads h last: it writes h's gradient directly (first in the backward).
    assert_eq!(add.targets[1], Some(GradTarget { write: h_grad, add_into: None }));
    assert_eq!(add.targets[0], Some(GradTarget { write: convs[1].delta, add_into: None }));
    assert_eq!(convs[0].input_grad, None, "nothing upstream of the input is trained");
}

#[test]
fn forward_errors_name_the_field_and_say_why() {
    let out =
        expand(args(), skip(quote! { let h = self.a(x); self.head(self.a(h) + self.c(h)) })).to_string();
    assert!(out.contains("field `a` is called twice"), "{out}");
    assert!(out.contains("has no field `c`"), "{out}");
    let out = expand(args(), skip(quote! { let h = self.a(x); let r = self.b(h); self.head(h) })).to_string();
    assert!(out.contains("`r` is computed but never used"), "{out}");
    let out = expand(args(), skip(quote! { let h = self.a(x); self.head(h.relu()) })).to_string();
    assert!(out.contains("field `b` is never called"), "{out}");
    let out = expand(args(), skip(quote! { let h = self.a(x); self.head(self.b(h)) + x })).to_string();
    assert!(
        out.contains("`+` adds values of one shape, but the left side is [2] and the right side [2, 4, 4]"),
        "{out}"
    );
}

#[test]
fn conv_plan_sizes_shared_scratch_to_the_largest_layer() {
    let plan = planned_module(args(), skip(quote! { let h = self.a(x); self.head(self.b(h) + h) }));
    assert_eq!(plan.scratch.patches_per_task, 16 * 2 * 9, "T·d of the 2→2 3×3 convs over 4×4");
    assert!(
        plan.buffers.iter().all(|b| !b.purpose.contains("patches")),
        "patches are per task, not per example"
    );
    assert_eq!(plan.scratch.rows, None, "convs that do not fold need no rows");
    let total: usize = plan.buffers.iter().map(|b| b.len).sum();
    assert_eq!(plan.workspace_per_example, total);
    let bytes: u64 = plan.layers.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * total as u64, "every buffer is counted at one layer");
}

#[test]
fn only_a_conv_that_folds_gets_rows() {
    // `narrow`: T = 64 positions, 8 channels, does not fold, 512 outputs; `wide`: T = 4 positions and
    // 64 ≥ 4·T channels, folds its chunks, 256 outputs. The rows are the folded conv's alone.
    let item = quote! {
        pub struct M {
            #[layer(conv2d(out = 8, kernel = 1))]
            narrow: Conv2d,
            #[layer(conv2d(out = 64, kernel = 4, stride = 4))]
            wide: Conv2d,
            #[layer(global_avg_pool, linear(out = 2))]
            head: Linear,
        }
    };
    let plan = planned_module(quote!(input = [3, 8, 8], loss = cross_entropy(classes = 2)), item);
    let rows = plan.scratch.rows.expect("the folded conv's rows");
    assert_eq!(plan.buffers[rows].len, 64 * 4, "the folded conv's output, not the larger one's");
}
