//! Snapshots of the generated code (pretty-printed) and unit tests of the passes on whole models.

use crate::{expand, plan};
use proc_macro2::TokenStream;
use quote::quote;

fn pretty(tokens: TokenStream) -> String {
    prettyplease::unparse(&syn::parse2(tokens).expect("the expansion is a valid file"))
}

fn logreg() -> (TokenStream, TokenStream) {
    (
        quote!(input = [104], loss = binary_cross_entropy),
        quote! {
            /// Logistic regression.
            pub struct AdultLogReg {
                #[layer(linear(out = 1))]
                fc: Linear,
            }
        },
    )
}

fn mlp() -> (TokenStream, TokenStream) {
    (
        quote!(input = [104], loss = cross_entropy(classes = 2)),
        quote! {
            pub struct AdultFfnn {
                #[layer(linear(out = 50), relu)]
                fc1: Linear,
                #[layer(linear(out = 2))]
                fc2: Linear,
            }
        },
    )
}

/// A small CNN: conv (with padding and stride), max pooling, flatten, linear — the image path of the
/// compiler (chunked conv passes, pooling with argmax, direct and ghost norms).
fn small_cnn() -> (TokenStream, TokenStream) {
    (
        quote!(input = [1, 12, 12], loss = cross_entropy(classes = 10)),
        quote! {
            pub struct SmallCnn {
                #[layer(conv2d(out = 4, kernel = 3, stride = 2, padding = 1), relu, max_pool2d(kernel = 2))]
                conv: Conv2d,
                #[layer(flatten, linear(out = 10))]
                fc: Linear,
            }
        },
    )
}

/// Two convs, the second by the ghost norm (the user's choice), which the device takes from two Gram
/// matrices per example and whose clipped sum is one product over the batch (no kept gradients).
fn ghost_cnn() -> (TokenStream, TokenStream) {
    (
        quote!(input = [1, 8, 8], loss = cross_entropy(classes = 3)),
        quote! {
            pub struct GhostCnn {
                #[layer(conv2d(out = 2, kernel = 3, padding = 1), relu)]
                direct: Conv2d,
                #[layer(conv2d(out = 3, kernel = 3, stride = 2, norms = ghost), global_avg_pool)]
                ghost: Conv2d,
            }
        },
    )
}

/// A token model: embedding, LSTM with a mean over time, linear — the sequence path of the compiler.
fn small_lstm() -> (TokenStream, TokenStream) {
    (
        quote!(input = tokens(len = 8, vocab = 50), loss = cross_entropy(classes = 2)),
        quote! {
            pub struct SmallLstm {
                #[layer(embedding(dim = 6))]
                embedding: Embedding,
                #[layer(lstm(hidden = 5), mean)]
                lstm: Lstm,
                #[layer(linear(out = 2))]
                fc: Linear,
            }
        },
    )
}

/// An embedding averaged over the sequence, then linear: the fused `embedding_mean` kernels.
fn small_embedding_mean() -> (TokenStream, TokenStream) {
    (
        quote!(input = tokens(len = 8, vocab = 50), loss = cross_entropy(classes = 2)),
        quote! {
            pub struct SmallEmbeddingMean {
                #[layer(embedding(dim = 6), mean)]
                embedding: Embedding,
                #[layer(linear(out = 2))]
                fc: Linear,
            }
        },
    )
}

/// The built-in `TextTransformer` (`src/models/text_transformer.rs`, read from its source): the
/// transformer path of the compiler (position embedding, attention, position-wise linear layers, layer
/// norm per position, residual sums, mean pooling).
fn text_transformer() -> (TokenStream, TokenStream) {
    let source = include_str!("../../src/models/text_transformer.rs");
    let file = syn::parse_file(source).expect("the model's source parses");
    let mut module = file
        .items
        .into_iter()
        .find_map(|item| match item {
            syn::Item::Mod(m) => Some(m),
            _ => None,
        })
        .expect("the model is an inline module");
    let at = module
        .attrs
        .iter()
        .position(|a| a.path().segments.last().is_some_and(|s| s.ident == "dp_model"))
        .expect("the module carries #[dp_model(...)]");
    let attr = module.attrs.remove(at);
    let args = attr.meta.require_list().expect("#[dp_model(...)] has arguments").tokens.clone();
    (args, quote!(#module))
}

#[test]
fn text_transformer_expansion() {
    let (args, item) = text_transformer();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

#[test]
fn small_cnn_expansion() {
    let (args, item) = small_cnn();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

#[test]
fn ghost_cnn_expansion() {
    let (args, item) = ghost_cnn();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

#[test]
fn small_lstm_expansion() {
    let (args, item) = small_lstm();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

#[test]
fn small_embedding_mean_expansion() {
    let (args, item) = small_embedding_mean();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

#[test]
fn logistic_regression_expansion() {
    let (args, item) = logreg();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

#[test]
fn mlp_expansion() {
    let (args, item) = mlp();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

/// A frozen first layer and a LoRA layer: trained-first offsets, no backward for the frozen base, no
/// norms or sums for the LoRA base, the adapters' own groups, the scaled sum and `LORA`.
fn frozen_and_lora() -> (TokenStream, TokenStream) {
    (
        quote!(input = [6], loss = cross_entropy(classes = 2)),
        quote! {
            pub struct FineTuned {
                #[layer(linear(out = 5), relu, frozen)]
                base: Linear,
                #[layer(linear(out = 4, lora(rank = 2, alpha = 4)), tanh)]
                adapted: Linear,
                #[layer(linear(out = 2))]
                head: Linear,
            }
        },
    )
}

#[test]
fn frozen_and_lora_expansion() {
    let (args, item) = frozen_and_lora();
    insta::assert_snapshot!(pretty(expand(args, item)));
}

fn planned(args: TokenStream, item: TokenStream) -> plan::Plan {
    crate::plan_of(args, item)
}

#[test]
fn mlp_plan_fuses_relu_and_lays_out_the_arena() {
    let (args, item) = mlp();
    let plan = planned(args, item);
    assert_eq!(plan.param_count, 5352);
    assert_eq!(plan.groups, ["fc1", "fc2"]);
    let names: Vec<&str> = plan.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    assert_eq!(plan.params[2].offset, 5250);
    // fc1 output and δ (50 each), fc2 output and δ (2 each), then the clipping scratch (104 + 50).
    let lens: Vec<usize> = plan.buffers.iter().map(|b| b.len).collect();
    assert_eq!(lens, [50, 50, 2, 2, 154]);
    let offsets: Vec<usize> = plan.buffers.iter().map(|b| b.offset).collect();
    assert_eq!(offsets, [0, 50, 100, 102, 104]);
    assert_eq!(plan.workspace_per_example, 258);
    assert_eq!(plan.steps.len(), 2, "relu is fused into fc1's epilogue");
    let bytes: u64 = plan.layers.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * 258);
    assert!(plan
        .layers
        .iter()
        .filter(|l| l.op.starts_with("linear"))
        .all(|l| l.strategy == Some(dp_spec::NormStrategy::Ghost)));
}

#[test]
fn standalone_activations_share_the_gradient_buffer_of_the_layer_before() {
    let plan = planned(
        quote!(input = [2, 3], loss = mse),
        quote! {
            struct M {
                #[layer(flatten, tanh)]
                prep: Flatten,
                #[layer(linear(out = 4, in = 6, bias = false), sigmoid, relu)]
                fc1: Linear,
                #[layer(linear(out = 3))]
                fc2: Linear,
            }
        },
    );
    // tanh on the input (no gradient needed), fc1 + fused sigmoid, standalone relu, fc2.
    assert_eq!(plan.steps.len(), 4);
    let crate::ops::Step::Activation(relu) = &plan.steps[2] else { panic!("relu is standalone") };
    let crate::ops::Step::Linear(fc1) = &plan.steps[1] else { panic!("fc1 is dense") };
    assert_eq!(relu.grad, Some(fc1.delta));
    let crate::ops::Step::Activation(tanh) = &plan.steps[0] else { panic!("tanh is standalone") };
    assert_eq!(tanh.grad, None);
    assert_eq!(fc1.input_grad, None);
    assert_eq!(plan.param_count, 4 * 6 + 3 * 4 + 3);
}

#[test]
fn every_error_of_a_model_is_reported_at_once() {
    let out = expand(
        quote!(input = [4], loss = cross_entropy(classes = 3)),
        quote! {
            struct M {
                #[layer(linear(out = 5, in = 3))]
                a: Linear,
                #[layer(linear(out = 2, bias = 1))]
                b: Conv2d,
                #[layer(lineer)]
                c: Linear,
            }
        },
    )
    .to_string();
    assert_eq!(out.matches("compile_error").count(), 3, "{out}");
    assert!(out.contains("expects `true` or `false`"));
    assert!(out.contains("must have type `Linear`"));
    assert!(out.contains("did you mean `linear`"));
}

#[test]
fn activations_whose_derivative_needs_their_input_are_never_fused() {
    let (args, item) = (
        quote!(input = [4], loss = mse),
        quote! {
            struct M {
                #[layer(linear(out = 5), gelu)]
                fc1: Linear,
                #[layer(linear(out = 3), silu, relu)]
                fc2: Linear,
            }
        },
    );
    let plan = planned(args.clone(), item.clone());
    // fc1, gelu, fc2, silu, relu: relu follows silu (not a layer), so nothing is fused.
    assert_eq!(plan.steps.len(), 5);
    let crate::ops::Step::Linear(fc1) = &plan.steps[0] else { panic!("fc1 is dense") };
    let crate::ops::Step::Activation(gelu) = &plan.steps[1] else { panic!("gelu is standalone") };
    assert_eq!(fc1.act, crate::ops::activation::function::Act::Identity);
    assert_eq!(gelu.input, crate::plan::memory::Buf::Arena(fc1.output), "gelu reads the kept pre-activation");
    assert_eq!(gelu.grad, Some(fc1.delta), "and works in place on fc1's δ");
    let out = pretty(expand(args, item));
    // Twice in the CPU program, twice in the device program.
    assert_eq!(out.matches("dev.activation_backward_from_input").count(), 2, "{out}");
    assert_eq!(out.matches("activation_backward_from_input").count(), 4, "{out}");
}

#[test]
fn frozen_layers_lie_after_the_trained_ones_without_a_group() {
    let plan = planned(
        quote!(input = [6], loss = cross_entropy(classes = 2)),
        quote! {
            struct M {
                #[layer(linear(out = 5), relu, frozen)]
                base: Linear,
                #[layer(linear(out = 4), tanh)]
                mid: Linear,
                #[layer(linear(out = 3), relu, frozen)]
                frozen_mid: Linear,
                #[layer(linear(out = 2))]
                head: Linear,
            }
        },
    );
    assert_eq!(plan.groups, ["mid", "head"]);
    assert_eq!(plan.trained_param_count, (4 * 5 + 4) + (2 * 3 + 2));
    assert_eq!(plan.param_count, plan.trained_param_count + (5 * 6 + 5) + (3 * 4 + 3));
    for p in &plan.params {
        let frozen = p.name.starts_with("base.") || p.name.starts_with("frozen_mid.");
        assert_eq!(p.trained, !frozen, "{}", p.name);
        assert_eq!(p.offset < plan.trained_param_count, !frozen, "{} at {}", p.name, p.offset);
        assert_eq!(p.group == crate::plan::params::NO_GROUP, frozen, "{}", p.name);
    }
    // The base has nothing trained below it: no backward. The frozen middle layer carries the
    // gradient through to `mid`.
    let roles: Vec<(bool, bool)> = plan.roles.iter().map(|r| (r.frozen, r.backward)).collect();
    assert_eq!(roles, [(true, false), (false, true), (true, true), (false, true)]);
    let frozen_rows: Vec<&str> =
        plan.layers.iter().filter(|l| l.op.ends_with("(frozen)")).map(|l| l.field.as_str()).collect();
    assert_eq!(frozen_rows, ["base", "frozen_mid"]);
    assert!(plan.layers.iter().filter(|l| l.op.ends_with("(frozen)")).all(|l| l.strategy.is_none()));
    // The frozen middle layer still propagates δ·W into `mid`'s δ.
    let crate::ops::Step::Linear(frozen_mid) = &plan.steps[2] else { panic!("frozen_mid is dense") };
    let crate::ops::Step::Linear(mid) = &plan.steps[1] else { panic!("mid is dense") };
    assert_eq!(frozen_mid.input_grad.map(|t| t.write), Some(mid.delta));
}

/// Linear layers over a dense sequence: planned, direct and ghost norms, and the device's positional
/// scratch (as `tests/dense_models`' `SequenceLinear`).
fn sequence_linear() -> (TokenStream, TokenStream) {
    (
        quote!(input = [5, 6], loss = cross_entropy(classes = 3)),
        quote! {
            pub struct SequenceLinear {
                #[layer(linear(out = 4), relu)]
                a: Linear,
                #[layer(linear(out = 5, norms = direct), tanh)]
                b: Linear,
                #[layer(linear(out = 3, norms = ghost, bias = false), mean)]
                c: Linear,
                #[layer(linear(out = 3, norms = direct))]
                head: Linear,
            }
        },
    )
}

/// Every arena span the device program emits, of the plan's buffers and of the device's scratch alike,
/// lies where its mark says: one marked `F32` inside the f32 prefix a GPU storing in bf16 keeps, one
/// marked `.of_precision()` after it (a mismatch would be refused on a GPU, with no f32 slot there).
/// Read from the expansions of a dense, a conv, a ghost conv, an LSTM, an embedding, a LoRA and a
/// transformer model and of linear layers over a sequence.
#[test]
fn every_device_span_lies_in_the_part_of_the_arena_its_mark_says() {
    let models = [
        mlp(),
        small_cnn(),
        ghost_cnn(),
        small_lstm(),
        small_embedding_mean(),
        frozen_and_lora(),
        text_transformer(),
        sequence_linear(),
    ];
    for (args, item) in models {
        let plan = planned(args.clone(), item.clone());
        let f32_len = crate::codegen::device::Layout::of(&plan).f32_len();
        let code: String = expand(args, item).to_string().chars().filter(|c| !c.is_whitespace()).collect();
        let (mut f32_spans, mut bf16_spans) = (0, 0);
        for (at, _) in code.match_indices("Region::Arena,") {
            let rest = &code[at + "Region::Arena,".len()..];
            let number = |s: &str| -> (usize, usize) {
                let end = s.find("*n").expect("an arena span's `offset * n`");
                (s[..end].parse().expect("a literal offset per example"), end + "*n".len())
            };
            let (offset, used) = number(rest);
            let (len, more) = number(&rest[used + 1..]);
            let after = rest[used + 1 + more..].trim_start_matches(',');
            let after = after.strip_prefix(')').expect("the span's end");
            let span = format!("{offset}·n, {len}·n");
            if after.starts_with(".of_precision()") {
                assert!(offset >= f32_len, "a bf16 span at {span} inside the f32 prefix of {f32_len}");
                bf16_spans += 1;
            } else {
                assert!(offset + len <= f32_len, "an f32 span at {span} past the f32 prefix of {f32_len}");
                f32_spans += 1;
            }
        }
        assert!(f32_spans > 0 && bf16_spans > 0, "{f32_spans} f32 and {bf16_spans} bf16 arena spans");
    }
}

/// The device arena lays every `F32` buffer out before every `OfPrecision` one (a device storing in
/// bf16 then keeps an f32 arena of that prefix only), each buffer whole and apart from the others,
/// in a conv model and in linear layers over a sequence (with device scratch of both classes).
#[test]
fn the_device_arena_lays_out_its_f32_buffers_first() {
    for (args, item) in [small_cnn(), sequence_linear(), small_lstm()] {
        let plan = planned(args, item);
        let layout = crate::codegen::device::Layout::of(&plan);
        let mut placed: Vec<(usize, usize)> = Vec::new();
        for b in &plan.buffers {
            let at = layout.offset(b.offset, b.len);
            match b.stored {
                crate::plan::memory::Stored::F32 => assert!(at + b.len <= layout.f32_len(), "{}", b.purpose),
                crate::plan::memory::Stored::OfPrecision => assert!(at >= layout.f32_len(), "{}", b.purpose),
            }
            assert!(at + b.len <= layout.len(), "{}", b.purpose);
            if b.len > 0 {
                placed.push((at, b.len));
            }
        }
        placed.sort();
        assert!(placed.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0), "buffers overlap: {placed:?}");
        assert!(layout.f32_len() > 0 && layout.f32_len() < layout.len());
    }
}
