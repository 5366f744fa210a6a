use dp::dp_model;

#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
struct Model {
    #[layer(multi_head_attention(heads = 2))]
    attn: MultiHeadAttention,
    #[layer(flatten, linear(out = 10))]
    head: Linear,
}

fn main() {}
