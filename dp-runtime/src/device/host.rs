//! The device primitives on the CPU, as plain loops: a reference backend that runs a generated device
//! program where there is no GPU, so that its launch sequence (offsets, shapes, transposes, the order
//! of the passes) is tested against the CPU program on every `cargo test`. Not fast, and not meant
//! to be.

use std::collections::HashMap;

use dp_kernels::activation::Activation;
use dp_kernels::loss;

use super::{DeviceError, DeviceLoss, DeviceOps, Gemm, Region, RowScale, Span};

/// Every region a host `Vec` (`Tokens` of `u32`, the others of `f32`).
#[derive(Debug, Default, Clone)]
pub struct HostDevice {
    regions: HashMap<Region, Vec<f32>>,
    tokens: Vec<u32>,
}

impl HostDevice {
    pub fn new() -> Self {
        HostDevice::default()
    }

    /// Sets a region's contents (its length is the region's size).
    pub fn set(&mut self, region: Region, values: Vec<f32>) {
        self.regions.insert(region, values);
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

    /// A region's contents (empty if never set).
    pub fn get(&self, region: Region) -> &[f32] {
        self.regions.get(&region).map_or(&[], Vec::as_slice)
    }

    fn read(&self, s: Span) -> Result<Vec<f32>, DeviceError> {
        let r = self.get(s.region);
        r.get(s.offset..s.offset + s.len)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| DeviceError::Mismatch(format!("{s:?} outside a region of {}", r.len())))
    }

    fn write(&mut self, s: Span) -> Result<&mut [f32], DeviceError> {
        let r = self.regions.entry(s.region).or_default();
        let len = r.len();
        r.get_mut(s.offset..s.offset + s.len)
            .ok_or_else(|| DeviceError::Mismatch(format!("{s:?} outside a region of {len}")))
    }
}

fn short(what: &str) -> DeviceError {
    DeviceError::Mismatch(format!("{what}: span shorter than its shape"))
}

impl DeviceOps for HostDevice {
    fn gemm(&mut self, g: Gemm) -> Result<(), DeviceError> {
        g.check()?;
        let (a, b) = (self.read(g.a)?, self.read(g.b)?);
        let c = self.write(g.c)?;
        for i in 0..g.m {
            for j in 0..g.n {
                let mut sum = 0.0f64;
                for p in 0..g.k {
                    let av = if g.a_transposed { a[p * g.m + i] } else { a[i * g.k + p] };
                    let bv = if g.b_transposed { b[j * g.k + p] } else { b[p * g.n + j] };
                    sum += f64::from(av) * f64::from(bv);
                }
                let cell = &mut c[i * g.n + j];
                *cell = if g.accumulate { *cell + sum as f32 } else { sum as f32 };
            }
        }
        Ok(())
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
        let factors =
            factors.map(|(f, groups, group)| self.read(f).map(|f| (f, groups, group))).transpose()?;
        let g = self.write(grad)?;
        if ids.len() < n * steps || d.len() < n * dim || g.len() < vocab * dim {
            return Err(short("embedding_mean_scatter"));
        }
        for i in 0..n {
            let c = match &factors {
                Some((f, groups, group)) => f[i * groups + group],
                None => 1.0,
            };
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
}
