use dp::dp_model;

#[dp_model(input = [8, 16], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(multi_head_attention(causal = true), first)]
    attn: MultiHeadAttention,
    #[layer(linear(out = 2))]
    head: Linear,
}

fn main() {}
