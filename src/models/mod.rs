//! The founding paper's models, compiled by `#[dp_model]`.

mod cifar10_cnn;
mod ffnn;
mod logreg;
mod mnist_cnn;
mod residual;

pub use cifar10_cnn::Cifar10Cnn;
pub use ffnn::AdultFfnn;
pub use logreg::AdultLogReg;
pub use mnist_cnn::MnistCnn;
pub use residual::residual_cnn::ResidualCnn;
