//! The built-in models by command-line name: the one place that maps `--model NAME` to a model type
//! and its data. Adding a model is one line in `models!`'s invocation below.
//!
//! Commands are written once, generic over the model, as a [`ModelVisitor`]; [`dispatch`] calls the
//! visitor's generic method with the type registered under the name (a `match`, no trait objects).

use std::path::Path;

use dp_runtime::data::source;
use dp_runtime::{DpModel, Error, Result};

use super::datasets::{
    AdultData, Cifar10Data, DataSource, MnistData, NpyInput, ReviewsData, ScatteredMnistData,
};
use crate::models::recipe::{self, Recipe};
use crate::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, MnistCnnTanh, MnistVit, ResidualCnn,
    ScatterCnn, TextTransformer, TextTransformerLora,
};

/// What a command learns about the model it was dispatched to, besides its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelEntry {
    /// The command-line name, e.g. `mnist-cnn`.
    pub name: &'static str,
    /// One line about the model.
    pub summary: &'static str,
    /// What `--data` must point at.
    pub data: &'static str,
    /// The recommended recipe: the defaults of `dp train`.
    pub recipe: Recipe,
}

/// A command written once for every model: `visit` is called with the model type `M` and its data
/// source `D`.
pub trait ModelVisitor {
    /// What the command returns.
    type Output;
    /// Runs the command for model `M`.
    fn visit<M, D>(self, entry: ModelEntry) -> Self::Output
    where
        M: DpModel,
        M::Input: NpyInput,
        D: DataSource<Input = M::Input>;
}

macro_rules! models {
    ($($name:literal => $model:ty, $data:ty, $recipe:expr, $summary:literal;)*) => {
        /// Every registered command-line name, in listing order.
        pub const NAMES: &[&str] = &[$($name),*];

        /// Calls `visitor` with the model registered as `name`; an unknown name is an error on
        /// `--model` that lists the known ones.
        pub fn dispatch<V: ModelVisitor>(name: &str, visitor: V) -> Result<V::Output> {
            match name {
                $($name => Ok(visitor.visit::<$model, $data>(ModelEntry {
                    name: $name,
                    summary: $summary,
                    data: <$data as DataSource>::EXPECTS,
                    recipe: $recipe,
                })),)*
                _ => Err(Error::invalid("model", format!("unknown model {name:?}; known: {}", NAMES.join(", ")))),
            }
        }
    };
}

models! {
    "logreg" => AdultLogReg, AdultData, recipe::LOGREG, "logistic regression on the 104 Adult features";
    "ffnn" => AdultFfnn, AdultData, recipe::FFNN, "the founding paper's fully connected network on Adult (104-50-2)";
    "mnist-cnn" => MnistCnn, MnistData, recipe::MNIST_CNN, "the founding paper's MNIST CNN (two conv layers, two linear)";
    "mnist-cnn-tanh" => MnistCnnTanh, MnistData, recipe::MNIST_CNN_TANH, "the MNIST CNN with tanh (Papernot et al. 2021)";
    "scatter-cnn" => ScatterCnn, ScatteredMnistData, recipe::SCATTER_CNN, "ScatterNet features (J = 2, L = 8) + group norm + a small tanh CNN (Tramer & Boneh 2021)";
    "mnist-vit" => MnistVit, MnistData, recipe::MNIST_VIT, "a two-layer vision transformer on MNIST (4×4 patches as tokens, d = 64, 4 heads)";
    "cifar10-cnn" => Cifar10Cnn, Cifar10Data, recipe::CIFAR10_CNN, "the founding paper's CIFAR-10 CNN";
    "residual-cnn" => ResidualCnn, Cifar10Data, recipe::CIFAR10_CNN, "a residual CNN with group norm on CIFAR-10";
    "embedding" => EmbeddingNet, ReviewsData, recipe::TEXT, "the founding paper's embedding network on token sequences";
    "lstm" => LstmNet, ReviewsData, recipe::TEXT, "the founding paper's LSTM on token sequences (one bias per gate)";
    "text-transformer" => TextTransformer, ReviewsData, recipe::TEXT_TRANSFORMER, "a two-layer pre-norm transformer encoder (d = 128, 4 heads, T = 128) on token sequences";
    "text-transformer-lora" => TextTransformerLora, ReviewsData, recipe::TEXT_TRANSFORMER_LORA, "the text transformer frozen but for rank-8 LoRA adapters on its MLP and its classifier (fine-tuning from --init)";
}

/// A kind of data `dp train --data PATH` recognises without `--model`, and the model it recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKind {
    /// What the data was recognised as.
    pub kind: &'static str,
    /// The recommended model's command-line name (its recipe is the default).
    pub model: &'static str,
}

/// The recommended model for 28×28, 10-class IDX images (MNIST and its family).
pub const RECOMMENDED_IDX_MODEL: &str = "scatter-cnn";

/// Recognises the kind of data at `path` from its file names alone (nothing is read): an IDX image
/// folder, the Adult CSV folder, CIFAR-10 binary batches, or a text CSV; anything else is an error on
/// `--data` asking for `--model`.
pub fn recommended_model(path: &Path) -> Result<DataKind> {
    let has = |name: &str| source::find_maybe_gz(path, name).is_ok();
    let kind = if path.is_dir() && has("train-images-idx3-ubyte") {
        DataKind { kind: "28x28 IDX images (the MNIST format)", model: RECOMMENDED_IDX_MODEL }
    } else if path.is_dir() && has("adult_train.csv") {
        DataKind { kind: "the Adult CSV files", model: "ffnn" }
    } else if path.is_dir()
        && (path.join("data_batch_1.bin").is_file() || path.join("cifar-10-batches-bin").is_dir())
    {
        DataKind { kind: "CIFAR-10 binary batches", model: "cifar10-cnn" }
    } else if path.is_file() && [".csv", ".csv.gz"].iter().any(|e| path.to_string_lossy().ends_with(e)) {
        DataKind { kind: "a text CSV", model: "embedding" }
    } else {
        return Err(Error::invalid(
            "data",
            format!(
                "cannot tell which model suits {} (an MNIST-format IDX folder, the Adult CSV folder, CIFAR-10 \
                 binary batches or a text CSV are recognised): give --model (see `dp models`)",
                path.display()
            ),
        ));
    };
    Ok(kind)
}
