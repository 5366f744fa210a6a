use dp::dp_model;

#[dp_model(input = [104], loss = cross_entropy(classes = 3))]
struct Model {
    #[layer(linear(out = 50), relu)]
    fc1: Linear,
    #[layer(linear(out = 2))]
    fc2: Linear,
}

fn main() {}
