use dp::dp_model;

#[dp_model(input = [104], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = "50"), relu)]
    fc1: Linear,
    #[layer(linear(out = 1.5))]
    fc2: Linear,
    #[layer(linear(out = 2, bias = 0))]
    fc3: Linear,
}

fn main() {}
