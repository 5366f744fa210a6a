//! The real data of each built-in model, as the command line finds it from one `--data PATH`, and the
//! conversion of `.npy` arrays into a model's inputs for `dp step`.

use std::path::Path;

use dp_runtime::data::npy::{self, LabelKind, NpyArray};
use dp_runtime::data::scattering::Scattering2d;
use dp_runtime::data::{adult, cifar10, mnist, source, text, Dataset};
use dp_runtime::{DpModel, Error, InputElem, Loss, Result};

/// A training split and a test split.
pub type Splits<T> = (Dataset<T>, Dataset<T>);

/// A kind of real data: where it is read from, and into which input element type.
pub trait DataSource {
    /// The input element type it produces (`f32` features or `u32` token ids).
    type Input: InputElem;
    /// A short description of what `--data` must point at.
    const EXPECTS: &'static str;
    /// Loads `(train, test)` for model `M` from `path`.
    fn load<M: DpModel<Input = Self::Input>>(path: &Path) -> Result<Splits<Self::Input>>;
}

/// MNIST: a folder with the four IDX files (raw or gzip).
pub struct MnistData;

impl DataSource for MnistData {
    type Input = f32;
    const EXPECTS: &'static str = "an MNIST folder with the four IDX files (raw or .gz), e.g. data/mnist";
    fn load<M: DpModel<Input = f32>>(path: &Path) -> Result<(Dataset<f32>, Dataset<f32>)> {
        mnist::load(path)
    }
}

/// MNIST turned into ScatterNet features: each image's 2-D scattering transform (J = 2, L = 8: 81
/// channels of 7×7), computed once after loading. A fixed function of each image alone, so it costs
/// no privacy (docs/PRIVACY.md).
pub struct ScatteredMnistData;

/// The scattering of [`ScatteredMnistData`]: scales J and angles L, as Tramèr & Boneh (2021).
pub const SCATTERING_SCALES: usize = 2;
/// See [`SCATTERING_SCALES`].
pub const SCATTERING_ANGLES: usize = 8;

impl DataSource for ScatteredMnistData {
    type Input = f32;
    const EXPECTS: &'static str =
        "an MNIST folder with the four IDX files (raw or .gz), e.g. data/mnist; scattered after loading";
    fn load<M: DpModel<Input = f32>>(path: &Path) -> Result<(Dataset<f32>, Dataset<f32>)> {
        let (train, test) = mnist::load(path)?;
        let [_, height, width] = mnist::IMAGE_SHAPE;
        let scattering = Scattering2d::new(height, width, SCATTERING_SCALES, SCATTERING_ANGLES)?;
        Ok((scattering.transform_dataset(&train)?, scattering.transform_dataset(&test)?))
    }
}

/// UCI Adult: a folder with `adult_train.csv` and `adult_test.csv` (raw or gzip).
pub struct AdultData;

impl DataSource for AdultData {
    type Input = f32;
    const EXPECTS: &'static str =
        "a folder with adult_train.csv(.gz) and adult_test.csv(.gz), e.g. data/adult";
    fn load<M: DpModel<Input = f32>>(path: &Path) -> Result<(Dataset<f32>, Dataset<f32>)> {
        let train = source::find_maybe_gz(path, "adult_train.csv")?;
        let test = source::find_maybe_gz(path, "adult_test.csv")?;
        adult::load(train, test)
    }
}

/// CIFAR-10: the official binary batches, in a folder (or its `cifar-10-batches-bin` subfolder).
pub struct Cifar10Data;

impl DataSource for Cifar10Data {
    type Input = f32;
    const EXPECTS: &'static str = "a CIFAR-10 binary folder (data_batch_1.bin ... test_batch.bin)";
    fn load<M: DpModel<Input = f32>>(path: &Path) -> Result<(Dataset<f32>, Dataset<f32>)> {
        cifar10::load(path)
    }
}

/// A text CSV (the women's clothing reviews by default), split by a hash of each row's text and
/// tokenised with the shipped public English vocabulary, sized to the model's sequence length and
/// vocabulary: nothing about the split or the ids depends on the other rows.
pub struct ReviewsData;

impl DataSource for ReviewsData {
    type Input = u32;
    const EXPECTS: &'static str =
        "the reviews CSV (Review Text, Recommended IND), e.g. data/reviews/womens_clothing_reviews.csv.gz";
    fn load<M: DpModel<Input = u32>>(path: &Path) -> Result<(Dataset<u32>, Dataset<u32>)> {
        let reserved = text::RESERVED as usize;
        let [max_len] = M::INPUT_SHAPE else {
            return Err(mismatch::<M>(format!(
                "token inputs of shape {:?}, [length] expected",
                M::INPUT_SHAPE
            )));
        };
        if M::VOCAB <= reserved {
            return Err(mismatch::<M>(format!("a vocabulary of {} ids leaves no room for words", M::VOCAB)));
        }
        let options =
            text::TextOptions { vocab_words: M::VOCAB - reserved, max_len: *max_len, ..Default::default() };
        let (train, test, _) = text::load_reviews(path, options)?;
        Ok((train, test))
    }
}

/// An input element type that `dp step` can read from a `.npy` array.
pub trait NpyInput: InputElem {
    /// The dataset of model `M` from input and label arrays (checked: shape, dtype, finite values,
    /// token ids in the vocabulary, labels of the model's loss).
    fn dataset<M: DpModel<Input = Self>>(
        inputs: (&NpyArray, &Path),
        labels: (&NpyArray, &Path),
    ) -> Result<Dataset<Self>>;
}

impl NpyInput for f32 {
    fn dataset<M: DpModel<Input = f32>>(
        inputs: (&NpyArray, &Path),
        labels: (&NpyArray, &Path),
    ) -> Result<Dataset<f32>> {
        npy::dense_dataset(inputs.0, inputs.1, labels.0, labels.1, M::INPUT_SHAPE, label_kind::<M>()?)
    }
}

impl NpyInput for u32 {
    fn dataset<M: DpModel<Input = u32>>(
        inputs: (&NpyArray, &Path),
        labels: (&NpyArray, &Path),
    ) -> Result<Dataset<u32>> {
        let [seq_len] = M::INPUT_SHAPE else {
            return Err(mismatch::<M>(format!(
                "token inputs of shape {:?}, [length] expected",
                M::INPUT_SHAPE
            )));
        };
        npy::token_dataset(inputs.0, inputs.1, labels.0, labels.1, *seq_len, M::VOCAB, label_kind::<M>()?)
    }
}

/// Which labels the model's loss takes: 0/1 targets (float or integer) for binary cross-entropy,
/// integer class indices for softmax cross-entropy.
pub fn label_kind<M: DpModel>() -> Result<LabelKind> {
    match M::LOSS {
        Loss::BinaryCrossEntropy => Ok(LabelKind::Binary),
        Loss::CrossEntropy { classes } => Ok(LabelKind::Classes(classes)),
        Loss::MeanSquaredError { .. } => {
            Err(mismatch::<M>("regression models have no labels the command line can read".into()))
        }
    }
}

fn mismatch<M: DpModel>(message: String) -> Error {
    Error::Mismatch { model: M::NAME.to_string(), message }
}
