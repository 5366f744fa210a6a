//! Every product of the generated device programs, planned as a GPU storing in bf16 would run it
//! (`dp_cuda::program::plan_product`), without a GPU: each program runs on the host reference storing
//! in bf16, which records its products with their spans and marks, and each product's plan is made
//! over the regions a `GpuModel` would allocate. No product may hit an error its launch would give
//! (an operand in a region without a bf16 store, a conversion over a slot the product uses, a span
//! outside its region), every bf16 product multiplies bf16 operands, and the values converted per
//! step are printed beside the values stored in bf16 (docs/GPU.md, "bf16 storage").

#![cfg(feature = "cuda")]

mod dense_models;

use dense_models::activations_from_input::ActivationsFromInput;
use dense_models::image_activations_from_input::ImageActivationsFromInput;
use dense_models::norm_residual::NormResidual;
use dense_models::token_lora::TokenLora;
use dense_models::{
    batch, ActivatedOutput, CausalAttention, Deep, DenseAttention, DenseLstm, DepthwiseSeparable,
    GroupedConvs, LstmSequence, PatchFirst, PooledConv, SequenceLinear, SequenceLinearDirect,
    SequenceNormGelu, SigmoidBce, SmallConv, SmallLstm, SmallLstmDirect, SmallLstmGhost, StackedAttention,
    TanhMse, TestInput, TokenBag, TokenMlp, TokenSeq, TokenSequenceLinear,
};
use dp::cuda::program::{plan_product, Addresses, Compute, Output, RoundedWeights, ValueType, BF16_STORED};
use dp::cuda::trainer::GpuModel;
use dp::device::host::HostDevice;
use dp::device::{BatchedGemm, Operands, Region};
use dp::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, MnistVit, ResidualCnn, ScatterCnn,
    TextTransformer, TextTransformerLora,
};
use dp::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The regions a `GpuModel` of `M` allocates for `n` examples storing in bf16
/// (`GpuModel::region_len`; at least one value each, as `RegionMemory` allocates), at made-up bases
/// far apart, as `GpuModel::bf16_layout` lays them out: the f32 arena cut to the `F32` buffers
/// (`DEVICE_ARENA_F32_PER_EXAMPLE`), the bf16 stores of the whole arena, the parameters and the
/// inputs, and the conversion slots (`DEVICE_CONVERSION_SLOT_PER_EXAMPLE`). A product that needed an
/// f32 slot of a span stored in bf16 longer than a conversion slot would fail.
fn addresses<M: DpModel>(n: usize) -> Addresses {
    // Bases 2⁴⁰ bytes apart: no two regions or stores can overlap.
    let base = |k: u64| (k + 1) << 40;
    let len = |r| GpuModel::<M>::region_len(r, n).max(1);
    let layout = GpuModel::<M>::bf16_layout(n);
    let mut a = Addresses::new(|r| match r {
        Region::Arena => (base(r as u64), layout.arena_f32.max(1)),
        _ => (base(r as u64), len(r)),
    });
    a.store_bf16(Some(std::array::from_fn(|k| (base(100 + k as u64), len(BF16_STORED[k])))));
    a.set_conversion_slots(Some((base(200), layout.conversion_slot.max(1))));
    a
}

/// What a model's products convert per step storing in bf16.
#[derive(Debug, Default)]
struct Tally {
    products: usize,
    bf16_operands: usize,
    converted: usize,
    /// Of `converted`, the parameters' values (weights rounded for a bf16 product).
    converted_params: usize,
    /// The parameters' values a `GpuModel` rounds, each weight once per pass
    /// (`GpuOps::rounding_each_weight_once`).
    params_once_per_pass: usize,
    through_f32: usize,
    /// Conversions of operands other than weights (launches).
    other_conversions: usize,
}

/// The products of a private step of `M` at `n` examples, in its passes as a `GpuModel` runs them
/// (forward, backward and norms; the clipped sum), and of a non-private step (forward, backward and
/// the gradient sum), recorded on the host reference storing in bf16.
fn recorded_products<M: DpModel>(seed: u64, n: usize) -> [Vec<BatchedGemm>; 3]
where
    M::Input: TestInput,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let (inputs, labels) = batch::<M>(&mut rng, n, false);
    let mut dev = HostDevice::new();
    dev.set_precision(Precision::Bf16);
    dev.set_bf16_storage(true);
    dev.set(Region::Params, model.params().to_vec());
    dev.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
    dev.set(Region::Arena, vec![0.0; M::DEVICE_ARENA_PER_EXAMPLE * n]);
    TestInput::load(&mut dev, &inputs);
    dev.set(Region::Labels, labels);
    dev.set(Region::Losses, vec![0.0; n]);
    dev.set(Region::SqNorms, vec![0.0; n * M::GROUPS.len()]);
    dev.set(Region::Factors, vec![0.5; n * M::GROUPS.len()]);
    dev.record_products();
    M::device_forward_backward(&mut dev, n).unwrap();
    M::device_norms(&mut dev, n).unwrap();
    let forward_backward_norms = dev.take_products();
    M::device_clipped_sum(&mut dev, n).unwrap();
    let clipped_sum = dev.take_products();
    M::device_forward_backward(&mut dev, n).unwrap();
    M::device_gradient_sum(&mut dev, n).unwrap();
    [forward_backward_norms, clipped_sum, dev.take_products()]
}

/// Plans every product of `M`'s program as a GPU storing in bf16 would, checking that no plan fails
/// and that every bf16 product multiplies bf16 operands; the tally of a private step's.
fn plans_hold<M: DpModel>(seed: u64, n: usize) -> Tally
where
    M::Input: TestInput,
{
    let addresses = addresses::<M>(n);
    let [forward_backward_norms, clipped_sum, non_private] = recorded_products::<M>(seed, n);
    let mut tally = Tally::default();
    for bg in non_private {
        plan_product(&addresses, Precision::Bf16, &bg.gemm).unwrap_or_else(|e| {
            panic!("{}: {:?} would fail on a GPU storing in bf16: {e}", M::NAME, bg.gemm)
        });
    }
    // The forward, backward and norms run rounding each weight once (`GpuOps::rounding_each_weight_once`,
    // a fresh record per pass); the clipped sum does not.
    for (pass, tracked) in [(forward_backward_norms, true), (clipped_sum, false)] {
        let mut rounded = RoundedWeights::default();
        for bg in pass {
            let g = bg.gemm;
            let plan = plan_product(&addresses, Precision::Bf16, &g)
                .unwrap_or_else(|e| panic!("{}: {g:?} would fail on a GPU storing in bf16: {e}", M::NAME));
            tally.products += 1;
            if g.operands == Operands::OfPrecision {
                assert_eq!(plan.operands, ValueType::Bf16, "{}: a bf16 product of {g:?}", M::NAME);
            }
            if plan.compute == Compute::Bf16Operands {
                tally.bf16_operands += 1;
            }
            if plan.output == Output::ThroughF32 {
                tally.through_f32 += 1;
            }
            tally.converted += plan.converted_values(&g);
            for (convert, s) in [(plan.convert_a, g.a), (plan.convert_b, g.b)] {
                if convert && s.region == Region::Params {
                    tally.converted_params += s.len;
                    if !tracked || rounded.first_time(s) {
                        tally.params_once_per_pass += s.len;
                    }
                } else if convert {
                    tally.other_conversions += 1;
                }
            }
        }
    }
    assert_eq!(tally.through_f32, 0, "{}: a product goes through an f32 slot of its output", M::NAME);
    assert!(tally.bf16_operands > 0, "{}: no product multiplies bf16 operands", M::NAME);
    tally
}

fn report<M: DpModel>(seed: u64, n: usize) -> Tally
where
    M::Input: TestInput,
{
    let t = plans_hold::<M>(seed, n);
    eprintln!(
        "{:<28} n={n}: {} products ({} on bf16 operands); converted per private step: {} parameter \
         values product by product, {} with each weight rounded once, and {} per example of other \
         operands against an arena of {} per example; {} through f32",
        M::NAME,
        t.products,
        t.bf16_operands,
        t.converted_params,
        t.params_once_per_pass,
        (t.converted - t.converted_params) / n,
        M::DEVICE_ARENA_PER_EXAMPLE,
        t.through_f32,
    );
    t
}

#[test]
fn dense_and_token_models_plan_every_product() {
    report::<AdultLogReg>(1, 5);
    report::<AdultFfnn>(2, 5);
    report::<Deep>(3, 5);
    report::<TanhMse>(4, 5);
    report::<SigmoidBce>(5, 5);
    report::<ActivatedOutput>(6, 5);
    report::<TokenBag>(7, 5);
    report::<TokenSeq>(8, 5);
    report::<TokenSequenceLinear>(9, 5);
    report::<TokenMlp>(10, 5);
    report::<TokenLora>(11, 5);
    report::<EmbeddingNet>(12, 3);
}

#[test]
fn lstms_plan_every_product() {
    report::<SmallLstm>(21, 3);
    report::<SmallLstmGhost>(22, 3);
    report::<SmallLstmDirect>(23, 3);
    report::<LstmSequence>(24, 3);
    report::<DenseLstm>(25, 3);
    // The LSTM model converts its gate gradients and saved hidden states once per pass, not the
    // operand of its recurrent product at each of its 255 time steps (two conversions a step while
    // that operand was f32: 514 in all).
    let t = report::<LstmNet>(26, 1);
    assert!(t.other_conversions <= 8, "the LSTM model converts {} operands per step", t.other_conversions);
    assert!(t.params_once_per_pass <= LstmNet::PARAM_COUNT, "a weight rounded twice in a pass");
}

#[test]
fn convolutions_plan_every_product() {
    report::<SmallConv>(31, 3);
    report::<PooledConv>(32, 3);
    report::<NormResidual>(33, 3);
    report::<GroupedConvs>(34, 3);
    report::<DepthwiseSeparable>(35, 3);
    report::<ImageActivationsFromInput>(36, 3);
    report::<MnistCnn>(37, 2);
    report::<Cifar10Cnn>(38, 1);
    report::<ResidualCnn>(39, 1);
    report::<ScatterCnn>(40, 2);
}

#[test]
fn sequences_attention_and_transformers_plan_every_product() {
    report::<SequenceLinear>(41, 3);
    report::<SequenceLinearDirect>(42, 3);
    report::<ActivationsFromInput>(43, 3);
    report::<SequenceNormGelu>(44, 3);
    report::<PatchFirst>(45, 3);
    report::<DenseAttention>(46, 3);
    report::<CausalAttention>(47, 3);
    report::<StackedAttention>(48, 3);
    report::<TextTransformer>(49, 1);
    report::<TextTransformerLora>(50, 1);
    report::<MnistVit>(51, 1);
}

/// The device memory a `GpuModel` checks is free before it allocates its regions: every region's
/// values in f32 (one at least), and storing in bf16 two bytes more per value of the arena, the
/// parameters and the inputs. Printed for the built-in models at batch 128 (docs/GPU.md, "bf16
/// storage").
#[test]
fn region_bytes_count_every_region_and_the_bf16_stores() {
    fn check<M: DpModel>(b: usize) {
        let len = |r| GpuModel::<M>::region_len(r, b).max(1) as u64;
        let regions = [
            Region::Params,
            Region::Grad,
            Region::Arena,
            Region::Inputs,
            Region::Labels,
            Region::Losses,
            Region::SqNorms,
            Region::Factors,
            Region::Tokens,
        ];
        let f32s: u64 = regions.iter().map(|&r| 4 * len(r)).sum();
        let stores = 2 * (len(Region::Arena) + len(Region::Params) + len(Region::Inputs));
        // Storing in bf16 the f32 arena holds the `F32` buffers only, laid out first.
        let (f32_arena, arena) = (M::DEVICE_ARENA_F32_PER_EXAMPLE, M::DEVICE_ARENA_PER_EXAMPLE);
        assert!(f32_arena <= arena, "{}", M::NAME);
        let cut = 4 * (len(Region::Arena) - (f32_arena * b).max(1) as u64);
        let slots = 2 * 4 * (M::DEVICE_CONVERSION_SLOT_PER_EXAMPLE * b).max(1) as u64;
        let stores = stores + slots;
        assert_eq!(GpuModel::<M>::regions_bytes(b, false), f32s, "{} at {b}", M::NAME);
        assert_eq!(GpuModel::<M>::regions_bytes(b, true), f32s + stores - cut, "{} at {b}", M::NAME);
        // The arena grows with the batch: a larger batch never needs less.
        assert!(GpuModel::<M>::regions_bytes(b + 1, true) > GpuModel::<M>::regions_bytes(b, true));
        if b == 128 {
            let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
            eprintln!(
                "{}: {:.1} MiB of regions at batch 128, {:.1} MiB storing in bf16 ({} of {} arena values per \
                 example in f32)",
                M::NAME,
                mib(f32s),
                mib(f32s + stores - cut),
                f32_arena,
                arena
            );
        }
    }
    for b in [1, 7, 128] {
        check::<AdultLogReg>(b);
        check::<AdultFfnn>(b);
        check::<MnistCnn>(b);
        check::<Cifar10Cnn>(b);
        check::<EmbeddingNet>(b);
        check::<LstmNet>(b);
        check::<TextTransformer>(b);
    }
}
