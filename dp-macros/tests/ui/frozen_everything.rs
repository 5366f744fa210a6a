use dp::dp_model;

#[dp_model(input = [8], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 4), relu, frozen)]
    fc1: Linear,
    #[layer(linear(out = 2), frozen)]
    fc2: Linear,
}

fn main() {}
