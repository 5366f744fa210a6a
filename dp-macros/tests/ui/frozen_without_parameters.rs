use dp::dp_model;

#[dp_model(input = [8], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 4))]
    fc1: Linear,
    #[layer(relu, frozen)]
    act: Relu,
    #[layer(linear(out = 2))]
    fc2: Linear,
}

fn main() {}
