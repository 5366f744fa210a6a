use dp::dp_model;

#[dp_model(input = [8], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 4), frozen(all = true))]
    fc1: Linear,
    #[layer(linear(out = 2))]
    fc2: Linear,
}

fn main() {}
