//! Group normalisation and layer normalisation, forward and backward, with per-example gradients of
//! their affine weight and bias.
//!
//! Both are compatible with differential privacy because their statistics are computed within one
//! example (unlike batch normalisation, which mixes examples). Their affine gradients are per-example
//! sums over positions, so they are formed directly: `[batch][2·C]` (weight gradient then bias
//! gradient), squared by [`crate::per_example::stored_norms_sq`] and summed with [`affine_clipped_sum`].
//!
//! - group norm (PyTorch `GroupNorm(num_groups, C)`): input `[batch][C][plane]`; each group of `C/G`
//!   consecutive channels of one example is normalised over all its values; affine `[C]`. Layer norm
//!   over a whole `(C, H, W)` example with a per-channel affine is group norm with one group.
//! - layer norm (PyTorch `LayerNorm(D)`): input `[batch][rows][D]`; each row normalised over its `D`
//!   values; affine `[D]`, shared by the rows of an example.
//!
//! Variance is the biased one and `ε = 1e-5`, as in PyTorch; statistics are accumulated in f64.

use rayon::prelude::*;

use crate::fast_math::with_widest_vectors;
use crate::per_example::{stored_clipped_sum, sum_by_lanes, SUM_LANES};

/// PyTorch's default ε for both layers.
pub const EPS: f32 = 1e-5;

/// The static shape of a group norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupNormDims {
    /// C: channels (and affine width).
    pub channels: usize,
    /// Values per channel (H·W).
    pub plane: usize,
    /// G: groups; divides `channels`.
    pub groups: usize,
}

impl GroupNormDims {
    /// Values of one example.
    pub const fn input_len(&self) -> usize {
        self.channels * self.plane
    }
}

/// The static shape of a layer norm over the last dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerNormDims {
    /// Rows (positions) per example, each normalised on its own.
    pub rows: usize,
    /// D: values per row (and affine width).
    pub dim: usize,
}

impl LayerNormDims {
    /// Values of one example.
    pub const fn input_len(&self) -> usize {
        self.rows * self.dim
    }
}

/// f64 partial sums kept side by side in the backward passes: eight (one AVX-512 register per sum)
/// make the additions of a sum independent, where one running sum waited on its previous addition for
/// every value.
const LANES: usize = 8;

/// Mean and `1/√(var + ε)` of a block, in f64.
fn stats(block: &[f32]) -> (f32, f32) {
    with_widest_vectors(
        #[inline(always)]
        || {
            let n = block.len().max(1) as f64;
            let mean = sum_by_lanes::<SUM_LANES>(block, |v| v as f64) / n;
            let var = sum_by_lanes::<SUM_LANES>(block, |v| (v as f64 - mean) * (v as f64 - mean)) / n;
            (mean as f32, (1.0 / (var + EPS as f64).sqrt()) as f32)
        },
    )
}

/// Group norm forward: writes `out` and the per-(example, group) `mean` and `rstd` (`[batch][G]`)
/// kept for the backward.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward(
    dims: &GroupNormDims,
    batch: usize,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let (c, plane, groups) = (dims.channels, dims.plane, dims.groups);
    assert!(groups > 0 && c.is_multiple_of(groups), "group_norm: {groups} groups do not divide {c} channels");
    let n = dims.input_len();
    assert!(x.len() >= batch * n && out.len() >= batch * n, "group_norm: input or output too short");
    assert!(weight.len() >= c && bias.len() >= c, "group_norm: affine parameters too short");
    assert!(mean.len() >= batch * groups && rstd.len() >= batch * groups, "group_norm: statistics too short");
    if n == 0 {
        return;
    }
    let block = c / groups * plane;
    out[..batch * n]
        .par_chunks_mut(block)
        .zip(mean[..batch * groups].par_iter_mut())
        .zip(rstd[..batch * groups].par_iter_mut())
        .enumerate()
        .for_each(|(u, ((o, m), r))| {
            let xs = &x[u * block..(u + 1) * block];
            let (mu, rs) = stats(xs);
            (*m, *r) = (mu, rs);
            let first_channel = (u % groups) * (c / groups);
            with_widest_vectors(
                #[inline(always)]
                || {
                    // Channel by channel, so that each channel's affine pair is a constant of its loop.
                    for (cl, (o, xs)) in o.chunks_exact_mut(plane).zip(xs.chunks_exact(plane)).enumerate() {
                        let (w, b) = (weight[first_channel + cl], bias[first_channel + cl]);
                        for (ov, &xv) in o.iter_mut().zip(xs) {
                            *ov = (xv - mu) * rs * w + b;
                        }
                    }
                },
            );
        });
}

/// Group norm backward: writes `dx` and each example's affine gradients `affine_grads`
/// (`[batch][2C]`: `Σ_plane dy·x̂` per channel, then `Σ_plane dy`).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    dims: &GroupNormDims,
    batch: usize,
    x: &[f32],
    dout: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    affine_grads: &mut [f32],
) {
    let (c, plane, groups) = (dims.channels, dims.plane, dims.groups);
    assert!(groups > 0 && c.is_multiple_of(groups), "group_norm: {groups} groups do not divide {c} channels");
    let n = dims.input_len();
    assert!(
        x.len() >= batch * n && dout.len() >= batch * n && dx.len() >= batch * n,
        "group_norm: too short"
    );
    assert!(weight.len() >= c, "group_norm: weight too short");
    assert!(mean.len() >= batch * groups && rstd.len() >= batch * groups, "group_norm: statistics too short");
    assert!(affine_grads.len() >= batch * 2 * c, "group_norm: affine gradients too short");
    if n == 0 {
        return;
    }
    let cg = c / groups;
    dx[..batch * n]
        .par_chunks_mut(n)
        .zip(affine_grads[..batch * 2 * c].par_chunks_mut(2 * c))
        .enumerate()
        .for_each(|(i, (dx_i, ag))| {
            let (dw, db) = ag.split_at_mut(c);
            let (x_i, dy_i) = (&x[i * n..(i + 1) * n], &dout[i * n..(i + 1) * n]);
            with_widest_vectors(
                #[inline(always)]
                || {
                    for g in 0..groups {
                        let (mu, rs) = (mean[i * groups + g], rstd[i * groups + g]);
                        let channels = g * cg..(g + 1) * cg;
                        let plane_of = |ch: usize| ch * plane..(ch + 1) * plane;
                        // One pass per channel for the affine gradients and the group's two means.
                        let (mut m1, mut m2) = (0.0f64, 0.0f64);
                        for ch in channels.clone() {
                            let sums =
                                channel_sums(&x_i[plane_of(ch)], &dy_i[plane_of(ch)], mu, rs, weight[ch]);
                            (dw[ch], db[ch]) = (sums.dy_xhat as f32, sums.dy as f32);
                            (m1, m2) = (m1 + sums.dxhat, m2 + sums.dxhat_xhat);
                        }
                        let count = (cg * plane).max(1) as f64;
                        let (m1, m2) = ((m1 / count) as f32, (m2 / count) as f32);
                        for ch in channels {
                            let gamma = weight[ch];
                            let (xs, dy) = (&x_i[plane_of(ch)], &dy_i[plane_of(ch)]);
                            for ((d, &xv), &dyv) in dx_i[plane_of(ch)].iter_mut().zip(xs).zip(dy) {
                                let xh = (xv - mu) * rs;
                                *d = rs * (dyv * gamma - m1 - xh * m2);
                            }
                        }
                    }
                },
            );
        });
}

/// One channel's sums for the group norm backward (`x̂ = (x − μ)·rstd`, `dx̂ = dy·γ`), in f64.
struct ChannelSums {
    dy: f64,
    dy_xhat: f64,
    dxhat: f64,
    dxhat_xhat: f64,
}

/// The four sums of one channel in [`LANES`] partial sums each.
#[inline(always)]
fn channel_sums(x: &[f32], dy: &[f32], mu: f32, rs: f32, gamma: f32) -> ChannelSums {
    let mut lanes = [[0.0f64; LANES]; 4];
    let add = |lanes: &mut [[f64; LANES]; 4], k: usize, xv: f32, dyv: f32| {
        let xh = (xv - mu) * rs;
        let dxh = dyv * gamma;
        lanes[0][k] += dyv as f64;
        lanes[1][k] += dyv as f64 * xh as f64;
        lanes[2][k] += dxh as f64;
        lanes[3][k] += dxh as f64 * xh as f64;
    };
    let (mut xc, mut dc) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    for (xs, ds) in (&mut xc).zip(&mut dc) {
        for k in 0..LANES {
            add(&mut lanes, k, xs[k], ds[k]);
        }
    }
    for (&xv, &dyv) in xc.remainder().iter().zip(dc.remainder()) {
        add(&mut lanes, 0, xv, dyv);
    }
    let [dy, dy_xhat, dxhat, dxhat_xhat] = lanes.map(|l| l.iter().sum::<f64>());
    ChannelSums { dy, dy_xhat, dxhat, dxhat_xhat }
}

/// `dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))` over one normalised block, `dx̂ = dy·γ`.
fn normalisation_backward(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    mu: f32,
    rs: f32,
    gamma: impl Fn(usize) -> f32,
) {
    let n = x.len().max(1) as f64;
    let (mut m1, mut m2) = ([0.0f64; LANES], [0.0f64; LANES]);
    for k in 0..x.len() {
        let dxh = (dy[k] * gamma(k)) as f64;
        m1[k % LANES] += dxh;
        m2[k % LANES] += dxh * ((x[k] - mu) * rs) as f64;
    }
    let (m1, m2) = ((m1.iter().sum::<f64>() / n) as f32, (m2.iter().sum::<f64>() / n) as f32);
    for k in 0..x.len() {
        let xh = (x[k] - mu) * rs;
        dx[k] = rs * (dy[k] * gamma(k) - m1 - xh * m2);
    }
}

/// Layer norm forward: writes `out` and the per-row `mean` and `rstd` (`[batch][rows]`).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    dims: &LayerNormDims,
    batch: usize,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let (rows, d) = (dims.rows, dims.dim);
    assert!(
        x.len() >= batch * rows * d && out.len() >= batch * rows * d,
        "layer_norm: input or output too short"
    );
    assert!(weight.len() >= d && bias.len() >= d, "layer_norm: affine parameters too short");
    assert!(mean.len() >= batch * rows && rstd.len() >= batch * rows, "layer_norm: statistics too short");
    if d == 0 {
        return;
    }
    out[..batch * rows * d]
        .par_chunks_mut(d)
        .zip(mean[..batch * rows].par_iter_mut())
        .zip(rstd[..batch * rows].par_iter_mut())
        .enumerate()
        .for_each(|(u, ((o, m), r))| {
            let xs = &x[u * d..(u + 1) * d];
            let (mu, rs) = stats(xs);
            (*m, *r) = (mu, rs);
            for k in 0..d {
                o[k] = (xs[k] - mu) * rs * weight[k] + bias[k];
            }
        });
}

/// Layer norm backward: writes `dx` and each example's affine gradients `affine_grads`
/// (`[batch][2D]`: `Σ_rows dy·x̂`, then `Σ_rows dy`).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dims: &LayerNormDims,
    batch: usize,
    x: &[f32],
    dout: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    affine_grads: &mut [f32],
) {
    let (rows, d) = (dims.rows, dims.dim);
    let n = rows * d;
    assert!(
        x.len() >= batch * n && dout.len() >= batch * n && dx.len() >= batch * n,
        "layer_norm: too short"
    );
    assert!(weight.len() >= d, "layer_norm: weight too short");
    assert!(mean.len() >= batch * rows && rstd.len() >= batch * rows, "layer_norm: statistics too short");
    assert!(affine_grads.len() >= batch * 2 * d, "layer_norm: affine gradients too short");
    if n == 0 {
        affine_grads[..batch * 2 * d].fill(0.0);
        return;
    }
    dx[..batch * n]
        .par_chunks_mut(n)
        .zip(affine_grads[..batch * 2 * d].par_chunks_mut(2 * d))
        .enumerate()
        .for_each(|(i, (dx_i, ag))| {
            ag.fill(0.0);
            let (dw, db) = ag.split_at_mut(d);
            for r in 0..rows {
                let range = i * n + r * d..i * n + (r + 1) * d;
                let (mu, rs) = (mean[i * rows + r], rstd[i * rows + r]);
                let (xs, dy) = (&x[range.clone()], &dout[range]);
                normalisation_backward(xs, dy, &mut dx_i[r * d..(r + 1) * d], mu, rs, |k| weight[k]);
                for k in 0..d {
                    dw[k] += dy[k] * (xs[k] - mu) * rs;
                    db[k] += dy[k];
                }
            }
        });
}

/// ADDS `Σ_i c_i·(dγ_i, dβ_i)` of per-example affine gradients (`[batch][2·width]`) into
/// `grad_weight` and `grad_bias`; examples whose factor is 0 are skipped.
pub fn affine_clipped_sum(
    width: usize,
    batch: usize,
    affine_grads: &[f32],
    factors: &[f32],
    factor_stride: usize,
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
) {
    assert!(affine_grads.len() >= batch * 2 * width, "affine gradients too short");
    assert!(grad_weight.len() >= width && grad_bias.len() >= width, "affine gradient sums too short");
    for i in 0..batch {
        let c = factors[i * factor_stride];
        if c == 0.0 {
            continue;
        }
        let g = &affine_grads[i * 2 * width..(i + 1) * 2 * width];
        for k in 0..width {
            grad_weight[k] += c * g[k];
            grad_bias[k] += c * g[width + k];
        }
    }
}

/// ADDS `Σ_i c_i g_i` into one contiguous `[weight, bias]` gradient of `2·width` values (when the
/// parameter buffer stores the bias right after the weight).
pub fn affine_clipped_sum_contiguous(
    width: usize,
    batch: usize,
    affine_grads: &[f32],
    factors: &[f32],
    factor_stride: usize,
    grad: &mut [f32],
) {
    stored_clipped_sum(batch, 2 * width, affine_grads, factors, factor_stride, grad);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::per_example::stored_norms_sq;
    use crate::test_support::*;

    /// One example's forward from (x, weight, bias), in f64.
    type Reference<'a> = &'a dyn Fn(&[f64], &[f64], &[f64]) -> Vec<f64>;

    /// Normalises `x` in blocks of `block` values with affine index `channel(k)`, in f64.
    fn reference(
        x: &[f64],
        block: usize,
        w: &[f64],
        b: &[f64],
        channel: impl Fn(usize) -> usize,
    ) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for (s, xs) in x.chunks(block).enumerate() {
            let n = xs.len() as f64;
            let mu = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n;
            for (k, &v) in xs.iter().enumerate() {
                let ch = channel(s * block + k);
                out[s * block + k] = (v - mu) / (var + EPS as f64).sqrt() * w[ch] + b[ch];
            }
        }
        out
    }

    /// Checks forward, dx, per-example affine gradients, their norms and clipped sums against the f64
    /// reference and its finite differences.
    #[allow(clippy::too_many_arguments)]
    fn check(
        what: &str,
        batch: usize,
        n: usize,
        width: usize,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        r: &[f32],
        out: &[f32],
        dx: &[f32],
        affine: &[f32],
        reference_one: Reference<'_>,
    ) {
        let (wf, bf) = (wide(w), wide(b));
        let mut norms = vec![0.0f32; batch];
        stored_norms_sq(batch, 2 * width, affine, &mut norms, 1);
        let factors: Vec<f32> = (0..batch).map(|i| if i == 1 { 0.0 } else { 0.5 + i as f32 }).collect();
        let (mut gw, mut gb) = (vec![0.0f32; width], vec![0.0f32; width]);
        let mut bad = affine.to_vec();
        bad[2 * width] = f32::NAN; // example 1 is dropped
        affine_clipped_sum(width, batch, &bad, &factors, 1, &mut gw, &mut gb);
        let mut both = vec![0.0f32; 2 * width];
        affine_clipped_sum_contiguous(width, batch, &bad, &factors, 1, &mut both);
        let (mut want_w, mut want_b) = (vec![0.0f64; width], vec![0.0f64; width]);
        for i in 0..batch {
            let xi = wide(&x[i * n..(i + 1) * n]);
            let ri = wide(&r[i * n..(i + 1) * n]);
            assert_close(
                &format!("{what} out"),
                &out[i * n..(i + 1) * n],
                &reference_one(&xi, &wf, &bf),
                1e-5,
            );
            let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&reference_one(x, w, b), &ri);
            let gx = finite_difference(&xi, 1e-6, |x| loss(x, &wf, &bf));
            let gwi = finite_difference(&wf, 1e-6, |w| loss(&xi, w, &bf));
            let gbi = finite_difference(&bf, 1e-6, |b| loss(&xi, &wf, b));
            assert_close(&format!("{what} dx"), &dx[i * n..(i + 1) * n], &gx, 1e-4);
            assert_close(
                &format!("{what} dweight"),
                &affine[i * 2 * width..i * 2 * width + width],
                &gwi,
                1e-4,
            );
            assert_close(
                &format!("{what} dbias"),
                &affine[i * 2 * width + width..(i + 1) * 2 * width],
                &gbi,
                1e-4,
            );
            assert_rel(&format!("{what} norm"), norms[i] as f64, dot(&gwi, &gwi) + dot(&gbi, &gbi), 1e-4);
            for k in 0..width {
                want_w[k] += factors[i] as f64 * gwi[k];
                want_b[k] += factors[i] as f64 * gbi[k];
            }
        }
        assert_close(&format!("{what} clipped weight"), &gw, &want_w, 1e-4);
        assert_close(&format!("{what} clipped bias"), &gb, &want_b, 1e-4);
        assert_close(&format!("{what} clipped contiguous"), &both, &[want_w, want_b].concat(), 1e-4);
    }

    #[test]
    fn group_norm_matches_reference_and_finite_differences() {
        let mut rng = rng(71);
        for dims in [
            GroupNormDims { channels: 6, plane: 5, groups: 3 },
            GroupNormDims { channels: 4, plane: 9, groups: 1 },
            GroupNormDims { channels: 4, plane: 3, groups: 4 },
            // Planes of several vector chunks and a remainder.
            GroupNormDims { channels: 4, plane: 19, groups: 2 },
        ] {
            let batch = 3;
            let n = dims.input_len();
            let x: Vec<f32> = uniform(&mut rng, batch * n).iter().map(|v| 2.0 * v + 0.3).collect();
            let (w, b, r) = (
                uniform(&mut rng, dims.channels),
                uniform(&mut rng, dims.channels),
                uniform(&mut rng, batch * n),
            );
            let mut out = vec![f32::NAN; batch * n];
            let (mut mean, mut rstd) =
                (vec![f32::NAN; batch * dims.groups], vec![f32::NAN; batch * dims.groups]);
            group_norm_forward(&dims, batch, &x, &w, &b, &mut out, &mut mean, &mut rstd);
            let mut dx = vec![f32::NAN; batch * n];
            let mut affine = vec![f32::NAN; batch * 2 * dims.channels];
            group_norm_backward(&dims, batch, &x, &r, &w, &mean, &rstd, &mut dx, &mut affine);
            let block = dims.channels / dims.groups * dims.plane;
            let reference_one =
                |x: &[f64], w: &[f64], b: &[f64]| reference(x, block, w, b, |k| k / dims.plane);
            check("group_norm", batch, n, dims.channels, &x, &w, &b, &r, &out, &dx, &affine, &reference_one);
        }
    }

    #[test]
    fn layer_norm_matches_reference_and_finite_differences() {
        let mut rng = rng(72);
        for dims in [LayerNormDims { rows: 4, dim: 6 }, LayerNormDims { rows: 2, dim: 21 }] {
            let batch = 3;
            let n = dims.input_len();
            let x: Vec<f32> = uniform(&mut rng, batch * n).iter().map(|v| 3.0 * v - 0.2).collect();
            let (w, b, r) =
                (uniform(&mut rng, dims.dim), uniform(&mut rng, dims.dim), uniform(&mut rng, batch * n));
            let mut out = vec![f32::NAN; batch * n];
            let (mut mean, mut rstd) = (vec![f32::NAN; batch * dims.rows], vec![f32::NAN; batch * dims.rows]);
            layer_norm_forward(&dims, batch, &x, &w, &b, &mut out, &mut mean, &mut rstd);
            let mut dx = vec![f32::NAN; batch * n];
            let mut affine = vec![f32::NAN; batch * 2 * dims.dim];
            layer_norm_backward(&dims, batch, &x, &r, &w, &mean, &rstd, &mut dx, &mut affine);
            let reference_one =
                |x: &[f64], w: &[f64], b: &[f64]| reference(x, dims.dim, w, b, |k| k % dims.dim);
            check("layer_norm", batch, n, dims.dim, &x, &w, &b, &r, &out, &dx, &affine, &reference_one);
        }
    }
}
