//! The host reference's primitives for a transformer's steps around its products, written from their
//! contracts in `DeviceOps`: an activation's backward from its input, a strided copy of rows (a
//! sequence's first position and its gradient), the permutation of images into patches and a scaled
//! add (a LoRA layer's sum).

use dp_kernels::activation::Activation;

use super::{short, HostDevice};
use crate::device::{DeviceError, PatchDims, Span};

impl HostDevice {
    pub(super) fn activation_backward_at_input(
        &mut self,
        grad: Span,
        x: Span,
        len: usize,
        act: Activation,
    ) -> Result<(), DeviceError> {
        let x = self.read(x)?;
        let g = self.write(grad)?;
        if x.len() < len || g.len() < len {
            return Err(short("activation_backward_from_input"));
        }
        g[..len].iter_mut().zip(&x).for_each(|(g, &x)| *g *= act.derivative_from_input(x));
        Ok(())
    }

    pub(super) fn copy_rows_strided(
        &mut self,
        src: Span,
        src_stride: usize,
        dst: Span,
        dst_stride: usize,
        rows: usize,
        cols: usize,
    ) -> Result<(), DeviceError> {
        let reach = |stride: usize| if rows == 0 { 0 } else { (rows - 1) * stride + cols };
        if src_stride < cols || dst_stride < cols {
            return Err(DeviceError::Mismatch(format!(
                "copy_strided: strides {src_stride} and {dst_stride} shorter than rows of {cols}"
            )));
        }
        let s = self.read(src)?;
        let d = self.write(dst)?;
        if s.len() < reach(src_stride) || d.len() < reach(dst_stride) {
            return Err(short("copy_strided"));
        }
        for r in 0..rows {
            d[r * dst_stride..][..cols].copy_from_slice(&s[r * src_stride..][..cols]);
        }
        Ok(())
    }

    /// Images to patches (`to_patches`) or back: the value at `(c, y, x)` of an image is value
    /// `((c·P + y mod P)·P + x mod P)` of patch `(y / P)·(W / P) + x / P`.
    pub(super) fn permute_patches(
        &mut self,
        from: Span,
        dims: &PatchDims,
        n: usize,
        to: Span,
        to_patches: bool,
    ) -> Result<(), DeviceError> {
        let &PatchDims { channels, height, width, size: p } = dims;
        if p == 0 || height % p != 0 || width % p != 0 {
            return Err(DeviceError::Mismatch(format!("patches of {p} do not tile {height}×{width}")));
        }
        let len = dims.len();
        let src = self.read(from)?;
        let dst = self.write(to)?;
        if src.len() < n * len || dst.len() < n * len {
            return Err(short(if to_patches { "patches_forward" } else { "patches_backward" }));
        }
        let (cols, patch_len) = (width / p, channels * p * p);
        for i in 0..n {
            for c in 0..channels {
                for y in 0..height {
                    for x in 0..width {
                        let image = i * len + (c * height + y) * width + x;
                        let patch =
                            i * len + ((y / p) * cols + x / p) * patch_len + (c * p + y % p) * p + x % p;
                        match to_patches {
                            true => dst[patch] = src[image],
                            false => dst[image] = src[patch],
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn add_scaled(
        &mut self,
        dst: Span,
        src: Span,
        len: usize,
        scale: f32,
    ) -> Result<(), DeviceError> {
        let s = self.read(src)?;
        let d = self.write(dst)?;
        if s.len() < len || d.len() < len {
            return Err(short("add_scaled_into"));
        }
        d[..len].iter_mut().zip(&s).for_each(|(d, &s)| *d += scale * s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceOps, Region};

    /// Spans shorter than the shapes, strides shorter than a row and patches that do not tile the
    /// image are errors, never panics.
    #[test]
    fn short_spans_strides_and_untiled_patches_are_refused() {
        let mut host = HostDevice::new();
        host.set(Region::Arena, vec![0.0; 64]);
        let at = |from: usize, len: usize| Span::new(Region::Arena, from, len);
        let refused = |r: Result<(), DeviceError>| matches!(r, Err(DeviceError::Mismatch(_)));
        assert!(host.activation_backward_from_input(at(0, 8), at(8, 8), 8, Activation::Gelu).is_ok());
        assert!(refused(host.activation_backward_from_input(at(0, 8), at(8, 7), 8, Activation::Gelu)));
        assert!(host.copy_strided(at(0, 15), 5, at(32, 6), 2, 3, 2).is_ok());
        assert!(refused(host.copy_strided(at(0, 15), 5, at(32, 5), 2, 3, 2)));
        assert!(refused(host.copy_strided(at(0, 15), 1, at(32, 6), 2, 3, 2)));
        let dims = PatchDims { channels: 1, height: 4, width: 4, size: 2 };
        assert!(host.patches_forward(at(0, 32), &dims, 2, at(32, 32)).is_ok());
        assert!(refused(host.patches_backward(at(0, 32), &dims, 2, at(32, 31))));
        let untiled = PatchDims { size: 3, ..dims };
        assert!(refused(host.patches_forward(at(0, 32), &untiled, 2, at(32, 32))));
        assert!(refused(host.patches_forward(at(0, 32), &PatchDims { size: 0, ..dims }, 2, at(32, 32))));
        assert!(host.add_scaled_into(at(0, 8), at(8, 8), 8, 0.5).is_ok());
        assert!(refused(host.add_scaled_into(at(0, 8), at(8, 7), 8, 0.5)));
    }
}
