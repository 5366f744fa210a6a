use dp::dp_model;

#[dp_model(input = tokens(len = 256, vocab = 10004), loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 2))]
    fc: Linear,
}

fn main() {}
