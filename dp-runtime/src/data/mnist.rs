//! MNIST from the four classic IDX files of a folder (raw or gzip), as NCHW `f32` images in `[0, 1]`
//! with class-index labels. Fashion-MNIST and other 28×28, 10-class members of the family load the same.

use std::path::Path;

use crate::data::{idx, source, Dataset};
use crate::error::{Error, Result};

/// Number of classes (digits 0–9).
pub const CLASSES: usize = 10;
/// Shape of one image: one channel of 28×28 pixels.
pub const IMAGE_SHAPE: [usize; 3] = [1, 28, 28];

/// The training images file name (without `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// The training labels file name (without `.gz`).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// The test images file name (without `.gz`).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// The test labels file name (without `.gz`).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Loads `(train, test)` from `dir`, which holds the four files, each raw or with a `.gz` suffix.
pub fn load(dir: impl AsRef<Path>) -> Result<(Dataset<f32>, Dataset<f32>)> {
    let dir = dir.as_ref();
    let train =
        load_split(&source::find_maybe_gz(dir, TRAIN_IMAGES)?, &source::find_maybe_gz(dir, TRAIN_LABELS)?)?;
    let test =
        load_split(&source::find_maybe_gz(dir, TEST_IMAGES)?, &source::find_maybe_gz(dir, TEST_LABELS)?)?;
    Ok((train, test))
}

/// Loads one split from an images file and a labels file: 28×28 images, labels below 10, and as many
/// labels as images. The example shape is `[1, 28, 28]`.
pub fn load_split(images_path: &Path, labels_path: &Path) -> Result<Dataset<f32>> {
    let images = idx::read_images(images_path)?;
    if [images.rows, images.cols] != [IMAGE_SHAPE[1], IMAGE_SHAPE[2]] {
        return Err(Error::format(
            images_path,
            "byte 8",
            format!("MNIST images are 28×28, found {}×{}", images.rows, images.cols),
        ));
    }
    let labels = idx::read_labels(labels_path, CLASSES)?;
    if labels.len() != images.count {
        return Err(Error::format(
            labels_path,
            "byte 4",
            format!("{} labels but {} images in {}", labels.len(), images.count, images_path.display()),
        ));
    }
    Dataset::new(images.pixels, labels, IMAGE_SHAPE.to_vec(), 1)
}
