use dp::dp_model;

#[dp_model(input = [104], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 50, in = 100), relu)]
    fc1: Linear,
    #[layer(linear(out = 2, in = 50))]
    fc2: Linear,
}

fn main() {}
