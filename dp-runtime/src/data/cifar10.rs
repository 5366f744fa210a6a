//! CIFAR-10 in its binary format: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`,
//! each a sequence of records of one label byte (0–9) and 3,072 pixel bytes (1,024 red, then green,
//! then blue, row-major 32×32). Images come out NCHW `f32` in `[0, 1]`; a per-channel
//! [`Normalization`] can be applied afterwards.

use std::path::Path;

use crate::data::{source, Dataset};
use crate::error::{Error, Result};

/// Number of classes.
pub const CLASSES: usize = 10;
/// Shape of one image: three channels of 32×32 pixels.
pub const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];
/// Bytes of one image.
pub const IMAGE_LEN: usize = 3 * 32 * 32;
/// Bytes of one record: the label byte and the image.
pub const RECORD_LEN: usize = 1 + IMAGE_LEN;
/// The five training batch file names.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test batch file name.
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder name inside the official archive; [`load`] also looks there.
pub const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";

/// Loads `(train, test)` from `dir` (or from `dir/cifar-10-batches-bin` when `dir` itself has no
/// `test_batch.bin`): the five training batches concatenated in order, and the test batch.
/// Every file may be raw or gzip (with or without a `.gz` suffix).
pub fn load(dir: impl AsRef<Path>) -> Result<(Dataset<f32>, Dataset<f32>)> {
    let mut dir = dir.as_ref().to_path_buf();
    if source::find_maybe_gz(&dir, TEST_FILE).is_err() && dir.join(ARCHIVE_FOLDER).is_dir() {
        dir = dir.join(ARCHIVE_FOLDER);
    }
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for name in TRAIN_FILES {
        let (batch_inputs, batch_labels) = read_batch_parts(&source::find_maybe_gz(&dir, name)?)?;
        inputs.extend_from_slice(&batch_inputs);
        labels.extend_from_slice(&batch_labels);
    }
    let train = Dataset::new(inputs, labels, IMAGE_SHAPE.to_vec(), 1)?;
    let test = read_batch(&source::find_maybe_gz(&dir, TEST_FILE)?)?;
    Ok((train, test))
}

/// Reads one batch file as a dataset of `[3, 32, 32]` images.
pub fn read_batch(path: &Path) -> Result<Dataset<f32>> {
    let (inputs, labels) = read_batch_parts(path)?;
    Dataset::new(inputs, labels, IMAGE_SHAPE.to_vec(), 1)
}

fn read_batch_parts(path: &Path) -> Result<(Vec<f32>, Vec<f32>)> {
    let bytes = source::read_bytes(path)?;
    parse_records(path, &bytes)
}

/// Parses one batch held in memory (raw or gzip) into `(inputs, labels)`: pixels / 255 in NCHW
/// order and class indices as `f32`. `path` names the bytes in errors.
pub fn parse_batch_bytes(path: &Path, bytes: &[u8]) -> Result<(Vec<f32>, Vec<f32>)> {
    let bytes = source::decode(path, bytes)?;
    parse_records(path, &bytes)
}

fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Vec<f32>, Vec<f32>)> {
    if bytes.is_empty() {
        return Err(Error::format(path, "byte 0", "empty batch: no records"));
    }
    let whole = bytes.len() / RECORD_LEN * RECORD_LEN;
    if whole != bytes.len() {
        return Err(Error::format(
            path,
            format!("byte {whole}"),
            format!(
                "truncated record: {} bytes is not a whole number of {RECORD_LEN}-byte records \
                 ({} bytes left over)",
                bytes.len(),
                bytes.len() - whole
            ),
        ));
    }
    let count = bytes.len() / RECORD_LEN;
    let mut inputs = Vec::with_capacity(count * IMAGE_LEN);
    let mut labels = Vec::with_capacity(count);
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        let label = record[0];
        if usize::from(label) >= CLASSES {
            return Err(Error::format(
                path,
                format!("byte {}", i * RECORD_LEN),
                format!("label {label} of record {i} is out of range 0..{CLASSES}"),
            ));
        }
        labels.push(f32::from(label));
        inputs.extend(record[1..].iter().map(|&p| f32::from(p) / 255.0));
    }
    Ok((inputs, labels))
}

/// Per-channel normalisation `(x − mean[c]) / std[c]` of `[3, H, W]` images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Mean of each channel (red, green, blue).
    pub mean: [f32; 3],
    /// Standard deviation of each channel; positive.
    pub std: [f32; 3],
}

impl Normalization {
    /// The per-channel mean and standard deviation of the 50,000 CIFAR-10 training images (pixels in
    /// `[0, 1]`), the values commonly used with this dataset.
    pub const CIFAR10_TRAIN: Normalization =
        Normalization { mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] };

    /// The per-channel mean and (population) standard deviation of `data`, whose examples must be
    /// `[3, H, W]` images; a constant channel gets a standard deviation of 1.
    pub fn fit(data: &Dataset<f32>) -> Result<Self> {
        let plane = channel_plane(data)?;
        if data.is_empty() {
            return Err(Error::invalid("normalization", "cannot fit on an empty dataset"));
        }
        let mut sum = [0f64; 3];
        let mut sum_sq = [0f64; 3];
        for image in data.inputs.chunks_exact(3 * plane) {
            for (c, channel) in image.chunks_exact(plane).enumerate() {
                for &x in channel {
                    sum[c] += f64::from(x);
                    sum_sq[c] += f64::from(x) * f64::from(x);
                }
            }
        }
        let n = (data.len() * plane) as f64;
        let mut norm = Normalization { mean: [0.0; 3], std: [1.0; 3] };
        for c in 0..3 {
            let mean = sum[c] / n;
            let var = (sum_sq[c] / n - mean * mean).max(0.0);
            norm.mean[c] = mean as f32;
            norm.std[c] = if var > 0.0 { var.sqrt() as f32 } else { 1.0 };
        }
        Ok(norm)
    }

    /// Normalises every image of `data` in place.
    pub fn apply(&self, data: &mut Dataset<f32>) -> Result<()> {
        if let Some(c) = (0..3).find(|&c| !(self.std[c].is_finite() && self.std[c] > 0.0)) {
            return Err(Error::invalid(
                "normalization",
                format!("std of channel {c} is {}, it must be positive and finite", self.std[c]),
            ));
        }
        if let Some(c) = (0..3).find(|&c| !self.mean[c].is_finite()) {
            return Err(Error::invalid("normalization", format!("mean of channel {c} is not finite")));
        }
        let plane = channel_plane(data)?;
        for image in data.inputs.chunks_exact_mut(3 * plane) {
            for (c, channel) in image.chunks_exact_mut(plane).enumerate() {
                for x in channel {
                    *x = (*x - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(())
    }
}

/// Pixels per channel of a dataset of `[3, H, W]` images.
fn channel_plane(data: &Dataset<f32>) -> Result<usize> {
    match data.example_shape[..] {
        [3, h, w] if h * w > 0 => Ok(h * w),
        _ => Err(Error::invalid(
            "normalization",
            format!("needs [3, H, W] images, the dataset's examples are {:?}", data.example_shape),
        )),
    }
}
