//! The sequence models (the founding paper's, the text and vision transformers): parameter counts, tensor names
//! and shapes, the plan.

use dp::models::{EmbeddingNet, LstmNet, MnistVit, TextTransformer};
use dp::prelude::*;
use dp::NormStrategy;

fn names_and_shapes<M: DpModel>() -> Vec<(&'static str, &'static [usize])> {
    M::PARAMS.iter().map(|p| (p.name, p.shape)).collect()
}

#[test]
fn embedding_net_has_160_098_parameters() {
    assert_eq!(EmbeddingNet::PARAM_COUNT, 160_098);
    assert_eq!(EmbeddingNet::INPUT_SHAPE, &[256]);
    assert_eq!(EmbeddingNet::VOCAB, 10_004);
    assert_eq!(EmbeddingNet::input_len(), 256);
    assert_eq!(
        names_and_shapes::<EmbeddingNet>(),
        [("embedding.weight", &[10_004, 16][..]), ("fc.weight", &[2, 16][..]), ("fc.bias", &[2][..])]
    );
    assert_eq!(EmbeddingNet::GROUPS, ["embedding", "fc"]);
    let strategies: Vec<_> = EmbeddingNet::LAYERS.iter().map(|l| l.strategy).collect();
    assert_eq!(strategies, [Some(NormStrategy::TokenGrouped), None, Some(NormStrategy::Ghost)]);
    let bytes: u64 = EmbeddingNet::LAYERS.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * EmbeddingNet::WORKSPACE_PER_EXAMPLE as u64);
}

#[test]
fn lstm_net_has_1_081_002_parameters() {
    assert_eq!(LstmNet::PARAM_COUNT, 1_081_002);
    assert_eq!(LstmNet::INPUT_SHAPE, &[256]);
    assert_eq!(LstmNet::VOCAB, 10_004);
    assert_eq!(
        names_and_shapes::<LstmNet>(),
        [
            ("embedding.weight", &[10_004, 100][..]),
            ("lstm.weight_ih_l0", &[400, 100][..]),
            ("lstm.weight_hh_l0", &[400, 100][..]),
            ("lstm.bias_ih_l0", &[400][..]),
            ("fc.weight", &[2, 100][..]),
            ("fc.bias", &[2][..]),
        ]
    );
    assert_eq!(LstmNet::GROUPS, ["embedding", "lstm", "fc"]);
    let groups: Vec<usize> = LstmNet::PARAMS.iter().map(|p| p.group).collect();
    assert_eq!(groups, [0, 1, 1, 1, 2, 2], "the LSTM's weights and bias are one group");
    let strategies: Vec<_> = LstmNet::LAYERS.iter().map(|l| l.strategy).collect();
    assert_eq!(
        strategies,
        [Some(NormStrategy::TokenGrouped), Some(NormStrategy::Direct), None, Some(NormStrategy::Ghost)]
    );
    let bytes: u64 = LstmNet::LAYERS.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * LstmNet::WORKSPACE_PER_EXAMPLE as u64);
}

#[test]
fn the_planner_agrees_with_the_kernels_cost_model() {
    use dp::__private::kernels::per_example::{choose_strategy, Strategy};
    // The macro and the kernels share the rule (dp-spec); the cap is 1 MiB per weight and example. The plan
    // table shows the strategy of the LSTM's larger weight (W_ih when d ≥ h, W_hh otherwise).
    let cap = dp::__private::kernels::per_example::DIRECT_MEMORY_CAP_BYTES;
    assert_eq!(cap, 1 << 20);
    for (t, d, h) in [(256, 100, 100), (6, 4, 5), (2, 100, 100), (5, 6, 5)] {
        let kernel = choose_strategy(t, d.max(h), 4 * h, cap);
        assert_eq!(planned_lstm_strategy(t, d, h), kernel, "T = {t}, d = {d}, h = {h}");
    }
    assert_eq!(choose_strategy(256, 100, 400, cap), Strategy::Direct);
}

/// The strategy the planner picks for W_ih of an LSTM with the given shapes.
fn planned_lstm_strategy(t: usize, d: usize, h: usize) -> dp::__private::kernels::per_example::Strategy {
    use dp::__private::kernels::per_example::Strategy;
    macro_rules! lstm_model {
        ($t:literal, $d:literal, $h:literal) => {{
            #[dp_model(input = [$t, $d], loss = mse)]
            struct Probe {
                #[layer(lstm(hidden = $h), mean)]
                rnn: Lstm,
            }
            Probe::LAYERS[0].strategy
        }};
    }
    let s = match (t, d, h) {
        (256, 100, 100) => lstm_model!(256, 100, 100),
        (6, 4, 5) => lstm_model!(6, 4, 5),
        (2, 100, 100) => lstm_model!(2, 100, 100),
        (5, 6, 5) => lstm_model!(5, 6, 5),
        _ => unreachable!(),
    };
    match s {
        Some(NormStrategy::Direct) => Strategy::Direct,
        Some(NormStrategy::Ghost) => Strategy::Ghost,
        other => panic!("an LSTM row shows ghost or direct, got {other:?}"),
    }
}

#[test]
fn describe_prints_each_layer_with_its_strategy() {
    for text in [EmbeddingNet::describe(), LstmNet::describe()] {
        println!("{text}");
        assert!(text.contains("token-grouped"), "{text}");
    }
    let lstm = LstmNet::describe();
    let row = lstm.lines().find(|l| l.contains("lstm(hidden = 100)")).expect("an LSTM row");
    assert!(row.contains("direct") && row.contains("[256, 100]"), "{row}");
    assert!(lstm.starts_with("LstmNet: 1081002 parameters"), "{lstm}");
}

#[test]
fn text_transformer_has_pytorch_names_and_the_planned_strategies() {
    assert_eq!(TextTransformer::PARAM_COUNT, 1_562_370);
    assert_eq!(TextTransformer::INPUT_SHAPE, &[128]);
    assert_eq!(TextTransformer::VOCAB, 10_004);
    let params = names_and_shapes::<TextTransformer>();
    assert_eq!(params[..2], [("embedding.weight", &[10_004, 128][..]), ("position.weight", &[128, 128][..])]);
    let attn: Vec<_> = params.iter().filter(|(n, _)| n.starts_with("block1_attn.")).copied().collect();
    assert_eq!(
        attn,
        [
            ("block1_attn.in_proj_weight", &[384, 128][..]),
            ("block1_attn.in_proj_bias", &[384][..]),
            ("block1_attn.out_proj.weight", &[128, 128][..]),
            ("block1_attn.out_proj.bias", &[128][..]),
        ]
    );
    assert_eq!(TextTransformer::GROUPS.len(), 14);
    // Every position-wise projection's strategy is the shared cost model's (no memory cap is hit).
    use dp::__private::kernels::per_example::{choose_strategy, DIRECT_MEMORY_CAP_BYTES};
    let planned = |op: &str| TextTransformer::LAYERS.iter().find(|l| l.op == op).and_then(|l| l.strategy);
    let cost_model = |t, d, p| Some(NormStrategy::from(choose_strategy(t, d, p, DIRECT_MEMORY_CAP_BYTES)));
    assert_eq!(planned("multi_head_attention(heads = 4)"), cost_model(128, 128, 384));
    assert_eq!(planned("linear(out = 256)"), cost_model(128, 128, 256));
    assert_eq!(planned("linear(out = 128)"), cost_model(128, 256, 128));
    let text = TextTransformer::describe();
    println!("{text}");
    let row = text.lines().find(|l| l.contains("multi_head_attention")).expect("an attention row");
    assert!(row.contains("[128, 128]       [128, 128]"), "{row}");
    let bytes: u64 = TextTransformer::LAYERS.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * TextTransformer::WORKSPACE_PER_EXAMPLE as u64);
}

#[test]
fn mnist_vit_cuts_49_patches_and_projects_them_position_wise() {
    assert_eq!(MnistVit::PARAM_COUNT, 71_946);
    let params = names_and_shapes::<MnistVit>();
    assert_eq!(
        params[..3],
        [
            ("patch_embedding.weight", &[64, 16][..]),
            ("patch_embedding.bias", &[64][..]),
            ("position.weight", &[49, 64][..])
        ]
    );
    let text = MnistVit::describe();
    println!("{text}");
    let patches = text.lines().find(|l| l.contains("patches(size = 4)")).expect("a patches row");
    assert!(patches.contains("[1, 28, 28]      [49, 16]"), "{patches}");
    let bytes: u64 = MnistVit::LAYERS.iter().map(|l| l.bytes_per_example).sum();
    assert_eq!(bytes, 4 * MnistVit::WORKSPACE_PER_EXAMPLE as u64);
}

#[test]
fn the_trainer_refuses_a_token_outside_the_vocabulary_before_any_step() {
    use dp::{Dataset, Error, Trainer};
    let make = |bad: Option<u32>| {
        let mut tokens: Vec<u32> = (0..4 * 256).map(|k| (k * 37 % 10_004) as u32).collect();
        if let Some(id) = bad {
            tokens[2 * 256 + 5] = id;
        }
        Dataset::new(tokens, vec![0.0, 1.0, 0.0, 1.0], vec![256], 1).expect("a well-formed dataset")
    };
    let mut model = EmbeddingNet::from_params(vec![0.0; EmbeddingNet::PARAM_COUNT]);
    let before = model.params().to_vec();
    for (train, eval) in [(make(Some(10_004)), make(None)), (make(None), make(Some(u32::MAX)))] {
        let err = Trainer::new(&mut model)
            .optimizer(dp::optim::Sgd::new(0.1))
            .clip_norm(1.0)
            .noise_multiplier(1.0)
            .expected_batch_size(2)
            .steps(1)
            .quiet(true)
            .fit(&train, Some(&eval))
            .expect_err("a token id ≥ VOCAB is refused");
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("example 2") && message.contains("outside the vocabulary of 10004"),
            "{message}"
        );
    }
    assert_eq!(model.params(), &before[..], "no step ran");
}
