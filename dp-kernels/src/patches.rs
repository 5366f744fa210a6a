//! Images to sequences of patches (a vision transformer's tokens) and back: `[B][C][H][W]` →
//! `[B][(H/P)·(W/P)][C·P·P]`, patches in row-major order over the image, each patch's values ordered
//! like a conv weight `[C][P][P]`, so a position-wise linear layer on the patches is PyTorch's
//! `Conv2d(C, d, kernel_size=P, stride=P)` followed by `flatten(2).transpose(1, 2)` (torchvision's ViT
//! `conv_proj`). A permutation: the backward is its inverse.

use rayon::prelude::*;

/// The shape of the patching of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchDims {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// P, the side of a square patch; divides `height` and `width`.
    pub size: usize,
}

impl PatchDims {
    /// `C·H·W` values per example.
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Whether an image has no values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Patches per image, `(H/P)·(W/P)`.
    pub const fn patches(&self) -> usize {
        (self.height / self.size) * (self.width / self.size)
    }
    /// Values per patch, `C·P·P`.
    pub const fn patch_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    fn check(&self) {
        assert!(
            self.size > 0 && self.height.is_multiple_of(self.size) && self.width.is_multiple_of(self.size),
            "patches of {} do not tile {}×{}",
            self.size,
            self.height,
            self.width
        );
    }

    /// Calls `f(image index, patch index)` for every value of one example, image-major.
    fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let (p, cols) = (self.size, self.width / self.size);
        for c in 0..self.channels {
            for y in 0..self.height {
                for x in 0..self.width {
                    let patch = (y / p) * cols + x / p;
                    let within = (c * p + y % p) * p + x % p;
                    f((c * self.height + y) * self.width + x, patch * self.patch_len() + within);
                }
            }
        }
    }
}

/// `out` (`[B][patches][patch_len]`, overwritten) from the images `x`.
pub fn image_to_patches(dims: &PatchDims, batch: usize, x: &[f32], out: &mut [f32]) {
    dims.check();
    let len = dims.len();
    assert!(
        x.len() >= batch * len && out.len() >= batch * len,
        "patches: {} / {} values",
        x.len(),
        out.len()
    );
    if len == 0 {
        return;
    }
    out[..batch * len].par_chunks_mut(len).zip(x[..batch * len].par_chunks(len)).for_each(|(o, xi)| {
        dims.for_each(|image, patch| o[patch] = xi[image]);
    });
}

/// The backward: the images' gradient `dx` (overwritten) from the patches' `dout`.
pub fn patches_to_image(dims: &PatchDims, batch: usize, dout: &[f32], dx: &mut [f32]) {
    dims.check();
    let len = dims.len();
    assert!(
        dout.len() >= batch * len && dx.len() >= batch * len,
        "patches: {} / {} values",
        dout.len(),
        dx.len()
    );
    if len == 0 {
        return;
    }
    dx[..batch * len].par_chunks_mut(len).zip(dout[..batch * len].par_chunks(len)).for_each(|(d, g)| {
        dims.for_each(|image, patch| d[image] = g[patch]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_conv_weight_ordered_tiles_and_the_backward_inverts() {
        // Two channels of 4×6, patches of 2: 2×3 patches of 8 values.
        let dims = PatchDims { channels: 2, height: 4, width: 6, size: 2 };
        let x: Vec<f32> = (0..2 * dims.len()).map(|v| v as f32).collect();
        let mut out = vec![f32::NAN; x.len()];
        image_to_patches(&dims, 2, &x, &mut out);
        // Patch 1 of example 0 is rows 0–1, columns 2–3 of channel 0, then of channel 1.
        assert_eq!(&out[8..16], &[2.0, 3.0, 8.0, 9.0, 26.0, 27.0, 32.0, 33.0]);
        // Patch 5 (row 1, column 2) of example 1.
        let base = dims.len() as f32;
        assert_eq!(out[dims.len() + 40], base + 2.0 * 6.0 + 4.0);
        let mut back = vec![f32::NAN; x.len()];
        patches_to_image(&dims, 2, &out, &mut back);
        assert_eq!(back, x);
    }
}
