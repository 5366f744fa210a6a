//! The built-in models by command-line name: the one place that maps `--model NAME` to a model type
//! and its data. Adding a model is one line in [`models!`]'s invocation below.
//!
//! Commands are written once, generic over the model, as a [`ModelVisitor`]; [`dispatch`] calls the
//! visitor's generic method with the type registered under the name (a `match`, no trait objects).

use dp_runtime::{DpModel, Error, Result};

use super::datasets::{AdultData, Cifar10Data, DataSource, MnistData, NpyInput, ReviewsData};
use crate::models::recipe::{self, Recipe};
use crate::models::{
    AdultFfnn, AdultLogReg, Cifar10Cnn, EmbeddingNet, LstmNet, MnistCnn, MnistVit, ResidualCnn,
    TextTransformer,
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
    "mnist-vit" => MnistVit, MnistData, recipe::MNIST_VIT, "a two-layer vision transformer on MNIST (4×4 patches as tokens, d = 64, 4 heads)";
    "cifar10-cnn" => Cifar10Cnn, Cifar10Data, recipe::CIFAR10_CNN, "the founding paper's CIFAR-10 CNN";
    "residual-cnn" => ResidualCnn, Cifar10Data, recipe::CIFAR10_CNN, "a residual CNN with group norm on CIFAR-10";
    "embedding" => EmbeddingNet, ReviewsData, recipe::TEXT, "the founding paper's embedding network on token sequences";
    "lstm" => LstmNet, ReviewsData, recipe::TEXT, "the founding paper's LSTM on token sequences (one bias per gate)";
    "text-transformer" => TextTransformer, ReviewsData, recipe::TEXT_TRANSFORMER, "a two-layer pre-norm transformer encoder (d = 128, 4 heads, T = 128) on token sequences";
}
