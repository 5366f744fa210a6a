use dp::dp_model;

#[dp_model(input = [8, 16], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 32, in = 8), mean)]
    fc1: Linear,
    #[layer(linear(out = 2))]
    fc2: Linear,
}

fn main() {}
