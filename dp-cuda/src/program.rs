//! A device program's primitives on a GPU: [`GpuOps`] implements [`DeviceOps`] over the regions of a
//! [`RegionMemory`], the products through cuBLAS (row-major operands as the transposed column-major
//! ones cuBLAS reads, so no copy is made), everything else through `kernels/dense.cu` and, for
//! convolutions, pooling and kept per-example gradients, `kernels/conv.cu` (their bodies in
//! [`conv_ops`]), for group norm `kernels/norm.cu` (in [`norm_ops`]), for an embedding over a sequence
//! and sums over time `kernels/sequence.cu` (in [`sequence_ops`]), and for an LSTM's time steps
//! `kernels/lstm.cu` (in [`lstm_ops`]). Every launch is queued on
//! the GPU's one stream; nothing is copied to or from the host.

// The module's page names its private op modules (`cargo doc --document-private-items` renders the
// links).
#![allow(rustdoc::private_intra_doc_links)]

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result as drv, CudaFunction, LaunchConfig, PushKernelArg};
use dp_kernels::activation::Activation;
use dp_runtime::device::{
    BatchedGemm, Conv2dGeometry, DeviceError, DeviceLoss, DeviceOps, Gemm, GroupNormDims, LeadingDims,
    LstmBackwardStep, LstmDims, LstmForwardStep, PatchDims, Pool2dGeometry, Precision, RowScale, Span,
};

use crate::dense::activation_code;
use crate::device::Gpu;

mod conversions;
mod memory;
mod products;

pub use conversions::RoundedWeights;
pub use memory::{
    region_bytes, Addresses, Bf16Layout, Operand, RegionMemory, ValueType, BF16_STORED, BF16_TAG,
};
pub use products::{plan_product, Compute, Output, ProductPlan};

/// The primitives of [`DeviceOps`] on `gpu` over `memory`.
pub struct GpuOps<'a> {
    pub gpu: &'a Gpu,
    pub memory: &'a RegionMemory,
    /// The precision of the products marked [`Operands::OfPrecision`](dp_runtime::device::Operands::OfPrecision).
    pub precision: Precision,
    /// The parameter spans rounded into their bf16 slots during this pass, while that is being
    /// kept track of ([`rounding_each_weight_once`](Self::rounding_each_weight_once)): a bf16 product
    /// then reads a weight already rounded instead of converting it again.
    weights_in_bf16: Option<std::cell::RefCell<conversions::RoundedWeights>>,
    /// Whether an LSTM's recurrence runs as one kernel each way (the default) or step by step, a
    /// product and a launch of the gates per time step ([`fuse_lstm`](Self::fuse_lstm)).
    fused_lstm: bool,
}

impl<'a> GpuOps<'a> {
    /// The primitives on `gpu` over `memory`, the marked products in `precision`.
    pub fn new(gpu: &'a Gpu, memory: &'a RegionMemory, precision: Precision) -> Self {
        GpuOps { gpu, memory, precision, weights_in_bf16: None, fused_lstm: true }
    }

    /// An LSTM's recurrence as one kernel each way (`on`, the default: `lstm.cu`'s fused kernels) or
    /// step by step through cuBLAS and the step kernels, as before them.
    pub fn fuse_lstm(self, on: bool) -> Self {
        GpuOps { fused_lstm: on, ..self }
    }

    /// Keeps track of the weights rounded into their bf16 slots, so that each is rounded once in the
    /// pass that follows, not at every product that reads it (an LSTM's recurrent weight at every
    /// time step, a weight in the forward and again in the backward). Only for a pass during which
    /// the parameters do not change (a step's update comes after it).
    pub fn rounding_each_weight_once(self) -> Self {
        GpuOps { weights_in_bf16: Some(std::cell::RefCell::default()), ..self }
    }

    /// Whether a product must round `s` into its bf16 slot: not when it is a weight already rounded
    /// in this pass; otherwise it does, and a weight is recorded as rounded.
    pub(crate) fn must_round(&self, s: Span) -> bool {
        match &self.weights_in_bf16 {
            Some(rounded) if s.region == dp_runtime::device::Region::Params => {
                rounded.borrow_mut().first_time(s)
            }
            _ => true,
        }
    }
}

fn backend(during: &str) -> impl FnOnce(String) -> DeviceError + '_ {
    move |e| DeviceError::Backend(format!("{during}: {e}"))
}

fn int(v: usize) -> std::result::Result<i32, DeviceError> {
    i32::try_from(v).map_err(|_| DeviceError::Mismatch(format!("{v} exceeds cuBLAS's 32-bit dimensions")))
}

/// A grid-stride launch over `len` items: blocks of 256, at most 8192 of them.
fn elementwise(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(256).clamp(1, 8192) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// A kernel of `kernels/dense.cu`, `conv.cu`, `norm.cu`, `sequence.cu`, `lstm.cu` or `attention.cu`, by its index in
/// that file's `ENTRIES`.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Dense(usize),
    Conv(usize),
    Norm(usize),
    Sequence(usize),
    Lstm(usize),
    Attention(usize),
    Transformer(usize),
}

/// The kernels by file and index (`dense::ENTRIES`, `conv::ENTRIES`, `norm::ENTRIES`,
/// `sequence::ENTRIES`, `lstm::ENTRIES`).
mod k {
    use super::Kernel::{self, Attention, Conv, Dense, Lstm, Norm, Sequence, Transformer};

    pub const BIAS_ACTIVATION: Kernel = Dense(0);
    pub const ACTIVATION: Kernel = Dense(1);
    pub const ACTIVATION_BACKWARD: Kernel = Dense(2);
    pub const SOFTMAX_CROSS_ENTROPY: Kernel = Dense(3);
    pub const BINARY_CROSS_ENTROPY: Kernel = Dense(4);
    pub const MEAN_SQUARED_ERROR: Kernel = Dense(5);
    pub const LINEAR_GHOST_NORMS: Kernel = Dense(6);
    pub const SCALE_ROWS: Kernel = Dense(7);
    pub const COLUMN_SUMS_ADD: Kernel = Dense(8);
    pub const ADD_INTO: Kernel = Dense(9);
    pub const COUNT_NON_FINITE: Kernel = Dense(10);
    pub const EMBEDDING_MEAN_FORWARD: Kernel = Dense(11);
    pub const EMBEDDING_MEAN_NORMS: Kernel = Dense(12);
    pub const EMBEDDING_MEAN_SCATTER: Kernel = Dense(13);

    pub const IM2COL: Kernel = Conv(0);
    pub const COL2IM: Kernel = Conv(1);
    pub const CHANNEL_BIAS_ACTIVATION: Kernel = Conv(2);
    pub const ROW_SUMS: Kernel = Conv(3);
    pub const KEPT_SQ_NORMS: Kernel = Conv(4);
    pub const KEPT_WEIGHTED_SUM: Kernel = Conv(5);
    pub const MAX_POOL_FORWARD: Kernel = Conv(6);
    pub const MAX_POOL_BACKWARD: Kernel = Conv(7);
    pub const AVG_POOL_FORWARD: Kernel = Conv(8);
    pub const AVG_POOL_BACKWARD: Kernel = Conv(9);
    pub const GLOBAL_AVG_POOL_FORWARD: Kernel = Conv(10);
    pub const GLOBAL_AVG_POOL_BACKWARD: Kernel = Conv(11);
    pub const IM2COL_FOLDED: Kernel = Conv(12);
    pub const FOLD_EXAMPLES: Kernel = Conv(13);
    pub const GRAM_SQ_NORMS: Kernel = Conv(14);

    pub const GROUP_NORM_FORWARD: Kernel = Norm(0);
    pub const GROUP_NORM_BACKWARD: Kernel = Norm(1);

    pub const EMBEDDING_FORWARD: Kernel = Sequence(0);
    pub const EMBEDDING_NORMS: Kernel = Sequence(1);
    pub const EMBEDDING_SCATTER: Kernel = Sequence(2);
    pub const SEQUENCE_SUMS: Kernel = Sequence(3);
    pub const SEQUENCE_BROADCAST: Kernel = Sequence(4);

    pub const LSTM_FORWARD_STEP: Kernel = Lstm(0);

    pub const ATTENTION_SOFTMAX: Kernel = Attention(0);
    pub const ATTENTION_SOFTMAX_BACKWARD: Kernel = Attention(1);
    pub const FILL: Kernel = Attention(2);
    pub const LSTM_BACKWARD_STEP: Kernel = Lstm(1);
    pub const LSTM_FORWARD_FUSED: Kernel = Lstm(2);
    pub const LSTM_BACKWARD_FUSED: Kernel = Lstm(3);

    pub const ACTIVATION_BACKWARD_FROM_INPUT: Kernel = Transformer(0);
    pub const COPY_STRIDED: Kernel = Transformer(1);
    pub const PATCHES: Kernel = Transformer(2);
    pub const ADD_SCALED_INTO: Kernel = Transformer(3);
}

impl GpuOps<'_> {
    fn kernel(&self, kernel: Kernel) -> &CudaFunction {
        match kernel {
            Kernel::Attention(index) => &self.gpu.attention[index],
            Kernel::Dense(index) => &self.gpu.dense[index],
            Kernel::Conv(index) => &self.gpu.conv[index],
            Kernel::Norm(index) => &self.gpu.norm[index],
            Kernel::Sequence(index) => &self.gpu.sequence[index],
            Kernel::Lstm(index) => &self.gpu.lstm[index],
            Kernel::Transformer(index) => &self.gpu.transformer[index],
        }
    }

    fn check(&self, what: &str, spans: &[(Span, usize)]) -> std::result::Result<(), DeviceError> {
        for (s, need) in spans {
            if s.len < *need {
                return Err(DeviceError::Mismatch(format!("{what}: {s:?} holds fewer than {need} values")));
            }
        }
        Ok(())
    }
}

/// Queues one launch with the listed arguments, mapping a launch failure to the kernel's name.
macro_rules! launch {
    ($ops:expr, $kernel:expr, $name:literal, $config:expr; $($arg:expr),* $(,)?) => {{
        let stream = &$ops.gpu.stream;
        let function = $ops.kernel($kernel);
        let mut builder = stream.launch_builder(function);
        $(builder.arg($arg);)*
        // SAFETY: the arguments match the kernel's signature in its .cu file (a device address
        // for each pointer, checked against its region, and the counts and shapes it reads up to).
        unsafe { builder.launch($config) }.map(|_| ()).map_err(|e| backend($name)(e.to_string()))
    }};
}

mod attention_ops;
mod conv_ops;
mod lstm_ops;
mod norm_ops;
mod sequence_ops;
mod transformer_ops;

impl GpuOps<'_> {
    /// Queues `*count += ` the number of non-finite values of `span` (`count` a device address).
    pub fn count_non_finite(&self, span: Span, count: CUdeviceptr) -> std::result::Result<(), DeviceError> {
        let (v, n) = (self.memory.values(span)?, span.len as u64);
        launch!(self, k::COUNT_NON_FINITE, "dp_count_non_finite", elementwise(span.len); &v, &n, &count)
    }
}

impl DeviceOps for GpuOps<'_> {
    fn gemm(&mut self, g: Gemm) -> std::result::Result<(), DeviceError> {
        products::gemm(self, g)
    }

    fn bias_activation(
        &mut self,
        y: Span,
        bias: Option<Span>,
        rows: usize,
        cols: usize,
        act: Activation,
    ) -> std::result::Result<(), DeviceError> {
        self.check("bias_activation", &[(y, rows * cols)])?;
        if let Some(b) = bias {
            self.check("bias_activation", &[(b, cols)])?;
        }
        let (y, has_bias) = (self.memory.values(y)?, i32::from(bias.is_some()));
        // Without a bias the kernel never reads it: any address will do.
        let bias = match bias {
            Some(b) => self.memory.ptr(b)?,
            None => y & !BF16_TAG,
        };
        let (rows, cols, act) = (rows as u64, cols as u64, activation_code(act));
        launch!(self, k::BIAS_ACTIVATION, "dp_bias_activation", elementwise((rows * cols) as usize);
            &y, &bias, &has_bias, &rows, &cols, &act)
    }

    fn activation(
        &mut self,
        x: Span,
        y: Span,
        len: usize,
        act: Activation,
    ) -> std::result::Result<(), DeviceError> {
        self.check("activation", &[(x, len), (y, len)])?;
        let (x, y, n, act) =
            (self.memory.values(x)?, self.memory.values(y)?, len as u64, activation_code(act));
        launch!(self, k::ACTIVATION, "dp_activation", elementwise(len); &x, &y, &n, &act)
    }

    fn activation_backward(
        &mut self,
        grad: Span,
        y: Span,
        len: usize,
        act: Activation,
    ) -> std::result::Result<(), DeviceError> {
        self.check("activation_backward", &[(grad, len), (y, len)])?;
        let (g, y, n, act) =
            (self.memory.values(grad)?, self.memory.values(y)?, len as u64, activation_code(act));
        launch!(self, k::ACTIVATION_BACKWARD, "dp_activation_backward", elementwise(len); &g, &y, &n, &act)
    }

    fn loss(
        &mut self,
        loss: DeviceLoss,
        outputs: Span,
        labels: Span,
        rows: usize,
        losses: Span,
        grad: Span,
    ) -> std::result::Result<(), DeviceError> {
        let width = match loss {
            DeviceLoss::SoftmaxCrossEntropy { classes } => classes,
            DeviceLoss::BinaryCrossEntropyWithLogits => 1,
            DeviceLoss::MeanSquaredError { outputs } => outputs,
        };
        let label_width = if let DeviceLoss::MeanSquaredError { .. } = loss { width } else { 1 };
        self.check(
            "loss",
            &[(outputs, rows * width), (grad, rows * width), (labels, rows * label_width), (losses, rows)],
        )?;
        let (z, y, l, g) = (
            self.memory.values(outputs)?,
            self.memory.ptr(labels)?,
            self.memory.ptr(losses)?,
            self.memory.values(grad)?,
        );
        let (r, w, config) = (rows as u64, width as u64, elementwise(rows));
        match loss {
            DeviceLoss::SoftmaxCrossEntropy { .. } => {
                launch!(self, k::SOFTMAX_CROSS_ENTROPY, "dp_softmax_cross_entropy", config; &z, &y, &r, &w, &l, &g)
            }
            DeviceLoss::BinaryCrossEntropyWithLogits => {
                launch!(self, k::BINARY_CROSS_ENTROPY, "dp_binary_cross_entropy", config; &z, &y, &r, &l, &g)
            }
            DeviceLoss::MeanSquaredError { .. } => {
                launch!(self, k::MEAN_SQUARED_ERROR, "dp_mean_squared_error", config; &z, &y, &r, &w, &l, &g)
            }
        }
    }

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
    ) -> std::result::Result<(), DeviceError> {
        self.check(
            "linear_ghost_norms",
            &[(a, rows * inputs), (delta, rows * outputs), (sq_norms, rows * groups)],
        )?;
        if group >= groups {
            return Err(DeviceError::Mismatch(format!("group {group} of {groups}")));
        }
        if rows == 0 {
            return Ok(());
        }
        let (a, d, s) = (self.memory.values(a)?, self.memory.values(delta)?, self.memory.ptr(sq_norms)?);
        let (r, i, o, b, gs, g) =
            (rows as u64, inputs as u64, outputs as u64, i32::from(has_bias), groups as u64, group as u64);
        let config = LaunchConfig {
            grid_dim: (rows.min(65_535) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, k::LINEAR_GHOST_NORMS, "dp_linear_ghost_norms", config; &a, &d, &r, &i, &o, &b, &s, &gs, &g)
    }

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
    ) -> std::result::Result<(), DeviceError> {
        if positions == 0 || !rows.is_multiple_of(positions) || group >= groups {
            return Err(DeviceError::Mismatch(format!(
                "{rows} rows of {positions} positions, group {group} of {groups}"
            )));
        }
        self.check(
            "scale_rows",
            &[(src, rows * cols), (dst, rows * cols), (factors, rows / positions * groups)],
        )?;
        let (s, d, f) = (self.memory.values(src)?, self.memory.values(dst)?, self.memory.ptr(factors)?);
        let by_factor = match scale {
            RowScale::ByFactor => 1i32,
            RowScale::Copy => 0,
        };
        let (r, p, c, gs, g) = (rows as u64, positions as u64, cols as u64, groups as u64, group as u64);
        launch!(self, k::SCALE_ROWS, "dp_scale_rows", elementwise(rows * cols); &s, &d, &r, &p, &c, &f, &gs, &g, &by_factor)
    }

    fn column_sums_add(
        &mut self,
        src: Span,
        rows: usize,
        cols: usize,
        dst: Span,
    ) -> std::result::Result<(), DeviceError> {
        self.check("column_sums_add", &[(src, rows * cols), (dst, cols)])?;
        let (s, d, r, c) = (self.memory.values(src)?, self.memory.ptr(dst)?, rows as u64, cols as u64);
        launch!(self, k::COLUMN_SUMS_ADD, "dp_column_sums_add", elementwise(cols); &s, &r, &c, &d)
    }

    fn add_into(&mut self, dst: Span, src: Span, len: usize) -> std::result::Result<(), DeviceError> {
        self.check("add_into", &[(dst, len), (src, len)])?;
        let (d, s, n) = (self.memory.values(dst)?, self.memory.values(src)?, len as u64);
        launch!(self, k::ADD_INTO, "dp_add_into", elementwise(len); &d, &s, &n)
    }

    /// A byte copy between spans stored in one type; between an f32 and a bf16 span, a conversion
    /// (rounded as the host reference's store rounds).
    fn copy(&mut self, dst: Span, src: Span, len: usize) -> std::result::Result<(), DeviceError> {
        self.check("copy", &[(dst, len), (src, len)])?;
        let addresses = self.memory.addresses();
        let (dst_type, src_type) = (addresses.stored_type(dst)?, addresses.stored_type(src)?);
        if dst_type != src_type {
            let (d, s) = (addresses.values(dst)?, addresses.values(src)?);
            return conversions::convert_values(self, s, d, len);
        }
        let (d, s) = (addresses.address(dst, dst_type)?, addresses.address(src, src_type)?);
        // SAFETY: both ranges lie in their stores, `len` values of one type each; the copy is queued
        // on the GPU's stream.
        unsafe { drv::memcpy_dtod_async(d, s, len * dst_type.size(), self.gpu.stream.cu_stream()) }
            .map_err(|e| DeviceError::Backend(format!("copy: {e}")))
    }

    /// Zero bits, which are 0.0 in f32 and in bf16.
    fn zero(&mut self, dst: Span, len: usize) -> std::result::Result<(), DeviceError> {
        self.check("zero", &[(dst, len)])?;
        let addresses = self.memory.addresses();
        let stored = addresses.stored_type(dst)?;
        let d = addresses.address(dst, stored)?;
        // SAFETY: the range lies in its store, `len` values of its type; the memset is queued on the
        // GPU's stream.
        unsafe { drv::memset_d8_async(d, 0, len * stored.size(), self.gpu.stream.cu_stream()) }
            .map_err(|e| DeviceError::Backend(format!("zero: {e}")))
    }

    fn embedding_mean_forward(
        &mut self,
        ids: Span,
        table: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        out: Span,
    ) -> std::result::Result<(), DeviceError> {
        self.check("embedding_mean_forward", &[(ids, n * steps), (table, vocab * dim), (out, n * dim)])?;
        if n == 0 {
            return Ok(());
        }
        let (i, t, o) = (self.memory.ptr(ids)?, self.memory.ptr(table)?, self.memory.values(out)?);
        let (n64, s, v, d) = (n as u64, steps as u64, vocab as u64, dim as u64);
        let config = LaunchConfig {
            grid_dim: (n.min(65_535) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, k::EMBEDDING_MEAN_FORWARD, "dp_embedding_mean_forward", config; &i, &t, &n64, &s, &v, &d, &o)
    }

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
    ) -> std::result::Result<(), DeviceError> {
        self.check("embedding_mean_norms", &[(ids, n * steps), (delta, n * dim), (sq_norms, n * groups)])?;
        if group >= groups {
            return Err(DeviceError::Mismatch(format!("group {group} of {groups}")));
        }
        if n == 0 {
            return Ok(());
        }
        let (i, d, q) = (self.memory.ptr(ids)?, self.memory.values(delta)?, self.memory.ptr(sq_norms)?);
        let (n64, s, dm, gs, g) = (n as u64, steps as u64, dim as u64, groups as u64, group as u64);
        let config = LaunchConfig {
            grid_dim: (n.min(65_535) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, k::EMBEDDING_MEAN_NORMS, "dp_embedding_mean_norms", config; &i, &d, &n64, &s, &dm, &q, &gs, &g)
    }

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
    ) -> std::result::Result<(), DeviceError> {
        self.check("embedding_mean_scatter", &[(ids, n * steps), (delta, n * dim), (grad, vocab * dim)])?;
        let (f, has, groups, group) = match factors {
            Some((f, groups, group)) => {
                self.check("embedding_mean_scatter", &[(f, n * groups)])?;
                if group >= groups {
                    return Err(DeviceError::Mismatch(format!("group {group} of {groups}")));
                }
                (self.memory.ptr(f)?, 1i32, groups as u64, group as u64)
            }
            // Never read (has_factors 0): any f32 address, the gradient's (δ may be stored in bf16).
            None => (self.memory.ptr(grad)?, 0, 1, 0),
        };
        let (i, d, g) = (self.memory.ptr(ids)?, self.memory.values(delta)?, self.memory.ptr(grad)?);
        let (n64, s, v, dm) = (n as u64, steps as u64, vocab as u64, dim as u64);
        launch!(self, k::EMBEDDING_MEAN_SCATTER, "dp_embedding_mean_scatter", elementwise(n * steps * dim);
            &i, &d, &n64, &s, &v, &dm, &f, &has, &groups, &group, &g)
    }

    fn gemm_batched(&mut self, g: BatchedGemm) -> std::result::Result<(), DeviceError> {
        products::gemm_batched(self, g)
    }

    fn im2col(
        &mut self,
        x: Span,
        geom: &Conv2dGeometry,
        n: usize,
        cols: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::im2col(self, x, geom, n, cols)
    }

    fn col2im(
        &mut self,
        cols: Span,
        geom: &Conv2dGeometry,
        n: usize,
        dx: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::col2im(self, cols, geom, n, dx)
    }

    fn im2col_folded(
        &mut self,
        x: Span,
        geom: &Conv2dGeometry,
        n: usize,
        factors: Option<(Span, usize, usize)>,
        cols: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::im2col_folded(self, (x, geom, n), factors, cols)
    }

    fn fold_examples(
        &mut self,
        src: Span,
        dims: (usize, usize, usize),
        factors: Option<(Span, usize, usize)>,
        dst: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::fold_examples(self, src, dims, factors, dst)
    }

    fn gram_sq_norms(
        &mut self,
        (a, b): (Span, Span),
        len: usize,
        bias: Option<(Span, usize)>,
        n: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::gram_sq_norms(self, (a, b, len), bias, n, (sq_norms, groups, group))
    }

    fn channel_bias_activation(
        &mut self,
        y: Span,
        bias: Option<Span>,
        n: usize,
        channels: usize,
        positions: usize,
        act: Activation,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::channel_bias_activation(self, y, bias, (n, channels, positions), act)
    }

    fn row_sums(
        &mut self,
        src: Span,
        rows: usize,
        cols: usize,
        dst: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::row_sums(self, src, rows, cols, dst)
    }

    fn kept_sq_norms(
        &mut self,
        weight: Span,
        weight_len: usize,
        bias: Option<(Span, usize)>,
        n: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::kept_sq_norms(self, (weight, weight_len), bias, n, (sq_norms, groups, group))
    }

    fn kept_weighted_sum(
        &mut self,
        src: Span,
        n: usize,
        len: usize,
        factors: Option<(Span, usize, usize)>,
        dst: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::kept_weighted_sum(self, src, n, len, factors, dst)
    }

    fn max_pool_forward(
        &mut self,
        x: Span,
        geom: &Pool2dGeometry,
        n: usize,
        y: Span,
        argmax: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::max_pool_forward(self, x, geom, n, y, argmax)
    }

    fn max_pool_backward(
        &mut self,
        dy: Span,
        argmax: Span,
        geom: &Pool2dGeometry,
        n: usize,
        dx: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::max_pool_backward(self, dy, argmax, geom, n, dx)
    }

    fn avg_pool_forward(
        &mut self,
        x: Span,
        geom: &Pool2dGeometry,
        n: usize,
        y: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::avg_pool_forward(self, x, geom, n, y)
    }

    fn avg_pool_backward(
        &mut self,
        dy: Span,
        geom: &Pool2dGeometry,
        n: usize,
        dx: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::avg_pool_backward(self, dy, geom, n, dx)
    }

    fn global_avg_pool_forward(
        &mut self,
        x: Span,
        n: usize,
        channels: usize,
        plane: usize,
        y: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::global_avg_pool_forward(self, x, (n, channels, plane), y)
    }

    fn global_avg_pool_backward(
        &mut self,
        dy: Span,
        n: usize,
        channels: usize,
        plane: usize,
        dx: Span,
    ) -> std::result::Result<(), DeviceError> {
        conv_ops::global_avg_pool_backward(self, dy, (n, channels, plane), dx)
    }

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
    ) -> std::result::Result<(), DeviceError> {
        norm_ops::group_norm_forward(self, (x, weight, bias), dims, n, (y, mean, rstd))
    }

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
    ) -> std::result::Result<(), DeviceError> {
        norm_ops::group_norm_backward(self, (x, dy, weight), (mean, rstd), dims, n, (dx, affine))
    }

    fn embedding_forward(
        &mut self,
        ids: Span,
        table: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        out: Span,
    ) -> std::result::Result<(), DeviceError> {
        sequence_ops::embedding_forward(self, (ids, table, out), (n, steps, vocab, dim))
    }

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
    ) -> std::result::Result<(), DeviceError> {
        sequence_ops::embedding_norms(self, (ids, delta), (n, steps, dim), (sq_norms, groups, group))
    }

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
    ) -> std::result::Result<(), DeviceError> {
        sequence_ops::embedding_scatter(self, (ids, delta, grad), (n, steps, vocab, dim), factors)
    }

    fn sequence_sums(
        &mut self,
        src: Span,
        n: usize,
        steps: usize,
        cols: usize,
        scale: f32,
        dst: Span,
    ) -> std::result::Result<(), DeviceError> {
        sequence_ops::sequence_sums(self, src, (n, steps, cols), scale, dst)
    }

    fn sequence_broadcast(
        &mut self,
        src: Span,
        n: usize,
        steps: usize,
        cols: usize,
        scale: f32,
        dst: Span,
    ) -> std::result::Result<(), DeviceError> {
        sequence_ops::sequence_broadcast(self, src, (n, steps, cols), scale, dst)
    }

    fn lstm_forward_step(
        &mut self,
        step: &LstmForwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> std::result::Result<(), DeviceError> {
        lstm_ops::forward_step(self, step, dims, n, t)
    }

    fn lstm_backward_step(
        &mut self,
        step: &LstmBackwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> std::result::Result<(), DeviceError> {
        lstm_ops::backward_step(self, step, dims, n, t)
    }

    fn lstm_forward(
        &mut self,
        step: &LstmForwardStep,
        w_hh: Span,
        dims: &LstmDims,
        n: usize,
    ) -> std::result::Result<(), DeviceError> {
        match self.fused_lstm {
            true => lstm_ops::forward_fused(self, step, w_hh, dims, n),
            false => dp_runtime::device::lstm_forward_by_steps(self, step, w_hh, dims, n),
        }
    }

    fn lstm_backward(
        &mut self,
        step: &LstmBackwardStep,
        w_hh: Span,
        dims: &LstmDims,
        n: usize,
    ) -> std::result::Result<(), DeviceError> {
        match self.fused_lstm {
            true => lstm_ops::backward_fused(self, step, w_hh, dims, n),
            false => dp_runtime::device::lstm_backward_by_steps(self, step, w_hh, dims, n),
        }
    }

    fn activation_backward_from_input(
        &mut self,
        grad: Span,
        x: Span,
        len: usize,
        act: Activation,
    ) -> std::result::Result<(), DeviceError> {
        transformer_ops::activation_backward_from_input(self, grad, x, len, act)
    }

    fn copy_strided(
        &mut self,
        src: Span,
        src_stride: usize,
        dst: Span,
        dst_stride: usize,
        rows: usize,
        cols: usize,
    ) -> std::result::Result<(), DeviceError> {
        transformer_ops::copy_strided(self, (src, src_stride), (dst, dst_stride), rows, cols)
    }

    fn patches_forward(
        &mut self,
        x: Span,
        dims: &PatchDims,
        n: usize,
        out: Span,
    ) -> std::result::Result<(), DeviceError> {
        transformer_ops::patches(self, x, dims, n, out, true)
    }

    fn patches_backward(
        &mut self,
        dout: Span,
        dims: &PatchDims,
        n: usize,
        dx: Span,
    ) -> std::result::Result<(), DeviceError> {
        transformer_ops::patches(self, dout, dims, n, dx, false)
    }

    fn gemm_batched_rows(&mut self, g: BatchedGemm, ld: LeadingDims) -> std::result::Result<(), DeviceError> {
        products::gemm_batched_rows(self, g, ld)
    }

    fn attention_softmax(
        &mut self,
        scores: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
        causal: bool,
    ) -> std::result::Result<(), DeviceError> {
        attention_ops::softmax(self, scores, (blocks, steps), scale, causal)
    }

    fn attention_softmax_backward(
        &mut self,
        probs: Span,
        grad: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
    ) -> std::result::Result<(), DeviceError> {
        attention_ops::softmax_backward(self, probs, grad, (blocks, steps), scale)
    }

    fn fill(&mut self, dst: Span, len: usize, value: f32) -> std::result::Result<(), DeviceError> {
        attention_ops::fill(self, dst, len, value)
    }

    fn add_scaled_into(
        &mut self,
        dst: Span,
        src: Span,
        len: usize,
        scale: f32,
    ) -> std::result::Result<(), DeviceError> {
        transformer_ops::add_scaled_into(self, dst, src, len, scale)
    }
}
