//! The contract between a compiled model and the runtime.
//!
//! `#[dp_model]` implements [`DpModel`] for a struct; the runtime drives any implementation without
//! looking at its layers. All shapes of one example are associated constants, fixed at compile time;
//! the batch size is a run-time value.

use crate::device::{DeviceError, DeviceOps};
pub use dp_kernels::gemm_bf16::Precision;
use rand::RngCore;

/// The element type of a model's input: `f32` features (images, tabular data) or `u32` token ids.
pub trait InputElem: Copy + Default + PartialEq + Send + Sync + std::fmt::Debug + 'static {}
impl InputElem for f32 {}
impl InputElem for u32 {}

/// The per-example loss a model is compiled with. Losses are summed over examples, never averaged:
/// the runtime divides by the *expected* batch size (see the privacy plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy over `classes` logits; a label is a class index stored as `f32`.
    CrossEntropy { classes: usize },
    /// Binary cross-entropy with one logit; a label is 0.0 or 1.0.
    BinaryCrossEntropy,
    /// Sum of squared errors over `outputs` values (½‖y − ŷ‖² per example).
    MeanSquaredError { outputs: usize },
}

impl Loss {
    /// How many `f32` values one example's label occupies.
    pub const fn label_len(self) -> usize {
        match self {
            Loss::MeanSquaredError { outputs } => outputs,
            _ => 1,
        }
    }

    /// How many outputs (logits or predictions) the model produces per example.
    pub const fn output_len(self) -> usize {
        match self {
            Loss::CrossEntropy { classes } => classes,
            Loss::BinaryCrossEntropy => 1,
            Loss::MeanSquaredError { outputs } => outputs,
        }
    }
}

/// One named parameter tensor inside the model's flat parameter buffer.
///
/// Names and layouts are PyTorch's `state_dict` ones (`fc1.weight` is `[out, in]`, row-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub shape: &'static [usize],
    /// Offset of the first element in the flat buffer.
    pub offset: usize,
    /// Number of elements (the product of `shape`).
    pub len: usize,
    /// Index of the parameter group (one per trained parameterised layer): the unit of per-layer
    /// clipping; [`FROZEN_GROUP`] for a frozen tensor.
    pub group: usize,
}

/// A LoRA layer (`linear(out = N, lora(rank = r, alpha = a))`): the PyTorch names of its base weight
/// and adapters and the adapters' factor, for merging them into the weight ([`crate::lora`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraSpec {
    /// `<layer>.weight`, `[N, in]`, frozen.
    pub weight: &'static str,
    /// `<layer>.lora_A.weight`, `[r, in]`.
    pub lora_a: &'static str,
    /// `<layer>.lora_B.weight`, `[N, r]`.
    pub lora_b: &'static str,
    /// `alpha / r`.
    pub scale: f32,
}

/// The group of a frozen tensor (`#[layer(..., frozen)]`, a LoRA layer's base weight): it has no
/// column of `sq_norms` and no gradient.
pub const FROZEN_GROUP: usize = usize::MAX;

impl ParamSpec {
    /// Whether the tensor is trained (it lies in the trained prefix of the buffer).
    pub const fn is_trained(&self) -> bool {
        self.group != FROZEN_GROUP
    }
}

/// How the compiler obtains a layer's per-example gradient norms (shared with the compiler and the kernels).
pub use dp_spec::NormStrategy;

/// One layer of the compiled plan, for `describe()` and for the memory planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// The field (or binding) name in the user's model.
    pub name: &'static str,
    /// The op as written, e.g. `linear(out = 50)`.
    pub op: &'static str,
    pub input_shape: &'static [usize],
    pub output_shape: &'static [usize],
    pub params: usize,
    /// `None` for layers without parameters.
    pub strategy: Option<NormStrategy>,
    /// Whether the layer keeps each example's gradient (formed by its direct norm) for the clipped
    /// sum, which is then their weighted sum instead of a second product over every position.
    pub kept_gradients: bool,
    /// Forward + backward + norm FLOPs of one example.
    pub flops_per_example: u64,
    /// Workspace bytes of one example that this layer adds to the memory plan.
    pub bytes_per_example: u64,
}

/// One batch handed to a model: `size` examples, inputs and labels laid out example after example.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a, T> {
    pub inputs: &'a [T],
    pub labels: &'a [f32],
    pub size: usize,
}

/// Scratch memory for a model, sized once from the static memory plan and reused for every step,
/// and the precision of the products its passes run ([`Precision`], f32 unless set).
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    arena: Vec<f32>,
    max_batch: usize,
    precision: Precision,
}

impl Workspace {
    /// A workspace able to hold batches of up to `max_batch` examples of model `M`, with the
    /// per-task scratch sized for the threads of the current rayon pool ([`Workspace::len`]).
    pub fn new<M: DpModel>(max_batch: usize) -> Self {
        Workspace {
            arena: vec![0.0; Self::len::<M>(max_batch)],
            max_batch: max_batch.max(1),
            precision: Precision::F32,
        }
    }

    /// The same workspace with its products in `precision`. With [`Precision::Bf16`] the products
    /// that carry activations forward and gradients back to the inputs (convolutions, linear layers,
    /// the LSTM, attention's projections) round their operands to bf16 and accumulate in f32, and so
    /// do those that form the kept per-example gradients of direct layers (both normed and summed) and
    /// the gradient sums of large convs that do not fold (their norms then read the rounded operands); the
    /// other norms and sums stay f32. Either way each example's clipped gradient is exactly the one
    /// whose norm was measured.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The precision of the products of this workspace's passes.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `f32`s of a workspace for batches of up to `max_batch` examples of `M`: the fixed part, the
    /// per-example buffers of the memory plan, then [`Workspace::tasks`] slots of the per-task
    /// scratch (the conv passes' patches of one example each).
    pub fn len<M: DpModel>(max_batch: usize) -> usize {
        let max_batch = max_batch.max(1);
        M::WORKSPACE_FIXED
            + M::WORKSPACE_PER_EXAMPLE * max_batch
            + M::WORKSPACE_PER_TASK * Self::tasks(max_batch)
    }

    /// Slots of the per-task scratch for batches of up to `max_batch`: `TASKS_PER_THREAD` per thread
    /// of the current rayon pool, never more than the batch. A step run later on more threads is
    /// still correct (fewer tasks per thread).
    pub fn tasks(max_batch: usize) -> usize {
        (dp_spec::cost::TASKS_PER_THREAD * rayon::current_num_threads()).min(max_batch.max(1))
    }

    /// `f32`s of `M`'s workspace that do not grow with the batch, at most: the fixed part and every
    /// slot of the per-task scratch. A memory budget less this, divided by
    /// `WORKSPACE_PER_EXAMPLE`, bounds the batch.
    pub fn fixed_len<M: DpModel>() -> usize {
        M::WORKSPACE_FIXED + M::WORKSPACE_PER_TASK * Self::tasks(usize::MAX)
    }

    /// The largest batch this workspace holds.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Grows the workspace if `batch` does not fit (the only allocation a step can cause).
    pub fn ensure<M: DpModel>(&mut self, batch: usize) {
        if batch > self.max_batch {
            *self = Workspace::new::<M>(batch).with_precision(self.precision);
        }
    }

    /// The whole arena; generated code carves it at offsets fixed by the memory plan.
    pub fn arena(&mut self) -> &mut [f32] {
        &mut self.arena
    }
}

/// A model compiled by `#[dp_model]` (or written by hand against the same contract).
///
/// The private primitive is split in two calls on the same batch and workspace:
/// [`per_example_norms`](DpModel::per_example_norms) runs the forward and the one backward pass,
/// keeping each layer's inputs and output gradients in the workspace ("book-keeping"), and returns
/// every example's squared gradient norm per parameter group; the runtime turns norms into clip
/// factors; [`clipped_sum`](DpModel::clipped_sum) then forms Σ_i c_i·g_i without a second backward.
pub trait DpModel: Sized + Send + Sync {
    /// `f32` for dense inputs, `u32` for token ids.
    type Input: InputElem;

    /// The struct's name.
    const NAME: &'static str;
    /// The shape of one example's input, e.g. `[1, 28, 28]` or `[104]`.
    const INPUT_SHAPE: &'static [usize];
    /// The largest token id plus one, for token inputs; `0` for dense inputs.
    const VOCAB: usize;
    const LOSS: Loss;
    /// Every parameter tensor, in buffer order.
    const PARAMS: &'static [ParamSpec];
    /// Total number of parameters, trained and frozen (the length of the flat buffer, of the state
    /// dict and of a checkpoint's parameters).
    const PARAM_COUNT: usize;
    /// The trained parameters: the buffer is laid out trained-first, so they are
    /// `params()[..TRAINED_PARAM_COUNT]`, and every gradient, the noise, the optimizer's state and the
    /// distributed reduce have this length. Frozen parameters (after them) are never changed by
    /// training. A model without frozen parameters trains all of them.
    const TRAINED_PARAM_COUNT: usize = Self::PARAM_COUNT;
    /// The LoRA layers, whose adapters [`crate::lora::merged_state_dict`] can fold into their base
    /// weights.
    const LORA: &'static [LoraSpec] = &[];
    /// Names of the parameter groups (parameterised layers), indexed by `ParamSpec::group`.
    const GROUPS: &'static [&'static str];
    /// The compiled plan, layer by layer.
    const LAYERS: &'static [LayerInfo];
    /// Workspace `f32`s needed per example in a batch (static memory plan).
    const WORKSPACE_PER_EXAMPLE: usize;
    /// Workspace `f32`s needed independently of the batch size.
    const WORKSPACE_FIXED: usize;
    /// Workspace `f32`s per parallel task, after the per-example buffers: the scratch of one task
    /// of the passes that run example by example (a conv's patches of one example). The workspace
    /// holds [`Workspace::tasks`] of them; `0` for a model that needs none.
    const WORKSPACE_PER_TASK: usize = 0;

    /// Builds a model from a flat parameter buffer of length `PARAM_COUNT`.
    fn from_params(params: Vec<f32>) -> Self;
    fn params(&self) -> &[f32];
    fn params_mut(&mut self) -> &mut [f32];

    /// The trained prefix of the parameters, the part an optimizer updates.
    fn trained_params_mut(&mut self) -> &mut [f32] {
        &mut self.params_mut()[..Self::TRAINED_PARAM_COUNT]
    }
    /// PyTorch's default initialisation (Kaiming-uniform weights, uniform biases).
    fn init(rng: &mut dyn RngCore) -> Self;

    /// Outputs (logits or predictions) for `batch` examples: `outputs.len() == batch * LOSS.output_len()`.
    fn forward(&self, ws: &mut Workspace, inputs: &[Self::Input], batch: usize, outputs: &mut [f32]);

    /// Non-private training: writes each example's loss into `losses` and ADDS Σ_i g_i into `grad`
    /// (`TRAINED_PARAM_COUNT` long, like every gradient below).
    fn loss_and_gradient(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, Self::Input>,
        losses: &mut [f32],
        grad: &mut [f32],
    );

    /// Private step, first half: writes each example's loss into `losses` (`[B]`) and each example's
    /// squared gradient norm per group into `sq_norms` (`[B, GROUPS.len()]`, example-major).
    ///
    /// The norms contract: every entry of `sq_norms` is OVERWRITTEN; what the buffer held before
    /// (a previous chunk's norms, garbage, NaN) never reaches the result, so the runtime may hand in a
    /// buffer it only resized. Generated models meet it per parameter group: a norm kernel that adds
    /// into its column runs after the column is zeroed (`tests/reference_models.rs` checks every
    /// kind of layer over buffers of garbage and of NaN).
    fn per_example_norms(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, Self::Input>,
        losses: &mut [f32],
        sq_norms: &mut [f32],
    );

    /// Private step, second half, on the batch and workspace of the preceding `per_example_norms`:
    /// ADDS Σ_i c_{i,g}·g_{i,g} into `grad`, with `factors` shaped like `sq_norms`.
    /// An example whose factors are exactly 0 contributes exactly 0, even if its activations or
    /// gradients are not finite (it is skipped, never multiplied).
    fn clipped_sum(
        &self,
        ws: &mut Workspace,
        batch: Batch<'_, Self::Input>,
        factors: &[f32],
        grad: &mut [f32],
    );

    /// Why the model has no device program (`None`: it has one). `#[dp_model]` says which step has no
    /// device primitives yet; a model written by hand has none.
    const DEVICE_UNSUPPORTED: Option<&'static str> = Some("a model written by hand has no device program");
    /// Device arena values per example (the plan's buffers and the device's scratch).
    const DEVICE_ARENA_PER_EXAMPLE: usize = 0;
    /// The first values per example of the device arena, which hold every span marked
    /// [`Stored::F32`](crate::device::Stored::F32) (the device lays those buffers out first): all a
    /// device storing in bf16 needs of its f32 arena (by default the whole arena: no cut).
    const DEVICE_ARENA_F32_PER_EXAMPLE: usize = Self::DEVICE_ARENA_PER_EXAMPLE;
    /// Values per example of the largest arena buffer stored in the device's precision that an f32
    /// product may read: a device storing in bf16 converts such an operand into a slot of this many
    /// values per example (it has no f32 slot in the arena).
    const DEVICE_CONVERSION_SLOT_PER_EXAMPLE: usize = Self::DEVICE_ARENA_PER_EXAMPLE;

    /// The device program's forward of `n` examples: the outputs left in their arena buffer.
    fn device_forward(dev: &mut dyn DeviceOps, n: usize) -> Result<(), DeviceError> {
        let _ = (dev, n);
        Err(Self::device_unsupported())
    }

    /// Where [`device_forward`](DpModel::device_forward) leaves the outputs of `n` examples: an arena
    /// span of `n · output_len` values, marked as the plan stores it (in bf16 on a device storing in
    /// bf16).
    fn device_outputs(n: usize) -> Result<crate::device::Span, DeviceError> {
        let _ = n;
        Err(Self::device_unsupported())
    }

    /// The device program's forward, loss and one backward pass over `n` examples (inputs and labels
    /// in their regions): each example's loss in `Losses`, every layer's input and δ kept in the arena.
    fn device_forward_backward(dev: &mut dyn DeviceOps, n: usize) -> Result<(), DeviceError> {
        let _ = (dev, n);
        Err(Self::device_unsupported())
    }

    /// After [`device_forward_backward`](DpModel::device_forward_backward): ADDS Σ_i g_i into `Grad`.
    fn device_gradient_sum(dev: &mut dyn DeviceOps, n: usize) -> Result<(), DeviceError> {
        let _ = (dev, n);
        Err(Self::device_unsupported())
    }

    /// After [`device_forward_backward`](DpModel::device_forward_backward): OVERWRITES `SqNorms` with
    /// every example's squared gradient norm per group (the contract of
    /// [`per_example_norms`](DpModel::per_example_norms)).
    fn device_norms(dev: &mut dyn DeviceOps, n: usize) -> Result<(), DeviceError> {
        let _ = (dev, n);
        Err(Self::device_unsupported())
    }

    /// After [`device_norms`](DpModel::device_norms): ADDS Σ_i c_{i,g}·g_{i,g} into `Grad` with the
    /// factors in `Factors` (an example with factor 0 contributes exactly 0).
    fn device_clipped_sum(dev: &mut dyn DeviceOps, n: usize) -> Result<(), DeviceError> {
        let _ = (dev, n);
        Err(Self::device_unsupported())
    }

    /// The error of a model without a device program.
    fn device_unsupported() -> DeviceError {
        DeviceError::Unsupported {
            model: Self::NAME,
            reason: Self::DEVICE_UNSUPPORTED.unwrap_or("its device program refused"),
        }
    }

    /// Number of `Self::Input` values in one example.
    fn input_len() -> usize {
        Self::INPUT_SHAPE.iter().product()
    }

    /// The compiled plan as a table: each layer with its shapes, parameters, strategy, FLOPs and bytes.
    fn describe() -> String {
        crate::describe::describe_plan(Self::NAME, Self::PARAM_COUNT, Self::TRAINED_PARAM_COUNT, Self::LAYERS)
    }
}
