//! 2-D convolution over NCHW batches: im2col/col2im, forward (one product per example and group,
//! bias fused), backward to the input, and the weight gradient as a layer applied at `out_h·out_w`
//! positions (see [`crate::per_example`]).
//!
//! Layouts: input `[batch][in_c][in_h][in_w]`, output `[batch][out_c][out_h][out_w]` (PyTorch's NCHW),
//! weight `[out_c][in_c/groups][kh][kw]`, bias `[out_c]`. Patches (the `A` of the per-example machinery)
//! are `[groups][batch][T][d]` with `T = out_h·out_w` positions and `d = (in_c/groups)·kh·kw` values
//! per patch, ordered like a weight row; output gradients turned into rows (the `Δ`) are
//! `[groups][batch][T][out_c/groups]`.

use rayon::prelude::*;

use crate::gemm::{product_for, Op};

// The geometry is shared with the compiler, which plans with the same formulas.
pub use dp_spec::Conv2dGeometry;

/// Scratch `f32`s per parallel slot of [`conv2d_backward_input`]: one example's patch gradients of
/// one group. `k` slots let `k` examples run in parallel.
pub const fn backward_input_scratch_len(geom: &Conv2dGeometry) -> usize {
    geom.positions() * geom.patch_len()
}

/// Unfolds every example of `x` into `patches` (`[groups][batch][T][d]`); taps in the padding are 0.
pub fn im2col(geom: &Conv2dGeometry, batch: usize, x: &[f32], patches: &mut [f32]) {
    geom.assert_valid();
    let unit = geom.positions() * geom.patch_len();
    assert!(x.len() >= batch * geom.input_len(), "im2col: input has {} values", x.len());
    assert!(patches.len() >= batch * geom.patches_len(), "im2col: patches has {} values", patches.len());
    if unit == 0 {
        return;
    }
    patches[..batch * geom.patches_len()].par_chunks_mut(unit).enumerate().for_each(|(u, out)| {
        let (q, i) = (u / batch, u % batch);
        let x_i = &x[i * geom.input_len()..(i + 1) * geom.input_len()];
        im2col_one(geom, q, x_i, out);
    });
}

/// Kernel widths up to this keep their [`valid_columns`] in a table on the stack, computed once per
/// example; wider kernels compute them as they go (two divisions each time).
const COLUMN_TABLE: usize = 16;

/// [`valid_columns`] of every kernel column `kj`, looked up from a table when the kernel is narrow
/// enough: the divisions inside cost more than the short copies they bound.
struct ColumnRanges<'g> {
    geom: &'g Conv2dGeometry,
    table: [(usize, usize); COLUMN_TABLE],
}

impl<'g> ColumnRanges<'g> {
    fn new(geom: &'g Conv2dGeometry) -> Self {
        let mut table = [(0, 0); COLUMN_TABLE];
        for (kj, range) in table.iter_mut().enumerate().take(geom.kw) {
            *range = Self::compute(geom, kj);
        }
        ColumnRanges { geom, table }
    }

    fn compute(geom: &Conv2dGeometry, kj: usize) -> (usize, usize) {
        valid_columns(geom.in_w, geom.out_w(), geom.stride, kj * geom.dilation, geom.padding)
    }

    fn get(&self, kj: usize) -> (usize, usize) {
        if kj < COLUMN_TABLE {
            self.table[kj]
        } else {
            Self::compute(self.geom, kj)
        }
    }
}

/// The output columns `lo..hi` whose tap at kernel offset `tap` (`kj·dilation`) lands inside an input
/// row of `len` values (the others read padding): `0 ≤ ow·stride + tap − pad < len`.
fn valid_columns(len: usize, out_len: usize, stride: usize, tap: usize, pad: usize) -> (usize, usize) {
    // ow·stride ≥ pad − tap, and ow·stride ≤ len − 1 + pad − tap.
    let lo = pad.saturating_sub(tap).div_ceil(stride).min(out_len);
    let hi = match (len + pad).checked_sub(tap + 1) {
        Some(last) => (last / stride + 1).min(out_len),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// `dst[j·dst_step] = src[j·src_step]` for `j < n`: one bounds check for the whole copy instead of one
/// per value (the per-value checks and step iterators cost several times the copy itself).
fn strided_copy(src: &[f32], src_step: usize, dst: &mut [f32], dst_step: usize, n: usize) {
    if n == 0 {
        return;
    }
    assert!((n - 1) * src_step < src.len() && (n - 1) * dst_step < dst.len(), "strided copy out of bounds");
    for j in 0..n {
        // SAFETY: j < n, and the assert above bounds both indices at j = n − 1.
        unsafe { *dst.get_unchecked_mut(j * dst_step) = *src.get_unchecked(j * src_step) };
    }
}

/// `dst[j·step] = 0` for `j < n`, bounds checked once (see [`strided_copy`]).
fn strided_fill(dst: &mut [f32], step: usize, n: usize) {
    if n == 0 {
        return;
    }
    assert!((n - 1) * step < dst.len(), "strided fill out of bounds");
    for j in 0..n {
        // SAFETY: j < n, and the assert above bounds the index at j = n − 1.
        unsafe { *dst.get_unchecked_mut(j * step) = 0.0 };
    }
}

/// `dst[j·dst_step] += src[j·src_step]` for `j < n`, bounds checked once (see [`strided_copy`]).
fn strided_add(src: &[f32], src_step: usize, dst: &mut [f32], dst_step: usize, n: usize) {
    if n == 0 {
        return;
    }
    assert!((n - 1) * src_step < src.len() && (n - 1) * dst_step < dst.len(), "strided add out of bounds");
    for j in 0..n {
        // SAFETY: j < n, and the assert above bounds both indices at j = n − 1.
        unsafe { *dst.get_unchecked_mut(j * dst_step) += *src.get_unchecked(j * src_step) };
    }
}

/// Patches of group `q` of one example, `[T][d]`. For every output row, channel and kernel row, each
/// kernel column is one strided copy over the output columns whose tap is inside the input (its
/// range computed once), zeros outside: no test per value.
fn im2col_one(geom: &Conv2dGeometry, q: usize, x: &[f32], out: &mut [f32]) {
    let columns = ColumnRanges::new(geom);
    let cg = geom.in_c / geom.groups;
    let d = geom.patch_len();
    let (ow_n, s, dil, pad) = (geom.out_w(), geom.stride, geom.dilation, geom.padding);
    let plane_len = geom.in_h * geom.in_w;
    for (oh, rows) in out[..geom.positions() * d].chunks_exact_mut(ow_n * d).enumerate() {
        for cl in 0..cg {
            let plane = &x[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
            for ki in 0..geom.kh {
                let k0 = (cl * geom.kh + ki) * geom.kw;
                let ih = (oh * s + ki * dil).checked_sub(pad).filter(|&ih| ih < geom.in_h);
                let Some(ih) = ih else {
                    for row in rows.chunks_exact_mut(d) {
                        row[k0..k0 + geom.kw].fill(0.0);
                    }
                    continue;
                };
                let src = &plane[ih * geom.in_w..(ih + 1) * geom.in_w];
                for kj in 0..geom.kw {
                    let (lo, hi) = columns.get(kj);
                    let k = k0 + kj;
                    strided_fill(&mut rows[k..], d, lo);
                    if hi < ow_n {
                        strided_fill(&mut rows[hi * d + k..], d, ow_n - hi);
                    }
                    if lo < hi {
                        strided_copy(&src[lo * s + kj * dil - pad..], s, &mut rows[lo * d + k..], d, hi - lo);
                    }
                }
            }
        }
    }
}

/// ADDS the patch gradients of group `q` of one example (`[T][d]`) back onto its input gradient,
/// in the same order as [`im2col_one`] reads them (taps in the padding are skipped).
fn col2im_one(geom: &Conv2dGeometry, q: usize, cols: &[f32], dx: &mut [f32]) {
    let columns = ColumnRanges::new(geom);
    let cg = geom.in_c / geom.groups;
    let d = geom.patch_len();
    let (ow_n, s, dil, pad) = (geom.out_w(), geom.stride, geom.dilation, geom.padding);
    let plane_len = geom.in_h * geom.in_w;
    for (oh, rows) in cols[..geom.positions() * d].chunks_exact(ow_n * d).enumerate() {
        for cl in 0..cg {
            let plane = &mut dx[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
            for ki in 0..geom.kh {
                let k0 = (cl * geom.kh + ki) * geom.kw;
                let Some(ih) = (oh * s + ki * dil).checked_sub(pad).filter(|&ih| ih < geom.in_h) else {
                    continue;
                };
                let dst = &mut plane[ih * geom.in_w..(ih + 1) * geom.in_w];
                for kj in 0..geom.kw {
                    let (lo, hi) = columns.get(kj);
                    if lo < hi {
                        let first = lo * s + kj * dil - pad;
                        strided_add(&rows[lo * d + k0 + kj..], d, &mut dst[first..], s, hi - lo);
                    }
                }
            }
        }
    }
}

/// Folds patch gradients (`[groups][batch][T][d]`) back into input gradients: `dx` is overwritten
/// with the sum of every patch value that was read from each input position.
pub fn col2im(geom: &Conv2dGeometry, batch: usize, cols: &[f32], dx: &mut [f32]) {
    geom.assert_valid();
    let unit = geom.positions() * geom.patch_len();
    assert!(cols.len() >= batch * geom.patches_len(), "col2im: patches has {} values", cols.len());
    assert!(dx.len() >= batch * geom.input_len(), "col2im: input gradient has {} values", dx.len());
    dx[..batch * geom.input_len()].par_chunks_mut(geom.input_len()).enumerate().for_each(|(i, dx_i)| {
        dx_i.fill(0.0);
        for q in 0..geom.groups {
            let u = q * batch + i;
            col2im_one(geom, q, &cols[u * unit..(u + 1) * unit], dx_i);
        }
    });
}

/// Forward from patches already unfolded by [`im2col`].
pub fn conv2d_forward_from_patches(
    geom: &Conv2dGeometry,
    batch: usize,
    patches: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    geom.assert_valid();
    let (t, d, pg) = (geom.positions(), geom.patch_len(), geom.out_per_group());
    assert!(patches.len() >= batch * geom.patches_len(), "conv2d: patches has {} values", patches.len());
    assert!(weight.len() >= geom.weight_len(), "conv2d: weight has {} values", weight.len());
    assert!(out.len() >= batch * geom.output_len(), "conv2d: output has {} values", out.len());
    if let Some(b) = bias {
        assert!(b.len() >= geom.out_c, "conv2d: bias has {} values", b.len());
    }
    // One block per (example, group): out_c/groups channel planes of T values. The blocks run in
    // parallel, so each product stays on its thread unless there is only one.
    let product = product_for(batch * geom.groups > 1);
    out[..batch * geom.output_len()].par_chunks_mut(pg * t).enumerate().for_each(|(u, block)| {
        let (i, q) = (u / geom.groups, u % geom.groups);
        let beta = match bias {
            Some(b) => {
                for (o, plane) in block.chunks_mut(t).enumerate() {
                    plane.fill(b[q * pg + o]);
                }
                1.0
            }
            None => 0.0,
        };
        let unit = q * batch + i;
        let patches_u = &patches[unit * t * d..(unit + 1) * t * d];
        product(Op::N, Op::T, pg, t, d, 1.0, &weight[q * pg * d..(q + 1) * pg * d], patches_u, beta, block);
    });
}

/// Rearranges output gradients `dout` (`[batch][out_c][T]`) into rows `delta` (`[groups][batch][T][p]`),
/// the `Δ` of the weight's per-example norms and clipped sums and of [`conv2d_backward_input`].
pub fn output_grad_to_rows(geom: &Conv2dGeometry, batch: usize, dout: &[f32], delta: &mut [f32]) {
    let (t, pg) = (geom.positions(), geom.out_per_group());
    assert!(dout.len() >= batch * geom.output_len(), "conv2d: output gradient has {} values", dout.len());
    assert!(delta.len() >= batch * geom.output_len(), "conv2d: delta has {} values", delta.len());
    if t * pg == 0 {
        return;
    }
    delta[..batch * geom.output_len()].par_chunks_mut(t * pg).enumerate().for_each(|(u, rows)| {
        let (q, i) = (u / batch, u % batch);
        let planes = &dout[i * geom.output_len() + q * pg * t..i * geom.output_len() + (q + 1) * pg * t];
        transpose(planes, pg, t, rows);
    });
}

/// Side of the square tiles [`transpose`] moves: 16 rows of 16 floats read, 16 written, each a
/// cache line.
const TRANSPOSE_TILE: usize = 16;

/// `dst` (`cols×rows`) = the transpose of `src` (`rows×cols`), both row-major, tile by tile so that
/// reads and writes both stay within a few cache lines.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for r0 in (0..rows).step_by(TRANSPOSE_TILE) {
        let r1 = (r0 + TRANSPOSE_TILE).min(rows);
        for c0 in (0..cols).step_by(TRANSPOSE_TILE) {
            let c1 = (c0 + TRANSPOSE_TILE).min(cols);
            for r in r0..r1 {
                let row = &src[r * cols + c0..r * cols + c1];
                for (c, &v) in (c0..c1).zip(row) {
                    dst[c * rows + r] = v;
                }
            }
        }
    }
}

/// Backward to the input: `dx` (overwritten, `[batch][in_c][in_h][in_w]`) from the output gradient
/// rows `delta` (see [`output_grad_to_rows`]), per example `col2im(Δ_q·W_q)`. `scratch` holds one or
/// more slots of [`backward_input_scratch_len`]; slots run in parallel.
pub fn conv2d_backward_input(
    geom: &Conv2dGeometry,
    batch: usize,
    delta: &[f32],
    weight: &[f32],
    scratch: &mut [f32],
    dx: &mut [f32],
) {
    geom.assert_valid();
    if batch == 0 {
        return;
    }
    let (t, d, pg) = (geom.positions(), geom.patch_len(), geom.out_per_group());
    assert!(delta.len() >= batch * geom.output_len(), "conv2d: delta has {} values", delta.len());
    assert!(weight.len() >= geom.weight_len(), "conv2d: weight has {} values", weight.len());
    assert!(dx.len() >= batch * geom.input_len(), "conv2d: input gradient has {} values", dx.len());
    let slot_len = backward_input_scratch_len(geom).max(1);
    // No more slots than threads: a slot reused example after example stays in cache.
    let slots = (scratch.len() / slot_len).min(batch).min(rayon::current_num_threads());
    assert!(slots >= 1, "conv2d backward: scratch has {} values, one slot needs {slot_len}", scratch.len());
    let per_slot = batch.div_ceil(slots);
    let product = product_for(slots > 1);
    dx[..batch * geom.input_len()]
        .par_chunks_mut(per_slot * geom.input_len())
        .zip(scratch.par_chunks_mut(slot_len))
        .enumerate()
        .for_each(|(k, (dx_k, cols))| {
            for (j, dx_i) in dx_k.chunks_mut(geom.input_len()).enumerate() {
                let i = k * per_slot + j;
                dx_i.fill(0.0);
                for q in 0..geom.groups {
                    let u = q * batch + i;
                    let cols = &mut cols[..t * d];
                    let w_q = &weight[q * pg * d..(q + 1) * pg * d];
                    product(
                        Op::N,
                        Op::N,
                        t,
                        d,
                        pg,
                        1.0,
                        &delta[u * t * pg..(u + 1) * t * pg],
                        w_q,
                        0.0,
                        cols,
                    );
                    col2im_one(geom, q, cols, dx_i);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_chunks::conv2d_forward;
    use crate::per_example::{self, Strategy};
    use crate::test_support::*;

    /// One example's convolution in f64, straight from the definition.
    fn reference_forward(geom: &Conv2dGeometry, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (oh_n, ow_n) = (geom.out_h(), geom.out_w());
        let cg = geom.in_c / geom.groups;
        let pg = geom.out_per_group();
        let mut out = vec![0.0; geom.output_len()];
        for o in 0..geom.out_c {
            let q = o / pg;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut s = b[o];
                    for cl in 0..cg {
                        for ki in 0..geom.kh {
                            for kj in 0..geom.kw {
                                let ih =
                                    (oh * geom.stride + ki * geom.dilation) as isize - geom.padding as isize;
                                let iw =
                                    (ow * geom.stride + kj * geom.dilation) as isize - geom.padding as isize;
                                if ih < 0 || iw < 0 || ih as usize >= geom.in_h || iw as usize >= geom.in_w {
                                    continue;
                                }
                                let c = q * cg + cl;
                                s += w[((o * cg + cl) * geom.kh + ki) * geom.kw + kj]
                                    * x[(c * geom.in_h + ih as usize) * geom.in_w + iw as usize];
                            }
                        }
                    }
                    out[(o * oh_n + oh) * ow_n + ow] = s;
                }
            }
        }
        out
    }

    fn geometries() -> Vec<Conv2dGeometry> {
        let g = |in_c, in_h, in_w, out_c, k, stride, padding, dilation, groups| Conv2dGeometry {
            in_c,
            in_h,
            in_w,
            out_c,
            kh: k,
            kw: k,
            stride,
            padding,
            dilation,
            groups,
        };
        vec![
            g(1, 10, 10, 3, 4, 2, 2, 1, 1), // MNIST-like: k larger than stride, padding
            g(2, 6, 5, 3, 3, 1, 1, 1, 1),   // 'same', non-square input
            g(4, 7, 7, 4, 3, 2, 2, 2, 2),   // dilation and groups
            g(3, 5, 5, 2, 1, 1, 0, 1, 1),   // 1x1
            g(1, 12, 12, 2, 3, 1, 1, 1, 1), // T = 144 > GHOST_TILE: several Gram tiles
            Conv2dGeometry { kh: 2, kw: 3, ..g(2, 5, 6, 4, 0, 1, 0, 1, 2) },
            // Wider than COLUMN_TABLE: the column ranges are computed as they go.
            Conv2dGeometry { kh: 1, kw: COLUMN_TABLE + 1, ..g(1, 3, 20, 2, 0, 2, 1, 1, 1) },
        ]
    }

    #[test]
    fn geometry_sizes_and_validation() {
        let mnist = Conv2dGeometry {
            in_c: 1,
            in_h: 28,
            in_w: 28,
            out_c: 16,
            kh: 8,
            kw: 8,
            stride: 2,
            padding: 3,
            dilation: 1,
            groups: 1,
        };
        assert_eq!((mnist.out_h(), mnist.out_w(), mnist.patch_len()), (14, 14, 64));
        assert!(mnist.validate().is_ok());
        assert!(Conv2dGeometry { stride: 0, ..mnist }.validate().is_err());
        assert!(Conv2dGeometry { kh: 40, ..mnist }.validate().is_err());
        assert!(Conv2dGeometry { groups: 3, ..mnist }.validate().is_err());
    }

    #[test]
    fn forward_matches_reference() {
        let mut rng = rng(21);
        for geom in geometries() {
            let batch = 3;
            let x = uniform(&mut rng, batch * geom.input_len());
            let w = uniform(&mut rng, geom.weight_len());
            let b = uniform(&mut rng, geom.out_c);
            let mut patches = vec![f32::NAN; batch * geom.patches_len()];
            let mut out = vec![f32::NAN; batch * geom.output_len()];
            conv2d_forward(&geom, batch, &x, &w, Some(&b), &mut patches, &mut out);
            let mut no_bias = vec![f32::NAN; batch * geom.output_len()];
            conv2d_forward_from_patches(&geom, batch, &patches, &w, None, &mut no_bias);
            for i in 0..batch {
                let xi = wide(&x[i * geom.input_len()..(i + 1) * geom.input_len()]);
                let want = reference_forward(&geom, &xi, &wide(&w), &wide(&b));
                let range = i * geom.output_len()..(i + 1) * geom.output_len();
                assert_close(&format!("{geom:?} out"), &out[range.clone()], &want, 1e-5);
                let want0 = reference_forward(&geom, &xi, &wide(&w), &vec![0.0; geom.out_c]);
                assert_close("out without bias", &no_bias[range], &want0, 1e-5);
            }
        }
    }

    /// Backward to the input, per-example weight and bias norms (ghost and direct) and clipped sums,
    /// against finite differences of the f64 reference with loss `Σ out·r`.
    #[test]
    fn backward_norms_and_clipped_sums_match_finite_differences() {
        let mut rng = rng(22);
        for geom in geometries() {
            let batch = 3;
            let layer = geom.layer();
            let x = uniform(&mut rng, batch * geom.input_len());
            let w = uniform(&mut rng, geom.weight_len());
            let b = uniform(&mut rng, geom.out_c);
            let r = uniform(&mut rng, batch * geom.output_len()); // dL/dout
            let mut patches = vec![0.0; batch * geom.patches_len()];
            let mut out = vec![0.0; batch * geom.output_len()];
            conv2d_forward(&geom, batch, &x, &w, Some(&b), &mut patches, &mut out);
            let mut delta = vec![f32::NAN; batch * geom.output_len()];
            output_grad_to_rows(&geom, batch, &r, &mut delta);
            let mut scratch = vec![f32::NAN; 2 * backward_input_scratch_len(&geom)];
            let mut dx = vec![f32::NAN; batch * geom.input_len()];
            conv2d_backward_input(&geom, batch, &delta, &w, &mut scratch, &mut dx);

            let mut norms = [[0.0f32; 3]; 2];
            for (s, strategy) in [Strategy::Ghost, Strategy::Direct].into_iter().enumerate() {
                let mut scratch = vec![0.0; batch * per_example::scratch_len(strategy, &layer)];
                per_example::norms_sq(
                    strategy,
                    &layer,
                    batch,
                    &patches,
                    &delta,
                    &mut scratch,
                    &mut norms[s],
                    1,
                );
                per_example::bias_norms_sq(&layer, batch, &delta, &mut norms[s], 1);
            }
            let factors = [0.5f32, 0.0, 2.0];
            let mut grad_w = vec![0.0; geom.weight_len()];
            let mut grad_b = vec![0.0; geom.out_c];
            let mut scaled = delta.clone();
            per_example::scale_examples(
                geom.groups,
                batch,
                layer.positions,
                layer.out_width,
                &factors,
                1,
                &mut scaled,
            );
            per_example::bias_sum(&layer, batch, &scaled, &mut grad_b);
            per_example::clipped_sum(&layer, batch, &factors, 1, &mut patches, &mut delta, &mut grad_w);

            let (mut want_w, mut want_b) = (vec![0.0f64; geom.weight_len()], vec![0.0f64; geom.out_c]);
            for i in 0..batch {
                let xi = wide(&x[i * geom.input_len()..(i + 1) * geom.input_len()]);
                let ri = wide(&r[i * geom.output_len()..(i + 1) * geom.output_len()]);
                let (wf, bf) = (wide(&w), wide(&b));
                let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&reference_forward(&geom, x, w, b), &ri);
                let gx = finite_difference(&xi, 1e-5, |x| loss(x, &wf, &bf));
                let gw = finite_difference(&wf, 1e-5, |w| loss(&xi, w, &bf));
                let gb = finite_difference(&bf, 1e-5, |b| loss(&xi, &wf, b));
                assert_close("dx", &dx[i * geom.input_len()..(i + 1) * geom.input_len()], &gx, 1e-4);
                let norm = dot(&gw, &gw) + dot(&gb, &gb);
                assert_rel(&format!("{geom:?} ghost norm {i}"), norms[0][i] as f64, norm, 1e-4);
                assert_rel(&format!("{geom:?} direct norm {i}"), norms[1][i] as f64, norm, 1e-4);
                for (acc, g) in want_w.iter_mut().zip(&gw) {
                    *acc += factors[i] as f64 * g;
                }
                for (acc, g) in want_b.iter_mut().zip(&gb) {
                    *acc += factors[i] as f64 * g;
                }
            }
            assert_close("clipped weight sum", &grad_w, &want_w, 1e-4);
            assert_close("clipped bias sum", &grad_b, &want_b, 1e-4);
        }
    }
}
