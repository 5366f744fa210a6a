//! The passes of a convolution with few output positions, a chunk of examples folded into one
//! product per group.
//!
//! Per example, a conv's products have `T` (positions) as one dimension: 16 in the CIFAR-10 CNN's
//! last two convs, 25 in the MNIST CNN's second. The GEMM's micro-kernel is wider than that, so it
//! runs on its edge kernel, and it packs the whole weight again for every example. Laid out
//! tap-major across a chunk's examples, `[groups][d][len·T]` (row `k` holds patch value `k` of every
//! position of every example, example by example), the chunk's patches make each pass one product
//! with `len·T` columns:
//! - forward: `O = W·P` (`[p][len·T]`), then written out as NCHW with the bias;
//! - backward to the input: `C = Wᵀ·D` with `D` the output gradient laid out like `O`, then each
//!   example's columns of `C` folded back onto its input gradient;
//! - weight gradient: `G += D·Pᵀ` over all `len·T` columns, each example's columns of `D` scaled by
//!   its clip factor first for the clipped sum; the result is already in the weight's order.
//!
//! The per-example norms still need each example's own patches, so the norm passes keep
//! [`crate::conv::im2col`]'s `[d][T]` per example.

use rayon::prelude::*;

use crate::conv::{col2im_one, im2col_one, Conv2dGeometry};
use crate::gemm::{sgemm, Op};
use crate::gemm_bf16::{gemm_in, Precision};
use crate::per_example::sum_wide;

pub use dp_spec::{FOLD_BELOW_POSITIONS, FOLD_CHANNELS_PER_POSITION};

/// Whether `geom`'s passes fold a chunk's examples into one product per group
/// ([`Conv2dGeometry::folds`], shared with the compiler): few positions ([`FOLD_BELOW_POSITIONS`])
/// and many output channels per group against them ([`FOLD_CHANNELS_PER_POSITION`]). The folded
/// product packs the chunk's patches once and reuses them for every output channel, where one
/// product per example packs the weight again for every example; on one thread (`cargo bench -p
/// dp-kernels --bench conv_folded`) the CIFAR-10 CNN's seventh conv (T = 16, 256 channels) ran its
/// forward, input-gradient and weight-gradient passes in 0.4–0.9× the time folded, while its eighth
/// (T = 16, 10 channels), the MNIST CNN's second (T = 25, 32 channels) and the CIFAR-10 CNN's T = 64
/// convs (128 channels) ran slower folded.
pub fn folds(geom: &Conv2dGeometry) -> bool {
    geom.folds()
}

/// Unfolds `len` examples of `x` into `patches` as `[groups][d][len·T]`, example `i`'s `T` values of
/// row `k` at column `i·T`. Taps in the padding are 0.
pub fn im2col_folded(geom: &Conv2dGeometry, len: usize, x: &[f32], patches: &mut [f32]) {
    geom.assert_valid();
    let (t, cg, taps) = (geom.positions(), geom.in_c / geom.groups, geom.kh * geom.kw);
    assert!(x.len() >= len * geom.input_len(), "im2col: input has {} values", x.len());
    assert!(patches.len() >= len * geom.patches_len(), "im2col: patches has {} values", patches.len());
    let channel_rows = taps * len * t;
    if channel_rows == 0 {
        return;
    }
    // One task per input channel: its taps' rows are contiguous, and every example writes into them.
    patches[..len * geom.patches_len()].par_chunks_mut(channel_rows).enumerate().for_each(|(u, rows)| {
        let (q, cl) = (u / cg, u % cg);
        for i in 0..len {
            let x_i = &x[i * geom.input_len()..(i + 1) * geom.input_len()];
            im2col_one(geom, q, cl..cl + 1, x_i, &mut rows[i * t..], len * t);
        }
    });
}

/// The NCHW output gradient of `len` examples laid out like the folded patches, `[groups][p][len·T]`
/// (`p = out_c/groups`), example `i`'s values scaled by its clip factor `factors.0[i * factors.1]`
/// when `factors` is given.
fn fold_output_grad(
    geom: &Conv2dGeometry,
    len: usize,
    dout: &[f32],
    factors: Option<(&[f32], usize)>,
    rows: &mut [f32],
) {
    let (t, output_len) = (geom.positions(), geom.output_len());
    assert!(dout.len() >= len * output_len, "conv2d: output gradient has {} values", dout.len());
    assert!(rows.len() >= len * output_len, "conv2d: rows has {} values", rows.len());
    if t == 0 {
        return;
    }
    // Output channel `c` of every example is one row (groups are consecutive runs of channels).
    rows[..len * output_len].par_chunks_mut(len * t).enumerate().for_each(|(c, row)| {
        for (i, dst) in row.chunks_exact_mut(t).enumerate() {
            let src = &dout[i * output_len + c * t..i * output_len + (c + 1) * t];
            match factors.map(|(f, stride)| f[i * stride]) {
                // A zero factor writes zeros, not `0·δ`, which is NaN where δ is.
                Some(0.0) => dst.fill(0.0),
                Some(s) => {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = s * v;
                    }
                }
                None => dst.copy_from_slice(src),
            }
        }
    });
}

/// Forward of `len` examples: `out[i][o][t] = bias[o] + Σ_k W[o][k]·patch_{i,t}[k]`. `patches` needs
/// room for `len` examples' patches, `rows` for their output. The products run in `precision`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    geom: &Conv2dGeometry,
    len: usize,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    patches: &mut [f32],
    rows: &mut [f32],
    out: &mut [f32],
    precision: Precision,
) {
    let (t, d, pg, output_len) =
        (geom.positions(), geom.patch_len(), geom.out_per_group(), geom.output_len());
    assert!(weight.len() >= geom.weight_len(), "conv2d: weight has {} values", weight.len());
    assert!(out.len() >= len * output_len, "conv2d: output has {} values", out.len());
    assert!(rows.len() >= len * output_len, "conv2d: rows has {} values", rows.len());
    if let Some(b) = bias {
        assert!(b.len() >= geom.out_c, "conv2d: bias has {} values", b.len());
    }
    if len * output_len == 0 {
        return;
    }
    im2col_folded(geom, len, x, patches);
    let n = len * t;
    for q in 0..geom.groups {
        let (w_q, p_q) = (&weight[q * pg * d..(q + 1) * pg * d], &patches[q * d * n..(q + 1) * d * n]);
        gemm_in(
            precision,
            Op::N,
            Op::N,
            (pg, n, d),
            1.0,
            w_q,
            p_q,
            0.0,
            &mut rows[q * pg * n..(q + 1) * pg * n],
        );
    }
    let rows = &rows[..len * output_len];
    out[..len * output_len].par_chunks_mut(output_len).enumerate().for_each(|(i, out_i)| {
        for (c, dst) in out_i.chunks_exact_mut(t).enumerate() {
            let src = &rows[c * n + i * t..c * n + (i + 1) * t];
            let b = bias.map_or(0.0, |b| b[c]);
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = v + b;
            }
        }
    });
}

/// Backward to the input of `len` examples: `dx` (overwritten) from the NCHW output gradient `dout`.
/// `patches` needs room for `len` examples' patches (it holds their patch gradients), `rows` for
/// their output gradient. The products run in `precision`.
#[allow(clippy::too_many_arguments)]
pub fn backward_input(
    geom: &Conv2dGeometry,
    len: usize,
    dout: &[f32],
    weight: &[f32],
    patches: &mut [f32],
    rows: &mut [f32],
    dx: &mut [f32],
    precision: Precision,
) {
    geom.assert_valid();
    let (t, d, pg, input_len) = (geom.positions(), geom.patch_len(), geom.out_per_group(), geom.input_len());
    assert!(weight.len() >= geom.weight_len(), "conv2d: weight has {} values", weight.len());
    assert!(dx.len() >= len * input_len, "conv2d: input gradient has {} values", dx.len());
    assert!(patches.len() >= len * geom.patches_len(), "conv2d: patches has {} values", patches.len());
    let dx = &mut dx[..len * input_len];
    dx.fill(0.0);
    if len * t * d == 0 {
        return;
    }
    fold_output_grad(geom, len, dout, None, rows);
    let n = len * t;
    for q in 0..geom.groups {
        let (w_q, d_q) = (&weight[q * pg * d..(q + 1) * pg * d], &rows[q * pg * n..(q + 1) * pg * n]);
        gemm_in(
            precision,
            Op::T,
            Op::N,
            (d, n, pg),
            1.0,
            w_q,
            d_q,
            0.0,
            &mut patches[q * d * n..(q + 1) * d * n],
        );
    }
    let cols = &patches[..len * geom.patches_len()];
    dx.par_chunks_mut(input_len).enumerate().for_each(|(i, dx_i)| {
        for q in 0..geom.groups {
            col2im_one(geom, q, &cols[q * d * n + i * t..], dx_i, n);
        }
    });
}

/// ADDS the weight gradient of `len` examples summed into `grad_w` (and the bias gradient into
/// `grad_b`), each example's scaled by its clip factor `factors.0[i * factors.1]` when `factors` is
/// given (an example with factor 0 contributes exactly 0, whatever its values), unscaled otherwise.
/// `patches` and `rows` need room for `len` examples' patches and output, and are left holding
/// scratch.
#[allow(clippy::too_many_arguments)]
pub fn weight_gradient(
    geom: &Conv2dGeometry,
    len: usize,
    x: &[f32],
    dout: &[f32],
    factors: Option<(&[f32], usize)>,
    patches: &mut [f32],
    rows: &mut [f32],
    grad_w: &mut [f32],
    grad_b: Option<&mut [f32]>,
) {
    let (t, d, pg) = (geom.positions(), geom.patch_len(), geom.out_per_group());
    assert!(grad_w.len() >= geom.weight_len(), "conv2d: weight gradient has {} values", grad_w.len());
    if let Some((f, stride)) = factors {
        assert!(len == 0 || f.len() > (len - 1) * stride, "conv2d: {} clip factors", f.len());
    }
    if len * t == 0 {
        return;
    }
    im2col_folded(geom, len, x, patches);
    let n = len * t;
    if let Some((f, stride)) = factors {
        // A zero factor must zero the example whatever its values: its output gradient rows are
        // written as 0 below, and its patches (which may hold a NaN) are cleared here.
        for i in (0..len).filter(|&i| f[i * stride] == 0.0) {
            patches[..len * geom.patches_len()]
                .chunks_exact_mut(n)
                .for_each(|row| row[i * t..(i + 1) * t].fill(0.0));
        }
    }
    fold_output_grad(geom, len, dout, factors, rows);
    for q in 0..geom.groups {
        let (d_q, p_q) = (&rows[q * pg * n..(q + 1) * pg * n], &patches[q * d * n..(q + 1) * d * n]);
        sgemm(Op::N, Op::T, pg, d, n, 1.0, d_q, p_q, 1.0, &mut grad_w[q * pg * d..(q + 1) * pg * d]);
    }
    if let Some(gb) = grad_b {
        assert!(gb.len() >= geom.out_c, "conv2d: bias gradient has {} values", gb.len());
        for (g, row) in gb.iter_mut().zip(rows[..len * geom.output_len()].chunks_exact(n)) {
            *g += sum_wide(row) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{conv2d_backward_input, conv2d_forward_from_patches, im2col, output_grad_by_group};
    use crate::per_example;
    use crate::test_support::*;

    /// Every unfolding variant (stride above 1, 'same' width, other stride 1), groups, dilation and
    /// a 1×1 kernel, all with few positions (the passes are checked whether [`folds`] would pick
    /// them or not).
    fn geometries() -> Vec<Conv2dGeometry> {
        let g = conv_geometry;
        vec![
            g(3, 12, 12, 5, 4, 2, 1, 1, 1), // the MNIST CNN's second conv, smaller: T = 25
            g(6, 4, 4, 7, 3, 1, 1, 1, 1),   // the CIFAR-10 CNN's last convs, smaller: T = 16
            g(4, 7, 7, 4, 3, 2, 2, 2, 2),   // dilation and groups
            g(2, 6, 5, 3, 3, 1, 0, 1, 1),   // stride 1, narrower than the input
            g(3, 5, 5, 2, 1, 1, 0, 1, 1),   // 1x1
            g(2, 9, 11, 2, 3, 3, 0, 1, 1),  // stride 3 without padding, non-square
        ]
    }

    /// The folded passes against the per-example ones on the same chunk, batch sizes 1 and 5.
    #[test]
    fn folded_passes_match_per_example_passes() {
        let mut rng = rng(41);
        for geom in geometries() {
            let (t, d) = (geom.positions(), geom.patch_len());
            for len in [1, 5] {
                let what = format!("{geom:?}, {len} examples");
                let x = uniform(&mut rng, len * geom.input_len());
                let w = uniform(&mut rng, geom.weight_len());
                let b = uniform(&mut rng, geom.out_c);
                let dout = uniform(&mut rng, len * geom.output_len());
                let mut per_example_patches = vec![f32::NAN; len * geom.patches_len()];
                im2col(&geom, len, &x, &mut per_example_patches);

                // Unfolding: the same values, example `i`'s at columns `i·T..(i+1)·T` of each row.
                let mut patches = vec![f32::NAN; len * geom.patches_len()];
                im2col_folded(&geom, len, &x, &mut patches);
                for (q, i, k) in
                    (0..geom.groups).flat_map(|q| (0..len).flat_map(move |i| (0..d).map(move |k| (q, i, k))))
                {
                    let want = &per_example_patches[((q * len + i) * d + k) * t..][..t];
                    let got = &patches[(q * d + k) * len * t + i * t..][..t];
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(got), bits(want), "{what}: group {q} example {i} row {k}");
                }

                let mut rows = vec![f32::NAN; len * geom.output_len()];
                let mut out = vec![f32::NAN; len * geom.output_len()];
                forward(
                    &geom,
                    len,
                    &x,
                    &w,
                    Some(&b),
                    &mut patches,
                    &mut rows,
                    &mut out,
                    crate::gemm_bf16::Precision::F32,
                );
                let mut want = vec![f32::NAN; len * geom.output_len()];
                conv2d_forward_from_patches(&geom, len, &per_example_patches, &w, Some(&b), &mut want);
                assert_close(&format!("{what}: forward"), &out, &wide(&want), 1e-5);

                let mut dx = vec![f32::NAN; len * geom.input_len()];
                backward_input(
                    &geom,
                    len,
                    &dout,
                    &w,
                    &mut patches,
                    &mut rows,
                    &mut dx,
                    crate::gemm_bf16::Precision::F32,
                );
                let mut slots = vec![f32::NAN; t * d];
                let mut want = vec![f32::NAN; len * geom.input_len()];
                conv2d_backward_input(
                    &geom,
                    len,
                    &dout,
                    &w,
                    &mut slots,
                    &mut want,
                    crate::gemm_bf16::Precision::F32,
                );
                assert_close(&format!("{what}: input gradient"), &dx, &wide(&want), 1e-5);

                // The plain sums, added onto what the gradients held.
                let mut delta = vec![f32::NAN; len * geom.output_len()];
                output_grad_by_group(&geom, len, &dout, &mut delta);
                let layer = geom.layer();
                let (mut gw, mut gb) = (vec![0.5f32; geom.weight_len()], vec![0.5f32; geom.out_c]);
                weight_gradient(&geom, len, &x, &dout, None, &mut patches, &mut rows, &mut gw, Some(&mut gb));
                let (mut want_w, mut want_b) = (vec![0.5f32; geom.weight_len()], vec![0.5f32; geom.out_c]);
                per_example::sum_outer(&layer, len, &per_example_patches, &delta, &mut want_w);
                per_example::bias_sum(&layer, len, &delta, &mut want_b);
                assert_close(&format!("{what}: weight sum"), &gw, &wide(&want_w), 1e-5);
                assert_close(&format!("{what}: bias sum"), &gb, &wide(&want_b), 1e-5);

                // The clipped sums, factors 2 apart; the last example's factor is 0 and its input and
                // output gradient hold NaN, which must not reach the sums.
                let factors: Vec<f32> =
                    (0..2 * len).map(|j| if j + 2 >= 2 * len { 0.0 } else { 0.25 * j as f32 }).collect();
                let (mut x_bad, mut dout_bad) = (x.clone(), dout.clone());
                x_bad[(len - 1) * geom.input_len()] = f32::NAN;
                dout_bad[len * geom.output_len() - 1] = f32::INFINITY;
                let (mut gw, mut gb) = (vec![0.5f32; geom.weight_len()], vec![0.5f32; geom.out_c]);
                let f = Some((&factors[..], 2));
                weight_gradient(
                    &geom,
                    len,
                    &x_bad,
                    &dout_bad,
                    f,
                    &mut patches,
                    &mut rows,
                    &mut gw,
                    Some(&mut gb),
                );
                let (mut want_w, mut want_b) = (vec![0.5f32; geom.weight_len()], vec![0.5f32; geom.out_c]);
                let mut a = per_example_patches.clone();
                per_example::clipped_sum(&layer, len, &factors, 2, &mut a, &mut delta, &mut want_w);
                per_example::bias_sum(&layer, len, &delta, &mut want_b);
                assert!(gw.iter().chain(&gb).all(|v| v.is_finite()), "{what}: a zero factor let NaN through");
                assert_close(&format!("{what}: clipped weight sum"), &gw, &wide(&want_w), 1e-5);
                assert_close(&format!("{what}: clipped bias sum"), &gb, &wide(&want_b), 1e-5);
            }
        }
    }
}
