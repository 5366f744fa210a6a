//! The founding paper's models, compiled by `#[dp_model]`.

mod embedding_net;
mod ffnn;
mod logreg;
mod lstm_net;

pub use embedding_net::EmbeddingNet;
pub use ffnn::AdultFfnn;
pub use logreg::AdultLogReg;
pub use lstm_net::LstmNet;
