//! Unit tests of the sequence ops on whole models: the LSTM is a loop over time in the kernels, so its
//! expansion does not grow with the number of steps; the memory plan of the LSTM network (kept
//! per-example gradients, or the gates as norm slots).

use crate::expand;
use proc_macro2::TokenStream;
use quote::quote;

fn lstm_net(steps: usize) -> (TokenStream, TokenStream) {
    let steps = proc_macro2::Literal::usize_unsuffixed(steps);
    (
        quote!(input = tokens(len = #steps, vocab = 10004), loss = cross_entropy(classes = 2)),
        quote! {
            pub struct LstmNet {
                #[layer(embedding(dim = 100))]
                embedding: Embedding,
                #[layer(lstm(hidden = 100), mean)]
                lstm: Lstm,
                #[layer(linear(out = 2))]
                fc: Linear,
            }
        },
    )
}

fn lstm_step(plan: &crate::plan::Plan) -> &crate::ops::lstm::LstmStep {
    plan.steps
        .iter()
        .find_map(|s| match s {
            crate::ops::Step::Lstm(l) => Some(l),
            _ => None,
        })
        .expect("an LSTM step")
}

fn expansion_lines(args: TokenStream, item: TokenStream) -> usize {
    let file: syn::File = syn::parse2(expand(args, item)).expect("the expansion is a valid file");
    prettyplease::unparse(&file).lines().count()
}

#[test]
fn the_lstm_expansion_does_not_grow_with_the_sequence_length() {
    let lines = |steps| {
        let (args, item) = lstm_net(steps);
        expansion_lines(args, item)
    };
    let (long, longer, short) = (lines(256), lines(1000), lines(5));
    println!("LstmNet expands to {long} lines (pretty-printed)");
    // Longer literals may wrap a line or two differently; unrolling would add hundreds.
    assert!(long.abs_diff(longer) <= 3, "1000 steps expand to {longer} lines, 256 to {long}: no unrolling");
    // 5 steps choose ghost norms and the book-keeping clipped sum instead of direct norms with kept
    // gradients: a few lines differ, not 251 copies.
    assert!(long.abs_diff(short) < 40, "{long} lines for 256 steps, {short} for 5");
    // The CPU program and the device program (whose loops over time are runtime loops too).
    assert!(long < 1400, "LstmNet expands to {long} lines");
}

#[test]
fn the_lstm_net_plan_keeps_its_per_example_gradients() {
    let (args, item) = lstm_net(256);
    let plan = crate::plan_of(args, item);
    assert_eq!(plan.param_count, 1_081_002);
    let lstm = lstm_step(&plan);
    assert_eq!((lstm.ih_strategy, lstm.hh_strategy), (dp_spec::Strategy::Direct, dp_spec::Strategy::Direct));
    // Both norms are direct: the LSTM keeps each example's whole gradient (W_ih, W_hh, bias: 4h·(d+h+1)
    // = 80,400 values) for the clipped sum, needs no norm slots and no private copy of its input.
    let kept = lstm.kept.expect("the direct LSTM keeps its gradients");
    assert_eq!(plan.buffers[kept].len, 400 * 201);
    assert!(plan.layers.iter().any(|l| l.op.starts_with("lstm") && l.kept_gradients));
    let norm_slot = plan.scratch.norms.map_or(0, |k| plan.buffers[k].len);
    assert!(norm_slot < 40_000, "no direct norm slot: {norm_slot} values (the embedding's)");
    assert_eq!(lstm.input_copy, None);
    assert_eq!(plan.buffers[lstm.gates].len, 256 * 400);
    let bytes: u64 = plan.layers.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * plan.workspace_per_example as u64);
}

#[test]
fn a_ghost_lstm_keeps_nothing_and_uses_the_gates_as_norm_slots() {
    // 5 steps: ghost norms for both weights, so no gradient is formed to keep.
    let (args, item) = lstm_net(5);
    let plan = crate::plan_of(args, item);
    let lstm = lstm_step(&plan);
    assert_eq!(lstm.ih_strategy, dp_spec::Strategy::Ghost);
    assert_eq!(lstm.kept, None);
    assert!(plan.layers.iter().all(|l| !l.kept_gradients));
    // A ghost slot (2·T² = 50 values) fits in the gates (T·4h = 2,000).
    assert!(lstm.norms_in_gates);
}

fn embedding_step(plan: &crate::plan::Plan) -> &crate::ops::embedding::EmbeddingStep {
    plan.steps
        .iter()
        .find_map(|s| match s {
            crate::ops::Step::Embedding(e) => Some(e),
            _ => None,
        })
        .expect("an embedding step")
}

fn has_mean_step(plan: &crate::plan::Plan) -> bool {
    plan.steps.iter().any(|s| matches!(s, crate::ops::Step::Mean(_)))
}

/// Embedding 10,004×16 over 256 tokens, pooled, then linear 16 → 2: a sequential struct, or a module
/// with the `forward` given.
fn embedding_net(forward: Option<TokenStream>, pooling: &str) -> (TokenStream, TokenStream) {
    let op = syn::Ident::new(pooling, proc_macro2::Span::call_site());
    let field_type = syn::Ident::new(if pooling == "first" { "First" } else { "Mean" }, op.span());
    let model = quote! {
        pub struct M {
            #[layer(embedding(dim = 16))]
            embedding: Embedding,
            #[layer(#op)]
            pool: #field_type,
            #[layer(linear(out = 2))]
            fc: Linear,
        }
    };
    let item = match forward {
        None => model,
        Some(body) => quote!(mod m { #model impl M { fn forward(&self, x: Input) -> Output { #body } } }),
    };
    (quote!(input = tokens(len = 256, vocab = 10004), loss = cross_entropy(classes = 2)), item)
}

#[test]
fn an_embedding_averaged_over_the_sequence_is_one_op() {
    let (args, item) = embedding_net(None, "mean");
    let plan = crate::plan_of(args, item);
    let embedding = embedding_step(&plan);
    assert!(embedding.mean, "the mean that alone reads the embedding is fused into it");
    assert!(!has_mean_step(&plan));
    assert_eq!((plan.buffers[embedding.output].len, plan.buffers[embedding.delta].len), (16, 16));
    // No buffer holds the 256 × 16 rows or their gradient; the norm slot is the token-count table
    // (512 token and count pairs) and one row.
    assert!(plan.buffers.iter().all(|b| b.len < 256 * 16), "{:?}", plan.buffers);
    assert_eq!(plan.buffers[plan.scratch.norms.unwrap()].len, 1024 + 16);
    // The mean keeps its row in the plan table: its adds, no bytes of its own.
    let mean_row = plan.layers.iter().find(|l| l.op == "mean").unwrap();
    assert_eq!((mean_row.flops_per_example, mean_row.bytes_per_example), (256 * 16, 0));
}

#[test]
fn a_mean_sharing_the_embedding_or_a_first_position_is_not_fused() {
    // The rows are read twice (`e + e`): the mean alone does not read them.
    let shared = embedding_net(Some(quote! { let e = self.embedding(x); self.fc(self.pool(e + e)) }), "mean");
    // `first` takes one position: nothing to fuse.
    let first = embedding_net(None, "first");
    for (args, item) in [shared, first] {
        let plan = crate::plan_of(args, item);
        let embedding = embedding_step(&plan);
        assert!(!embedding.mean);
        assert!(has_mean_step(&plan));
        assert_eq!(plan.buffers[embedding.output].len, 256 * 16);
    }
}
