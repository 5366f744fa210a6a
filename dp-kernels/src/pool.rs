//! Pooling over NCHW batches: max pooling (argmax kept for the backward), average pooling, and
//! global average pooling. None has parameters, so none has per-example gradients of its own.
//!
//! Semantics are PyTorch's defaults: floor output size (`ceil_mode = false`), max pooling pads with
//! −∞ and propagates NaN, average pooling counts padded zeros in the divisor
//! (`count_include_pad = true`, so the divisor is always `kernel²`).

use rayon::prelude::*;

// The geometry is shared with the compiler, which plans with the same formulas.
pub use dp_spec::Pool2dGeometry;

/// The input rows (or columns) a window of `geom` starting at output index `o` covers, clipped to the
/// input of `len`.
fn window(geom: &Pool2dGeometry, o: usize, len: usize) -> std::ops::Range<usize> {
    let start = (o * geom.stride) as isize - geom.padding as isize;
    let end = (start + geom.kernel as isize).min(len as isize);
    start.max(0) as usize..end.max(0) as usize
}

/// Max pooling: `out` gets each window's maximum and `argmax` the index of that maximum within the
/// example's input (`c·in_h·in_w + h·in_w + w`), the first one on ties, a NaN if the window has one.
pub fn max_pool2d_forward(
    geom: &Pool2dGeometry,
    batch: usize,
    x: &[f32],
    out: &mut [f32],
    argmax: &mut [u32],
) {
    geom.assert_valid();
    assert!(x.len() >= batch * geom.input_len(), "max_pool2d: input has {} values", x.len());
    assert!(out.len() >= batch * geom.output_len(), "max_pool2d: output has {} values", out.len());
    assert!(argmax.len() >= batch * geom.output_len(), "max_pool2d: argmax has {} values", argmax.len());
    assert!(geom.input_len() <= u32::MAX as usize, "max_pool2d: input too large for u32 indices");
    let (oh_n, ow_n) = (geom.out_h(), geom.out_w());
    let plane_in = geom.in_h * geom.in_w;
    let len = batch * geom.output_len();
    let interior = interior_columns(geom);
    out[..len]
        .par_chunks_mut(oh_n * ow_n)
        .zip(argmax[..len].par_chunks_mut(oh_n * ow_n))
        .enumerate()
        .for_each(|(u, (o, am))| {
            let (i, c) = (u / geom.channels, u % geom.channels);
            let base = c * plane_in;
            let plane = &x[i * geom.input_len() + base..i * geom.input_len() + base + plane_in];
            // A plane with a NaN takes the window-by-window path, which finds the first NaN.
            let rows_at_once = !plane.iter().fold(false, |nan, v| nan | v.is_nan());
            if rows_at_once && geom.stride == 1 && geom.padding == 0 {
                max_over_plane(geom, plane, o, am, base as u32);
                return;
            }
            for (oh, (o_row, am_row)) in o.chunks_exact_mut(ow_n).zip(am.chunks_exact_mut(ow_n)).enumerate() {
                let rows = window(geom, oh, geom.in_h);
                let (lo, hi) = if rows_at_once { interior } else { (ow_n, ow_n) };
                for ow in (0..lo).chain(hi..ow_n) {
                    let (best, at) = window_max(geom, plane, rows.clone(), ow);
                    (o_row[ow], am_row[ow]) = (best, (base + at) as u32);
                }
                if lo < hi {
                    let (best, at) = (&mut o_row[lo..hi], &mut am_row[lo..hi]);
                    max_over_rows(geom, plane, base as u32, rows, lo, hi, best, at);
                }
            }
        });
}

/// The output columns `lo..hi` whose windows lie wholly inside the input's columns (`lo == hi` when
/// there are none).
fn interior_columns(geom: &Pool2dGeometry) -> (usize, usize) {
    // Window `ow` covers columns ow·s − p .. ow·s − p + k: inside when ow·s ≥ p and ow·s − p + k ≤ in_w.
    let lo = geom.padding.div_ceil(geom.stride);
    let hi = if geom.in_w + geom.padding >= geom.kernel {
        ((geom.in_w + geom.padding - geom.kernel) / geom.stride + 1).min(geom.out_w())
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// One window's maximum and its index in the plane: the first one on ties, the first NaN (in window
/// order, which has the smallest index) if the window has one.
fn window_max(geom: &Pool2dGeometry, plane: &[f32], rows: std::ops::Range<usize>, ow: usize) -> (f32, usize) {
    let cols = window(geom, ow, geom.in_w);
    // Selects without branches (the windows are a few values).
    let (mut best, mut at) = (f32::NEG_INFINITY, rows.start * geom.in_w + cols.start);
    let mut first_nan = usize::MAX;
    for h in rows {
        let first = h * geom.in_w + cols.start;
        for (k, &v) in (first..).zip(&plane[first..h * geom.in_w + cols.end]) {
            let better = v > best;
            best = if better { v } else { best };
            at = if better { k } else { at };
            first_nan = if v.is_nan() { first_nan.min(k) } else { first_nan };
        }
    }
    if first_nan != usize::MAX {
        (best, at) = (plane[first_nan], first_nan);
    }
    (best, at)
}

/// The windows of output columns `lo..hi` of one output row at once, for a plane without NaN and
/// columns whose windows lie inside the input: for each tap in window order, one pass over the
/// columns, so each window sees its values in the order [`window_max`] does (same maxima, same
/// first index on ties). The passes are branch-free loops over whole rows, which vectorise. `at`
/// gets each maximum's index in the plane plus `base` (the plane's offset in the example).
#[allow(clippy::too_many_arguments)]
fn max_over_rows(
    geom: &Pool2dGeometry,
    plane: &[f32],
    base: u32,
    rows: std::ops::Range<usize>,
    lo: usize,
    hi: usize,
    best: &mut [f32],
    at: &mut [u32],
) {
    let (s, w) = (geom.stride, geom.in_w);
    let first_column = |ow: usize| ow * s - geom.padding;
    best.fill(f32::NEG_INFINITY);
    for (j, a) in at.iter_mut().enumerate() {
        *a = base + (rows.start * w + first_column(lo + j)) as u32;
    }
    for_each_interior_tap(geom, rows, lo, hi, |start| {
        let taps = &plane[start..start + (hi - lo - 1) * s + 1];
        let update = |(j, ((b, a), &v)): (usize, ((&mut f32, &mut u32), &f32))| {
            keep_first_max(b, a, v, base + (start + j * s) as u32);
        };
        let windows = best.iter_mut().zip(at.iter_mut());
        if s == 1 {
            windows.zip(taps).enumerate().for_each(update);
        } else {
            windows.zip(taps.iter().step_by(s)).enumerate().for_each(update);
        }
    });
}

/// `(best, at) ← (v, index)` when `v > best`, else unchanged: the running maximum of a window and its
/// first index. Both selects are bit operations: written as `if v > *best { .. } else { *at }`, LLVM
/// turned the stores into one conditional store per vector lane.
#[inline(always)]
fn keep_first_max(best: &mut f32, at: &mut u32, v: f32, index: u32) {
    let keep = ((v > *best) as u32).wrapping_sub(1);
    *best = f32::from_bits((best.to_bits() & keep) | (v.to_bits() & !keep));
    *at = (*at & keep) | (index & !keep);
}

/// A stride-1, unpadded pool of a plane without NaN, all windows at once: output (oh, ow) is computed
/// at flattened position q = oh·in_w + ow of a full-width grid, where its window's tap (kh, kw) is
/// plane[q + kh·in_w + kw], so each tap is one pass over a contiguous run of the plane (the
/// positions with ow ≥ out_w are computed and dropped). Taps in window order with the same selects as
/// [`max_over_rows`]: the same maxima and first indices as [`window_max`].
fn max_over_plane(geom: &Pool2dGeometry, plane: &[f32], o: &mut [f32], am: &mut [u32], base: u32) {
    let (w, k, oh_n, ow_n) = (geom.in_w, geom.kernel, geom.out_h(), geom.out_w());
    FULL_WIDTH_GRID.with_borrow_mut(|(best, at)| {
        crate::fast_math::with_widest_vectors(
            #[inline(always)]
            || grid_max(plane, (w, k, oh_n, ow_n), best, at, o, am, base),
        )
    });
}

/// The body of [`max_over_plane`] on its buffers (grown to the grid's size here).
#[inline(always)]
fn grid_max(
    plane: &[f32],
    (w, k, oh_n, ow_n): (usize, usize, usize, usize),
    best: &mut Vec<f32>,
    at: &mut Vec<u32>,
    o: &mut [f32],
    am: &mut [u32],
    base: u32,
) {
    let span = (oh_n - 1) * w + ow_n;
    if best.len() < span {
        best.resize(span, 0.0);
        at.resize(span, 0);
    }
    let (best, at) = (&mut best[..span], &mut at[..span]);
    // The first tap (0, 0) initialises the grid; the others follow in window order.
    best.copy_from_slice(&plane[..span]);
    at.iter_mut().enumerate().for_each(|(q, a)| *a = q as u32);
    for kh in 0..k {
        for kw in (0..k).skip(usize::from(kh == 0)) {
            let offset = kh * w + kw;
            let taps = &plane[offset..offset + span];
            best.iter_mut().zip(at.iter_mut()).zip(taps).enumerate().for_each(|(q, ((b, a), &v))| {
                keep_first_max(b, a, v, (offset + q) as u32);
            });
        }
    }
    for oh in 0..oh_n {
        o[oh * ow_n..(oh + 1) * ow_n].copy_from_slice(&best[oh * w..oh * w + ow_n]);
        for (dst, &a) in am[oh * ow_n..(oh + 1) * ow_n].iter_mut().zip(&at[oh * w..oh * w + ow_n]) {
            *dst = a + base;
        }
    }
}

thread_local! {
    /// The full-width grid of [`max_over_plane`] (maxima and their indices): one pair of buffers per
    /// thread, grown to the largest plane it has pooled, so no step allocates once warm.
    static FULL_WIDTH_GRID: std::cell::RefCell<(Vec<f32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Max pooling backward: `dx` (overwritten) gets each output gradient at its window's argmax
/// (summed where windows overlap on the same maximum).
pub fn max_pool2d_backward(
    geom: &Pool2dGeometry,
    batch: usize,
    dout: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) {
    geom.assert_valid();
    let (n_in, n_out) = (geom.input_len(), geom.output_len());
    assert!(dout.len() >= batch * n_out, "max_pool2d: output gradient has {} values", dout.len());
    assert!(argmax.len() >= batch * n_out, "max_pool2d: argmax has {} values", argmax.len());
    assert!(dx.len() >= batch * n_in, "max_pool2d: input gradient has {} values", dx.len());
    dx[..batch * n_in].par_chunks_mut(n_in).enumerate().for_each(|(i, d)| {
        d.fill(0.0);
        for (&g, &k) in dout[i * n_out..(i + 1) * n_out].iter().zip(&argmax[i * n_out..(i + 1) * n_out]) {
            d[k as usize] += g;
        }
    });
}

/// Average pooling: each window's sum divided by `kernel²` (padding counts as zeros). Windows inside the
/// input's columns are summed a row of windows at a time, tap by tap (loops over whole rows, which
/// vectorise); windows at the padding one at a time.
pub fn avg_pool2d_forward(geom: &Pool2dGeometry, batch: usize, x: &[f32], out: &mut [f32]) {
    geom.assert_valid();
    assert!(x.len() >= batch * geom.input_len(), "avg_pool2d: input has {} values", x.len());
    assert!(out.len() >= batch * geom.output_len(), "avg_pool2d: output has {} values", out.len());
    let (oh_n, ow_n) = (geom.out_h(), geom.out_w());
    let plane_in = geom.in_h * geom.in_w;
    let scale = 1.0 / (geom.kernel * geom.kernel) as f32;
    let (lo, hi) = interior_columns(geom);
    out[..batch * geom.output_len()].par_chunks_mut(oh_n * ow_n).enumerate().for_each(|(u, o)| {
        let plane = &x[u * plane_in..(u + 1) * plane_in];
        for (oh, o_row) in o.chunks_exact_mut(ow_n).enumerate() {
            let rows = window(geom, oh, geom.in_h);
            for ow in (0..lo).chain(hi..ow_n) {
                let cols = window(geom, ow, geom.in_w);
                let mut s = 0.0f32;
                for h in rows.clone() {
                    s += plane[h * geom.in_w + cols.start..h * geom.in_w + cols.end].iter().sum::<f32>();
                }
                o_row[ow] = s * scale;
            }
            if lo < hi {
                let sums = &mut o_row[lo..hi];
                sums.fill(0.0);
                for_each_interior_tap(geom, rows, lo, hi, |start| {
                    let taps = plane[start..].iter().step_by(geom.stride);
                    sums.iter_mut().zip(taps).for_each(|(s, &v)| *s += v);
                });
                sums.iter_mut().for_each(|s| *s *= scale);
            }
        }
    });
}

/// Average pooling backward: `dx` (overwritten) gets `dout/kernel²` on every input of each window
/// (windows inside the input's columns a row of windows at a time, tap by tap, as the forward).
pub fn avg_pool2d_backward(geom: &Pool2dGeometry, batch: usize, dout: &[f32], dx: &mut [f32]) {
    geom.assert_valid();
    assert!(dout.len() >= batch * geom.output_len(), "avg_pool2d: output gradient has {} values", dout.len());
    assert!(dx.len() >= batch * geom.input_len(), "avg_pool2d: input gradient has {} values", dx.len());
    let (oh_n, ow_n) = (geom.out_h(), geom.out_w());
    let plane_in = geom.in_h * geom.in_w;
    let scale = 1.0 / (geom.kernel * geom.kernel) as f32;
    let (lo, hi) = interior_columns(geom);
    dx[..batch * geom.input_len()].par_chunks_mut(plane_in).enumerate().for_each(|(u, d)| {
        d.fill(0.0);
        let g = &dout[u * oh_n * ow_n..(u + 1) * oh_n * ow_n];
        for (oh, g_row) in g.chunks_exact(ow_n).enumerate() {
            let rows = window(geom, oh, geom.in_h);
            for ow in (0..lo).chain(hi..ow_n) {
                let cols = window(geom, ow, geom.in_w);
                let v = g_row[ow] * scale;
                for h in rows.clone() {
                    d[h * geom.in_w + cols.start..h * geom.in_w + cols.end].iter_mut().for_each(|e| *e += v);
                }
            }
            if lo < hi {
                let grads = &g_row[lo..hi];
                for_each_interior_tap(geom, rows, lo, hi, |start| {
                    let taps = d[start..].iter_mut().step_by(geom.stride);
                    taps.zip(grads).for_each(|(e, &v)| *e += v * scale);
                });
            }
        }
    });
}

/// Calls `f(start)` for every tap of the windows of output columns `lo..hi` (inside the input's
/// columns) on input rows `rows`, in window order: the taps of those windows at that (row, column
/// offset) are the plane's values at `start`, `start + stride`, … (one per window).
fn for_each_interior_tap(
    geom: &Pool2dGeometry,
    rows: std::ops::Range<usize>,
    lo: usize,
    hi: usize,
    mut f: impl FnMut(usize),
) {
    debug_assert!(lo < hi && lo * geom.stride >= geom.padding);
    let first_column = lo * geom.stride - geom.padding;
    for h in rows {
        for kw in 0..geom.kernel {
            f(h * geom.in_w + first_column + kw);
        }
    }
}

/// Global average pooling: `[batch][channels][plane] → [batch][channels]`, each plane's mean.
pub fn global_avg_pool_forward(batch: usize, channels: usize, plane: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() >= batch * channels * plane, "global_avg_pool: input has {} values", x.len());
    assert!(out.len() >= batch * channels, "global_avg_pool: output has {} values", out.len());
    assert!(plane > 0, "global_avg_pool: empty planes");
    let scale = 1.0 / plane as f32;
    out[..batch * channels].par_iter_mut().enumerate().for_each(|(u, o)| {
        *o = x[u * plane..(u + 1) * plane].iter().sum::<f32>() * scale;
    });
}

/// Global average pooling backward: `dx[i][c][k] = dout[i][c] / plane` (overwrites `dx`).
pub fn global_avg_pool_backward(batch: usize, channels: usize, plane: usize, dout: &[f32], dx: &mut [f32]) {
    assert!(dout.len() >= batch * channels, "global_avg_pool: output gradient has {} values", dout.len());
    assert!(dx.len() >= batch * channels * plane, "global_avg_pool: input gradient has {} values", dx.len());
    assert!(plane > 0, "global_avg_pool: empty planes");
    let scale = 1.0 / plane as f32;
    dx[..batch * channels * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(u, d)| d.fill(dout[u] * scale));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    /// One example's pooling in f64 from the definition: max (−∞ padding) or mean over kernel².
    fn reference(geom: &Pool2dGeometry, x: &[f64], max: bool) -> Vec<f64> {
        let mut out = Vec::new();
        for c in 0..geom.channels {
            for oh in 0..geom.out_h() {
                for ow in 0..geom.out_w() {
                    let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                    for ki in 0..geom.kernel {
                        for kj in 0..geom.kernel {
                            let h = (oh * geom.stride + ki) as isize - geom.padding as isize;
                            let w = (ow * geom.stride + kj) as isize - geom.padding as isize;
                            if h < 0 || w < 0 || h as usize >= geom.in_h || w as usize >= geom.in_w {
                                continue;
                            }
                            let v = x[(c * geom.in_h + h as usize) * geom.in_w + w as usize];
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                    out.push(if max { acc } else { acc / (geom.kernel * geom.kernel) as f64 });
                }
            }
        }
        out
    }

    fn geometry(
        channels: usize,
        in_h: usize,
        in_w: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Pool2dGeometry {
        Pool2dGeometry { channels, in_h, in_w, kernel, stride, padding }
    }

    fn geometries() -> [Pool2dGeometry; 4] {
        let g = geometry;
        [g(2, 6, 6, 2, 1, 0), g(3, 8, 7, 2, 2, 0), g(2, 7, 7, 3, 2, 1), g(1, 5, 6, 4, 3, 2)]
    }

    #[test]
    fn max_and_avg_pool_match_reference_and_finite_differences() {
        let mut rng = rng(41);
        for geom in geometries() {
            let batch = 2;
            // Distinct values so the max is differentiable at the sample point.
            let x = uniform(&mut rng, batch * geom.input_len());
            let r = uniform(&mut rng, batch * geom.output_len());
            let mut out = vec![f32::NAN; batch * geom.output_len()];
            let mut argmax = vec![u32::MAX; batch * geom.output_len()];
            max_pool2d_forward(&geom, batch, &x, &mut out, &mut argmax);
            let mut dx = vec![f32::NAN; batch * geom.input_len()];
            max_pool2d_backward(&geom, batch, &r, &argmax, &mut dx);
            let mut avg = vec![f32::NAN; batch * geom.output_len()];
            avg_pool2d_forward(&geom, batch, &x, &mut avg);
            let mut davg = vec![f32::NAN; batch * geom.input_len()];
            avg_pool2d_backward(&geom, batch, &r, &mut davg);
            for i in 0..batch {
                let (ri, xi) = (i * geom.input_len()..(i + 1) * geom.input_len(), i * geom.output_len());
                let xw = wide(&x[ri.clone()]);
                let rw = wide(&r[xi..xi + geom.output_len()]);
                let out_range = xi..xi + geom.output_len();
                assert_close("max", &out[out_range.clone()], &reference(&geom, &xw, true), 0.0);
                assert_close("avg", &avg[out_range], &reference(&geom, &xw, false), 1e-6);
                let gmax = finite_difference(&xw, 1e-7, |x| dot(&reference(&geom, x, true), &rw));
                let gavg = finite_difference(&xw, 1e-7, |x| dot(&reference(&geom, x, false), &rw));
                assert_close("max dx", &dx[ri.clone()], &gmax, 1e-5);
                assert_close("avg dx", &davg[ri], &gavg, 1e-5);
            }
        }
    }

    #[test]
    fn rows_at_once_give_the_window_by_window_maxima_and_indices() {
        // Values from a few levels, so ties are everywhere, and −∞ among them; the MNIST CNN's pools
        // and geometries whose windows meet the padding on both sides.
        let mut shapes = geometries().to_vec();
        let g = geometry;
        shapes.extend([
            g(16, 14, 14, 2, 1, 0),
            g(32, 5, 5, 2, 1, 0),
            g(2, 9, 40, 3, 1, 1),
            g(2, 9, 41, 3, 2, 1),
        ]);
        for geom in shapes {
            let batch = 3;
            let x: Vec<f32> = (0..batch * geom.input_len())
                .map(|k| if k % 17 == 5 { f32::NEG_INFINITY } else { (k * 7919 % 5) as f32 })
                .collect();
            let mut out = vec![f32::NAN; batch * geom.output_len()];
            let mut argmax = vec![u32::MAX; batch * geom.output_len()];
            max_pool2d_forward(&geom, batch, &x, &mut out, &mut argmax);
            let plane_in = geom.in_h * geom.in_w;
            for u in 0..batch * geom.channels {
                let plane = &x[u * plane_in..(u + 1) * plane_in];
                for oh in 0..geom.out_h() {
                    for ow in 0..geom.out_w() {
                        let (best, at) = window_max(&geom, plane, window(&geom, oh, geom.in_h), ow);
                        let k = (u * geom.out_h() + oh) * geom.out_w() + ow;
                        assert_eq!(out[k].to_bits(), best.to_bits(), "{geom:?} output {k}");
                        assert_eq!(
                            argmax[k] as usize,
                            (u % geom.channels) * plane_in + at,
                            "{geom:?} argmax {k}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_takes_first_of_ties_and_propagates_nan() {
        let geom = Pool2dGeometry { channels: 1, in_h: 2, in_w: 2, kernel: 2, stride: 1, padding: 0 };
        let (mut out, mut argmax) = ([0.0f32], [9u32]);
        max_pool2d_forward(&geom, 1, &[1.0, 3.0, 3.0, 2.0], &mut out, &mut argmax);
        assert_eq!((out[0], argmax[0]), (3.0, 1));
        max_pool2d_forward(&geom, 1, &[1.0, f32::NAN, 3.0, 2.0], &mut out, &mut argmax);
        assert!(out[0].is_nan());
        assert_eq!(argmax[0], 1);
    }

    #[test]
    fn global_average_pool_matches_finite_differences() {
        let mut rng = rng(42);
        let (batch, channels, plane) = (3, 4, 10);
        let x = uniform(&mut rng, batch * channels * plane);
        let r = uniform(&mut rng, batch * channels);
        let mut out = vec![f32::NAN; batch * channels];
        global_avg_pool_forward(batch, channels, plane, &x, &mut out);
        let mut dx = vec![f32::NAN; batch * channels * plane];
        global_avg_pool_backward(batch, channels, plane, &r, &mut dx);
        let reference = |x: &[f64]| -> Vec<f64> {
            x.chunks(plane).map(|p| p.iter().sum::<f64>() / plane as f64).collect()
        };
        let xw = wide(&x);
        assert_close("gap", &out, &reference(&xw), 1e-6);
        let g = finite_difference(&xw, 1e-6, |x| dot(&reference(x), &wide(&r)));
        assert_close("gap dx", &dx, &g, 1e-6);
    }
}
