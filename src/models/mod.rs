//! The founding paper's models, compiled by `#[dp_model]`.

mod ffnn;
mod logreg;

pub use ffnn::AdultFfnn;
pub use logreg::AdultLogReg;
