//! Attention's primitives on the host reference, written from the contracts of
//! `DeviceOps::gemm_batched_rows`, `attention_softmax` and `attention_softmax_backward`: products over
//! matrices stored inside wider rows (an attention head's columns of the `[T, 3d]` projection) and the
//! row softmax between them, forward and backward.

use super::{short, HostDevice};
use crate::device::{BatchedGemm, DeviceError, LeadingDims, Operands, Precision, Span};
use dp_kernels::gemm_bf16::round_to_bf16;

/// `softmax(scale · x)` over `row`, shifted by its maximum (NaN-ignoring, as `f32::max`).
fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().map(|&v| scale * v).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (scale * *v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// The `blocks · steps²` values of a span of score matrices.
fn matrices(what: &str, s: Span, blocks: usize, steps: usize) -> Result<Span, DeviceError> {
    match s.len >= blocks * steps * steps {
        true => Ok(s.sub(0, blocks * steps * steps)),
        false => Err(short(what)),
    }
}

impl HostDevice {
    pub(super) fn gemm_rows(&mut self, bg: BatchedGemm, ld: LeadingDims) -> Result<(), DeviceError> {
        ld.check(&bg)?;
        let g = bg.gemm;
        let (mut a, mut b) = (self.read(g.a)?, self.read(g.b)?);
        match (self.precision, g.operands) {
            (Precision::Bf16, Operands::OfPrecision) => {
                for v in a.iter_mut().chain(b.iter_mut()) {
                    *v = round_to_bf16(*v);
                }
            }
            (Precision::F32, _) | (Precision::Bf16, Operands::F32) => {}
        }
        let c = self.write(g.c)?;
        for e in 0..bg.batch {
            let (a0, b0, c0) = (e * bg.stride_a, e * bg.stride_b, e * bg.stride_c);
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut sum = 0.0f64;
                    for p in 0..g.k {
                        let av = if g.a_transposed { a[a0 + p * ld.a + i] } else { a[a0 + i * ld.a + p] };
                        let bv = if g.b_transposed { b[b0 + j * ld.b + p] } else { b[b0 + p * ld.b + j] };
                        sum += f64::from(av) * f64::from(bv);
                    }
                    let cell = &mut c[c0 + i * ld.c + j];
                    *cell = if g.accumulate { *cell + sum as f32 } else { sum as f32 };
                }
            }
        }
        Ok(())
    }

    pub(super) fn softmax_rows(
        &mut self,
        scores: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
        causal: bool,
    ) -> Result<(), DeviceError> {
        let scores = matrices("attention_softmax", scores, blocks, steps)?;
        let p = self.write(scores)?;
        for (r, row) in p.chunks_exact_mut(steps.max(1)).enumerate() {
            let visible = if causal { r % steps + 1 } else { steps };
            let (seen, masked) = row.split_at_mut(visible);
            softmax(seen, scale);
            masked.fill(0.0);
        }
        Ok(())
    }

    pub(super) fn softmax_backward_rows(
        &mut self,
        probs: Span,
        grad: Span,
        blocks: usize,
        steps: usize,
        scale: f32,
    ) -> Result<(), DeviceError> {
        let probs = matrices("attention_softmax_backward", probs, blocks, steps)?;
        let grad = matrices("attention_softmax_backward", grad, blocks, steps)?;
        let p = self.read(probs)?;
        let g = self.write(grad)?;
        for (g_row, p_row) in g.chunks_exact_mut(steps.max(1)).zip(p.chunks_exact(steps.max(1))) {
            let dot: f32 = g_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
            g_row.iter_mut().zip(p_row).for_each(|(v, &pv)| *v = scale * (pv * (*v - dot)));
        }
        Ok(())
    }
}
