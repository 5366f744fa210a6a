//! Random views of an image for augmentation multiplicity (De et al. 2022, "Unlocking High-Accuracy
//! Differentially Private Image Classification through Scale"): a crop of the image after zero
//! padding, and a horizontal flip where the task allows one.
//!
//! A view is a function of one example and fresh randomness only, so drawing views reads nothing
//! else of the private data. The privacy argument (the averaged gradient is clipped, so one example
//! still moves the clipped sum by at most C) lives in the trainer's step
//! (`trainer::step::StepEngine`), which averages each example's gradients over its views before
//! clipping.

use std::any::Any;

use rand::RngCore;

use crate::error::{Error, Result};
use crate::model::InputElem;
use crate::rng::uniform_below;

/// How one view of an image is drawn: the image is padded with `crop_padding` values `padding_value`
/// on every side and a crop of its original size is taken at a uniformly random offset
/// (`2·crop_padding + 1` choices on each axis); then, with `horizontal_flip`, it is mirrored left to
/// right with probability ½. `crop_padding = 0` without flip gives the image itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    pub crop_padding: usize,
    pub horizontal_flip: bool,
    /// The padding in the model's input space: 0 is black for raw images and for scattering features;
    /// for inputs standardised as `(x − mean)/std` black is `−mean/std`.
    pub padding_value: f32,
}

/// The `[channels, height, width]` layout of the images an [`Augmentation`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// The shape of a model's input, which must be an image: `[channels, height, width]`.
    pub fn of_input(input_shape: &[usize]) -> Result<Self> {
        match *input_shape {
            [channels, height, width] if channels * height * width > 0 => {
                Ok(ImageShape { channels, height, width })
            }
            _ => Err(Error::invalid(
                "augmentation",
                format!(
                    "views are crops and flips of images, and the model's input {input_shape:?} is not an \
                     image [channels, height, width]"
                ),
            )),
        }
    }

    /// Values in one image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the image holds no value (never, for a shape from [`of_input`](Self::of_input)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one view comes from: the crop's top-left corner in the padded image and the flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewChoice {
    pub top: usize,
    pub left: usize,
    pub flip: bool,
}

impl Augmentation {
    /// The image shape of a model's input (`input_shape`; `vocab` > 0 for token ids), or why views of
    /// it cannot be drawn: token ids, an input that is not `[channels, height, width]`, a padding
    /// that is not smaller than the image.
    pub fn check_input(&self, input_shape: &[usize], vocab: usize) -> Result<ImageShape> {
        if vocab != 0 {
            return Err(Error::invalid(
                "augmentation",
                "views are crops and flips of images, and the model's input is token ids",
            ));
        }
        let shape = ImageShape::of_input(input_shape)?;
        self.check(shape)?;
        Ok(shape)
    }

    /// Refuses a padding that is not smaller than the image (a crop of zeros only).
    pub fn check(&self, shape: ImageShape) -> Result<()> {
        if self.crop_padding >= shape.height || self.crop_padding >= shape.width {
            return Err(Error::invalid(
                "augmentation",
                format!(
                    "crop padding {} must be smaller than the image ({}×{}): a larger one can give a crop of \
                     padding only",
                    self.crop_padding, shape.height, shape.width
                ),
            ));
        }
        Ok(())
    }

    /// Draws where the next view comes from.
    pub fn choose<R: RngCore + ?Sized>(&self, rng: &mut R) -> ViewChoice {
        let offsets = 2 * self.crop_padding + 1;
        let top = uniform_below(rng, offsets);
        let left = uniform_below(rng, offsets);
        let flip = self.horizontal_flip && rng.next_u32() & 1 == 1;
        ViewChoice { top, left, flip }
    }

    /// [`padding_value`](Self::padding_value) as the model's input type: refused for token ids.
    pub fn padding_as<T: InputElem>(&self) -> Result<T> {
        (&self.padding_value as &dyn Any).downcast_ref::<T>().copied().ok_or_else(|| {
            Error::invalid(
                "augmentation",
                format!("pads real-valued images, not inputs of {}", std::any::type_name::<T>()),
            )
        })
    }

    /// Writes the view `choice` of `image` (laid out as `shape`) into `view` (the same length),
    /// padding with `padding` (the input type's [`padding_value`](Self::padding_value)).
    pub fn apply<T: Copy>(
        &self,
        shape: ImageShape,
        choice: ViewChoice,
        image: &[T],
        view: &mut [T],
        padding: T,
    ) {
        assert_eq!(image.len(), shape.len(), "image length");
        assert_eq!(view.len(), shape.len(), "view length");
        let ImageShape { height, width, .. } = shape;
        let pad = self.crop_padding;
        for (image, view) in image.chunks_exact(height * width).zip(view.chunks_exact_mut(height * width)) {
            for (y, row) in view.chunks_exact_mut(width).enumerate() {
                // Row y of the view is row y + top − pad of the image, or padding.
                let source_row = (y + choice.top).checked_sub(pad).filter(|&r| r < height);
                for (x, out) in row.iter_mut().enumerate() {
                    let column = if choice.flip { width - 1 - x } else { x };
                    let source_column = (column + choice.left).checked_sub(pad).filter(|&c| c < width);
                    *out = match (source_row, source_column) {
                        (Some(r), Some(c)) => image[r * width + c],
                        _ => padding,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const SHAPE: ImageShape = ImageShape { channels: 2, height: 3, width: 4 };

    fn image() -> Vec<f32> {
        (1..=24).map(|v| v as f32).collect()
    }

    fn view(augmentation: Augmentation, choice: ViewChoice) -> Vec<f32> {
        let mut out = vec![f32::NAN; SHAPE.len()];
        augmentation.apply(SHAPE, choice, &image(), &mut out, 0.0);
        out
    }

    #[test]
    fn the_centred_crop_without_flip_is_the_image() {
        let augmentation = Augmentation { crop_padding: 2, horizontal_flip: false, padding_value: 0.0 };
        assert_eq!(view(augmentation, ViewChoice { top: 2, left: 2, flip: false }), image());
    }

    #[test]
    fn a_shifted_crop_moves_the_image_and_fills_zeros() {
        let augmentation = Augmentation { crop_padding: 1, horizontal_flip: false, padding_value: 0.0 };
        // top 0, left 2: the view's (y, x) is the image's (y − 1, x + 1).
        let shifted = view(augmentation, ViewChoice { top: 0, left: 2, flip: false });
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, 0.0, 0.0,
            2.0, 3.0, 4.0, 0.0,
            6.0, 7.0, 8.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            14.0, 15.0, 16.0, 0.0,
            18.0, 19.0, 20.0, 0.0,
        ];
        assert_eq!(shifted, expected);
    }

    #[test]
    fn the_padding_has_the_given_value_and_token_ids_are_refused() {
        let augmentation = Augmentation { crop_padding: 1, horizontal_flip: false, padding_value: -0.5 };
        let mut out = vec![f32::NAN; SHAPE.len()];
        let padding = augmentation.padding_as::<f32>().unwrap();
        augmentation.apply(SHAPE, ViewChoice { top: 0, left: 1, flip: false }, &image(), &mut out, padding);
        assert_eq!(&out[..4], &[-0.5; 4]);
        assert_eq!(&out[4..8], &[1.0, 2.0, 3.0, 4.0]);
        assert!(augmentation.padding_as::<u32>().is_err());
    }

    #[test]
    fn a_flip_mirrors_every_row_of_every_channel() {
        let augmentation = Augmentation { crop_padding: 0, horizontal_flip: true, padding_value: 0.0 };
        let flipped = view(augmentation, ViewChoice { top: 0, left: 0, flip: true });
        let expected: Vec<f32> =
            image().chunks(4).flat_map(|row| row.iter().rev().copied().collect::<Vec<_>>()).collect();
        assert_eq!(flipped, expected);
    }

    #[test]
    fn every_offset_and_flip_is_drawn_about_equally_often() {
        let augmentation = Augmentation { crop_padding: 2, horizontal_flip: true, padding_value: 0.0 };
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut counts = [[[0u32; 2]; 5]; 5];
        let draws = 50_000;
        for _ in 0..draws {
            let c = augmentation.choose(&mut rng);
            counts[c.top][c.left][c.flip as usize] += 1;
        }
        let expected = draws as f64 / 50.0;
        for count in counts.iter().flatten().flatten() {
            // 1,000 expected each: ±5 standard deviations is ±158.
            assert!((*count as f64 - expected).abs() < 160.0, "{counts:?}");
        }
        let no_flip = Augmentation { crop_padding: 0, horizontal_flip: false, padding_value: 0.0 };
        assert_eq!(no_flip.choose(&mut rng), ViewChoice { top: 0, left: 0, flip: false });
    }

    #[test]
    fn shapes_and_paddings_that_cannot_give_a_view_are_refused() {
        assert!(ImageShape::of_input(&[784]).is_err());
        assert!(ImageShape::of_input(&[1, 0, 28]).is_err());
        assert_eq!(ImageShape::of_input(&[2, 3, 4]).unwrap(), SHAPE);
        assert!(Augmentation { crop_padding: 3, horizontal_flip: false, padding_value: 0.0 }
            .check(SHAPE)
            .is_err());
        assert!(Augmentation { crop_padding: 2, horizontal_flip: false, padding_value: 0.0 }
            .check(SHAPE)
            .is_ok());
    }
}
