use dp::dp_model;

#[dp_model(input = tokens(len = 8, vocab = 100), loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(embedding(dim = 16))]
    first: Embedding,
    #[layer(embedding(dim = 4), mean)]
    second: Embedding,
    #[layer(linear(out = 2))]
    fc: Linear,
}

fn main() {}
