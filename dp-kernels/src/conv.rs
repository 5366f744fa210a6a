//! 2-D convolution over NCHW batches on channel-major patches: im2col/col2im, the forward (one
//! product per example and group, bias fused), the backward to the input, and the output gradient as
//! the `Δ` of the weight, a layer applied at `out_h·out_w` positions (see [`crate::per_example`]).
//!
//! Layouts: input `[batch][in_c][in_h][in_w]`, output `[batch][out_c][out_h][out_w]` (PyTorch's NCHW),
//! weight `[out_c][in_c/groups][kh][kw]`, bias `[out_c]`. Patches (the `A` of the per-example
//! machinery) are `[groups][batch][d][T]`, `T = out_h·out_w` positions, `d = (in_c/groups)·kh·kw`
//! values per patch ordered like a weight row: row `k` of an example holds patch value `k` at every
//! position (Caffe's im2col). With stride 1 each output row's stretch of a patch row is a shifted copy
//! of one input row, so unfolding is contiguous copies and folding contiguous additions; and the NCHW
//! output gradient is already `[p][T]` per example and group, so no product needs a transposition.

use std::ops::Range;

use rayon::prelude::*;

use crate::gemm::{product_for, Op};
use crate::gemm_bf16::{Precision, SharedLeft};

// The geometry is shared with the compiler, which plans with the same formulas.
pub use dp_spec::Conv2dGeometry;

/// Scratch `f32`s per parallel slot of [`conv2d_backward_input`]: one example's patch gradients
/// of one group. `k` slots let `k` examples run in parallel.
pub const fn backward_input_scratch_len(geom: &Conv2dGeometry) -> usize {
    geom.positions() * geom.patch_len()
}

/// The input row read by kernel row `ki` at output row `oh`, `None` in the padding.
fn input_row(geom: &Conv2dGeometry, oh: usize, ki: usize) -> Option<usize> {
    (oh * geom.stride + ki * geom.dilation).checked_sub(geom.padding).filter(|&ih| ih < geom.in_h)
}

/// Unfolds every example of `x` into `patches` (`[groups][batch][d][T]`); taps in the padding are 0.
pub fn im2col(geom: &Conv2dGeometry, batch: usize, x: &[f32], patches: &mut [f32]) {
    geom.assert_valid();
    let unit = geom.positions() * geom.patch_len();
    assert!(x.len() >= batch * geom.input_len(), "im2col: input has {} values", x.len());
    assert!(patches.len() >= batch * geom.patches_len(), "im2col: patches has {} values", patches.len());
    if unit == 0 {
        return;
    }
    let (t, cg) = (geom.positions(), geom.in_c / geom.groups);
    patches[..batch * geom.patches_len()].par_chunks_mut(unit).enumerate().for_each(|(u, out)| {
        let (q, i) = (u / batch, u % batch);
        im2col_one(geom, q, 0..cg, &x[i * geom.input_len()..(i + 1) * geom.input_len()], out, t);
    });
}

/// The patch rows of group `q`'s input channels `channels` (local to the group) of one example: row
/// `k` (counted from the first of `channels`, ordered like a weight row) holds patch value `k` at
/// every position, at `out[k·stride..k·stride + T]`. Per column row and output row, one copy over the
/// output columns whose tap is inside the input (its range computed once), zeros outside.
/// `stride = T` is the `[d][T]` of [`im2col`]; a wider stride interleaves several examples' rows
/// ([`crate::conv_folded`]).
pub(crate) fn im2col_one(
    geom: &Conv2dGeometry,
    q: usize,
    channels: Range<usize>,
    x: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    if geom.stride == 1 && geom.out_w() == geom.in_w {
        return im2col_one_same_width(geom, q, channels, x, out, stride);
    }
    if geom.stride > 1 {
        return im2col_one_strided(geom, q, channels, x, out, stride);
    }
    // Stride 1: each output row's valid columns read one contiguous run of an input row.
    let columns = ColumnRanges::new(geom);
    let (t, ow_n, cg) = (geom.positions(), geom.out_w(), geom.in_c / geom.groups);
    let (dil, pad) = (geom.dilation, geom.padding);
    let plane_len = geom.in_h * geom.in_w;
    for cl in channels.clone() {
        let plane = &x[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
        for ki in 0..geom.kh {
            for kj in 0..geom.kw {
                let k = ((cl - channels.start) * geom.kh + ki) * geom.kw + kj;
                let (lo, hi) = columns.get(kj);
                for (oh, dst) in out[k * stride..k * stride + t].chunks_exact_mut(ow_n).enumerate() {
                    let Some(ih) = input_row(geom, oh, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo < hi {
                        let src = &plane[ih * geom.in_w + lo + kj * dil - pad..];
                        dst[lo..hi].copy_from_slice(&src[..hi - lo]);
                    }
                }
            }
        }
    }
}

/// This thread's zero-padded plane and tap offsets, for [`with_strided_source`].
struct StridedSource {
    padded: Vec<f32>,
    offsets: Vec<u32>,
    /// The (positions, output width, stride, padded width) the offsets were computed for: a chunk
    /// unfolded channel by channel asks for the same offsets once per example and channel, and
    /// computing them (two divisions per position) cost more than the gathers they serve.
    offsets_for: (usize, usize, usize, usize),
}

thread_local! {
    /// The zero-padded plane [`im2col_one_strided`] reads and [`col2im_one_strided`] adds into, and
    /// the offsets of a tap's positions in it. One per thread, grown to the largest seen, so no step
    /// allocates once warm.
    static STRIDED_SOURCE: std::cell::RefCell<StridedSource> = const {
        std::cell::RefCell::new(StridedSource { padded: Vec::new(), offsets: Vec::new(), offsets_for: (0, 0, 0, 0) })
    };
}

/// [`im2col_one`] for strides above 1 (the MNIST CNN's convs). Each channel's plane is copied into a
/// zero-padded plane once; a tap's T positions then read it at fixed offsets from the tap's corner
/// (the same offsets for every tap), one gather over the whole tap instead of a short strided copy
/// per output row (5–14 values, each row paying a copy call and two fills for its padding).
fn im2col_one_strided(
    geom: &Conv2dGeometry,
    q: usize,
    channels: Range<usize>,
    x: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    let (t, cg, w, plane_len) = (geom.positions(), geom.in_c / geom.groups, geom.in_w, geom.in_h * geom.in_w);
    let (dil, pad, source_w) = (geom.dilation, geom.padding, geom.in_w + 2 * geom.padding);
    with_strided_source(geom, |padded, offsets| {
        for cl in channels.clone() {
            let plane = &x[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
            let source: &[f32] = if pad == 0 {
                plane
            } else {
                padded.fill(0.0);
                for (ih, row) in plane.chunks_exact(w).enumerate() {
                    let at = (ih + pad) * source_w + pad;
                    padded[at..at + w].copy_from_slice(row);
                }
                padded
            };
            for ki in 0..geom.kh {
                for kj in 0..geom.kw {
                    let k = ((cl - channels.start) * geom.kh + ki) * geom.kw + kj;
                    let corner = ki * dil * source_w + kj * dil;
                    gather(&source[corner..], offsets, &mut out[k * stride..k * stride + t]);
                }
            }
        }
    });
}

/// Runs `f(padded, offsets)` with this thread's zero-padded plane (`(in_h + 2·pad)·(in_w + 2·pad)`
/// values, its contents left to `f`; empty when the conv does not pad) and the offsets of a tap's
/// positions from its corner in that plane, position by position:
/// `(oh·stride)·(in_w + 2·pad) + ow·stride`.
fn with_strided_source<R>(geom: &Conv2dGeometry, f: impl FnOnce(&mut [f32], &[u32]) -> R) -> R {
    let (ow_n, s, pad) = (geom.out_w(), geom.stride, geom.padding);
    let source_w = geom.in_w + 2 * pad;
    let source_len = (geom.in_h + 2 * pad) * source_w;
    assert!(source_len <= u32::MAX as usize, "conv2d: a padded plane of {source_len} values");
    let padded_len = if pad == 0 { 0 } else { source_len };
    STRIDED_SOURCE.with_borrow_mut(|source| {
        let key = (geom.positions(), ow_n, s, source_w);
        if source.offsets_for != key {
            source.offsets.clear();
            source.offsets.extend((0..key.0).map(|p| ((p / ow_n * s) * source_w + p % ow_n * s) as u32));
            source.offsets_for = key;
        }
        if source.padded.len() < padded_len {
            source.padded.resize(padded_len, 0.0);
        }
        f(&mut source.padded[..padded_len], &source.offsets)
    })
}

/// `dst[offsets[j]] += src[j]`; `offsets` ascend and are distinct, the last bounding them all.
fn scatter_add(src: &[f32], offsets: &[u32], dst: &mut [f32]) {
    let Some(&last) = offsets.last() else { return };
    assert!((last as usize) < dst.len() && offsets.len() <= src.len(), "scatter out of bounds");
    for (&v, &o) in src.iter().zip(offsets) {
        // SAFETY: every offset is at most the last, which the assert above bounds.
        unsafe { *dst.get_unchecked_mut(o as usize) += v };
    }
}

/// `dst[j] = src[offsets[j]]`; `offsets` ascend, so the last bounds them all.
fn gather(src: &[f32], offsets: &[u32], dst: &mut [f32]) {
    let Some(&last) = offsets.last() else { return };
    assert!((last as usize) < src.len() && offsets.len() <= dst.len(), "gather out of bounds");
    crate::fast_math::with_widest_vectors(
        #[inline(always)]
        || {
            for (d, &o) in dst.iter_mut().zip(offsets) {
                // SAFETY: every offset is at most the last, which the assert above bounds.
                *d = unsafe { *src.get_unchecked(o as usize) };
            }
        },
    );
}

/// [`im2col_one`] for stride 1 with rows as wide as the input's ('same' padding: the CIFAR-10 and
/// residual CNNs' convs). Position q = oh·in_w + ow of a tap then reads the plane at q + shift for one
/// `shift` per tap, so the tap's valid rows are one contiguous copy; the copy also carries, at each
/// row's ends, values from the neighbouring rows where the tap is in the padding, which are then
/// zeroed. A row-by-row copy paid two library calls (a copy and a fill) per row of 32 values.
fn im2col_one_same_width(
    geom: &Conv2dGeometry,
    q: usize,
    channels: Range<usize>,
    x: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    let columns = ColumnRanges::new(geom);
    let (t, w, cg) = (geom.positions(), geom.in_w, geom.in_c / geom.groups);
    let (dil, pad) = (geom.dilation, geom.padding);
    let plane_len = geom.in_h * w;
    for cl in channels.clone() {
        let plane = &x[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
        for ki in 0..geom.kh {
            let (row_lo, row_hi) = valid_columns(geom.in_h, geom.out_h(), 1, ki * dil, pad);
            for kj in 0..geom.kw {
                let k = ((cl - channels.start) * geom.kh + ki) * geom.kw + kj;
                let dst = &mut out[k * stride..k * stride + t];
                let (lo, hi) = columns.get(kj);
                dst[..row_lo * w].fill(0.0);
                dst[row_hi * w..].fill(0.0);
                if row_lo == row_hi {
                    continue;
                }
                if lo == hi {
                    dst[row_lo * w..row_hi * w].fill(0.0);
                    continue;
                }
                // Valid positions from (row_lo, lo) to (row_hi − 1, hi − 1) read the plane from
                // (ih, iw) of the first to that of the last, both inside it.
                let (first, last) = (row_lo * w + lo, (row_hi - 1) * w + hi);
                let src = (row_lo + ki * dil - pad) * w + lo + kj * dil - pad;
                dst[first..last].copy_from_slice(&plane[src..src + (last - first)]);
                // The padding columns of the valid rows, column by column (a strided walk, not a run
                // of library fills of one or two values).
                for ow in (0..lo).chain(hi..w) {
                    for oh in row_lo..row_hi {
                        dst[oh * w + ow] = 0.0;
                    }
                }
            }
        }
    }
}

/// ADDS the patch gradients of group `q` of one example (row `k` at `cols[k·stride..k·stride + T]`;
/// `stride = T` for `[d][T]`) back onto its input gradient, every value onto the input position
/// [`im2col_one`] read it from (taps in the padding skipped).
pub(crate) fn col2im_one(geom: &Conv2dGeometry, q: usize, cols: &[f32], dx: &mut [f32], stride: usize) {
    if geom.stride > 1 {
        return col2im_one_strided(geom, q, cols, dx, stride);
    }
    if geom.out_w() == geom.in_w {
        return col2im_one_same_width(geom, q, cols, dx, stride);
    }
    // Stride 1: each output row's valid columns add onto one contiguous run of an input row.
    let columns = ColumnRanges::new(geom);
    let (t, ow_n, cg) = (geom.positions(), geom.out_w(), geom.in_c / geom.groups);
    let (dil, pad) = (geom.dilation, geom.padding);
    let plane_len = geom.in_h * geom.in_w;
    for cl in 0..cg {
        let plane = &mut dx[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
        for ki in 0..geom.kh {
            for kj in 0..geom.kw {
                let k = (cl * geom.kh + ki) * geom.kw + kj;
                let (lo, hi) = columns.get(kj);
                if lo >= hi {
                    continue;
                }
                for (oh, src) in cols[k * stride..k * stride + t].chunks_exact(ow_n).enumerate() {
                    let Some(ih) = input_row(geom, oh, ki) else { continue };
                    let dst = &mut plane[ih * geom.in_w + lo + kj * dil - pad..];
                    for (d, &v) in dst[..hi - lo].iter_mut().zip(&src[lo..hi]) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// [`col2im_one`] for stride 1 with rows as wide as the input's, the inverse of
/// [`im2col_one_same_width`]: a tap's valid positions add onto the plane at `q + shift`, one
/// contiguous run per tap. The run also covers, at each row's ends, the positions whose tap is in
/// the padding; their values are masked to +0 (a bitwise AND, exact for every value, NaN included),
/// so the neighbouring row's value they meet is unchanged. Row by row, the adds of 7–31 values left a
/// scalar tail and a bounds check per row, in baseline SSE2: 0.8 ns per value in the CIFAR-10 CNN.
fn col2im_one_same_width(geom: &Conv2dGeometry, q: usize, cols: &[f32], dx: &mut [f32], stride: usize) {
    let columns = ColumnRanges::new(geom);
    let (t, w, cg) = (geom.positions(), geom.in_w, geom.in_c / geom.groups);
    let (dil, pad) = (geom.dilation, geom.padding);
    let plane_len = geom.in_h * w;
    // Per kernel column whose tap leaves some columns in the padding: all ones where it does not.
    let masks: Vec<Option<Vec<u32>>> = (0..geom.kw)
        .map(|kj| {
            let (lo, hi) = columns.get(kj);
            (lo > 0 || hi < w)
                .then(|| (0..t).map(|p| if (lo..hi).contains(&(p % w)) { !0 } else { 0 }).collect())
        })
        .collect();
    crate::fast_math::with_widest_vectors(
        #[inline(always)]
        || {
            for cl in 0..cg {
                let plane = &mut dx[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
                for ki in 0..geom.kh {
                    let (row_lo, row_hi) = valid_columns(geom.in_h, geom.out_h(), 1, ki * dil, pad);
                    for (kj, mask) in masks.iter().enumerate() {
                        let (lo, hi) = columns.get(kj);
                        if row_lo >= row_hi || lo >= hi {
                            continue;
                        }
                        let k = (cl * geom.kh + ki) * geom.kw + kj;
                        let (first, last) = (row_lo * w + lo, (row_hi - 1) * w + hi);
                        let at = (row_lo + ki * dil - pad) * w + lo + kj * dil - pad;
                        let dst = &mut plane[at..at + (last - first)];
                        let src = &cols[k * stride + first..k * stride + last];
                        match mask {
                            None => dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v),
                            Some(mask) => dst
                                .iter_mut()
                                .zip(src)
                                .zip(&mask[first..last])
                                .for_each(|((d, &v), &m)| *d += f32::from_bits(v.to_bits() & m)),
                        }
                    }
                }
            }
        },
    );
}

/// [`col2im_one`] for strides above 1, the inverse of [`im2col_one_strided`]: each tap's T values are
/// added at the tap's offsets into a zero-padded plane (the positions of one tap are distinct, so the
/// adds of a tap never meet), whose inside is then added onto the input gradient.
fn col2im_one_strided(geom: &Conv2dGeometry, q: usize, cols: &[f32], dx: &mut [f32], stride: usize) {
    let (t, cg, w, plane_len) = (geom.positions(), geom.in_c / geom.groups, geom.in_w, geom.in_h * geom.in_w);
    let (dil, pad, source_w) = (geom.dilation, geom.padding, geom.in_w + 2 * geom.padding);
    with_strided_source(geom, |padded, offsets| {
        for cl in 0..cg {
            let plane = &mut dx[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
            let target: &mut [f32] = if pad == 0 {
                plane
            } else {
                padded.fill(0.0);
                &mut *padded
            };
            for ki in 0..geom.kh {
                for kj in 0..geom.kw {
                    let k = (cl * geom.kh + ki) * geom.kw + kj;
                    let corner = ki * dil * source_w + kj * dil;
                    scatter_add(&cols[k * stride..k * stride + t], offsets, &mut target[corner..]);
                }
            }
            if pad > 0 {
                let plane = &mut dx[(q * cg + cl) * plane_len..(q * cg + cl + 1) * plane_len];
                for (ih, row) in plane.chunks_exact_mut(w).enumerate() {
                    let at = (ih + pad) * source_w + pad;
                    for (d, &v) in row.iter_mut().zip(&padded[at..at + w]) {
                        *d += v;
                    }
                }
            }
        }
    });
}

/// Forward from patches unfolded by [`im2col`]: `out[i][o][t] = bias[o] + Σ_k W[o][k]·patches[k][t]`.
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
    if pg * t == 0 {
        return;
    }
    // One block per (example, group): out_c/groups channel planes of T values. The blocks run in
    // parallel, so each product stays on its thread unless there is only one.
    let product = product_for(batch * geom.groups > 1);
    out[..batch * geom.output_len()].par_chunks_mut(pg * t).enumerate().for_each(|(u, block)| {
        let (i, q) = (u / geom.groups, u % geom.groups);
        let beta = fill_bias(bias, q, t, block);
        let patches_u = &patches[(q * batch + i) * t * d..(q * batch + i + 1) * t * d];
        product(Op::N, Op::N, pg, t, d, 1.0, &weight[q * pg * d..(q + 1) * pg * d], patches_u, beta, block);
    });
}

/// Fills group `q`'s output planes `block` (`p` planes of `t` values) with their bias and returns
/// the `beta` that adds the product onto them (1), or returns 0 without a bias (the product
/// overwrites them).
pub(crate) fn fill_bias(bias: Option<&[f32]>, q: usize, t: usize, block: &mut [f32]) -> f32 {
    let Some(b) = bias else { return 0.0 };
    let p = block.len() / t.max(1);
    for (o, plane) in block.chunks_mut(t.max(1)).enumerate() {
        plane.fill(b[q * p + o]);
    }
    1.0
}

/// Backward to the input: `dx` (overwritten, `[batch][in_c][in_h][in_w]`) from the NCHW output
/// gradient `dout`, per example and group the fold of `W_qᵀ·δ_q`. `scratch` holds one or more slots
/// of [`backward_input_scratch_len`]; slots run in parallel. The patch gradients are formed in
/// channel-major order, so the fold adds contiguous stretches. The products run in `precision`.
pub fn conv2d_backward_input(
    geom: &Conv2dGeometry,
    batch: usize,
    dout: &[f32],
    weight: &[f32],
    scratch: &mut [f32],
    dx: &mut [f32],
    precision: Precision,
) {
    geom.assert_valid();
    if batch == 0 {
        return;
    }
    let (t, d, pg) = (geom.positions(), geom.patch_len(), geom.out_per_group());
    assert!(dout.len() >= batch * geom.output_len(), "conv2d: output gradient has {} values", dout.len());
    assert!(weight.len() >= geom.weight_len(), "conv2d: weight has {} values", weight.len());
    assert!(dx.len() >= batch * geom.input_len(), "conv2d: input gradient has {} values", dx.len());
    let slot_len = backward_input_scratch_len(geom).max(1);
    // No more slots than threads: a slot reused example after example stays in cache.
    let slots = (scratch.len() / slot_len).min(batch).min(rayon::current_num_threads());
    assert!(slots >= 1, "conv2d backward: scratch has {} values, one slot needs {slot_len}", scratch.len());
    let per_slot = batch.div_ceil(slots);
    // Each group's weight, packed once for every example's product in bf16.
    let weights: Vec<SharedLeft<'_>> = (0..geom.groups)
        .map(|q| SharedLeft::new(precision, Op::T, (d, pg), &weight[q * pg * d..(q + 1) * pg * d]))
        .collect();
    dx[..batch * geom.input_len()]
        .par_chunks_mut(per_slot * geom.input_len())
        .zip(scratch.par_chunks_mut(slot_len))
        .enumerate()
        .for_each(|(k, (dx_k, cols))| {
            for (j, dx_i) in dx_k.chunks_mut(geom.input_len()).enumerate() {
                let i = k * per_slot + j;
                dx_i.fill(0.0);
                if t * d == 0 {
                    continue;
                }
                let dout_i = &dout[i * geom.output_len()..(i + 1) * geom.output_len()];
                for q in 0..geom.groups {
                    let cols = &mut cols[..t * d];
                    let dout_q = &dout_i[q * pg * t..(q + 1) * pg * t];
                    weights[q].product(slots == 1, Op::N, t, 1.0, dout_q, 0.0, cols);
                    col2im_one(geom, q, cols, dx_i, t);
                }
            }
        });
}

/// Regroups the NCHW output gradient `dout` (`[batch][out_c][T]`) as the `Δ` of the per-example
/// machinery, `[groups][batch][out_c/groups][T]` (channel-major, [`Conv2dGeometry::layer`]): a copy
/// of contiguous planes, the identity order for an ungrouped conv.
pub fn output_grad_by_group(geom: &Conv2dGeometry, batch: usize, dout: &[f32], delta: &mut [f32]) {
    let block = geom.positions() * geom.out_per_group();
    assert!(dout.len() >= batch * geom.output_len(), "conv2d: output gradient has {} values", dout.len());
    assert!(delta.len() >= batch * geom.output_len(), "conv2d: delta has {} values", delta.len());
    if block == 0 {
        return;
    }
    delta[..batch * geom.output_len()].par_chunks_mut(block).enumerate().for_each(|(u, rows)| {
        let (q, i) = (u / batch, u % batch);
        rows.copy_from_slice(
            &dout[i * geom.output_len() + q * block..i * geom.output_len() + (q + 1) * block],
        );
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
        let g = conv_geometry;
        vec![
            g(1, 10, 10, 3, 4, 2, 2, 1, 1), // MNIST-like: k larger than stride, padding
            g(2, 6, 5, 3, 3, 1, 1, 1, 1),   // 'same', non-square input
            g(4, 7, 7, 4, 3, 2, 2, 2, 2),   // dilation and groups
            g(3, 5, 5, 2, 1, 1, 0, 1, 1),   // 1x1
            g(1, 12, 12, 2, 3, 1, 1, 1, 1), // T = 144 > GHOST_TILE: several Gram tiles
            g(2, 7, 6, 2, 5, 1, 4, 2, 1),   // 'same' width through dilation: rows wider than the taps
            g(1, 3, 4, 2, 5, 1, 2, 1, 1),   // 'same' with taps beyond every row of a short input
            g(2, 9, 11, 2, 3, 3, 0, 1, 1),  // stride 3 without padding, non-square
            Conv2dGeometry { kh: 2, kw: 3, ..g(2, 5, 6, 4, 0, 1, 0, 1, 2) },
            // Wider than COLUMN_TABLE: the column ranges are computed as they go.
            Conv2dGeometry { kh: 1, kw: COLUMN_TABLE + 1, ..g(1, 3, 20, 2, 0, 2, 1, 1, 1) },
        ]
    }

    /// Patches against their definition: value `(c, ki, kj)` of position `(oh, ow)` is the input at
    /// `(oh·stride + ki·dilation − pad, ow·stride + kj·dilation − pad)` of channel `c`, 0 in the padding.
    #[test]
    fn patches_match_their_definition() {
        let mut rng = rng(23);
        for geom in geometries() {
            let batch = 3;
            let (t, d, ow_n, cg) =
                (geom.positions(), geom.patch_len(), geom.out_w(), geom.in_c / geom.groups);
            let x = uniform(&mut rng, batch * geom.input_len());
            let mut patches = vec![f32::NAN; batch * geom.patches_len()];
            im2col(&geom, batch, &x, &mut patches);
            for (q, i) in (0..geom.groups).flat_map(|q| (0..batch).map(move |i| (q, i))) {
                for (pos, k) in (0..t).flat_map(|pos| (0..d).map(move |k| (pos, k))) {
                    let (oh, ow) = (pos / ow_n, pos % ow_n);
                    let (cl, ki, kj) = (k / (geom.kh * geom.kw), k / geom.kw % geom.kh, k % geom.kw);
                    let ih = (oh * geom.stride + ki * geom.dilation) as isize - geom.padding as isize;
                    let iw = (ow * geom.stride + kj * geom.dilation) as isize - geom.padding as isize;
                    let inside =
                        (0..geom.in_h as isize).contains(&ih) && (0..geom.in_w as isize).contains(&iw);
                    let want = if inside {
                        let c = q * cg + cl;
                        x[i * geom.input_len() + (c * geom.in_h + ih as usize) * geom.in_w + iw as usize]
                    } else {
                        0.0
                    };
                    let got = patches[((q * batch + i) * d + k) * t + pos];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{geom:?} group {q} example {i} position {pos} value {k}"
                    );
                }
            }
        }
    }

    /// The fold against its definition: patch value `(c, ki, kj)` of position `(oh, ow)` is added onto
    /// the input position it was read from, in the order of the values, and a value whose tap is in
    /// the padding is never added, even a NaN (the 'same'-width fold adds masked runs there). Bit
    /// for bit, at a row stride wider than `T` too (the folded convs' interleaved examples).
    #[test]
    fn folds_match_their_definition() {
        let mut rng = rng(29);
        for geom in geometries() {
            let (t, d, ow_n, cg) =
                (geom.positions(), geom.patch_len(), geom.out_w(), geom.in_c / geom.groups);
            for stride in [t, t + 5] {
                for q in 0..geom.groups {
                    let mut cols = uniform(&mut rng, d * stride);
                    let mut want = uniform(&mut rng, geom.input_len());
                    let mut dx = want.clone();
                    for (k, pos) in (0..d).flat_map(|k| (0..t).map(move |pos| (k, pos))) {
                        let (oh, ow) = (pos / ow_n, pos % ow_n);
                        let (cl, ki, kj) = (k / (geom.kh * geom.kw), k / geom.kw % geom.kh, k % geom.kw);
                        let ih = (oh * geom.stride + ki * geom.dilation) as isize - geom.padding as isize;
                        let iw = (ow * geom.stride + kj * geom.dilation) as isize - geom.padding as isize;
                        if (0..geom.in_h as isize).contains(&ih) && (0..geom.in_w as isize).contains(&iw) {
                            let c = q * cg + cl;
                            want[(c * geom.in_h + ih as usize) * geom.in_w + iw as usize] +=
                                cols[k * stride + pos];
                        } else {
                            cols[k * stride + pos] = f32::NAN;
                        }
                    }
                    col2im_one(&geom, q, &cols, &mut dx, stride);
                    for (j, (g, w)) in dx.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{geom:?} stride {stride} group {q} input value {j}"
                        );
                    }
                }
            }
        }
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
            let mut rows = vec![f32::NAN; batch * geom.output_len()];
            let mut out = vec![f32::NAN; batch * geom.output_len()];
            conv2d_forward(
                &geom,
                batch,
                &x,
                &w,
                Some(&b),
                &mut patches,
                &mut rows,
                &mut out,
                crate::gemm_bf16::Precision::F32,
            );
            let mut whole = vec![f32::NAN; batch * geom.patches_len()];
            im2col(&geom, batch, &x, &mut whole);
            let mut no_bias = vec![f32::NAN; batch * geom.output_len()];
            conv2d_forward_from_patches(&geom, batch, &whole, &w, None, &mut no_bias);
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
            let mut rows = vec![0.0; batch * geom.output_len()];
            let mut out = vec![0.0; batch * geom.output_len()];
            conv2d_forward(
                &geom,
                batch,
                &x,
                &w,
                Some(&b),
                &mut patches,
                &mut rows,
                &mut out,
                crate::gemm_bf16::Precision::F32,
            );
            im2col(&geom, batch, &x, &mut patches);
            let mut delta = vec![f32::NAN; batch * geom.output_len()];
            output_grad_by_group(&geom, batch, &r, &mut delta);
            let mut scratch = vec![f32::NAN; 2 * backward_input_scratch_len(&geom)];
            let mut dx = vec![f32::NAN; batch * geom.input_len()];
            conv2d_backward_input(
                &geom,
                batch,
                &r,
                &w,
                &mut scratch,
                &mut dx,
                crate::gemm_bf16::Precision::F32,
            );

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
