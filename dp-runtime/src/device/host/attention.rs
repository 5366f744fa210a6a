//! Attention's primitives on the host reference, written from the contracts of
//! `DeviceOps::attention_softmax` and `attention_softmax_backward`: the row softmax between the
//! products over an attention head's columns (`gemm.rs`), forward and backward.

use super::{short, HostDevice};
use crate::device::{DeviceError, Span};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{BatchedGemm, DeviceOps, Gemm, LeadingDims, Operands, Region};

    fn values(len: usize) -> Vec<f32> {
        (0..len).map(|k| ((k * 37 % 23) as f32 - 11.0) / 7.0).collect()
    }

    /// With the operands' widths as leading dimensions, the product is `gemm_batched`'s; a head's
    /// block read in place from wider rows is the product of the block copied out; a leading
    /// dimension below the width, a span too short for the last row, and overlapping outputs are
    /// errors, never panics.
    #[test]
    fn products_inside_wider_rows_read_and_write_only_their_blocks() {
        let (batch, m, k, n) = (3, 4, 5, 2);
        let (a_len, b_len, c_len) = (batch * m * k, batch * k * n, batch * m * n);
        let mut host = HostDevice::new();
        host.set(Region::Params, values(a_len + b_len));
        host.set(Region::Arena, vec![f32::NAN; 2 * c_len]);
        let product = |c: Span| BatchedGemm {
            gemm: Gemm {
                m,
                n,
                k,
                a: Span::new(Region::Params, 0, a_len),
                a_transposed: false,
                b: Span::new(Region::Params, a_len, b_len),
                b_transposed: false,
                c,
                accumulate: false,
                operands: Operands::F32,
            },
            batch,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        };
        let (plain, rows) = (Span::new(Region::Arena, 0, c_len), Span::new(Region::Arena, c_len, c_len));
        host.gemm_batched(product(plain)).unwrap();
        host.gemm_batched_rows(product(rows), LeadingDims { a: k, b: n, c: n }).unwrap();
        let arena = host.get(Region::Arena);
        assert_eq!(arena[..c_len], arena[c_len..], "widths as leading dimensions");

        // Columns 1..3 of rows of 6 (a `k × 2` block of b per example, rows 6·k apart).
        let wide = values(batch * k * 6);
        let block: Vec<f32> = wide.chunks(6).flat_map(|row| row[1..1 + n].to_vec()).collect::<Vec<f32>>();
        host.set(Region::Params, [values(a_len), wide.clone()].concat());
        host.set(Region::Grad, [values(a_len), block].concat());
        host.set(Region::Arena, vec![f32::NAN; 2 * c_len]);
        let mut inside = product(rows);
        inside.gemm.b = Span::new(Region::Params, a_len + 1, wide.len() - 1);
        inside.stride_b = k * 6;
        host.gemm_batched_rows(inside, LeadingDims { a: k, b: 6, c: n }).unwrap();
        let mut copied = product(plain);
        (copied.gemm.a.region, copied.gemm.b.region) = (Region::Grad, Region::Grad);
        host.gemm_batched(copied).unwrap();
        let arena = host.get(Region::Arena);
        assert_eq!(arena[..c_len], arena[c_len..], "a block read in place");

        let refused = |bg: BatchedGemm, ld: LeadingDims| {
            matches!(HostDevice::new().gemm_batched_rows(bg, ld), Err(DeviceError::Mismatch(_)))
        };
        assert!(refused(inside, LeadingDims { a: k, b: n - 1, c: n }), "ld below the width");
        let mut short = inside;
        short.gemm.b.len -= 6;
        assert!(refused(short, LeadingDims { a: k, b: 6, c: n }), "the last row outside the span");
        let overlapping = BatchedGemm { stride_c: m * n - 1, ..product(rows) };
        assert!(refused(overlapping, LeadingDims { a: k, b: n, c: n }), "overlapping outputs");
    }

    /// A causal row sees itself and the positions before it; masked columns are exactly 0 whatever
    /// they held; the backward leaves a zero-sum row of `scale · dS`; a short span is an error.
    #[test]
    fn the_masked_softmax_and_its_backward_follow_the_contract() {
        let (blocks, steps, scale) = (2, 3, 0.5);
        let len = blocks * steps * steps;
        let mut scores = values(len);
        scores[1] = f32::NAN; // Row 0's masked column: never read under the mask.
        let mut host = HostDevice::new();
        host.set(Region::Arena, [scores, values(len)].concat());
        let (probs, grad) = (Span::new(Region::Arena, 0, len), Span::new(Region::Arena, len, len));
        host.attention_softmax(probs, blocks, steps, scale, true).unwrap();
        let p = host.get(Region::Arena)[..len].to_vec();
        for (r, row) in p.chunks(steps).enumerate() {
            let visible = r % steps + 1;
            assert!(row[visible..].iter().all(|&v| v == 0.0), "row {r}: {row:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "row {r}: {row:?}");
        }
        assert_eq!(p[0], 1.0, "a row of one visible value is exactly 1");
        host.attention_softmax_backward(probs, grad, blocks, steps, scale).unwrap();
        let ds = host.get(Region::Arena)[len..].to_vec();
        for (r, row) in ds.chunks(steps).enumerate() {
            assert!(row.iter().sum::<f32>().abs() < 1e-6, "row {r}: {row:?}");
        }
        let short = Span::new(Region::Arena, 0, len - 1);
        assert!(matches!(
            host.attention_softmax(short, blocks, steps, scale, false),
            Err(DeviceError::Mismatch(_))
        ));
        assert!(matches!(
            host.attention_softmax_backward(probs, short, blocks, steps, scale),
            Err(DeviceError::Mismatch(_))
        ));
    }
}
