//! The founding paper's models, compiled by `#[dp_model]`.

mod ffnn;
mod logreg;
mod mnist_cnn;

pub use ffnn::AdultFfnn;
pub use logreg::AdultLogReg;
pub use mnist_cnn::MnistCnn;
