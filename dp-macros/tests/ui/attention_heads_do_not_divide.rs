use dp::dp_model;

#[dp_model(input = tokens(len = 16, vocab = 100), loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(embedding(dim = 10))]
    embed: Embedding,
    #[layer(multi_head_attention(heads = 4), mean)]
    attn: MultiHeadAttention,
    #[layer(linear(out = 2))]
    head: Linear,
}

fn main() {}
