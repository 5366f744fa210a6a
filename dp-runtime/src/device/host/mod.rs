//! The device primitives on the CPU, as plain loops: a reference backend that runs a generated device
//! program where there is no GPU, so that its launch sequence (offsets, shapes, transposes, the order
//! of the passes) is tested against the CPU program on every `cargo test`. Not fast, and not meant
//! to be.

mod attention;
mod gemm;
mod image;
mod lstm;
mod sequence;
mod transformer;

use std::collections::HashMap;

use dp_kernels::activation::Activation;
use dp_kernels::{loss, norm_layers};

use super::{
    check_group, BatchedGemm, Conv2dGeometry, DeviceError, DeviceLoss, DeviceOps, Gemm, GroupNormDims,
    LeadingDims, LstmBackwardStep, LstmDims, LstmForwardStep, PatchDims, Pool2dGeometry, Precision, Region,
    RowScale, Span, Stored,
};
use dp_kernels::gemm_bf16::round_to_bf16;

/// Every region a host `Vec` (`Tokens` of `u32`, the others of `f32`).
#[derive(Debug, Default, Clone)]
pub struct HostDevice {
    regions: HashMap<Region, Vec<f32>>,
    tokens: Vec<u32>,
    precision: Precision,
    /// Whether `Stored::OfPrecision` spans are stored in bf16 in [`Precision::Bf16`].
    bf16_storage: bool,
    /// The arena's `Stored::OfPrecision` values when they are stored in bf16: apart from the f32
    /// arena, at the same offsets (as a GPU storing in bf16 keeps them), so that a buffer written in
    /// one type and read in the other reads what was there before (the tests fill it with NaN).
    arena_bf16: Vec<f32>,
    /// Spans of `arena_bf16` written since the last access, rounded to bf16 before the next one.
    unrounded: Vec<Span>,
    /// The products called since [`record_products`](Self::record_products), while recording.
    products: Option<Vec<BatchedGemm>>,
}

impl HostDevice {
    pub fn new() -> Self {
        HostDevice::default()
    }

    /// The products marked [`Operands::OfPrecision`](crate::device::Operands::OfPrecision) in `precision`: in bf16, their operands rounded
    /// as the CPU's bf16 products round them (`dp_kernels::gemm_bf16::round_to_bf16`), then
    /// multiplied and accumulated as in f32.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Stores the arena's [`Stored::OfPrecision`] spans in bf16 when the precision is bf16: every
    /// value written to one is rounded to bf16 (`round_to_bf16`) before anything reads it, and the
    /// values live apart from the f32 arena's. This is what a GPU model stores in bf16 by default
    /// (docs/GPU.md, "bf16 storage"); here it is off by default, so that in bf16 the host reference
    /// computes what the CPU's bf16 programs compute (bf16 products on f32 buffers), as a GPU model
    /// does with its storage turned off.
    pub fn set_bf16_storage(&mut self, on: bool) {
        self.bf16_storage = on;
        self.fill_bf16_store();
    }

    /// The bf16 store as the f32 arena rounded (empty while storage is off).
    fn fill_bf16_store(&mut self) {
        self.arena_bf16 = match self.bf16_storage {
            true => self.get(Region::Arena).iter().map(|&v| round_to_bf16(v)).collect(),
            false => Vec::new(),
        };
        self.unrounded.clear();
    }

    /// Sets a region's contents (its length is the region's size); the arena's, both stores of it.
    pub fn set(&mut self, region: Region, values: Vec<f32>) {
        self.regions.insert(region, values);
        if region == Region::Arena {
            self.fill_bf16_store();
        }
    }

    /// The arena's bf16 store (values of `Stored::OfPrecision` spans while storing in bf16; empty
    /// while storage is off).
    pub fn arena_bf16(&mut self) -> &[f32] {
        self.round_written();
        &self.arena_bf16
    }

    /// Records every product called from now on (`gemm` as a batch of one, `gemm_batched` and
    /// `gemm_batched_rows` as called), for an analysis of what a program multiplies: which operands,
    /// stored how (what a GPU storing in bf16 converts, dp-cuda's `plan_product`).
    pub fn record_products(&mut self) {
        self.products = Some(Vec::new());
    }

    /// The products recorded since [`record_products`](Self::record_products) (none if it was not
    /// called), recording on.
    pub fn take_products(&mut self) -> Vec<BatchedGemm> {
        self.products.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, product: BatchedGemm) {
        if let Some(products) = &mut self.products {
            products.push(product);
        }
    }

    /// Sets the token ids (the `Tokens` region).
    pub fn set_tokens(&mut self, ids: Vec<u32>) {
        self.tokens = ids;
    }

    fn ids(&self, s: Span) -> Result<&[u32], DeviceError> {
        if s.region != Region::Tokens {
            return Err(DeviceError::Mismatch(format!("{s:?}: token ids live in the Tokens region")));
        }
        self.tokens
            .get(s.offset..s.offset + s.len)
            .ok_or_else(|| DeviceError::Mismatch(format!("{s:?} outside {} token ids", self.tokens.len())))
    }

    /// A region's contents (empty if never set); the arena's f32 store ([`arena_bf16`](Self::arena_bf16)
    /// holds what `Stored::OfPrecision` spans stored in bf16).
    pub fn get(&self, region: Region) -> &[f32] {
        self.regions.get(&region).map_or(&[], Vec::as_slice)
    }

    /// Whether `s` lives in the bf16 store, after checking that only arena spans are marked.
    fn in_bf16(&self, s: Span) -> Result<bool, DeviceError> {
        match (s.stored, s.region) {
            (Stored::F32, _) => Ok(false),
            (Stored::OfPrecision, Region::Arena) => {
                Ok(self.bf16_storage && self.precision == Precision::Bf16)
            }
            (Stored::OfPrecision, region) => Err(DeviceError::Mismatch(format!(
                "{s:?}: only arena buffers are stored in the device's precision, not {region:?}"
            ))),
        }
    }

    /// Rounds what was written to the bf16 store since the last access.
    fn round_written(&mut self) {
        for s in self.unrounded.drain(..) {
            for v in &mut self.arena_bf16[s.offset..s.offset + s.len] {
                *v = round_to_bf16(*v);
            }
        }
    }

    /// A span's values as stored (from the bf16 store for a span stored in bf16), e.g. a program's
    /// outputs after its forward.
    pub fn values(&mut self, s: Span) -> Result<Vec<f32>, DeviceError> {
        self.read(s)
    }

    fn read(&mut self, s: Span) -> Result<Vec<f32>, DeviceError> {
        self.round_written();
        let r = if self.in_bf16(s)? { &self.arena_bf16 } else { self.get(s.region) };
        r.get(s.offset..s.offset + s.len)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| DeviceError::Mismatch(format!("{s:?} outside a region of {}", r.len())))
    }

    /// Column `group` of `factors` for `n` examples (`(factors, groups, group)`), if given.
    fn factors_of(
        &mut self,
        what: &str,
        factors: Option<(Span, usize, usize)>,
        n: usize,
    ) -> Result<Option<Vec<f32>>, DeviceError> {
        let Some((f, groups, group)) = factors else { return Ok(None) };
        check_group(what, groups, group)?;
        let f = self.read(f)?;
        if f.len() < n * groups {
            return Err(short(what));
        }
        Ok(Some((0..n).map(|i| f[i * groups + group]).collect()))
    }

    /// Per example, `a_i · b_i + |bias_i|²` into `sq_norms[i·groups + group]` (`b` `None`: `a` itself,
    /// a squared norm), 0 where rounding leaves it below 0: the kept gradients' squared norms, and a
    /// ghost conv's from its two Gram matrices.
    #[allow(clippy::too_many_arguments)]
    fn dot_norms(
        &mut self,
        what: &str,
        (a, b): (Span, Option<Span>),
        len: usize,
        bias: Option<(Span, usize)>,
        n: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError> {
        let a = self.read(a)?;
        let b = b.map(|b| self.read(b)).transpose()?;
        let bias = bias.map(|(s, len)| self.read(s).map(|v| (v, len))).transpose()?;
        let s = self.write(sq_norms)?;
        let b = b.as_deref().unwrap_or(&a);
        let short_bias = bias.as_ref().is_some_and(|(v, l)| v.len() < n * l);
        if a.len() < n * len || b.len() < n * len || short_bias || s.len() < n * groups || group >= groups {
            return Err(short(what));
        }
        for i in 0..n {
            let weight = dot(example(&a, i, len), example(b, i, len));
            let bias = bias.as_ref().map_or(0.0, |(v, l)| dot(example(v, i, *l), example(v, i, *l)));
            let sq = (weight + bias) as f32;
            s[i * groups + group] = if sq < 0.0 { 0.0 } else { sq };
        }
        Ok(())
    }

    fn write(&mut self, s: Span) -> Result<&mut [f32], DeviceError> {
        self.round_written();
        let bf16 = self.in_bf16(s)?;
        let r = if bf16 { &mut self.arena_bf16 } else { self.regions.entry(s.region).or_default() };
        let len = r.len();
        let values = r
            .get_mut(s.offset..s.offset + s.len)
            .ok_or_else(|| DeviceError::Mismatch(format!("{s:?} outside a region of {len}")))?;
        if bf16 {
            self.unrounded.push(s);
        }
        Ok(values)
    }
}

/// `Σ x_k·y_k` in f64, in order: a squared norm with `y = x`.
fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(&u, &v)| f64::from(u) * f64::from(v)).sum()
}

fn short(what: &str) -> DeviceError {
    DeviceError::Mismatch(format!("{what}: span shorter than its shape"))
}

impl DeviceOps for HostDevice {
    fn gemm(&mut self, g: Gemm) -> Result<(), DeviceError> {
        g.check()?;
        let one = BatchedGemm { gemm: g, batch: 1, stride_a: 0, stride_b: 0, stride_c: 0 };
        self.record(one);
        self.gemm_rows(one, gemm::widths(&g))
    }

    fn bias_activation(
        &mut self,
        y: Span,
        bias: Option<Span>,
        rows: usize,
        cols: usize,
        act: Activation,
    ) -> Result<(), DeviceError> {
        let bias = bias.map(|b| self.read(b)).transpose()?;
        let y = self.write(y)?;
        if y.len() < rows * cols || bias.as_ref().is_some_and(|b| b.len() < cols) {
            return Err(short("bias_activation"));
        }
        for r in 0..rows {
            for c in 0..cols {
                let v = &mut y[r * cols + c];
                *v = act.apply(*v + bias.as_ref().map_or(0.0, |b| b[c]));
            }
        }
        Ok(())
    }

    fn activation(&mut self, x: Span, y: Span, len: usize, act: Activation) -> Result<(), DeviceError> {
        let x = self.read(x)?;
        let y = self.write(y)?;
        if x.len() < len || y.len() < len {
            return Err(short("activation"));
        }
        y[..len].iter_mut().zip(&x).for_each(|(y, &x)| *y = act.apply(x));
        Ok(())
    }

    fn activation_backward(
        &mut self,
        grad: Span,
        y: Span,
        len: usize,
        act: Activation,
    ) -> Result<(), DeviceError> {
        let y = self.read(y)?;
        let g = self.write(grad)?;
        if y.len() < len || g.len() < len {
            return Err(short("activation_backward"));
        }
        g[..len].iter_mut().zip(&y).for_each(|(g, &y)| *g *= act.derivative_from_output(y));
        Ok(())
    }

    fn loss(
        &mut self,
        kind: DeviceLoss,
        outputs: Span,
        labels: Span,
        rows: usize,
        losses: Span,
        grad: Span,
    ) -> Result<(), DeviceError> {
        let (out, labels) = (self.read(outputs)?, self.read(labels)?);
        let mut l = self.read(losses)?;
        let mut g = self.read(grad)?;
        match kind {
            DeviceLoss::SoftmaxCrossEntropy { classes } => {
                loss::softmax_cross_entropy(&out, &labels, rows, classes, &mut l, &mut g)
            }
            DeviceLoss::BinaryCrossEntropyWithLogits => {
                loss::binary_cross_entropy_with_logits(&out, &labels, rows, &mut l, &mut g)
            }
            DeviceLoss::MeanSquaredError { outputs } => {
                loss::mean_squared_error(&out, &labels, rows, outputs, &mut l, &mut g)
            }
        }
        self.write(losses)?.copy_from_slice(&l);
        self.write(grad)?.copy_from_slice(&g);
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (a, d) = (self.read(a)?, self.read(delta)?);
        let s = self.write(sq_norms)?;
        if a.len() < rows * inputs || d.len() < rows * outputs || s.len() < rows * groups || group >= groups {
            return Err(short("linear_ghost_norms"));
        }
        for i in 0..rows {
            let a2: f32 = a[i * inputs..(i + 1) * inputs].iter().map(|v| v * v).sum();
            let d2: f32 = d[i * outputs..(i + 1) * outputs].iter().map(|v| v * v).sum();
            s[i * groups + group] = a2 * d2 + if has_bias { d2 } else { 0.0 };
        }
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (src, f) = (self.read(src)?, self.read(factors)?);
        let dst = self.write(dst)?;
        if src.len() < rows * cols || dst.len() < rows * cols || f.len() < (rows / positions) * groups {
            return Err(short("scale_rows"));
        }
        for r in 0..rows {
            let c = f[(r / positions) * groups + group];
            for j in 0..cols {
                let v = src[r * cols + j];
                dst[r * cols + j] = match (c == 0.0, scale) {
                    (true, _) => 0.0,
                    (false, RowScale::ByFactor) => c * v,
                    (false, RowScale::Copy) => v,
                };
            }
        }
        Ok(())
    }

    fn column_sums_add(&mut self, src: Span, rows: usize, cols: usize, dst: Span) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let dst = self.write(dst)?;
        if src.len() < rows * cols || dst.len() < cols {
            return Err(short("column_sums_add"));
        }
        for (c, d) in dst[..cols].iter_mut().enumerate() {
            *d += (0..rows).map(|r| f64::from(src[r * cols + c])).sum::<f64>() as f32;
        }
        Ok(())
    }

    fn add_into(&mut self, dst: Span, src: Span, len: usize) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let dst = self.write(dst)?;
        if src.len() < len || dst.len() < len {
            return Err(short("add_into"));
        }
        dst[..len].iter_mut().zip(&src).for_each(|(d, s)| *d += s);
        Ok(())
    }

    fn copy(&mut self, dst: Span, src: Span, len: usize) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let dst = self.write(dst)?;
        if src.len() < len || dst.len() < len {
            return Err(short("copy"));
        }
        dst[..len].copy_from_slice(&src[..len]);
        Ok(())
    }

    fn zero(&mut self, dst: Span, len: usize) -> Result<(), DeviceError> {
        let dst = self.write(dst)?;
        if dst.len() < len {
            return Err(short("zero"));
        }
        dst[..len].fill(0.0);
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (ids, table) = (self.ids(ids)?.to_vec(), self.read(table)?);
        let out = self.write(out)?;
        if ids.len() < n * steps || table.len() < vocab * dim || out.len() < n * dim {
            return Err(short("embedding_mean_forward"));
        }
        for i in 0..n {
            let o = &mut out[i * dim..(i + 1) * dim];
            o.fill(0.0);
            for &v in &ids[i * steps..(i + 1) * steps] {
                let v = v as usize;
                if v >= vocab {
                    o.fill(f32::NAN);
                    break;
                }
                o.iter_mut().zip(&table[v * dim..(v + 1) * dim]).for_each(|(a, &x)| *a += x);
            }
            o.iter_mut().for_each(|x| *x /= steps as f32);
        }
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (ids, d) = (self.ids(ids)?.to_vec(), self.read(delta)?);
        let s = self.write(sq_norms)?;
        if ids.len() < n * steps || d.len() < n * dim || s.len() < n * groups || group >= groups {
            return Err(short("embedding_mean_norms"));
        }
        for i in 0..n {
            let example = &ids[i * steps..(i + 1) * steps];
            // Σ_v count_v²: the ordered pairs of positions holding the same token.
            let pairs: usize = example.iter().map(|a| example.iter().filter(|&b| b == a).count()).sum();
            let row: f64 =
                d[i * dim..(i + 1) * dim].iter().map(|&g| f64::from(g / steps as f32).powi(2)).sum();
            s[i * groups + group] = (pairs as f64 * row) as f32;
        }
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (ids, d) = (self.ids(ids)?.to_vec(), self.read(delta)?);
        let factors = self.factors_of("embedding_mean_scatter", factors, n)?;
        let g = self.write(grad)?;
        if ids.len() < n * steps || d.len() < n * dim || g.len() < vocab * dim {
            return Err(short("embedding_mean_scatter"));
        }
        for i in 0..n {
            let c = factors.as_ref().map_or(1.0, |f| f[i]);
            if c == 0.0 {
                continue;
            }
            for &v in &ids[i * steps..(i + 1) * steps] {
                let v = v as usize;
                if v >= vocab {
                    continue;
                }
                for (acc, &x) in g[v * dim..(v + 1) * dim].iter_mut().zip(&d[i * dim..(i + 1) * dim]) {
                    *acc += c * (x / steps as f32);
                }
            }
        }
        Ok(())
    }

    fn gemm_batched(&mut self, g: BatchedGemm) -> Result<(), DeviceError> {
        g.check()?;
        self.record(g);
        for b in 0..g.batch {
            let at = |s: Span, stride: usize, len: usize| s.sub(b * stride, len);
            let one = Gemm {
                a: at(g.gemm.a, g.stride_a, g.gemm.m * g.gemm.k),
                b: at(g.gemm.b, g.stride_b, g.gemm.k * g.gemm.n),
                c: at(g.gemm.c, g.stride_c, g.gemm.m * g.gemm.n),
                ..g.gemm
            };
            let product = BatchedGemm { gemm: one, batch: 1, stride_a: 0, stride_b: 0, stride_c: 0 };
            self.gemm_rows(product, gemm::widths(&one))?;
        }
        Ok(())
    }

    fn im2col(&mut self, x: Span, geom: &Conv2dGeometry, n: usize, cols: Span) -> Result<(), DeviceError> {
        let (g, x) = (valid_conv(geom)?, self.read(x)?);
        let out = self.write(cols)?;
        if x.len() < n * g.input_len() || out.len() < n * g.patches_len() {
            return Err(short("im2col"));
        }
        for i in 0..n {
            let (xi, ci) = (example(&x, i, g.input_len()), example_mut(out, i, g.patches_len()));
            image::im2col(&g, xi, ci);
        }
        Ok(())
    }

    fn col2im(&mut self, cols: Span, geom: &Conv2dGeometry, n: usize, dx: Span) -> Result<(), DeviceError> {
        let (g, cols) = (valid_conv(geom)?, self.read(cols)?);
        let dx = self.write(dx)?;
        if cols.len() < n * g.patches_len() || dx.len() < n * g.input_len() {
            return Err(short("col2im"));
        }
        for i in 0..n {
            image::col2im(&g, example(&cols, i, g.patches_len()), example_mut(dx, i, g.input_len()));
        }
        Ok(())
    }

    fn im2col_folded(
        &mut self,
        x: Span,
        geom: &Conv2dGeometry,
        n: usize,
        factors: Option<(Span, usize, usize)>,
        cols: Span,
    ) -> Result<(), DeviceError> {
        let (g, x) = (valid_conv(geom)?, self.read(x)?);
        let factors = self.factors_of("im2col_folded", factors, n)?;
        let round = factors.is_some() && self.precision == Precision::Bf16;
        let out = self.write(cols)?;
        if x.len() < n * g.input_len() || out.len() < n * g.patches_len() {
            return Err(short("im2col_folded"));
        }
        let positions = g.positions();
        let mut patches = vec![0.0; g.patches_len()];
        for i in 0..n {
            match factors.as_ref().map(|f| f[i]) {
                Some(0.0) => patches.fill(0.0),
                _ => image::im2col(&g, example(&x, i, g.input_len()), &mut patches),
            }
            if round {
                patches.iter_mut().for_each(|v| *v = round_to_bf16(*v));
            }
            for (k, row) in patches.chunks_exact(positions).enumerate() {
                let at = k * n * positions + i * positions;
                out[at..at + positions].copy_from_slice(row);
            }
        }
        Ok(())
    }

    fn fold_examples(
        &mut self,
        src: Span,
        (n, rows, cols): (usize, usize, usize),
        factors: Option<(Span, usize, usize)>,
        dst: Span,
    ) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let factors = self.factors_of("fold_examples", factors, n)?;
        let bf16 = self.precision == Precision::Bf16;
        let dst = self.write(dst)?;
        if src.len() < n * rows * cols || dst.len() < n * rows * cols {
            return Err(short("fold_examples"));
        }
        let round = |v: f32| if bf16 { round_to_bf16(v) } else { v };
        for i in 0..n {
            let c = factors.as_ref().map(|f| f[i]);
            for r in 0..rows {
                let (from, to) = ((i * rows + r) * cols, r * n * cols + i * cols);
                for (d, &v) in dst[to..to + cols].iter_mut().zip(&src[from..from + cols]) {
                    *d = match c {
                        None => v,
                        Some(0.0) => 0.0,
                        Some(c) => c * round(v),
                    };
                }
            }
        }
        Ok(())
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
    ) -> Result<(), DeviceError> {
        self.dot_norms("gram_sq_norms", (a, Some(b)), len, bias, n, sq_norms, groups, group)
    }

    fn channel_bias_activation(
        &mut self,
        y: Span,
        bias: Option<Span>,
        n: usize,
        channels: usize,
        positions: usize,
        act: Activation,
    ) -> Result<(), DeviceError> {
        let bias = bias.map(|b| self.read(b)).transpose()?;
        let y = self.write(y)?;
        if y.len() < n * channels * positions || bias.as_ref().is_some_and(|b| b.len() < channels) {
            return Err(short("channel_bias_activation"));
        }
        for (r, plane) in y[..n * channels * positions].chunks_exact_mut(positions).enumerate() {
            let b = bias.as_ref().map_or(0.0, |b| b[r % channels]);
            plane.iter_mut().for_each(|v| *v = act.apply(*v + b));
        }
        Ok(())
    }

    fn row_sums(&mut self, src: Span, rows: usize, cols: usize, dst: Span) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let dst = self.write(dst)?;
        if src.len() < rows * cols || dst.len() < rows {
            return Err(short("row_sums"));
        }
        for (d, row) in dst[..rows].iter_mut().zip(src.chunks_exact(cols.max(1))) {
            *d = row.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
        }
        Ok(())
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
    ) -> Result<(), DeviceError> {
        // A sum of squares is never below 0: the clamp of the shared loop never applies here.
        self.dot_norms("kept_sq_norms", (weight, None), weight_len, bias, n, sq_norms, groups, group)
    }

    fn kept_weighted_sum(
        &mut self,
        src: Span,
        n: usize,
        len: usize,
        factors: Option<(Span, usize, usize)>,
        dst: Span,
    ) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let f = self.factors_of("kept_weighted_sum", factors, n)?;
        let dst = self.write(dst)?;
        if src.len() < n * len || dst.len() < len {
            return Err(short("kept_weighted_sum"));
        }
        for i in 0..n {
            let c = f.as_ref().map_or(1.0, |f| f[i]);
            if c == 0.0 {
                continue;
            }
            dst[..len].iter_mut().zip(example(&src, i, len)).for_each(|(d, &v)| *d += c * v);
        }
        Ok(())
    }

    fn max_pool_forward(
        &mut self,
        x: Span,
        geom: &Pool2dGeometry,
        n: usize,
        y: Span,
        argmax: Span,
    ) -> Result<(), DeviceError> {
        let x = self.read(x)?;
        let (mut out, mut at) = (self.read(y)?, self.read(argmax)?);
        let (li, lo) = (geom.input_len(), geom.output_len());
        if x.len() < n * li || out.len() < n * lo || at.len() < n * lo {
            return Err(short("max_pool_forward"));
        }
        for i in 0..n {
            image::max_pool_forward(
                geom,
                example(&x, i, li),
                example_mut(&mut out, i, lo),
                example_mut(&mut at, i, lo),
            );
        }
        self.write(y)?.copy_from_slice(&out);
        self.write(argmax)?.copy_from_slice(&at);
        Ok(())
    }

    fn max_pool_backward(
        &mut self,
        dy: Span,
        argmax: Span,
        geom: &Pool2dGeometry,
        n: usize,
        dx: Span,
    ) -> Result<(), DeviceError> {
        let (dy, at) = (self.read(dy)?, self.read(argmax)?);
        let dx = self.write(dx)?;
        let (li, lo) = (geom.input_len(), geom.output_len());
        if dy.len() < n * lo || at.len() < n * lo || dx.len() < n * li {
            return Err(short("max_pool_backward"));
        }
        let inside = at[..n * lo].iter().all(|a| (a.to_bits() as usize) < li);
        if !inside {
            return Err(DeviceError::Mismatch("max_pool_backward: an argmax outside its example".into()));
        }
        for i in 0..n {
            image::max_pool_backward(example(&dy, i, lo), example(&at, i, lo), example_mut(dx, i, li));
        }
        Ok(())
    }

    fn avg_pool_forward(
        &mut self,
        x: Span,
        geom: &Pool2dGeometry,
        n: usize,
        y: Span,
    ) -> Result<(), DeviceError> {
        let x = self.read(x)?;
        let y = self.write(y)?;
        let (li, lo) = (geom.input_len(), geom.output_len());
        if x.len() < n * li || y.len() < n * lo {
            return Err(short("avg_pool_forward"));
        }
        for i in 0..n {
            image::avg_pool_forward(geom, example(&x, i, li), example_mut(y, i, lo));
        }
        Ok(())
    }

    fn avg_pool_backward(
        &mut self,
        dy: Span,
        geom: &Pool2dGeometry,
        n: usize,
        dx: Span,
    ) -> Result<(), DeviceError> {
        let dy = self.read(dy)?;
        let dx = self.write(dx)?;
        let (li, lo) = (geom.input_len(), geom.output_len());
        if dy.len() < n * lo || dx.len() < n * li {
            return Err(short("avg_pool_backward"));
        }
        for i in 0..n {
            image::avg_pool_backward(geom, example(&dy, i, lo), example_mut(dx, i, li));
        }
        Ok(())
    }

    fn global_avg_pool_forward(
        &mut self,
        x: Span,
        n: usize,
        channels: usize,
        plane: usize,
        y: Span,
    ) -> Result<(), DeviceError> {
        let x = self.read(x)?;
        let y = self.write(y)?;
        if plane == 0 || x.len() < n * channels * plane || y.len() < n * channels {
            return Err(short("global_avg_pool_forward"));
        }
        for (o, p) in y[..n * channels].iter_mut().zip(x.chunks_exact(plane)) {
            *o = p.iter().sum::<f32>() / plane as f32;
        }
        Ok(())
    }

    fn global_avg_pool_backward(
        &mut self,
        dy: Span,
        n: usize,
        channels: usize,
        plane: usize,
        dx: Span,
    ) -> Result<(), DeviceError> {
        let dy = self.read(dy)?;
        let dx = self.write(dx)?;
        if plane == 0 || dy.len() < n * channels || dx.len() < n * channels * plane {
            return Err(short("global_avg_pool_backward"));
        }
        for (d, &g) in dx[..n * channels * plane].chunks_exact_mut(plane).zip(&dy) {
            d.fill(g / plane as f32);
        }
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (x, w, b) = (self.read(x)?, self.read(weight)?, self.read(bias)?);
        let (mut out, mut mu, mut rs) = (self.read(y)?, self.read(mean)?, self.read(rstd)?);
        let fits = group_norm_fits(dims, n, &[&x, &out], &[&mu, &rs])
            && w.len() >= dims.channels
            && b.len() >= dims.channels;
        if !fits {
            return Err(short("group_norm_forward"));
        }
        // The CPU's kernel is the reference: this backend checks the launch sequence around it.
        norm_layers::group_norm_forward(dims, n, &x, &w, &b, &mut out, &mut mu, &mut rs);
        self.write(y)?.copy_from_slice(&out);
        self.write(mean)?.copy_from_slice(&mu);
        self.write(rstd)?.copy_from_slice(&rs);
        Ok(())
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
    ) -> Result<(), DeviceError> {
        let (x, g, w) = (self.read(x)?, self.read(dy)?, self.read(weight)?);
        let (mu, rs) = (self.read(mean)?, self.read(rstd)?);
        let (mut out, mut aff) = (self.read(dx)?, self.read(affine)?);
        let fits = group_norm_fits(dims, n, &[&x, &g, &out], &[&mu, &rs])
            && w.len() >= dims.channels
            && aff.len() >= n * 2 * dims.channels;
        if !fits {
            return Err(short("group_norm_backward"));
        }
        norm_layers::group_norm_backward(dims, n, &x, &g, &w, &mu, &rs, &mut out, &mut aff);
        self.write(dx)?.copy_from_slice(&out);
        self.write(affine)?.copy_from_slice(&aff);
        Ok(())
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
    ) -> Result<(), DeviceError> {
        self.gather_rows(ids, table, n, steps, vocab, dim, out)
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
    ) -> Result<(), DeviceError> {
        self.token_grouped_norms(ids, delta, n, steps, dim, sq_norms, groups, group)
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
    ) -> Result<(), DeviceError> {
        self.scatter_rows(ids, delta, n, steps, vocab, dim, factors, grad)
    }

    fn sequence_sums(
        &mut self,
        src: Span,
        n: usize,
        steps: usize,
        cols: usize,
        scale: f32,
        dst: Span,
    ) -> Result<(), DeviceError> {
        self.sums_over_time(src, (n, steps, cols), scale, dst)
    }

    fn sequence_broadcast(
        &mut self,
        src: Span,
        n: usize,
        steps: usize,
        cols: usize,
        scale: f32,
        dst: Span,
    ) -> Result<(), DeviceError> {
        self.broadcast_over_time(src, (n, steps, cols), scale, dst)
    }

    fn lstm_forward_step(
        &mut self,
        step: &LstmForwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> Result<(), DeviceError> {
        self.lstm_forward_rows(step, dims, n, t)
    }

    fn lstm_backward_step(
        &mut self,
        step: &LstmBackwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> Result<(), DeviceError> {
        self.lstm_backward_rows(step, dims, n, t)
    }

    fn activation_backward_from_input(
        &mut self,
        grad: Span,
        x: Span,
        len: usize,
        act: Activation,
    ) -> Result<(), DeviceError> {
        self.activation_backward_at_input(grad, x, len, act)
    }

    fn copy_strided(
        &mut self,
        src: Span,
        src_stride: usize,
        dst: Span,
        dst_stride: usize,
        rows: usize,
        cols: usize,
    ) -> Result<(), DeviceError> {
        self.copy_rows_strided(src, src_stride, dst, dst_stride, rows, cols)
    }

    fn patches_forward(&mut self, x: Span, dims: &PatchDims, n: usize, out: Span) -> Result<(), DeviceError> {
        self.permute_patches(x, dims, n, out, true)
    }

    fn patches_backward(
        &mut self,
        dout: Span,
        dims: &PatchDims,
        n: usize,
        dx: Span,
    ) -> Result<(), DeviceError> {
        self.permute_patches(dout, dims, n, dx, false)
    }

    fn gemm_batched_rows(&mut self, g: BatchedGemm, ld: LeadingDims) -> Result<(), DeviceError> {
        self.record(g);
        self.gemm_rows(g, ld)
    }

    fn attention_softmax(
        &mut self,
        scores: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
        causal: bool,
    ) -> Result<(), DeviceError> {
        self.softmax_rows(scores, blocks, steps, scale, causal)
    }

    fn attention_softmax_backward(
        &mut self,
        probs: Span,
        grad: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
    ) -> Result<(), DeviceError> {
        self.softmax_backward_rows(probs, grad, blocks, steps, scale)
    }

    fn fill(&mut self, dst: Span, len: usize, value: f32) -> Result<(), DeviceError> {
        let dst = self.write(dst)?;
        if dst.len() < len {
            return Err(short("fill"));
        }
        dst[..len].fill(value);
        Ok(())
    }

    fn add_scaled_into(&mut self, dst: Span, src: Span, len: usize, scale: f32) -> Result<(), DeviceError> {
        self.add_scaled(dst, src, len, scale)
    }
}

/// Valid group norm dimensions, `values` spans of `n` examples and `stats` of `n × groups`.
fn group_norm_fits(dims: &GroupNormDims, n: usize, values: &[&[f32]], stats: &[&[f32]]) -> bool {
    dims.groups > 0
        && dims.channels.is_multiple_of(dims.groups)
        && values.iter().all(|v| v.len() >= n * dims.input_len())
        && stats.iter().all(|s| s.len() >= n * dims.groups)
}

/// Example `i`'s `len` values.
fn example(values: &[f32], i: usize, len: usize) -> &[f32] {
    &values[i * len..(i + 1) * len]
}

fn example_mut(values: &mut [f32], i: usize, len: usize) -> &mut [f32] {
    &mut values[i * len..(i + 1) * len]
}

/// A valid geometry (any group count: the device's patches are the whole image's, every group's rows
/// one block of them).
fn valid_conv(geom: &Conv2dGeometry) -> Result<Conv2dGeometry, DeviceError> {
    geom.validate().map_err(DeviceError::Mismatch)?;
    Ok(*geom)
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    /// A host device of 8 arena values, all NaN, storing in bf16.
    fn storing() -> HostDevice {
        let mut dev = HostDevice::new();
        dev.set_precision(Precision::Bf16);
        dev.set_bf16_storage(true);
        dev.set(Region::Arena, vec![f32::NAN; 8]);
        dev
    }

    #[test]
    fn a_value_stored_in_the_precision_is_rounded_before_it_is_read() {
        let mut dev = storing();
        let (src, dst) = (Span::new(Region::Arena, 0, 2).of_precision(), Span::new(Region::Arena, 4, 2));
        dev.fill(src, 2, 1.0 + 1.0 / 1024.0).unwrap();
        // Read into an f32 span: what was stored, rounded to bf16 (1 + 2⁻¹⁰ is a tie, to even: 1).
        dev.copy(dst, src, 2).unwrap();
        assert_eq!(&dev.get(Region::Arena)[4..6], &[1.0, 1.0]);
        assert_eq!(&dev.arena_bf16()[0..2], &[1.0, 1.0]);
        // An f32 span keeps every bit.
        dev.fill(dst, 2, 1.0 + 1.0 / 1024.0).unwrap();
        assert_eq!(&dev.get(Region::Arena)[4..6], &[1.0 + 1.0 / 1024.0; 2]);
    }

    #[test]
    fn the_two_stores_are_apart() {
        let mut dev = storing();
        let (bf16, f32_span) =
            (Span::new(Region::Arena, 0, 2).of_precision(), Span::new(Region::Arena, 0, 2));
        dev.fill(bf16, 2, 3.0).unwrap();
        // The same offsets read as f32 hold the NaN they were filled with.
        dev.copy(Span::new(Region::Arena, 4, 2), f32_span, 2).unwrap();
        assert!(dev.get(Region::Arena)[4..6].iter().all(|v| v.is_nan()));
        // Without storage (or in f32) the mark changes nothing: one store.
        let mut plain = storing();
        plain.set_precision(Precision::F32);
        plain.fill(bf16, 2, 1.0 + 1.0 / 1024.0).unwrap();
        assert_eq!(&plain.get(Region::Arena)[0..2], &[1.0 + 1.0 / 1024.0; 2]);
    }

    #[test]
    fn only_arena_spans_are_stored_in_the_precision() {
        let mut dev = storing();
        dev.set(Region::Grad, vec![0.0; 4]);
        let err = dev.fill(Span::new(Region::Grad, 0, 4).of_precision(), 4, 1.0).unwrap_err();
        assert!(err.to_string().contains("only arena buffers"), "{err}");
    }
}
