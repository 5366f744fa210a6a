//! A small vision transformer on MNIST (beyond the founding paper).

/// A two-layer pre-norm vision transformer for MNIST: the 28×28 image cut into 49 patches of 4×4
/// (`patches`), each projected to 64 values by a position-wise linear layer (torchvision ViT's
/// `conv_proj`, a 4×4 convolution with stride 4), a learned position embedding, two blocks of
/// `x + attn(ln(x))`, `x + mlp(ln(x))` (4 heads of 16; MLP 64 → 128 → 64 with the exact GELU), layer
/// norm, mean over the patches (no class token) and a linear layer to 10 classes; 70,794 parameters.
///
/// After Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
/// Scale" (ICLR 2021), at MNIST's size, with the blocks of `TextTransformer`.
#[crate::dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
pub mod mnist_vit {
    /// The vision transformer (see the module).
    pub struct MnistVit {
        #[layer(patches(size = 4), linear(out = 64))]
        patch_embedding: Linear,
        #[layer(position_embedding)]
        position: PositionEmbedding,
        #[layer(layer_norm)]
        block1_ln1: LayerNorm,
        #[layer(multi_head_attention(heads = 4))]
        block1_attn: MultiHeadAttention,
        #[layer(layer_norm)]
        block1_ln2: LayerNorm,
        #[layer(linear(out = 128), gelu_exact)]
        block1_mlp_in: Linear,
        #[layer(linear(out = 64))]
        block1_mlp_out: Linear,
        #[layer(layer_norm)]
        block2_ln1: LayerNorm,
        #[layer(multi_head_attention(heads = 4))]
        block2_attn: MultiHeadAttention,
        #[layer(layer_norm)]
        block2_ln2: LayerNorm,
        #[layer(linear(out = 128), gelu_exact)]
        block2_mlp_in: Linear,
        #[layer(linear(out = 64))]
        block2_mlp_out: Linear,
        #[layer(layer_norm)]
        final_ln: LayerNorm,
        #[layer(mean, linear(out = 10))]
        head: Linear,
    }

    impl MnistVit {
        fn forward(&self, x: Input) -> Output {
            let h = self.position(self.patch_embedding(x));
            let h = h + self.block1_attn(self.block1_ln1(h));
            let h = h + self.block1_mlp_out(self.block1_mlp_in(self.block1_ln2(h)));
            let h = h + self.block2_attn(self.block2_ln1(h));
            let h = h + self.block2_mlp_out(self.block2_mlp_in(self.block2_ln2(h)));
            self.head(self.final_ln(h))
        }
    }
}
