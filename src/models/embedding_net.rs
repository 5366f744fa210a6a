//! The embedding network on IMDb.

use crate::dp_model;

/// The founding paper's embedding network for IMDb sentiment: 256 token ids → embedding 10,004×16 →
/// mean over the sequence → linear 16 → 2; 160,098 parameters.
///
/// Subramani, Vadivelu, Kamath, "Enabling Fast Differentially Private SGD via Just-in-Time Compilation
/// and Vectorization" (NeurIPS 2021), appendix B (the embedding model on IMDb, after the TensorFlow
/// Privacy tutorial). The embedding table `embedding.weight` is `[10004, 16]`, initialised N(0, 1) like
/// PyTorch's; its per-example norms group equal tokens (cost ~T·dim, never the vocabulary size).
#[dp_model(input = tokens(len = 256, vocab = 10004), loss = cross_entropy(classes = 2))]
pub struct EmbeddingNet {
    #[layer(embedding(dim = 16), mean)]
    embedding: Embedding,
    #[layer(linear(out = 2))]
    fc: Linear,
}
