//! The core of multi-head self-attention (PyTorch's `nn.MultiheadAttention` with `batch_first`,
//! query = key = value): from the input projection `qkv = x·W_inᵀ + b_in` (`[T, 3d]`, the columns
//! of q, then k, then v; head h owns columns `h·d_h..(h+1)·d_h` of each) to the heads' concatenated
//! context `[T, d]`, and back.
//!
//! The projections around it are position-wise linear layers (`dense::linear_*`, `per_example`'s
//! positional norms and clipped sums), so this module holds only what has no parameters: per example
//! and head `S = Q_h K_hᵀ/√d_h`, the causal mask (positions after the query get probability exactly
//! 0), `P = softmax(S)` by rows, `O_h = P V_h`; backward `dV = Pᵀ dO`, `dP = dO Vᵀ`,
//! `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = dS K/√d_h`, `dK = dSᵀ Q/√d_h`. Examples run in parallel,
//! each product on its thread (`gemm::sgemm_strided_serial` reads the heads' columns in place).

use rayon::prelude::*;

use crate::fast_math;
use crate::gemm::{sgemm_strided_serial, Op, Strided};

/// The static shape of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// T, the sequence length.
    pub steps: usize,
    /// d, the model width (`heads` divides it).
    pub dim: usize,
    pub heads: usize,
    /// Whether position t attends only to positions ≤ t.
    pub causal: bool,
}

impl AttentionDims {
    /// d_h = d / heads.
    pub const fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
    /// `[T, 3d]` per example.
    pub const fn qkv_len(&self) -> usize {
        3 * self.steps * self.dim
    }
    /// `[T, d]` per example.
    pub const fn context_len(&self) -> usize {
        self.steps * self.dim
    }
    /// The attention probabilities `[heads][T][T]` per example.
    pub const fn probs_len(&self) -> usize {
        self.heads * self.steps * self.steps
    }
    /// The backward's scratch per example: one head's `dP` `[T][T]`.
    pub const fn scratch_len(&self) -> usize {
        self.steps * self.steps
    }
    /// The multiply-adds (×2) of the core, forward and backward, per example.
    pub const fn core_flops(&self) -> u64 {
        // Forward Q·Kᵀ and P·V, backward dV, dP, dQ, dK: six T×T×d products over the heads.
        12 * (self.steps * self.steps * self.dim) as u64
    }

    fn check(&self) {
        assert!(
            self.heads > 0 && self.dim.is_multiple_of(self.heads),
            "attention: {} heads do not divide the width {}",
            self.heads,
            self.dim
        );
    }

    /// The column block of head `h`'s part `part` (0 q, 1 k, 2 v) in a `[T, 3d]` row.
    fn column(&self, part: usize, h: usize) -> usize {
        part * self.dim + h * self.head_dim()
    }
}

fn check_len(what: &str, len: usize, need: usize) {
    assert!(len >= need, "attention: {what} has {len} values, needs {need}");
}

/// Forward: `probs` (kept for the backward) and the heads' context `ctx` (`[T, d]`, overwritten).
pub fn attention_forward(
    dims: &AttentionDims,
    batch: usize,
    qkv: &[f32],
    probs: &mut [f32],
    ctx: &mut [f32],
) {
    dims.check();
    let (t, d, dh) = (dims.steps, dims.dim, dims.head_dim());
    check_len("qkv", qkv.len(), batch * dims.qkv_len());
    check_len("probs", probs.len(), batch * dims.probs_len());
    check_len("context", ctx.len(), batch * dims.context_len());
    if batch == 0 || t == 0 {
        return;
    }
    let scale = 1.0 / (dh as f32).sqrt();
    probs[..batch * dims.probs_len()]
        .par_chunks_mut(dims.probs_len())
        .zip(ctx[..batch * dims.context_len()].par_chunks_mut(dims.context_len()))
        .zip(qkv[..batch * dims.qkv_len()].par_chunks(dims.qkv_len()))
        .for_each(|((p_i, ctx_i), qkv_i)| {
            for (h, p) in p_i.chunks_mut(t * t).enumerate() {
                let q = Strided { data: &qkv_i[dims.column(0, h)..], stride: 3 * d, op: Op::N };
                let k = Strided { data: &qkv_i[dims.column(1, h)..], stride: 3 * d, op: Op::T };
                sgemm_strided_serial(t, t, dh, scale, q, k, 0.0, p, t);
                for (row, scores) in p.chunks_mut(t).enumerate() {
                    let visible = if dims.causal { row + 1 } else { t };
                    softmax_in_place(&mut scores[..visible]);
                    scores[visible..].fill(0.0);
                }
                let v = Strided { data: &qkv_i[dims.column(2, h)..], stride: 3 * d, op: Op::N };
                let p = Strided { data: p, stride: t, op: Op::N };
                sgemm_strided_serial(t, dh, t, 1.0, p, v, 0.0, &mut ctx_i[h * dh..], d);
            }
        });
}

/// `x ← softmax(x)`, shifted by the maximum (a row of one value is exactly 1).
fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = fast_math::exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Backward: from the context's gradient `dctx` (`[T, d]`) and the kept `qkv` and `probs`, the
/// projection's gradient `dqkv` (`[T, 3d]`, overwritten). `scratch` holds one `[T][T]` slot per
/// example ([`AttentionDims::scratch_len`]).
pub fn attention_backward(
    dims: &AttentionDims,
    batch: usize,
    qkv: &[f32],
    probs: &[f32],
    dctx: &[f32],
    dqkv: &mut [f32],
    scratch: &mut [f32],
) {
    dims.check();
    let (t, d, dh) = (dims.steps, dims.dim, dims.head_dim());
    check_len("qkv", qkv.len(), batch * dims.qkv_len());
    check_len("probs", probs.len(), batch * dims.probs_len());
    check_len("context gradient", dctx.len(), batch * dims.context_len());
    check_len("qkv gradient", dqkv.len(), batch * dims.qkv_len());
    check_len("scratch", scratch.len(), batch * dims.scratch_len());
    if batch == 0 || t == 0 {
        return;
    }
    let scale = 1.0 / (dh as f32).sqrt();
    dqkv[..batch * dims.qkv_len()]
        .par_chunks_mut(dims.qkv_len())
        .zip(scratch[..batch * dims.scratch_len()].par_chunks_mut(dims.scratch_len()))
        .enumerate()
        .for_each(|(i, (dqkv_i, ds))| {
            let qkv_i = &qkv[i * dims.qkv_len()..(i + 1) * dims.qkv_len()];
            let p_i = &probs[i * dims.probs_len()..(i + 1) * dims.probs_len()];
            let do_i = &dctx[i * dims.context_len()..(i + 1) * dims.context_len()];
            for (h, p) in p_i.chunks(t * t).enumerate() {
                let d_o = Strided { data: &do_i[h * dh..], stride: d, op: Op::N };
                // dV = Pᵀ dO.
                let pt = Strided { data: p, stride: t, op: Op::T };
                sgemm_strided_serial(t, dh, t, 1.0, pt, d_o, 0.0, &mut dqkv_i[dims.column(2, h)..], 3 * d);
                // dP = dO Vᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) in place (0 where P is 0: masked).
                let vt = Strided { data: &qkv_i[dims.column(2, h)..], stride: 3 * d, op: Op::T };
                sgemm_strided_serial(t, t, dh, 1.0, d_o, vt, 0.0, ds, t);
                for (dp_row, p_row) in ds.chunks_mut(t).zip(p.chunks(t)) {
                    let dot: f32 = dp_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
                    dp_row.iter_mut().zip(p_row).for_each(|(g, &pv)| *g = pv * (*g - dot));
                }
                // dQ = dS K/√d_h, dK = dSᵀ Q/√d_h.
                let s = Strided { data: ds, stride: t, op: Op::N };
                let k = Strided { data: &qkv_i[dims.column(1, h)..], stride: 3 * d, op: Op::N };
                sgemm_strided_serial(t, dh, t, scale, s, k, 0.0, &mut dqkv_i[dims.column(0, h)..], 3 * d);
                let st = Strided { data: ds, stride: t, op: Op::T };
                let q = Strided { data: &qkv_i[dims.column(0, h)..], stride: 3 * d, op: Op::N };
                sgemm_strided_serial(t, dh, t, scale, st, q, 0.0, &mut dqkv_i[dims.column(1, h)..], 3 * d);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    /// The core of one example in f64: the context `[T, d]` from `qkv` `[T, 3d]`.
    fn reference(dims: &AttentionDims, qkv: &[f64]) -> Vec<f64> {
        let (t, d, dh) = (dims.steps, dims.dim, dims.head_dim());
        let mut ctx = vec![0.0; t * d];
        for h in 0..dims.heads {
            for r in 0..t {
                let visible = if dims.causal { r + 1 } else { t };
                let scores: Vec<f64> = (0..visible)
                    .map(|s| {
                        (0..dh)
                            .map(|j| qkv[r * 3 * d + h * dh + j] * qkv[s * 3 * d + d + h * dh + j])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (s, w) in e.iter().enumerate() {
                    for j in 0..dh {
                        ctx[r * d + h * dh + j] += w / z * qkv[s * 3 * d + 2 * d + h * dh + j];
                    }
                }
            }
        }
        ctx
    }

    #[test]
    fn forward_and_backward_match_f64_and_finite_differences() {
        let mut rng = rng(41);
        for &(steps, dim, heads, causal) in
            &[(5, 6, 2, false), (5, 6, 3, true), (1, 4, 2, false), (1, 4, 1, true), (7, 4, 1, true)]
        {
            let dims = AttentionDims { steps, dim, heads, causal };
            let batch = 2;
            let qkv = uniform(&mut rng, batch * dims.qkv_len());
            let dctx = uniform(&mut rng, batch * dims.context_len());
            let mut probs = vec![f32::NAN; batch * dims.probs_len()];
            let mut ctx = vec![f32::NAN; batch * dims.context_len()];
            attention_forward(&dims, batch, &qkv, &mut probs, &mut ctx);
            let mut dqkv = vec![f32::NAN; batch * dims.qkv_len()];
            let mut scratch = vec![f32::NAN; batch * dims.scratch_len()];
            attention_backward(&dims, batch, &qkv, &probs, &dctx, &mut dqkv, &mut scratch);
            for i in 0..batch {
                let (q, c) = (dims.qkv_len(), dims.context_len());
                let x = wide(&qkv[i * q..(i + 1) * q]);
                assert_close("context", &ctx[i * c..(i + 1) * c], &reference(&dims, &x), 1e-5);
                let r = wide(&dctx[i * c..(i + 1) * c]);
                let g = finite_difference(&x, 1e-6, |x| dot(&reference(&dims, x), &r));
                assert_close("dqkv", &dqkv[i * q..(i + 1) * q], &g, 1e-4);
            }
            if causal {
                // A query never sees a later position.
                let p = &probs[..steps * steps];
                assert!((0..steps).all(|r| p[r * steps + r + 1..(r + 1) * steps].iter().all(|&v| v == 0.0)));
            }
        }
    }
}
