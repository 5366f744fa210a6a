//! LoRA `linear` layers (`linear(out = N, lora(rank = r, alpha = a))`) against the f64 reference of
//! `tests/reference`, one example at a time, on a vector and position-wise on a sequence (norms ghost
//! and direct, and in a `forward` residual), at B = 1, 3 and 64 with random B matrices (zero at init,
//! which would leave A without gradient). Then PEFT's conventions: names and shapes, B = 0 at init so
//! the layer starts as its base, the base frozen (bit-identical after training), and the state dict
//! round trip.

mod common;
mod reference;

use common::TempDir;
use dp::optim::Sgd;
use dp::prelude::*;
use dp::{checkpoint, Trainer, FROZEN_GROUP};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reference::dense::Activation;
use reference::harness::{check_model_at, check_zero_factor_example, report, TestInput};
use reference::net::{Network, Op};

/// A LoRA layer between two trained ones on a vector.
#[dp_model(input = [6], loss = cross_entropy(classes = 3))]
struct DenseLora {
    #[layer(linear(out = 5), tanh)]
    fc1: Linear,
    #[layer(linear(out = 4, lora(rank = 2, alpha = 4)), sigmoid)]
    adapted: Linear,
    #[layer(linear(out = 3))]
    head: Linear,
}

fn dense_lora() -> Network {
    Network::new(
        vec![
            Op::Linear { name: "fc1", out: 5, bias: true },
            Op::Act(Activation::Tanh),
            Op::LoraLinear { name: "adapted", out: 4, rank: 2, alpha: 4.0 },
            Op::Act(Activation::Sigmoid),
            Op::Linear { name: "head", out: 3, bias: true },
        ],
        DenseLora::INPUT_SHAPE,
        DenseLora::LOSS,
        DenseLora::PARAMS,
    )
}

/// Position-wise LoRA layers on a dense sequence `[5, 6]`: the first reads the model's input (nothing
/// below it is trained), with ghost norms forced on its adapters; the second with direct norms.
#[dp_model(input = [5, 6], loss = cross_entropy(classes = 2))]
struct SeqLora {
    #[layer(linear(out = 4, norms = ghost, lora(rank = 3, alpha = 6)), tanh)]
    first: Linear,
    #[layer(linear(out = 4, norms = direct, lora(rank = 2, alpha = 1.5)), gelu, mean)]
    second: Linear,
    #[layer(linear(out = 2))]
    head: Linear,
}

fn seq_lora() -> Network {
    Network::new(
        vec![
            Op::LoraLinear { name: "first", out: 4, rank: 3, alpha: 6.0 },
            Op::Act(Activation::Tanh),
            Op::LoraLinear { name: "second", out: 4, rank: 2, alpha: 1.5 },
            Op::Act(Activation::Gelu),
            Op::MeanOverSequence,
            Op::Linear { name: "head", out: 2, bias: true },
        ],
        SeqLora::INPUT_SHAPE,
        SeqLora::LOSS,
        SeqLora::PARAMS,
    )
}

/// A LoRA layer inside a residual block written in `forward`.
#[dp_model(input = [4, 5], loss = mse)]
mod residual_lora {
    pub struct ResidualLora {
        #[layer(linear(out = 5, lora(rank = 2, alpha = 3)), tanh)]
        block: Linear,
        #[layer(first, linear(out = 2))]
        head: Linear,
    }

    impl ResidualLora {
        fn forward(&self, x: Input) -> Output {
            let r = self.block(x);
            self.head(x + r)
        }
    }
}
use residual_lora::ResidualLora;

fn residual_lora_net() -> Network {
    Network::new(
        vec![
            Op::Residual(vec![
                Op::LoraLinear { name: "block", out: 5, rank: 2, alpha: 3.0 },
                Op::Act(Activation::Tanh),
            ]),
            Op::FirstOfSequence,
            Op::Linear { name: "head", out: 2, bias: true },
        ],
        ResidualLora::INPUT_SHAPE,
        ResidualLora::LOSS,
        ResidualLora::PARAMS,
    )
}

/// Every `lora_B` matrix random (it is zero at init).
fn randomise_lora_b<M: DpModel>(params: &mut [f32]) {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for p in M::PARAMS.iter().filter(|p| p.name.ends_with(".lora_B.weight")) {
        params[p.offset..p.offset + p.len].iter_mut().for_each(|v| *v = rng.random_range(-0.5..0.5));
    }
}

fn check_everything<M: DpModel>(name: &str, net: &Network, seed: u64)
where
    M::Input: TestInput,
{
    let mut ws = Workspace::new::<M>(1);
    for (size, offset) in [(1, 0), (3, 1), (64, 2)] {
        let e = check_model_at::<M>(net, &mut ws, size, seed + offset, |_| {}, randomise_lora_b::<M>);
        report(&format!("{name} B = {size}"), &e);
    }
    check_zero_factor_example::<M>(net, 3, seed + 10);
}

/// PEFT's names and shapes; base weight and bias frozen, the adapters trained, each in a group.
fn check_names<M: DpModel>(layer: &str, inputs: usize, out: usize, rank: usize) {
    let find = |suffix: &str| {
        let name = format!("{layer}.{suffix}");
        *M::PARAMS.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{}: no {name}", M::NAME))
    };
    let (w, b, a, bb) = (find("weight"), find("bias"), find("lora_A.weight"), find("lora_B.weight"));
    assert_eq!((w.shape, b.shape), (&[out, inputs][..], &[out][..]));
    assert_eq!((a.shape, bb.shape), (&[rank, inputs][..], &[out, rank][..]));
    assert_eq!((w.group, b.group), (FROZEN_GROUP, FROZEN_GROUP), "{}: the base is frozen", M::NAME);
    assert_eq!(M::GROUPS[a.group], format!("{layer}.lora_A"));
    assert_eq!(M::GROUPS[bb.group], format!("{layer}.lora_B"));
    for p in M::PARAMS {
        assert_eq!(p.offset < M::TRAINED_PARAM_COUNT, p.is_trained(), "{}: {}", M::NAME, p.name);
    }
}

#[test]
fn a_lora_layer_on_a_vector_matches_the_reference() {
    check_names::<DenseLora>("adapted", 5, 4, 2);
    check_everything::<DenseLora>("DenseLora", &dense_lora(), 600);
}

#[test]
fn lora_layers_on_a_sequence_match_the_reference() {
    check_names::<SeqLora>("first", 6, 4, 3);
    check_names::<SeqLora>("second", 4, 4, 2);
    let strategies: Vec<_> = SeqLora::LAYERS.iter().filter_map(|l| l.strategy).collect();
    use dp::NormStrategy::{Direct, Ghost};
    assert_eq!(strategies, [Ghost, Ghost, Direct, Direct, Ghost], "{}", SeqLora::describe());
    check_everything::<SeqLora>("SeqLora", &seq_lora(), 620);
}

#[test]
fn a_lora_layer_in_a_forward_residual_matches_the_reference() {
    check_names::<ResidualLora>("block", 5, 5, 2);
    check_everything::<ResidualLora>("ResidualLora", &residual_lora_net(), 640);
}

#[test]
fn a_lora_layer_starts_as_its_base() {
    let model = DenseLora::init(&mut ChaCha8Rng::seed_from_u64(3));
    let b = DenseLora::PARAMS.iter().find(|p| p.name == "adapted.lora_B.weight").unwrap();
    assert!(model.params()[b.offset..b.offset + b.len].iter().all(|&v| v == 0.0), "B starts at zero");
    let a = DenseLora::PARAMS.iter().find(|p| p.name == "adapted.lora_A.weight").unwrap();
    let bound = 1.0 / (5.0f32).sqrt();
    let values = &model.params()[a.offset..a.offset + a.len];
    assert!(
        values.iter().all(|v| v.abs() <= bound) && values.iter().any(|&v| v != 0.0),
        "A like a linear weight"
    );
    // With B = 0 the model is the reference without adapters.
    let params: Vec<f64> = model.params().iter().map(|&v| f64::from(v)).collect();
    let x: Vec<f64> = (0..6).map(|k| (k as f64 - 2.5) / 3.0).collect();
    let mut ws = Workspace::new::<DenseLora>(1);
    let mut out = vec![0.0f32; 3];
    model.forward(&mut ws, &x.iter().map(|&v| v as f32).collect::<Vec<_>>(), 1, &mut out);
    let want = dense_lora().output(&params, &x);
    for (o, w) in out.iter().zip(&want) {
        assert!((f64::from(*o) - w).abs() < 1e-5, "{out:?} vs {want:?}");
    }
}

#[test]
fn training_moves_only_the_adapters_and_the_state_dict_round_trips() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let inputs = (0..40 * 6).map(|_| rng.random_range(-1.0..1.0)).collect();
    let labels = (0..40).map(|_| rng.random_range(0..3) as f32).collect();
    let data = Dataset::new(inputs, labels, vec![6], 1).unwrap();
    let mut model = DenseLora::init(&mut ChaCha8Rng::seed_from_u64(1));
    let before = model.params().to_vec();
    let report = Trainer::new(&mut model)
        .optimizer(Sgd::new(0.5))
        .clip_norm(1.0)
        .noise_multiplier(0.5)
        .delta(1e-5)
        .expected_batch_size(8)
        .steps(4)
        .seed(2)
        .quiet(true)
        .fit(&data, None)
        .expect("training runs");
    assert_eq!(report.trained_parameters, DenseLora::TRAINED_PARAM_COUNT);
    assert_eq!(DenseLora::TRAINED_PARAM_COUNT, (5 * 6 + 5) + (2 * 5 + 4 * 2) + (3 * 4 + 3));
    for p in DenseLora::PARAMS {
        let (was, is) = (&before[p.offset..p.offset + p.len], &model.params()[p.offset..p.offset + p.len]);
        match p.is_trained() {
            false => assert!(was.iter().zip(is).all(|(a, b)| a.to_bits() == b.to_bits()), "{} moved", p.name),
            true => assert!(was != is, "{} did not move", p.name),
        }
    }
    let dir = TempDir::new("reference_lora", "round_trip");
    let path = dir.path("lora.safetensors");
    checkpoint::save_params(&path, &model).expect("saved");
    let dict = dp::pytorch::read(&path).expect("a state dict");
    let mut names: Vec<&str> = dict.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "adapted.bias",
            "adapted.lora_A.weight",
            "adapted.lora_B.weight",
            "adapted.weight",
            "fc1.bias",
            "fc1.weight",
            "head.bias",
            "head.weight"
        ]
    );
    let loaded = checkpoint::load_params::<DenseLora>(&path).expect("loaded");
    assert_eq!(loaded, model.params());
}

/// `DenseLora` without its adapters: what a merged file loads into.
#[dp_model(input = [6], loss = cross_entropy(classes = 3))]
struct DensePlain {
    #[layer(linear(out = 5), tanh)]
    fc1: Linear,
    #[layer(linear(out = 4), sigmoid)]
    adapted: Linear,
    #[layer(linear(out = 3))]
    head: Linear,
}

#[test]
fn merged_adapters_give_the_same_outputs_in_a_plain_model() {
    assert_eq!(
        DenseLora::LORA,
        [dp::LoraSpec {
            weight: "adapted.weight",
            lora_a: "adapted.lora_A.weight",
            lora_b: "adapted.lora_B.weight",
            scale: 2.0
        }]
    );
    assert!(DensePlain::LORA.is_empty());
    let mut model = DenseLora::init(&mut ChaCha8Rng::seed_from_u64(8));
    randomise_lora_b::<DenseLora>(model.params_mut());
    let dir = TempDir::new("reference_lora", "merge");
    let path = dir.path("merged.safetensors");
    dp::lora::save_merged(&path, &model).expect("merged and saved");
    let dict = dp::pytorch::read(&path).expect("a state dict");
    assert!(dict.tensors.iter().all(|t| !t.name.contains("lora")), "adapters left in the merged file");
    let mut plain = DensePlain::init(&mut ChaCha8Rng::seed_from_u64(9));
    dp::pretrained::init_from_file(&mut plain, &path, &dp::pretrained::InitOptions::default())
        .expect("the merged file loads into the plain model, strictly");
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let inputs: Vec<f32> = (0..16 * 6).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (mut lora_out, mut plain_out) = (vec![0.0f32; 16 * 3], vec![0.0f32; 16 * 3]);
    model.forward(&mut Workspace::new::<DenseLora>(16), &inputs, 16, &mut lora_out);
    plain.forward(&mut Workspace::new::<DensePlain>(16), &inputs, 16, &mut plain_out);
    for (a, b) in lora_out.iter().zip(&plain_out) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{lora_out:?} vs {plain_out:?}");
    }
    // The adapters matter: without merging, the base alone computes something else.
    let mut base = model.clone();
    let b = DenseLora::PARAMS.iter().find(|s| s.name == "adapted.lora_B.weight").unwrap();
    base.params_mut()[b.offset..b.offset + b.len].fill(0.0);
    let mut base_out = vec![0.0f32; 16 * 3];
    base.forward(&mut Workspace::new::<DenseLora>(16), &inputs, 16, &mut base_out);
    assert!(base_out.iter().zip(&plain_out).any(|(a, b)| (a - b).abs() > 1e-4), "the merge changed nothing");
}
