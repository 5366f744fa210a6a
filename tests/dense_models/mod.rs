//! The models declared for the device tests (every dense op, every loss, no bias, standalone
//! activations, every image op with a device path), shared by `reference_dense.rs` (against an f64 reference), `device_program.rs` (their
//! device programs on the host reference backend) and `gpu_programs.rs` (on a GPU), and the helpers
//! that compare a device program with the CPU.

#![allow(dead_code)] // each test file uses its own part

use dp::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// flatten → linear 6→5 → tanh → linear 5→2 without bias, squared error.
#[dp_model(input = [3, 2], loss = mse)]
pub struct TanhMse {
    #[layer(flatten, linear(out = 5, in = 6), tanh)]
    fc1: Linear,
    #[layer(linear(out = 2, bias = false))]
    fc2: Linear,
}

/// A standalone tanh on the input, linear → sigmoid (fused) → relu (standalone), one logit.
#[dp_model(input = [6], loss = binary_cross_entropy)]
pub struct SigmoidBce {
    #[layer(tanh)]
    squash: Tanh,
    #[layer(linear(out = 4), sigmoid, relu)]
    hidden: Linear,
    #[layer(linear(out = 1))]
    out: Linear,
}

/// Three layers, relu and tanh, three classes.
#[dp_model(input = [5], loss = cross_entropy(classes = 3))]
pub struct Deep {
    #[layer(linear(out = 8), relu)]
    a: Linear,
    #[layer(linear(out = 6), tanh)]
    b: Linear,
    #[layer(linear(out = 3))]
    c: Linear,
}

/// A bag of tokens: an embedding averaged over 7 positions of an 11-token vocabulary (so tokens repeat
/// within an example), then a linear layer.
#[dp_model(input = tokens(len = 7, vocab = 11), loss = cross_entropy(classes = 3))]
pub struct TokenBag {
    #[layer(embedding(dim = 4), mean)]
    embedding: Embedding,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// An embedding over the sequence without a mean: 7 positions of an 11-token vocabulary (tokens
/// repeat within an example), flattened into a linear layer.
#[dp_model(input = tokens(len = 7, vocab = 11), loss = cross_entropy(classes = 3))]
pub struct TokenSeq {
    #[layer(embedding(dim = 4), flatten)]
    embedding: Embedding,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// `LstmNet` in small: an embedding over 7 positions of a 50-token vocabulary, an LSTM of 5 units
/// averaged over time, a linear layer; the planner's norms.
#[dp_model(input = tokens(len = 7, vocab = 50), loss = cross_entropy(classes = 3))]
pub struct SmallLstm {
    #[layer(embedding(dim = 6))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5), mean)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// [`SmallLstm`] with the LSTM's norms forced to ghost.
#[dp_model(input = tokens(len = 7, vocab = 50), loss = cross_entropy(classes = 3))]
pub struct SmallLstmGhost {
    #[layer(embedding(dim = 6))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5, norms = ghost), mean)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// [`SmallLstm`] with the LSTM's norms forced to direct (the CPU keeps its per-example gradients).
#[dp_model(input = tokens(len = 7, vocab = 50), loss = cross_entropy(classes = 3))]
pub struct SmallLstmDirect {
    #[layer(embedding(dim = 6))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5, norms = direct), mean)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// An LSTM without a mean: every step's hidden state flattened into the linear layer.
#[dp_model(input = tokens(len = 7, vocab = 50), loss = cross_entropy(classes = 3))]
pub struct LstmSequence {
    #[layer(embedding(dim = 6))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5), flatten)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// An LSTM straight on a dense sequence `[7, 4]` (nothing upstream trained: no input gradient),
/// averaged over time, one regression output.
#[dp_model(input = [7, 4], loss = mse)]
pub struct DenseLstm {
    #[layer(lstm(hidden = 5), mean)]
    lstm: Lstm,
    #[layer(linear(out = 1))]
    fc: Linear,
}

/// The output is an activation: sigmoid fused into the last linear layer, then a standalone tanh.
#[dp_model(input = [4], loss = mse)]
pub struct ActivatedOutput {
    #[layer(linear(out = 7), relu)]
    fc1: Linear,
    #[layer(linear(out = 3), sigmoid, tanh)]
    fc2: Linear,
}

/// Every image op with a device path: a strided, padded conv with tanh and an overlapping max pool,
/// a dilated conv without bias with relu and a padded average pool, then flatten and a linear layer.
#[dp_model(input = [2, 9, 9], loss = cross_entropy(classes = 3))]
pub struct SmallConv {
    #[layer(conv2d(out = 3, kernel = 3, stride = 2, padding = 1), tanh, max_pool2d(kernel = 2, stride = 1))]
    conv1: Conv2d,
    #[layer(
        conv2d(out = 4, kernel = 2, dilation = 2, bias = false),
        relu,
        avg_pool2d(kernel = 2, padding = 1)
    )]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 3))]
    fc: Linear,
}

/// Two same-size convs, the second's output averaged over the image (two regression outputs).
#[dp_model(input = [3, 6, 6], loss = mse)]
pub struct PooledConv {
    #[layer(conv2d(out = 4, kernel = 3, padding = 1), relu)]
    conv1: Conv2d,
    #[layer(conv2d(out = 2, kernel = 3, padding = 1), global_avg_pool)]
    conv2: Conv2d,
}

/// Group norm with relu, a residual add with relu whose left side has a second reader, group norm
/// with a group per channel, layer norm over the whole image, global average pooling and a linear
/// layer: every norm and add path the device has.
#[dp_model(input = [2, 6, 6], loss = cross_entropy(classes = 3))]
pub mod norm_residual {
    pub struct NormResidual {
        #[layer(conv2d(out = 4, kernel = 3, padding = 1))]
        conv1: Conv2d,
        #[layer(group_norm(groups = 2), relu)]
        norm1: GroupNorm,
        #[layer(conv2d(out = 4, kernel = 3, padding = 1))]
        conv2: Conv2d,
        #[layer(group_norm(groups = 4))]
        norm2: GroupNorm,
        #[layer(layer_norm)]
        norm3: LayerNorm,
        #[layer(global_avg_pool, linear(out = 3))]
        head: Linear,
    }

    impl NormResidual {
        fn forward(&self, x: Input) -> Output {
            let h = self.norm1(self.conv1(x));
            let r = self.norm2(self.conv2(h));
            let h = (h + r).relu();
            self.head(self.norm3(h))
        }
    }
}

/// Linear layers over a dense sequence `[5, 6]` (the same weight at every position): the planner's
/// norms with relu, direct norms with tanh, ghost norms without bias averaged over time, then a
/// direct layer at one position.
#[dp_model(input = [5, 6], loss = cross_entropy(classes = 3))]
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

/// An embedding over 7 positions, a linear layer over the sequence (its input gradient reaching the
/// embedding), flattened into a linear layer.
#[dp_model(input = tokens(len = 7, vocab = 11), loss = cross_entropy(classes = 3))]
pub struct TokenSequenceLinear {
    #[layer(embedding(dim = 4))]
    embedding: Embedding,
    #[layer(linear(out = 5), tanh, flatten)]
    proj: Linear,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// The activations whose derivative needs their input (GELU in tanh and erf form, SiLU), after linear
/// layers over a dense sequence `[5, 6]` and after a vector; one of them standalone on a value that a
/// residual add also reads (its backward to a gradient of its own, then added).
#[dp_model(input = [5, 6], loss = mse)]
pub mod activations_from_input {
    pub struct ActivationsFromInput {
        #[layer(linear(out = 8), gelu)]
        a: Linear,
        #[layer(linear(out = 6), silu)]
        b: Linear,
        #[layer(linear(out = 6), gelu_exact)]
        c: Linear,
        #[layer(linear(out = 6))]
        e: Linear,
        #[layer(gelu)]
        g: Gelu,
        #[layer(flatten, linear(out = 4), silu)]
        d: Linear,
        #[layer(linear(out = 2))]
        head: Linear,
    }

    impl ActivationsFromInput {
        fn forward(&self, x: Input) -> Output {
            let h = self.b(self.a(x));
            let h = h + self.c(h);
            let p = self.e(h);
            let h = p + self.g(p);
            self.head(self.d(h))
        }
    }
}

/// A transformer's MLP without attention: tokens, an embedding, a position embedding, a linear layer
/// over the sequence with exact GELU, layer norm over the sequence (then relu), a mean and a head.
#[dp_model(input = tokens(len = 7, vocab = 11), loss = cross_entropy(classes = 3))]
pub struct TokenMlp {
    #[layer(embedding(dim = 6))]
    embedding: Embedding,
    #[layer(position_embedding)]
    position: PositionEmbedding,
    #[layer(linear(out = 8), gelu_exact)]
    mlp: Linear,
    #[layer(layer_norm, relu)]
    ln: LayerNorm,
    #[layer(mean, linear(out = 3))]
    head: Linear,
}

/// A vision transformer without attention: a conv (so that something upstream of the patches is
/// trained), patches of 4×4 projected by a linear layer, a position embedding, layer norm, the first
/// position and a head.
#[dp_model(input = [2, 8, 8], loss = cross_entropy(classes = 3))]
pub struct PatchFirst {
    #[layer(conv2d(out = 2, kernel = 3, padding = 1), tanh)]
    conv: Conv2d,
    #[layer(patches(size = 4), linear(out = 6))]
    patch_embedding: Linear,
    #[layer(position_embedding)]
    position: PositionEmbedding,
    #[layer(layer_norm)]
    ln: LayerNorm,
    #[layer(first, linear(out = 3))]
    head: Linear,
}

/// Linear layers over a sequence `[5, 6]` with direct norms (the CPU keeps their per-example
/// gradients, as the device does), exact GELU between them, a mean and a ghost head at one position.
#[dp_model(input = [5, 6], loss = cross_entropy(classes = 3))]
pub struct SequenceLinearDirect {
    #[layer(linear(out = 4, norms = direct), gelu_exact)]
    a: Linear,
    #[layer(linear(out = 3, norms = direct), mean)]
    b: Linear,
    #[layer(linear(out = 3, norms = ghost))]
    head: Linear,
}

/// The LoRA text transformer without attention: a frozen embedding, position embedding and layer
/// norms, two LoRA linear layers over the sequence (the first with tanh fused into its sum) in a
/// residual block, a mean and a trained head.
#[dp_model(input = tokens(len = 7, vocab = 11), loss = cross_entropy(classes = 3))]
pub mod token_lora {
    pub struct TokenLora {
        #[layer(embedding(dim = 6), frozen)]
        embedding: Embedding,
        #[layer(position_embedding, frozen)]
        position: PositionEmbedding,
        #[layer(layer_norm, frozen)]
        ln: LayerNorm,
        #[layer(linear(out = 8, lora(rank = 2, alpha = 4)), tanh)]
        mlp_in: Linear,
        #[layer(linear(out = 6, lora(rank = 2, alpha = 4)))]
        mlp_out: Linear,
        #[layer(layer_norm, frozen)]
        final_ln: LayerNorm,
        #[layer(mean, linear(out = 3))]
        head: Linear,
    }

    impl TokenLora {
        fn forward(&self, x: Input) -> Output {
            let h = self.position(self.embedding(x));
            let h = h + self.mlp_out(self.mlp_in(self.ln(h)));
            self.head(self.final_ln(h))
        }
    }
}

/// What the CPU program gives on a batch, the reference a device program is compared with: each
/// example's loss and squared norms, the flat clip factors at `clip`, their non-finite count, the
/// clipped sum and the plain gradient sum.
pub struct CpuReference {
    pub losses: Vec<f32>,
    pub sq_norms: Vec<f32>,
    pub factors: Vec<f32>,
    pub non_finite: usize,
    pub clipped_sum: Vec<f32>,
    pub gradient_sum: Vec<f32>,
}

pub fn cpu_reference<M: DpModel>(
    model: &M,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
    clip: f64,
) -> CpuReference {
    cpu_reference_in(dp::Precision::F32, model, inputs, labels, n, clip)
}

/// [`cpu_reference`] with the CPU program's products in `precision`.
pub fn cpu_reference_in<M: DpModel>(
    precision: dp::Precision,
    model: &M,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
    clip: f64,
) -> CpuReference {
    let groups = M::GROUPS.len();
    let b = dp::Batch { inputs, labels, size: n };
    let mut ws = dp::Workspace::new::<M>(n).with_precision(precision);
    let (mut losses, mut sq_norms) = (vec![0.0; n], vec![0.0; n * groups]);
    model.per_example_norms(&mut ws, b, &mut losses, &mut sq_norms);
    let mut factors = vec![0.0; n * groups];
    let non_finite =
        dp::clipping::clip_factors(dp::clipping::ClipMode::Flat, clip, groups, &sq_norms, &mut factors)
            .unwrap();
    let mut clipped_sum = vec![0.0; M::TRAINED_PARAM_COUNT];
    model.clipped_sum(&mut ws, b, &factors, &mut clipped_sum);
    let mut gradient_sum = vec![0.0; M::TRAINED_PARAM_COUNT];
    model.loss_and_gradient(&mut ws, b, &mut vec![0.0; n], &mut gradient_sum);
    CpuReference { losses, sq_norms, factors, non_finite, clipped_sum, gradient_sum }
}

/// The host reference after one private pass of `model`'s device program over a batch of `n`, its
/// marked products in `precision`: forward and backward, norms, and the clipped sum with `factors`.
/// Every buffer a pass must write before it reads starts as garbage (NaN), the gradient at zero.
pub fn private_pass_on_host<M: DpModel>(
    model: &M,
    precision: dp::Precision,
    inputs: &[M::Input],
    labels: &[f32],
    factors: &[f32],
    n: usize,
) -> dp::device::host::HostDevice
where
    M::Input: TestInput,
{
    private_pass_on_host_storing(model, precision, false, inputs, labels, factors, n)
}

/// A host reference in `precision` (storing in bf16 when `bf16_storage`) holding `model`'s parameters,
/// a zero gradient, an arena of NaN for `n` examples, and the batch; its losses NaN.
pub fn loaded_on_host<M: DpModel>(
    model: &M,
    precision: dp::Precision,
    bf16_storage: bool,
    inputs: &[M::Input],
    labels: &[f32],
    n: usize,
) -> dp::device::host::HostDevice
where
    M::Input: TestInput,
{
    use dp::device::Region;
    let mut dev = dp::device::host::HostDevice::new();
    dev.set_precision(precision);
    dev.set_bf16_storage(bf16_storage);
    dev.set(Region::Params, model.params().to_vec());
    dev.set(Region::Grad, vec![0.0; M::TRAINED_PARAM_COUNT]);
    dev.set(Region::Arena, vec![f32::NAN; M::DEVICE_ARENA_PER_EXAMPLE * n]);
    TestInput::load(&mut dev, inputs);
    dev.set(Region::Labels, labels.to_vec());
    dev.set(Region::Losses, vec![f32::NAN; n]);
    dev
}

/// [`private_pass_on_host`], the arena's activations and output gradients stored in bf16 when
/// `bf16_storage` and `precision` is bf16 (`HostDevice::set_bf16_storage`).
pub fn private_pass_on_host_storing<M: DpModel>(
    model: &M,
    precision: dp::Precision,
    bf16_storage: bool,
    inputs: &[M::Input],
    labels: &[f32],
    factors: &[f32],
    n: usize,
) -> dp::device::host::HostDevice
where
    M::Input: TestInput,
{
    use dp::device::Region;
    let mut dev = loaded_on_host(model, precision, bf16_storage, inputs, labels, n);
    dev.set(Region::SqNorms, vec![f32::NAN; n * M::GROUPS.len()]);
    dev.set(Region::Factors, factors.to_vec());
    M::device_forward_backward(&mut dev, n).unwrap();
    M::device_norms(&mut dev, n).unwrap();
    M::device_clipped_sum(&mut dev, n).unwrap();
    dev
}

/// What a device program computed on the host backend for one batch: each example's loss and squared
/// norms, and the clipped sum.
pub struct DeviceRun {
    pub losses: Vec<f32>,
    pub sq_norms: Vec<f32>,
    pub clipped_sum: Vec<f32>,
}

/// [`private_pass_on_host_storing`]'s results.
pub fn run_on_host_storing<M: DpModel>(
    model: &M,
    precision: dp::Precision,
    bf16_storage: bool,
    inputs: &[M::Input],
    labels: &[f32],
    factors: &[f32],
    n: usize,
) -> DeviceRun
where
    M::Input: TestInput,
{
    use dp::device::Region;
    let dev = private_pass_on_host_storing(model, precision, bf16_storage, inputs, labels, factors, n);
    DeviceRun {
        losses: dev.get(Region::Losses).to_vec(),
        sq_norms: dev.get(Region::SqNorms).to_vec(),
        clipped_sum: dev.get(Region::Grad).to_vec(),
    }
}

/// Element by element to `tol` relative (independent values: losses, norms, factors).
pub fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1e-3), "{what}[{i}]: device {g}, cpu {w}");
    }
}

/// A sum over examples to `tol` relative to its largest coordinate: a coordinate that cancels to near
/// zero carries the rounding of its terms, which the order of the additions moves (a GPU adds in
/// another order than the CPU).
pub fn close_sum(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs())).max(1e-6);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: device {g}, cpu {w} (largest {scale})");
    }
}

/// An input type the tests draw: dense features, or token ids below the vocabulary.
pub trait TestInput: dp::InputElem {
    /// Whether an example can be poisoned (a token id cannot be NaN).
    const POISONS: bool;
    /// `len` values; the first NaN when `poison` (dense only).
    fn draw(rng: &mut ChaCha8Rng, len: usize, vocab: usize, poison: bool) -> Vec<Self>;
    /// Into the host reference backend's region for this input type.
    fn load(dev: &mut dp::device::host::HostDevice, inputs: &[Self]);
}

impl TestInput for f32 {
    const POISONS: bool = true;

    fn draw(rng: &mut ChaCha8Rng, len: usize, _: usize, poison: bool) -> Vec<f32> {
        let mut inputs: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        if poison {
            inputs[0] = f32::NAN;
        }
        inputs
    }

    fn load(dev: &mut dp::device::host::HostDevice, inputs: &[f32]) {
        dev.set(dp::device::Region::Inputs, inputs.to_vec());
    }
}

impl TestInput for u32 {
    const POISONS: bool = false;

    fn draw(rng: &mut ChaCha8Rng, len: usize, vocab: usize, _: bool) -> Vec<u32> {
        (0..len).map(|_| rng.random_range(0..vocab as u32)).collect()
    }

    fn load(dev: &mut dp::device::host::HostDevice, inputs: &[u32]) {
        dev.set_tokens(inputs.to_vec());
    }
}

/// A batch of `n` examples of a model over a token sequence (at least 7 positions), and the parameters
/// to run it with: every example's ids repeat (positions 3 and 5 hold position 0's id, position 6
/// position 1's), so that an embedding's norms must group them. When `poison`, example 0 gets a token
/// no other example holds and that token's table row is NaN: an example whose every gradient is NaN
/// though its ids are valid, which must contribute nothing to a clipped sum.
pub fn token_batch<M: DpModel<Input = u32>>(
    rng: &mut ChaCha8Rng,
    params: &[f32],
    n: usize,
    poison: bool,
) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let steps = M::input_len();
    let table = M::PARAMS.iter().find(|p| p.shape.first() == Some(&M::VOCAB)).expect("an embedding table");
    let (dim, reserved) = (table.shape[1], M::VOCAB - 1);
    let (mut inputs, labels) = batch::<M>(rng, n, false);
    for example in inputs.chunks_mut(steps) {
        (example[3], example[5], example[6]) = (example[0], example[0], example[1]);
    }
    let mut params = params.to_vec();
    if poison {
        inputs.iter_mut().filter(|v| **v as usize == reserved).for_each(|v| *v = 0);
        inputs[2] = reserved as u32;
        params[table.offset + reserved * dim..][..dim].fill(f32::NAN);
    }
    (params, inputs, labels)
}

/// Inputs and valid labels for `n` examples of `M`; example 0 poisoned with NaN when `poison` and
/// the inputs are dense.
pub fn batch<M: DpModel>(rng: &mut ChaCha8Rng, n: usize, poison: bool) -> (Vec<M::Input>, Vec<f32>)
where
    M::Input: TestInput,
{
    let inputs = M::Input::draw(rng, n * M::input_len(), M::VOCAB, poison);
    let labels = match M::LOSS {
        Loss::CrossEntropy { classes } => (0..n).map(|_| rng.random_range(0..classes) as f32).collect(),
        Loss::BinaryCrossEntropy => (0..n).map(|_| rng.random_range(0..2) as f32).collect(),
        Loss::MeanSquaredError { outputs } => (0..n * outputs).map(|_| rng.random_range(-1.0..1.0)).collect(),
    };
    (inputs, labels)
}

/// Multi-head self-attention straight on a dense sequence `[6, 8]` (two heads of 4; nothing upstream
/// trained: no input gradient), averaged over the sequence, three classes.
#[dp_model(input = [6, 8], loss = cross_entropy(classes = 3))]
pub struct DenseAttention {
    #[layer(multi_head_attention(heads = 2), mean)]
    attn: MultiHeadAttention,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// The same with a causal mask (each position sees itself and those before it).
#[dp_model(input = [6, 8], loss = cross_entropy(classes = 3))]
pub struct CausalAttention {
    #[layer(multi_head_attention(heads = 2, causal = true), mean)]
    attn: MultiHeadAttention,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// Two attention layers: the first (causal, four heads of 2, direct norms on the CPU) gets its
/// input's gradient from the second (one head of 8), a regression over two outputs.
#[dp_model(input = [6, 8], loss = mse)]
pub struct StackedAttention {
    #[layer(multi_head_attention(heads = 4, causal = true, norms = direct))]
    attn1: MultiHeadAttention,
    #[layer(multi_head_attention(heads = 1), mean)]
    attn2: MultiHeadAttention,
    #[layer(linear(out = 2))]
    fc: Linear,
}

/// Grouped convs: two groups with stride, padding and a bias (nothing upstream: no input gradient),
/// then two groups without bias whose input gradient reaches the first.
#[dp_model(input = [4, 7, 7], loss = cross_entropy(classes = 3))]
pub struct GroupedConvs {
    #[layer(conv2d(out = 6, kernel = 3, stride = 2, padding = 1, groups = 2), relu)]
    conv1: Conv2d,
    #[layer(conv2d(out = 4, kernel = 2, groups = 2, bias = false), tanh)]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 3))]
    fc: Linear,
}

/// A depthwise separable block: a 1×1 conv to 4 channels, a depthwise conv (a group per channel,
/// padded) whose input gradient reaches it, a pointwise 1×1 conv, global average pooling.
#[dp_model(input = [3, 6, 6], loss = cross_entropy(classes = 3))]
pub struct DepthwiseSeparable {
    #[layer(conv2d(out = 4, kernel = 1), relu)]
    expand: Conv2d,
    #[layer(conv2d(out = 4, kernel = 3, padding = 1, groups = 4), relu)]
    depthwise: Conv2d,
    #[layer(conv2d(out = 5, kernel = 1))]
    pointwise: Conv2d,
    #[layer(global_avg_pool, linear(out = 3))]
    head: Linear,
}

/// The activations whose derivative needs their input after the steps that fuse one whose derivative
/// comes from its output: conv2d then GELU, group norm then SiLU, a residual add then exact GELU (its
/// left side with a second reader), flattened into a linear layer. The planner fuses none of them:
/// each is an activation step of its own, reading the layer's output as its kept input. The conv has
/// direct norms, so that the CPU keeps its per-example gradients as the device does (in bf16 both
/// round them alike).
#[dp_model(input = [2, 6, 6], loss = cross_entropy(classes = 3))]
pub mod image_activations_from_input {
    pub struct ImageActivationsFromInput {
        #[layer(conv2d(out = 4, kernel = 3, padding = 1, norms = direct), gelu)]
        conv: Conv2d,
        #[layer(group_norm(groups = 2), silu)]
        norm: GroupNorm,
        #[layer(flatten, linear(out = 3))]
        head: Linear,
    }

    impl ImageActivationsFromInput {
        fn forward(&self, x: Input) -> Output {
            let h = self.conv(x);
            let h = (h + self.norm(h)).gelu_exact();
            self.head(h)
        }
    }
}

/// Layer norm over a sequence `[5, 6]` then GELU (on the device, layer norm over a sequence is group
/// norm over its rows), a mean and a head.
#[dp_model(input = [5, 6], loss = cross_entropy(classes = 3))]
pub struct SequenceNormGelu {
    #[layer(linear(out = 6))]
    proj: Linear,
    #[layer(layer_norm, gelu)]
    ln: LayerNorm,
    #[layer(mean, linear(out = 3))]
    head: Linear,
}
