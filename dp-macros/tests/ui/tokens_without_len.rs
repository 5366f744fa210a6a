use dp::dp_model;

#[dp_model(input = tokens(vocab = 10004), loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(embedding(dim = 16), mean)]
    embedding: Embedding,
    #[layer(linear(out = 2))]
    fc: Linear,
}

fn main() {}
