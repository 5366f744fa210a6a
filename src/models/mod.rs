//! The founding paper's models, compiled by `#[dp_model]`.

mod cifar10_cnn;
mod embedding_net;
mod ffnn;
mod logreg;
mod lstm_net;
mod mnist_cnn;
mod mnist_vit;
pub mod recipe;
mod residual;
mod scatter_cnn;
mod text_transformer;
mod text_transformer_lora;

pub use cifar10_cnn::Cifar10Cnn;
pub use embedding_net::EmbeddingNet;
pub use ffnn::AdultFfnn;
pub use logreg::AdultLogReg;
pub use lstm_net::LstmNet;
pub use mnist_cnn::{MnistCnn, MnistCnnTanh};
pub use mnist_vit::mnist_vit::MnistVit;
pub use residual::residual_cnn::ResidualCnn;
pub use scatter_cnn::ScatterCnn;
pub use text_transformer::text_transformer::TextTransformer;
pub use text_transformer_lora::text_transformer_lora::TextTransformerLora;
