//! The convolution and pooling primitives of [`HostDevice`](super::HostDevice) as plain loops over one
//! example at a time, written from the contracts of `DeviceOps` rather than from the CPU's kernels, so
//! that a device program tested on them checks its launch sequence against an independent reading.

use crate::device::{Conv2dGeometry, Pool2dGeometry};

/// The input coordinate a tap reads: `o·stride − padding + k·dilation`, `None` in the padding.
fn tap(o: usize, k: usize, stride: usize, padding: usize, dilation: usize, len: usize) -> Option<usize> {
    (o * stride + k * dilation).checked_sub(padding).filter(|&v| v < len)
}

/// Calls `f(entry, input)` for every entry `k · positions + p` of one example's patches, with the
/// index of the input value it reads (`None` in the padding).
fn for_each_patch_entry(g: &Conv2dGeometry, mut f: impl FnMut(usize, Option<usize>)) {
    let (t, ow_n) = (g.positions(), g.out_w());
    for c in 0..g.in_c {
        for r in 0..g.kh {
            for s in 0..g.kw {
                let k = (c * g.kh + r) * g.kw + s;
                for p in 0..t {
                    let (oh, ow) = (p / ow_n, p % ow_n);
                    let h = tap(oh, r, g.stride, g.padding, g.dilation, g.in_h);
                    let w = tap(ow, s, g.stride, g.padding, g.dilation, g.in_w);
                    f(k * t + p, h.zip(w).map(|(h, w)| (c * g.in_h + h) * g.in_w + w));
                }
            }
        }
    }
}

/// Example `x` (`in_c × in_h × in_w`) into its `patch_len × positions` patches.
pub fn im2col(g: &Conv2dGeometry, x: &[f32], cols: &mut [f32]) {
    for_each_patch_entry(g, |entry, input| cols[entry] = input.map_or(0.0, |i| x[i]));
}

/// The adjoint of [`im2col`] for one example: `dx` overwritten.
pub fn col2im(g: &Conv2dGeometry, cols: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    for_each_patch_entry(g, |entry, input| {
        if let Some(i) = input {
            dx[i] += cols[entry];
        }
    });
}

/// The input window of output coordinate `o` along an axis of `len`, clipped to the input.
fn window(g: &Pool2dGeometry, o: usize, len: usize) -> std::ops::Range<usize> {
    let start = (o * g.stride) as isize - g.padding as isize;
    let end = (start + g.kernel as isize).min(len as isize);
    start.max(0) as usize..end.max(0) as usize
}

/// Max pooling of one example: each window's first maximum in row-major order, its first NaN if it
/// has one; the argmax (an index into the example's input) as `u32` bits.
pub fn max_pool_forward(g: &Pool2dGeometry, x: &[f32], y: &mut [f32], argmax: &mut [f32]) {
    let (oh_n, ow_n, plane) = (g.out_h(), g.out_w(), g.in_h * g.in_w);
    for c in 0..g.channels {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                let (rows, cols) = (window(g, oh, g.in_h), window(g, ow, g.in_w));
                let mut at = c * plane + rows.start * g.in_w + cols.start;
                let mut best = f32::NEG_INFINITY;
                'window: for h in rows {
                    for w in cols.clone() {
                        let k = c * plane + h * g.in_w + w;
                        if x[k].is_nan() {
                            (best, at) = (x[k], k);
                            break 'window;
                        }
                        if x[k] > best {
                            (best, at) = (x[k], k);
                        }
                    }
                }
                let o = (c * oh_n + oh) * ow_n + ow;
                y[o] = best;
                argmax[o] = f32::from_bits(at as u32);
            }
        }
    }
}

/// Its backward for one example: `dx` overwritten.
pub fn max_pool_backward(dy: &[f32], argmax: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    for (&g, &at) in dy.iter().zip(argmax) {
        dx[at.to_bits() as usize] += g;
    }
}

/// Average pooling of one example (padding counts as zeros).
pub fn avg_pool_forward(g: &Pool2dGeometry, x: &[f32], y: &mut [f32]) {
    let (oh_n, ow_n, plane) = (g.out_h(), g.out_w(), g.in_h * g.in_w);
    let scale = 1.0 / (g.kernel * g.kernel) as f32;
    for c in 0..g.channels {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                let mut sum = 0.0f32;
                for h in window(g, oh, g.in_h) {
                    for w in window(g, ow, g.in_w) {
                        sum += x[c * plane + h * g.in_w + w];
                    }
                }
                y[(c * oh_n + oh) * ow_n + ow] = sum * scale;
            }
        }
    }
}

/// Its backward for one example: `dx` overwritten.
pub fn avg_pool_backward(g: &Pool2dGeometry, dy: &[f32], dx: &mut [f32]) {
    let (oh_n, ow_n, plane) = (g.out_h(), g.out_w(), g.in_h * g.in_w);
    let scale = 1.0 / (g.kernel * g.kernel) as f32;
    dx.fill(0.0);
    for c in 0..g.channels {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                let v = dy[(c * oh_n + oh) * ow_n + ow] * scale;
                for h in window(g, oh, g.in_h) {
                    for w in window(g, ow, g.in_w) {
                        dx[c * plane + h * g.in_w + w] += v;
                    }
                }
            }
        }
    }
}
