//! The text transformer prepared for private fine-tuning with LoRA (beyond the founding paper).

/// [`TextTransformer`](super::TextTransformer)'s architecture and parameter names with everything
/// frozen but rank-8 LoRA adapters on the four MLP projections and the classifier: 12,546 of 1,574,658
/// parameters are trained (and get noise). Loaded from a `text-transformer` checkpoint with
/// `dp train --init W --init-non-strict` (the adapters start at `B = 0`, so at step 0 the model computes
/// what the checkpoint does); `dp bench` compares its private step with the full model's.
///
/// LoRA sits on the MLP only: attention is one fused op whose projections have no adapters yet.
#[crate::dp_model(input = tokens(len = 128, vocab = 10004), loss = cross_entropy(classes = 2))]
pub mod text_transformer_lora {
    /// The LoRA text transformer (see the module).
    pub struct TextTransformerLora {
        #[layer(embedding(dim = 128), frozen)]
        embedding: Embedding,
        #[layer(position_embedding, frozen)]
        position: PositionEmbedding,
        #[layer(layer_norm, frozen)]
        block1_ln1: LayerNorm,
        #[layer(multi_head_attention(heads = 4), frozen)]
        block1_attn: MultiHeadAttention,
        #[layer(layer_norm, frozen)]
        block1_ln2: LayerNorm,
        #[layer(linear(out = 256, lora(rank = 8, alpha = 16)), gelu_exact)]
        block1_mlp_in: Linear,
        #[layer(linear(out = 128, lora(rank = 8, alpha = 16)))]
        block1_mlp_out: Linear,
        #[layer(layer_norm, frozen)]
        block2_ln1: LayerNorm,
        #[layer(multi_head_attention(heads = 4), frozen)]
        block2_attn: MultiHeadAttention,
        #[layer(layer_norm, frozen)]
        block2_ln2: LayerNorm,
        #[layer(linear(out = 256, lora(rank = 8, alpha = 16)), gelu_exact)]
        block2_mlp_in: Linear,
        #[layer(linear(out = 128, lora(rank = 8, alpha = 16)))]
        block2_mlp_out: Linear,
        #[layer(layer_norm, frozen)]
        final_ln: LayerNorm,
        #[layer(mean, linear(out = 2))]
        head: Linear,
    }

    impl TextTransformerLora {
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
