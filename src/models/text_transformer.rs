//! A small text transformer on the reviews data (beyond the founding paper).

/// A two-layer pre-norm transformer encoder for sentiment on token sequences: 128 token ids →
/// embedding 10,004×128 + a learned position embedding → two blocks of `x + attn(ln(x))`,
/// `x + mlp(ln(x))` (4 heads of 32; MLP 128 → 256 → 128 with the exact GELU) → layer norm → mean over
/// the sequence → linear 128 → 2; 1,562,370 parameters.
///
/// The block is PyTorch's `nn.TransformerEncoderLayer(128, 4, 256, dropout=0, activation="gelu",
/// batch_first=True, norm_first=True)` (Xiong et al., "On Layer Normalization in the Transformer
/// Architecture", ICML 2020, for the pre-norm order) with its parameters under the field names here:
/// `block1_attn.in_proj_weight` is `layers.0.self_attn.in_proj_weight`, `block1_mlp_in` its `linear1`,
/// `block1_ln1` its `norm1`, and so on. No dropout (it would need per-example randomness and buys
/// little under DP noise).
#[crate::dp_model(input = tokens(len = 128, vocab = 10004), loss = cross_entropy(classes = 2))]
pub mod text_transformer {
    /// The text transformer (see the module).
    pub struct TextTransformer {
        #[layer(embedding(dim = 128))]
        embedding: Embedding,
        #[layer(position_embedding)]
        position: PositionEmbedding,
        #[layer(layer_norm)]
        block1_ln1: LayerNorm,
        #[layer(multi_head_attention(heads = 4))]
        block1_attn: MultiHeadAttention,
        #[layer(layer_norm)]
        block1_ln2: LayerNorm,
        #[layer(linear(out = 256), gelu_exact)]
        block1_mlp_in: Linear,
        #[layer(linear(out = 128))]
        block1_mlp_out: Linear,
        #[layer(layer_norm)]
        block2_ln1: LayerNorm,
        #[layer(multi_head_attention(heads = 4))]
        block2_attn: MultiHeadAttention,
        #[layer(layer_norm)]
        block2_ln2: LayerNorm,
        #[layer(linear(out = 256), gelu_exact)]
        block2_mlp_in: Linear,
        #[layer(linear(out = 128))]
        block2_mlp_out: Linear,
        #[layer(layer_norm)]
        final_ln: LayerNorm,
        #[layer(mean, linear(out = 2))]
        head: Linear,
    }

    impl TextTransformer {
        fn forward(&self, x: Input) -> Output {
            let h = self.position(self.embedding(x));
            let h = h + self.block1_attn(self.block1_ln1(h));
            let h = h + self.block1_mlp_out(self.block1_mlp_in(self.block1_ln2(h)));
            let h = h + self.block2_attn(self.block2_ln1(h));
            let h = h + self.block2_mlp_out(self.block2_mlp_in(self.block2_ln2(h)));
            self.head(self.final_ln(h))
        }
    }
}
