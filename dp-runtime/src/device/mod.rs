//! The device program's contract: the primitives a model's generated device program launches, over
//! buffers named by region and offset rather than by host slices.
//!
//! `#[dp_model]` emits, beside the CPU program, a device program for models whose every op has device
//! primitives ([`DpModel::DEVICE_UNSUPPORTED`](crate::DpModel::DEVICE_UNSUPPORTED) says why a model
//! has none): the same planned passes (forward, loss and backward, norms, clipped sum, plain gradient
//! sum) as calls of [`DeviceOps`], with every dimension and offset a literal of the plan. A backend
//! implements the trait: `dp_cuda` on an NVIDIA GPU (cuBLAS for the products, NVRTC-compiled kernels
//! for the rest), [`host::HostDevice`] on the CPU, a plain reference that lets the launch sequence be
//! tested against the CPU program where there is no GPU.
//!
//! Buffers live in the regions of [`Region`], each one device allocation; the arena is laid out as the
//! CPU's (`dp_kernels::arena::carve`): the plan's buffer `k` of per-example length `len_k` at
//! `offset_k · n`, `len_k · n` long for a batch of `n`.

pub mod host;

use dp_kernels::activation::Activation;
pub use dp_kernels::gemm_bf16::Precision;
pub use dp_kernels::norm_layers::GroupNormDims;
pub use dp_kernels::patches::PatchDims;
pub use dp_spec::{Conv2dGeometry, LstmDims, Pool2dGeometry};

/// The device allocations a program reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// The parameters, `PARAM_COUNT` (trained first).
    Params,
    /// The gradient being summed, `TRAINED_PARAM_COUNT`, laid out as the trained parameters.
    Grad,
    /// The plan's per-example buffers.
    Arena,
    /// The batch's inputs, `n · input_len`.
    Inputs,
    /// The batch's labels, `n` (class indices or 0/1 as `f32`) or `n · outputs` (regression).
    Labels,
    /// Each example's loss, `n`.
    Losses,
    /// Each example's squared norm per group, `n · groups`, example-major.
    SqNorms,
    /// Each example's clip factor per group, shaped like `SqNorms`.
    Factors,
    /// The batch's token ids, `n · T` (`u32`, for models with token inputs; `Inputs` holds dense ones).
    Tokens,
}

/// `len` values of a region from `offset`, stored as `stored` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub region: Region,
    pub offset: usize,
    pub len: usize,
    pub stored: Stored,
}

/// What a span's values are stored as in a device's [`Precision`]. The device program marks every
/// arena span with its buffer's class (the compiler decides it per buffer, so every span of a buffer
/// carries the same mark): a device that stores in bf16 keeps the arena's `OfPrecision` values apart
/// from its `F32` ones, at the same offsets, so each buffer is written and read in one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// f32 in every precision: parameters, gradients, the batch, losses, norms and clip factors, and
    /// the arena buffers whose rounding would break a contract or an index: per-example gradients
    /// kept for the clipped sum, the clipping scratch (an example's `c·δ`, whose norm must not exceed
    /// what was measured), normalisation statistics, pooling's argmax, an LSTM's cells and gates.
    F32,
    /// bf16 on a device storing in [`Precision::Bf16`], f32 otherwise: the activations and output
    /// gradients (and a conv's patches and attention's score gradients, derived from them). The norms
    /// and the clipped sum read the same stored values, so what is normed is still what is summed.
    OfPrecision,
}

impl Span {
    /// A span stored in f32 in every precision.
    pub const fn new(region: Region, offset: usize, len: usize) -> Self {
        Span { region, offset, len, stored: Stored::F32 }
    }

    /// This span stored in the device's precision ([`Stored::OfPrecision`]).
    pub const fn of_precision(self) -> Self {
        Span { stored: Stored::OfPrecision, ..self }
    }

    /// The values `[from, from + len)` of this span.
    pub fn sub(self, from: usize, len: usize) -> Self {
        assert!(from + len <= self.len, "{len} values at {from} of a span of {}", self.len);
        Span { offset: self.offset + from, len, ..self }
    }
}

/// `c = op(a)·op(b) + beta·c`, row-major: `op(a)` is `m×k`, stored `m×k` or, transposed, `k×m`;
/// `op(b)` is `k×n`, stored `k×n` or, transposed, `n×k`; `c` is `m×n`. `beta` is 0 (overwrite: `c`'s
/// previous values, NaN included, never matter) or 1 (accumulate).
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Span,
    pub a_transposed: bool,
    pub b: Span,
    pub b_transposed: bool,
    pub c: Span,
    pub accumulate: bool,
    /// Whether a device in [`Precision::Bf16`] may round this product's operands.
    pub operands: Operands,
}

/// What a product's operands are in a device's [`Precision`]: the device program marks every product
/// with the rule the CPU program follows (docs/PERFORMANCE.md, "bf16 products"), so that a clipped sum
/// adds exactly the per-example gradients whose norms were measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operands {
    /// f32 in every precision: a sum of gradients whose norms were formed apart from it, from f32
    /// operands (a ghost layer's clipped or plain sum). Rounding its operands would sum gradients
    /// other than those normed.
    F32,
    /// Rounded to bf16 in [`Precision::Bf16`] (products of bf16 pairs accumulated in f32), f32
    /// otherwise: the forward's products, the backward's products to the inputs, and the products that
    /// form kept per-example gradients (what is normed is then what is summed).
    OfPrecision,
}

impl Gemm {
    /// The spans are as long as the shapes need.
    pub fn check(&self) -> Result<(), DeviceError> {
        let fits =
            self.a.len >= self.m * self.k && self.b.len >= self.k * self.n && self.c.len >= self.m * self.n;
        if fits {
            Ok(())
        } else {
            Err(DeviceError::Mismatch(format!("a GEMM of {}×{}×{} over {self:?}", self.m, self.n, self.k)))
        }
    }
}

/// A strided batch of products: `c_b = op(a_b)·op(b_b) (+ c_b)` for `b` in `0..batch`, with the
/// shapes and transposes of `gemm` and operand `b` of each at `b · stride` values past its span's
/// start (stride 0: one matrix shared by the whole batch, e.g. a convolution's weight).
#[derive(Debug, Clone, Copy)]
pub struct BatchedGemm {
    pub gemm: Gemm,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl BatchedGemm {
    /// The spans hold every operand of the batch.
    pub fn check(&self) -> Result<(), DeviceError> {
        let g = &self.gemm;
        let last = self.batch.saturating_sub(1);
        let fits = self.batch > 0
            && g.a.len >= last * self.stride_a + g.m * g.k
            && g.b.len >= last * self.stride_b + g.k * g.n
            && g.c.len >= last * self.stride_c + g.m * g.n;
        if fits {
            Ok(())
        } else {
            Err(DeviceError::Mismatch(format!("a batch of {} GEMMs over {self:?}", self.batch)))
        }
    }
}

/// The row length each operand of a [`BatchedGemm`] is stored with, for matrices read or written in
/// place inside wider rows (an attention head's columns of a `[T, 3d]` row): element `(r, c)` of an
/// operand as stored (`a` is `m×k`, or `k×m` transposed; `b` `k×n` or `n×k`; `c` `m×n`) is at
/// `r · ld + c` from its matrix's start. Each is at least its stored width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadingDims {
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

impl LeadingDims {
    /// The spans hold every operand of the batch at these row lengths, each at least its stored
    /// width, and the outputs of a batch of more than one product do not overlap.
    pub fn check(&self, bg: &BatchedGemm) -> Result<(), DeviceError> {
        let g = &bg.gemm;
        let (a_rows, a_cols) = if g.a_transposed { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.b_transposed { (g.n, g.k) } else { (g.k, g.n) };
        // The values a stored `rows × cols` matrix spans at row length `ld`.
        let extent = |rows: usize, cols: usize, ld: usize| match rows * cols {
            0 => 0,
            _ => (rows - 1) * ld + cols,
        };
        let last = bg.batch.saturating_sub(1);
        let c_extent = extent(g.m, g.n, self.c);
        let fits = bg.batch > 0
            && self.a >= a_cols
            && self.b >= b_cols
            && self.c >= g.n
            && g.a.len >= last * bg.stride_a + extent(a_rows, a_cols, self.a)
            && g.b.len >= last * bg.stride_b + extent(b_rows, b_cols, self.b)
            && g.c.len >= last * bg.stride_c + c_extent
            && (bg.batch == 1 || bg.stride_c >= c_extent);
        if fits {
            Ok(())
        } else {
            Err(DeviceError::Mismatch(format!("a batch of {} GEMMs over {bg:?} with {self:?}", bg.batch)))
        }
    }
}

/// The buffers an LSTM's forward keeps for its backward, each example-major: `gates` `n × T × 4h`
/// (the activated i, f, g, o), `cells` and `hprev` `n × T × h` (`c_t`, and `h_{t−1}`: zero at t = 0).
#[derive(Debug, Clone, Copy)]
pub struct LstmSaved {
    pub gates: Span,
    pub cells: Span,
    pub hprev: Span,
}

/// One time step of an LSTM's forward ([`DeviceOps::lstm_forward_step`]): `saved.gates` holds every
/// step's input projection `W_ih·x_t` beforehand, `recurrent` (`n × 4h`) this step's `W_hh·h_{t−1}`
/// (not read at t = 0), `hidden` (`n × h`) `h_{t−1}` on entry (not read at t = 0) and `h_t` on exit.
#[derive(Debug, Clone, Copy)]
pub struct LstmForwardStep {
    pub saved: LstmSaved,
    pub bias: Span,
    pub recurrent: Span,
    pub hidden: Span,
    /// `n × T × h`: the hidden states, the layer's output.
    pub out: Span,
}

/// One time step of an LSTM's backward through time ([`DeviceOps::lstm_backward_step`]), from the
/// last step down: `recurrent` (`n × h`) the gradient reaching `h_t` through step t + 1 (`δ_{t+1}·W_hh`;
/// not read at the last step), `cell_grad` (`n × h`) the gradient reaching `c_t` from step t + 1 on
/// entry (not read at the last step) and the one reaching `c_{t−1}` on exit, `step_delta` (`n × 4h`)
/// this step's gate pre-activation gradients, also written into row t of `delta` (`n × T × 4h`).
#[derive(Debug, Clone, Copy)]
pub struct LstmBackwardStep {
    pub gates: Span,
    pub cells: Span,
    /// `n × T × h`: the gradient of the layer's output.
    pub dout: Span,
    pub recurrent: Span,
    pub cell_grad: Span,
    pub step_delta: Span,
    pub delta: Span,
}

/// [`DeviceOps::lstm_forward`] step by step: the recurrent product and [`DeviceOps::lstm_forward_step`]
/// at every time step.
pub fn lstm_forward_by_steps<D: DeviceOps + ?Sized>(
    dev: &mut D,
    step: &LstmForwardStep,
    w_hh: Span,
    dims: &LstmDims,
    n: usize,
) -> Result<(), DeviceError> {
    for t in 0..dims.steps {
        if t > 0 {
            dev.gemm(Gemm {
                m: n,
                n: 4 * dims.hidden,
                k: dims.hidden,
                a: step.hidden,
                a_transposed: false,
                b: w_hh,
                b_transposed: true,
                c: step.recurrent,
                accumulate: false,
                operands: Operands::OfPrecision,
            })?;
        }
        dev.lstm_forward_step(step, dims, n, t)?;
    }
    Ok(())
}

/// [`DeviceOps::lstm_backward`] step by step: from the last time step, the product through the next
/// step and [`DeviceOps::lstm_backward_step`].
pub fn lstm_backward_by_steps<D: DeviceOps + ?Sized>(
    dev: &mut D,
    step: &LstmBackwardStep,
    w_hh: Span,
    dims: &LstmDims,
    n: usize,
) -> Result<(), DeviceError> {
    for t in (0..dims.steps).rev() {
        if t + 1 < dims.steps {
            dev.gemm(Gemm {
                m: n,
                n: dims.hidden,
                k: 4 * dims.hidden,
                a: step.step_delta,
                a_transposed: false,
                b: w_hh,
                b_transposed: false,
                c: step.recurrent,
                accumulate: false,
                operands: Operands::OfPrecision,
            })?;
        }
        dev.lstm_backward_step(step, dims, n, t)?;
    }
    Ok(())
}

/// Column `group` of a per-group buffer of `groups` columns exists (the primitives that write or read
/// one group's norms or factors check it before they touch anything).
pub fn check_group(what: &str, groups: usize, group: usize) -> Result<(), DeviceError> {
    if group < groups {
        Ok(())
    } else {
        Err(DeviceError::Mismatch(format!("{what}: group {group} of {groups}")))
    }
}

/// The losses a device program computes, each example's loss and its gradient in one pass (summed
/// over examples, never averaged, as `dp_kernels::loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceLoss {
    /// `classes` logits per example, a class index per label.
    SoftmaxCrossEntropy { classes: usize },
    /// One logit per example, a 0/1 label.
    BinaryCrossEntropyWithLogits,
    /// `outputs` predictions and as many labels per example.
    MeanSquaredError { outputs: usize },
}

/// What the per-example row operation of a clipped sum writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowScale {
    /// `dst_r = c_i · src_r`.
    ByFactor,
    /// `dst_r = src_r`.
    Copy,
}

/// Why a device program could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The model has no device program: the op that has no device primitives yet.
    #[error("{model} has no device program: {reason}")]
    Unsupported { model: &'static str, reason: &'static str },
    /// Spans or shapes that do not fit (an internal invariant of generated code).
    #[error("device program: {0}")]
    Mismatch(String),
    /// The backend failed (a launch, a library call), with its message.
    #[error("device: {0}")]
    Backend(String),
}

/// The primitives of a device program. Every method launches work on the device in call order (a
/// GPU backend queues it on one stream); none copies data to or from the host.
pub trait DeviceOps {
    /// A matrix product ([`Gemm`]).
    fn gemm(&mut self, g: Gemm) -> Result<(), DeviceError>;

    /// `y[r, c] = act(y[r, c] + bias[c])` in place over `rows × cols` (no bias: `act(y)`).
    fn bias_activation(
        &mut self,
        y: Span,
        bias: Option<Span>,
        rows: usize,
        cols: usize,
        act: Activation,
    ) -> Result<(), DeviceError>;

    /// `y = act(x)` over `len` values (an activation step of its own).
    fn activation(&mut self, x: Span, y: Span, len: usize, act: Activation) -> Result<(), DeviceError>;

    /// `grad *= act'(y)` in place, the derivative read from the activation's output `y` (only the
    /// activations whose derivative the output gives: identity, ReLU, tanh, sigmoid).
    fn activation_backward(
        &mut self,
        grad: Span,
        y: Span,
        len: usize,
        act: Activation,
    ) -> Result<(), DeviceError>;

    /// Each example's loss into `losses` and its gradient with respect to the outputs into `grad`.
    fn loss(
        &mut self,
        loss: DeviceLoss,
        outputs: Span,
        labels: Span,
        rows: usize,
        losses: Span,
        grad: Span,
    ) -> Result<(), DeviceError>;

    /// The Goodfellow identity of a linear layer at one position per example, OVERWRITING column
    /// `group` of `sq_norms` (`rows × groups`): `‖a_i‖²·‖δ_i‖² (+ ‖δ_i‖² with a bias)`.
    #[allow(clippy::too_many_arguments)]
    fn linear_ghost_norms(
        &mut self,
        a: Span,
        delta: Span,
        rows: usize,
        inputs: usize,
        outputs: usize,
        has_bias: bool,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError>;

    /// `dst` row by row from `src` (`rows × cols`, `positions` rows per example): an example whose
    /// factor in column `group` of `factors` is exactly 0 gets rows of exact zeros (its values, NaN
    /// included, are never read into the result); the others get their rows as `scale` says.
    #[allow(clippy::too_many_arguments)]
    fn scale_rows(
        &mut self,
        src: Span,
        dst: Span,
        rows: usize,
        positions: usize,
        cols: usize,
        factors: Span,
        groups: usize,
        group: usize,
        scale: RowScale,
    ) -> Result<(), DeviceError>;

    /// `dst[c] += Σ_r src[r, c]` over `rows × cols` (a bias gradient).
    fn column_sums_add(&mut self, src: Span, rows: usize, cols: usize, dst: Span) -> Result<(), DeviceError>;

    /// `dst += src` over `len` values (a gradient into an input with other readers).
    fn add_into(&mut self, dst: Span, src: Span, len: usize) -> Result<(), DeviceError>;

    /// `dst = src` over `len` values.
    fn copy(&mut self, dst: Span, src: Span, len: usize) -> Result<(), DeviceError>;

    /// Zeroes `len` values.
    fn zero(&mut self, dst: Span, len: usize) -> Result<(), DeviceError>;

    /// An embedding averaged over the sequence: `out[i] = (Σ_t table[ids[i, t]]) / T`, `ids` in
    /// `Tokens` (`n × steps`), `table` `vocab × dim`. An id outside the vocabulary (the loaders refuse
    /// them) makes the example's output NaN rather than reading outside the table.
    #[allow(clippy::too_many_arguments)]
    fn embedding_mean_forward(
        &mut self,
        ids: Span,
        table: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        out: Span,
    ) -> Result<(), DeviceError>;

    /// Its per-example squared norms, OVERWRITING column `group` of `sq_norms`:
    /// `‖g_i / T‖² · Σ_v count_{i,v}²` with `g_i` the output's gradient (`delta`, `n × dim`).
    #[allow(clippy::too_many_arguments)]
    fn embedding_mean_norms(
        &mut self,
        ids: Span,
        delta: Span,
        n: usize,
        steps: usize,
        dim: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError>;

    /// Its gradient: ADDS `c_i · g_i / T` into row `ids[i, t]` of `grad` for every position, with
    /// `c_i` column `group` of `factors` (`Some((factors, groups, group))`, an example with factor 0
    /// skipped) or 1 (`None`, the plain sum). Ids outside the vocabulary are skipped.
    #[allow(clippy::too_many_arguments)]
    fn embedding_mean_scatter(
        &mut self,
        ids: Span,
        delta: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        factors: Option<(Span, usize, usize)>,
        grad: Span,
    ) -> Result<(), DeviceError>;

    /// A strided batch of matrix products ([`BatchedGemm`]).
    fn gemm_batched(&mut self, g: BatchedGemm) -> Result<(), DeviceError>;

    /// Each example's patches (im2col), `cols` OVERWRITTEN: example `i`'s `(in_c·kh·kw) × positions`
    /// matrix at `i · patches_len`, row `k = (c·kh + r)·kw + s` over every input channel `c` (the
    /// weight's `[out][in][kh][kw]` order), column `p = oh·out_w + ow`; taps in the padding are 0. A
    /// grouped conv's group `q` reads rows `q·patch_len..(q + 1)·patch_len`, one contiguous block.
    fn im2col(&mut self, x: Span, geom: &Conv2dGeometry, n: usize, cols: Span) -> Result<(), DeviceError>;

    /// Its adjoint: `dx` OVERWRITTEN with, at every input value, the sum of the patch entries (laid out
    /// as [`im2col`](DeviceOps::im2col) writes them) that read it.
    fn col2im(&mut self, cols: Span, geom: &Conv2dGeometry, n: usize, dx: Span) -> Result<(), DeviceError>;

    /// [`im2col`](DeviceOps::im2col) with the batch folded into the columns: `cols` OVERWRITTEN with one
    /// `(in_c·kh·kw) × (n·positions)` matrix, example `i`'s entry at row `k`, column `p` of its own
    /// patches at row `k`, column `i·positions + p` (as [`fold_examples`](DeviceOps::fold_examples)
    /// lays out im2col's). One product over its columns then sums over every example and position: a
    /// conv's plain weight gradient `Σ_i δ_i·P_iᵀ` without the per-example gradients. A grouped conv's
    /// group `q` reads rows `q·patch_len..(q + 1)·patch_len`. With `factors` (`(factors, groups,
    /// group)`), the columns of an example whose factor is exactly 0 are 0, its input never read: a
    /// clipped sum's operand, through which that example's NaN must not reach the sum; and every other
    /// value is rounded to the device's precision (in bf16, as a product in the precision reads it),
    /// so that an f32 product over them sums the gradients whose norms such products measured.
    fn im2col_folded(
        &mut self,
        x: Span,
        geom: &Conv2dGeometry,
        n: usize,
        factors: Option<(Span, usize, usize)>,
        cols: Span,
    ) -> Result<(), DeviceError>;

    /// The examples' `rows × cols` matrices of `src` (`n × rows × cols`) side by side: `dst`
    /// OVERWRITTEN with one `rows × (n·cols)` matrix, `dst[r][i·cols + c] = src[i][r][c]` (a conv's
    /// NCHW output gradient as one `channels × (n·positions)` matrix), times `c_i` with `factors` (an
    /// example whose factor is exactly 0 gives 0, its values never read; the others rounded to the
    /// device's precision before they are scaled, as for [`im2col_folded`](DeviceOps::im2col_folded)).
    fn fold_examples(
        &mut self,
        src: Span,
        dims: (usize, usize, usize),
        factors: Option<(Span, usize, usize)>,
        dst: Span,
    ) -> Result<(), DeviceError>;

    /// `sq_norms[i·groups + group]` OVERWRITTEN with `Σ_k a_i[k]·b_i[k]` over the `len` values of each
    /// example's rows of `a` and `b` (`n × len` each), plus `|bias_i|²` when given: a conv's ghost norm
    /// from its two per-example Gram matrices (`δ_iᵀδ_i` and `P_iᵀP_i`, `T × T`), whose element-wise
    /// product sums to `|δ_i·P_iᵀ|²`. A sum that rounding leaves below 0 is 0 (a negative squared norm
    /// would read as invalid); NaN stays NaN. Equal across backends to rounding (the order of the sum).
    #[allow(clippy::too_many_arguments)]
    fn gram_sq_norms(
        &mut self,
        grams: (Span, Span),
        len: usize,
        bias: Option<(Span, usize)>,
        n: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError>;

    /// `y[i, c, p] = act(y[i, c, p] + bias[c])` in place over `n × channels × positions` (no bias:
    /// `act(y)`), a convolution's epilogue over its NCHW output.
    #[allow(clippy::too_many_arguments)]
    fn channel_bias_activation(
        &mut self,
        y: Span,
        bias: Option<Span>,
        n: usize,
        channels: usize,
        positions: usize,
        act: Activation,
    ) -> Result<(), DeviceError>;

    /// `dst[r] = Σ_c src[r, c]` over `rows × cols`, OVERWRITING `dst` (per-example bias gradients).
    fn row_sums(&mut self, src: Span, rows: usize, cols: usize, dst: Span) -> Result<(), DeviceError>;

    /// Kept per-example gradients' squared norms, OVERWRITING column `group` of `sq_norms`: the sum of
    /// squares of example `i`'s row of `weight` (`n × weight_len`) plus, when given, its row of the bias
    /// part (`n × bias_len`).
    #[allow(clippy::too_many_arguments)]
    fn kept_sq_norms(
        &mut self,
        weight: Span,
        weight_len: usize,
        bias: Option<(Span, usize)>,
        n: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError>;

    /// `dst += Σ_i c_i · src_i` over the rows of `src` (`n × len`), with `c_i` column `group` of
    /// `factors` (`Some((factors, groups, group))`: an example with factor exactly 0 is skipped, its
    /// row, NaN included, never read into the sum) or 1 (`None`: the plain sum of every row).
    fn kept_weighted_sum(
        &mut self,
        src: Span,
        n: usize,
        len: usize,
        factors: Option<(Span, usize, usize)>,
        dst: Span,
    ) -> Result<(), DeviceError>;

    /// Max pooling, as `dp_kernels::pool::max_pool2d_forward`: each window's first maximum in row-major
    /// order (its first NaN if it has one), and `argmax` the index of that value within the example's
    /// input, stored as the bits of a `u32` in the `f32` span.
    fn max_pool_forward(
        &mut self,
        x: Span,
        geom: &Pool2dGeometry,
        n: usize,
        y: Span,
        argmax: Span,
    ) -> Result<(), DeviceError>;

    /// Its backward: `dx` OVERWRITTEN with each output gradient at its window's argmax (summed where
    /// windows share a maximum).
    fn max_pool_backward(
        &mut self,
        dy: Span,
        argmax: Span,
        geom: &Pool2dGeometry,
        n: usize,
        dx: Span,
    ) -> Result<(), DeviceError>;

    /// Average pooling: each window's sum over `kernel²` (padding counts as zeros).
    fn avg_pool_forward(
        &mut self,
        x: Span,
        geom: &Pool2dGeometry,
        n: usize,
        y: Span,
    ) -> Result<(), DeviceError>;

    /// Its backward: `dx` OVERWRITTEN with `dy / kernel²` summed over the windows of every input.
    fn avg_pool_backward(
        &mut self,
        dy: Span,
        geom: &Pool2dGeometry,
        n: usize,
        dx: Span,
    ) -> Result<(), DeviceError>;

    /// `y[i, c] = mean_p x[i, c, p]` over `n × channels × plane`.
    fn global_avg_pool_forward(
        &mut self,
        x: Span,
        n: usize,
        channels: usize,
        plane: usize,
        y: Span,
    ) -> Result<(), DeviceError>;

    /// Its backward: `dx[i, c, p] = dy[i, c] / plane`, OVERWRITING `dx`.
    fn global_avg_pool_backward(
        &mut self,
        dy: Span,
        n: usize,
        channels: usize,
        plane: usize,
        dx: Span,
    ) -> Result<(), DeviceError>;

    /// Group norm, as `dp_kernels::norm_layers::group_norm_forward`: each example's `channels / groups`
    /// consecutive channels of `plane` values normalised by their mean and biased variance
    /// (`rstd = 1/√(var + 1e-5)`, both kept in `mean` and `rstd`, `n × groups`), then `y = x̂·w_c + b_c`.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_forward(
        &mut self,
        x: Span,
        dims: &GroupNormDims,
        n: usize,
        weight: Span,
        bias: Span,
        y: Span,
        mean: Span,
        rstd: Span,
    ) -> Result<(), DeviceError>;

    /// Its backward, as `dp_kernels::norm_layers::group_norm_backward`: `dx` OVERWRITTEN, and each
    /// example's affine gradients into `affine` (`n × 2·channels`: `Σ_plane dy·x̂` per channel, then
    /// `Σ_plane dy`).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward(
        &mut self,
        x: Span,
        dy: Span,
        weight: Span,
        mean: Span,
        rstd: Span,
        dims: &GroupNormDims,
        n: usize,
        dx: Span,
        affine: Span,
    ) -> Result<(), DeviceError>;

    /// An embedding over a sequence: `out[i, t] = table[ids[i, t]]` (`n × steps × dim`), `ids` in
    /// `Tokens`. An id outside the vocabulary (the loaders refuse them) gives a row of NaN rather
    /// than a read outside the table.
    #[allow(clippy::too_many_arguments)]
    fn embedding_forward(
        &mut self,
        ids: Span,
        table: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        out: Span,
    ) -> Result<(), DeviceError>;

    /// Its per-example squared norms, OVERWRITING column `group` of `sq_norms`:
    /// `Σ_v ‖Σ_{t: ids[i, t] = v} δ_{i,t}‖²` with `δ` the output's gradient (`n × steps × dim`): the rows
    /// of positions holding the same token add up before they are squared, as the table gradient's
    /// row `v` is their sum.
    #[allow(clippy::too_many_arguments)]
    fn embedding_norms(
        &mut self,
        ids: Span,
        delta: Span,
        n: usize,
        steps: usize,
        dim: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError>;

    /// Its gradient: ADDS `c_i · δ_{i,t}` into row `ids[i, t]` of `grad` for every position, with `c_i`
    /// column `group` of `factors` (`Some((factors, groups, group))`, an example with factor 0 skipped,
    /// its rows never read) or 1 (`None`, the plain sum). Ids outside the vocabulary are skipped.
    #[allow(clippy::too_many_arguments)]
    fn embedding_scatter(
        &mut self,
        ids: Span,
        delta: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        factors: Option<(Span, usize, usize)>,
        grad: Span,
    ) -> Result<(), DeviceError>;

    /// `dst[i, c] = scale · Σ_t src[i, t, c]` over `n × steps × cols`, OVERWRITING `dst` (`n × cols`):
    /// a mean over the sequence (`scale = 1/T`) or each example's bias gradient (`scale = 1`).
    fn sequence_sums(
        &mut self,
        src: Span,
        n: usize,
        steps: usize,
        cols: usize,
        scale: f32,
        dst: Span,
    ) -> Result<(), DeviceError>;

    /// `dst[i, t, c] = scale · src[i, c]`, OVERWRITING `dst` (`n × steps × cols`): a sequence mean's
    /// backward (`scale = 1/T`).
    fn sequence_broadcast(
        &mut self,
        src: Span,
        n: usize,
        steps: usize,
        cols: usize,
        scale: f32,
        dst: Span,
    ) -> Result<(), DeviceError>;

    /// Time step `t` of an LSTM's forward (gates i, f, g, o; one bias), after its products: for each
    /// example, `pre = gates[i, t] + bias + (t > 0 ? recurrent[i] : 0)`; `i, f, o = σ(pre)`,
    /// `g = tanh(pre)` written over `gates[i, t]`; `c_t = f·c_{t−1} + i·g` (`c_{−1} = 0`) into
    /// `cells[i, t]`; `h_{t−1}` (0 at t = 0) into `hprev[i, t]`; `h_t = o·tanh(c_t)` into `out[i, t]`
    /// and `hidden[i]`. At t = 0 neither `recurrent` nor `hidden` is read.
    fn lstm_forward_step(
        &mut self,
        step: &LstmForwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> Result<(), DeviceError>;

    /// Time step `t` of its backward (see [`LstmBackwardStep`]): with `last = t + 1 == T`,
    /// `dh = dout[i, t] + (last ? 0 : recurrent[i])`, `dc = (last ? 0 : cell_grad[i]) + dh·o·(1 − tanh²c_t)`,
    /// the gate gradients `δi = dc·g·i(1−i)`, `δf = dc·c_{t−1}·f(1−f)` (`c_{−1} = 0`), `δg = dc·i·(1−g²)`,
    /// `δo = dh·tanh(c_t)·o(1−o)` into `step_delta[i]` and `delta[i, t]`, and `dc·f` into `cell_grad[i]`.
    fn lstm_backward_step(
        &mut self,
        step: &LstmBackwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> Result<(), DeviceError>;

    /// An LSTM's whole forward recurrence, after the input projection into `step.saved.gates`: for
    /// each time step from the first, `recurrent = hidden · W_hhᵀ` (not at t = 0; `w_hh` the `4h × h`
    /// weight, an [`Operands::OfPrecision`] product), then [`lstm_forward_step`](Self::lstm_forward_step).
    /// By default those launches ([`lstm_forward_by_steps`]); a device may run the recurrence as one
    /// (the GPU's fused kernel) with the same values.
    fn lstm_forward(
        &mut self,
        step: &LstmForwardStep,
        w_hh: Span,
        dims: &LstmDims,
        n: usize,
    ) -> Result<(), DeviceError> {
        lstm_forward_by_steps(self, step, w_hh, dims, n)
    }

    /// An LSTM's whole backward through time: for each time step from the last,
    /// `recurrent = step_delta · W_hh` (not at the last step; the gradient reaching `h_t` through step
    /// t + 1, an [`Operands::OfPrecision`] product), then [`lstm_backward_step`](Self::lstm_backward_step).
    /// By default those launches ([`lstm_backward_by_steps`]); a device may run the recurrence as one
    /// with the same values.
    fn lstm_backward(
        &mut self,
        step: &LstmBackwardStep,
        w_hh: Span,
        dims: &LstmDims,
        n: usize,
    ) -> Result<(), DeviceError> {
        lstm_backward_by_steps(self, step, w_hh, dims, n)
    }

    /// `grad *= act'(x)` in place over `len` values, the derivative read from the activation's INPUT
    /// `x` (any activation; those whose output does not give it, GELU, SiLU and exact GELU, need
    /// this), value for value `dp_kernels`' `Activation::derivative_from_input`.
    fn activation_backward_from_input(
        &mut self,
        grad: Span,
        x: Span,
        len: usize,
        act: Activation,
    ) -> Result<(), DeviceError>;

    /// `dst[r·dst_stride + c] = src[r·src_stride + c]` for `r < rows`, `c < cols`, OVERWRITING those
    /// values of `dst` only (the rest untouched): e.g. each example's first position (`src_stride =
    /// T·d`, `dst_stride = d`) or its gradient back into position 0 (the strides swapped). Strides of
    /// at least `cols`; the spans hold `(rows − 1)·stride + cols` values.
    #[allow(clippy::too_many_arguments)]
    fn copy_strided(
        &mut self,
        src: Span,
        src_stride: usize,
        dst: Span,
        dst_stride: usize,
        rows: usize,
        cols: usize,
    ) -> Result<(), DeviceError>;

    /// Images to patches, as `dp_kernels::patches::image_to_patches`: `out` (`n × patches ×
    /// patch_len`, OVERWRITTEN) from `x` (`n × C × H × W`), patches in row-major order over the image,
    /// each ordered `[C][P][P]`.
    fn patches_forward(&mut self, x: Span, dims: &PatchDims, n: usize, out: Span) -> Result<(), DeviceError>;

    /// Its inverse, as `dp_kernels::patches::patches_to_image`: the images' gradient `dx` (`n × C × H ×
    /// W`, OVERWRITTEN) from the patches' gradient `dout`.
    fn patches_backward(
        &mut self,
        dout: Span,
        dims: &PatchDims,
        n: usize,
        dx: Span,
    ) -> Result<(), DeviceError>;

    /// A strided batch of products ([`BatchedGemm`]) whose operands are stored with the row lengths
    /// of `ld` instead of their widths (an attention head's `T × d_h` block of a `[T, 3d]` row:
    /// row length `3d`). With `ld` the operands' widths it is [`gemm_batched`](DeviceOps::gemm_batched)
    /// without overlapping outputs.
    fn gemm_batched_rows(&mut self, g: BatchedGemm, ld: LeadingDims) -> Result<(), DeviceError>;

    /// Attention's scaled, masked row softmax IN PLACE over `blocks` consecutive `steps × steps`
    /// score matrices (one per example and head), as `dp_kernels::attention`: row `r` of each becomes
    /// `softmax(scale · x)` over its visible columns (all, or `0..=r` when `causal`), shifted by their
    /// maximum (NaN-ignoring, so a row of one visible value is exactly 1), and its columns after `r`
    /// exactly 0 when `causal` (whatever they held, NaN included).
    fn attention_softmax(
        &mut self,
        scores: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
        causal: bool,
    ) -> Result<(), DeviceError>;

    /// Its backward IN PLACE: `grad` (shaped as `probs`, `blocks` matrices of `steps × steps`) holds
    /// `dP` on entry and `scale · dS` on exit, `dS = P ⊙ (dP − rowsum(P ⊙ dP))` over every column
    /// (masked columns have `P = 0`), with `probs` the forward's `P`. `scale` is the forward's
    /// (`1/√d_h`), so that `dQ = (scale·dS)·K` and `dK = (scale·dS)ᵀ·Q` are plain products.
    fn attention_softmax_backward(
        &mut self,
        probs: Span,
        grad: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
    ) -> Result<(), DeviceError>;

    /// `dst = value` over `len` values (a row of ones, whose product with a matrix sums its rows).
    fn fill(&mut self, dst: Span, len: usize, value: f32) -> Result<(), DeviceError>;

    /// `dst[k] += scale · src[k]` over `len` values, ADDING (a LoRA layer's adapter path into its
    /// output, or its share of the output gradient into a zeroed input gradient).
    fn add_scaled_into(&mut self, dst: Span, src: Span, len: usize, scale: f32) -> Result<(), DeviceError>;
}

/// The update a device applies at one step: the host optimizer's settings at that step (its learning
/// rate the schedule's at the step). The optimizer's state (SGD's momentum, Adam's moments and the
/// updates made) lives on the device, in the host optimizer's checkpoint format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceOptimizer {
    /// [`Sgd`](crate::optim::Sgd).
    Sgd(DeviceSgd),
    /// [`Adam`](crate::optim::Adam), or AdamW.
    Adam(DeviceAdam),
}

impl DeviceOptimizer {
    /// The host optimizer's name, as its checkpoints carry it: `sgd`, `adam` or `adamw`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceOptimizer::Sgd(_) => "sgd",
            DeviceOptimizer::Adam(adam) if adam.decoupled => "adamw",
            DeviceOptimizer::Adam(_) => "adam",
        }
    }
}

/// The SGD update a device applies (the host optimizer's settings at one step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSgd {
    /// The learning rate the schedule gives at this step.
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

/// The Adam update a device applies (the host optimizer's settings at one step), per coordinate
/// exactly [`Adam`](crate::optim::Adam)'s, in f64, the moments stored as f32: with the noisy gradient
/// g and t the number of this update counting from 1 (the device counts its updates),
/// p ← p·(1 − lr·λ) if decoupled, else g ← g + λp; m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
/// p ← p − (lr / (1 − β₁ᵗ))·m / (√v / √(1 − β₂ᵗ) + ε), the corrections those of
/// [`Adam::bias_corrections`](crate::optim::Adam::bias_corrections). The moments start at zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceAdam {
    /// The learning rate the schedule gives at this step.
    pub lr: f64,
    /// β₁, the first moment's decay.
    pub beta1: f64,
    /// β₂, the second moment's decay.
    pub beta2: f64,
    /// ε, added to the bias-corrected root of the second moment.
    pub eps: f64,
    /// λ: L2 decay added to the gradient (Adam), or the decoupled decay (AdamW).
    pub weight_decay: f64,
    /// AdamW: the decay is applied to the parameter, not added to the gradient.
    pub decoupled: bool,
}

/// One private step's settings on a device.
#[derive(Debug, Clone, Copy)]
pub struct DevicePrivateStep {
    pub clip_mode: crate::clipping::ClipMode,
    /// C.
    pub clip_norm: f64,
    /// σ·C, the standard deviation of the noise on the clipped sum.
    pub noise_std: f64,
    /// What the noisy sum is divided by (the expected batch size).
    pub normaliser: f64,
    /// The key of this step's noise: 32 bytes from the noise stream, as the CPU's chunked draw takes.
    pub key: [u8; 32],
    /// The update, with this step's learning rate.
    pub optimizer: DeviceOptimizer,
    /// Whether a step with views keeps each view's loss and each example's clip factors for
    /// [`last_losses_and_factors`](DeviceTraining::last_losses_and_factors) (non-private diagnostics
    /// only: it costs copies per example); a step without views always has them.
    pub keep_losses: bool,
}

/// What a device step reports (scalars only: nothing else leaves the device during a step in one
/// piece; a step in physical chunks, or a distributed rank's, copies out its clipped sums, see
/// [`DeviceTraining::finish_clipped_sum`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStepOutcome {
    /// Examples whose norm was not finite (they contributed nothing).
    pub non_finite_examples: usize,
    /// Whether the update overflowed; the device then restored the parameters it held before it.
    pub overflowed: bool,
}

/// A model's training state held on a device: what [`Trainer::device`](crate::Trainer::device) steps.
/// Sampling, the key of each step's noise and the accountant stay on the host.
pub trait DeviceTraining<M: crate::DpModel>: Send {
    /// The device, e.g. `cuda:0 NVIDIA H200 (sm_90)`.
    fn describe(&self) -> String;
    /// The precision of the products the device program marks [`Operands::OfPrecision`], and, on a
    /// device that stores in it, of the arena buffers it marks [`Stored::OfPrecision`] (the trainer
    /// sets the one it was given before the first step).
    fn set_precision(&mut self, precision: Precision) -> Result<(), DeviceError>;
    /// Sets the parameters on the device (all `PARAM_COUNT`).
    fn upload(&mut self, params: &[f32]) -> Result<(), DeviceError>;
    /// Copies the parameters back (all `PARAM_COUNT`).
    fn download(&mut self, params: &mut [f32]) -> Result<(), DeviceError>;
    /// The optimizer's state as the device holds it, in the host optimizer's checkpoint format (its
    /// kind and the updates made; SGD: once there is one, the momentum buffer; Adam: once there are
    /// any, the moments `exp_avg` and `exp_avg_sq`).
    fn optimizer_state(&mut self) -> Result<crate::optim::OptimizerState, DeviceError>;
    /// Restores an optimizer state (already checked by the host optimizer): a checkpoint's, or before
    /// a fresh run's first step the fresh host optimizer's (its kind, no updates, no buffers).
    fn load_optimizer_state(&mut self, state: &crate::optim::OptimizerState) -> Result<(), DeviceError>;
    /// Writes a gathered batch of `n` examples toward the device for the next
    /// [`queue_private_step`](Self::queue_private_step). The trainer calls it while the previous
    /// step is in flight (between its queue and its finish), so it must not wait for that step, nor
    /// disturb the batch that step reads.
    fn stage_batch(&mut self, inputs: &[M::Input], labels: &[f32], n: usize) -> Result<(), DeviceError>;
    /// Queues one DP-SGD step on the staged batch, and may return before it ends. One step at a
    /// time: [`finish_private_step`](Self::finish_private_step) comes before the next.
    fn queue_private_step(&mut self, step: &DevicePrivateStep) -> Result<(), DeviceError>;
    /// Waits for the queued step and gives its outcome.
    fn finish_private_step(&mut self) -> Result<DeviceStepOutcome, DeviceError>;
    /// One DP-SGD step on a gathered batch of `n` examples: staged, queued and finished.
    fn private_step(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        step: &DevicePrivateStep,
    ) -> Result<DeviceStepOutcome, DeviceError> {
        self.stage_batch(inputs, labels, n)?;
        self.queue_private_step(step)?;
        self.finish_private_step()
    }
    /// The model's outputs for a gathered batch of `n` examples under the parameters the device
    /// holds, into `outputs` (`n · output_len` values, laid out as
    /// [`DpModel::forward`](crate::DpModel::forward) gives them): the device program's forward
    /// alone ([`DpModel::device_forward`](crate::DpModel::device_forward)), for evaluating a
    /// held-out set. Not while a step is queued; a batch staged for the next step stays staged.
    fn outputs(&mut self, inputs: &[M::Input], n: usize, outputs: &mut [f32]) -> Result<(), DeviceError>;
    /// Starts an exponential moving average of the parameters (`Trainer::ema`) at the parameters the
    /// device holds now.
    fn start_average(&mut self) -> Result<(), DeviceError>;
    /// Folds the parameters into the average after a step that completed: each coordinate becomes
    /// `trainer::ema::fold(a, θ, decay)` (f64 arithmetic, stored as f32), `decay` the host average's
    /// `Ema::advance`.
    fn fold_average(&mut self, decay: f64) -> Result<(), DeviceError>;
    /// The average, copied back (all `PARAM_COUNT` values).
    fn download_average(&mut self, average: &mut [f32]) -> Result<(), DeviceError>;
    /// After a private step on `n` examples seen as `views` views each (1: a step without views;
    /// one with views kept them only if its `keep_losses` said so): each view's loss (`losses`,
    /// `n · views` values, example-major) and each example's clip factors (`factors`, `n · groups`,
    /// example-major), copied back. Only non-private diagnostics
    /// ([`Trainer::non_private_diagnostics`](crate::Trainer::non_private_diagnostics)) ask for them,
    /// to report the training loss.
    fn last_losses_and_factors(
        &mut self,
        n: usize,
        views: usize,
        losses: &mut [f32],
        factors: &mut [f32],
    ) -> Result<(), DeviceError>;
    /// Queues one non-private step on the staged batch ([`stage_batch`](Self::stage_batch)) of `n`
    /// examples, and may return before it ends (`baseline::fit_non_private_on_device`, `dp train
    /// --non-private`): the plain sum of their gradients (no clipping, no noise) times 1/n as the host's
    /// `NoisyGradient::new(sum, None, 0, n)` forms it, the update `optimizer` describes, and each
    /// example's loss kept for [`finish_non_private_step`](Self::finish_non_private_step). One step at
    /// a time, as [`queue_private_step`](Self::queue_private_step).
    fn queue_non_private_step(&mut self, optimizer: &DeviceOptimizer) -> Result<(), DeviceError>;
    /// Waits for the queued non-private step: each example's loss into `losses` (`n` values, the
    /// staged batch's size). The outcome's `non_finite_examples` is 0 (nothing is clipped); an
    /// overflowing update is undone as in [`private_step`](Self::private_step).
    fn finish_non_private_step(&mut self, losses: &mut [f32]) -> Result<DeviceStepOutcome, DeviceError>;
    /// One non-private step on a gathered batch of `n` examples: staged, queued and finished.
    fn non_private_step(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        optimizer: &DeviceOptimizer,
        losses: &mut [f32],
    ) -> Result<DeviceStepOutcome, DeviceError> {
        self.stage_batch(inputs, labels, n)?;
        self.queue_non_private_step(optimizer)?;
        self.finish_non_private_step(losses)
    }
    /// One DP-SGD step with augmentation multiplicity (`Trainer::augmentation_multiplicity`) on a
    /// gathered batch of `n` examples seen as `views` augmented views each: `inputs` and `labels` hold
    /// the `n · views` views, example-major (example i's at `i·views .. (i + 1)·views`). Per example:
    /// the plain sum of its views' gradients (the device program's gradient sum over a batch of
    /// `views`) times `1 / views` rounded to f32 (the CPU's average); its squared norm per group, each
    /// trained parameter's squares summed in f64, rounded to f32 and added into its group's in
    /// `M::PARAMS` order; its clip factors as [`clip_factors`](crate::clipping::clip_factors) gives
    /// them; and the average times its group's factor ADDED into the step's clipped sum. An example
    /// with a non-finite norm (factors 0) adds exactly nothing and is counted in
    /// `non_finite_examples`. Then the noise and update of [`private_step`](Self::private_step).
    fn private_step_with_views(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        step: &DevicePrivateStep,
    ) -> Result<DeviceStepOutcome, DeviceError>;
    /// A distributed step's first half on this rank (`docs/DISTRIBUTED.md`), or one physical chunk of
    /// a step larger than `Trainer::max_physical_batch`, queued on the staged batch
    /// ([`stage_batch`](Self::stage_batch)) of `n` examples, and may return before it ends (the host
    /// draws the step's noise meanwhile): their norms, clip factors (`clip_mode`, C =
    /// `clip_norm`) and clipped sum (0 examples give a zero sum). No noise, no update. One step at a
    /// time, as [`queue_private_step`](Self::queue_private_step).
    fn queue_clipped_sum(
        &mut self,
        clip_mode: crate::clipping::ClipMode,
        clip_norm: f64,
    ) -> Result<(), DeviceError>;
    /// Waits for the queued clipped sum and copies it into `sum` (`TRAINED_PARAM_COUNT` values,
    /// OVERWRITTEN): the one vector that leaves the device during a step, for the reduce over ranks
    /// or the sum over a step's chunks (on the host, trusted as the CPU's memory is; never output).
    /// Returns the examples whose norm was not finite (they contributed nothing).
    fn finish_clipped_sum(&mut self, sum: &mut [f32]) -> Result<usize, DeviceError>;
    /// A distributed step's first half on a gathered batch of `n` examples: staged, queued and
    /// finished.
    fn clipped_sum_to_host(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        clip_mode: crate::clipping::ClipMode,
        clip_norm: f64,
        sum: &mut [f32],
    ) -> Result<usize, DeviceError> {
        self.stage_batch(inputs, labels, n)?;
        self.queue_clipped_sum(clip_mode, clip_norm)?;
        self.finish_clipped_sum(sum)
    }
    /// [`clipped_sum_to_host`](Self::clipped_sum_to_host) with augmentation multiplicity: `inputs`
    /// and `labels` hold the `n · views` views of the rank's examples, example-major, and the sum is
    /// that of their clipped averages as [`private_step_with_views`](Self::private_step_with_views)
    /// forms it, copied back into `sum` (OVERWRITTEN). No noise, no update. Returns the examples whose
    /// norm was not finite (they contributed nothing).
    #[allow(clippy::too_many_arguments)]
    fn clipped_sum_with_views_to_host(
        &mut self,
        inputs: &[M::Input],
        labels: &[f32],
        n: usize,
        views: usize,
        clip_mode: crate::clipping::ClipMode,
        clip_norm: f64,
        sum: &mut [f32],
    ) -> Result<usize, DeviceError>;
    /// A distributed step's second half, or a chunked step's: the update from the released vector
    /// R = S + σC·z that rank 0 broadcast or the host formed (`TRAINED_PARAM_COUNT` values, f64),
    /// copied in. The noisy gradient is
    /// `R · (1 / normaliser)` per coordinate, exactly `NoisyGradient::released`'s, then `optimizer`'s
    /// update as in [`private_step`](Self::private_step). Returns whether the update overflowed; the
    /// device then restored the parameters it held before it.
    fn released_update(
        &mut self,
        released: &[f64],
        normaliser: f64,
        optimizer: DeviceOptimizer,
    ) -> Result<bool, DeviceError>;
}
