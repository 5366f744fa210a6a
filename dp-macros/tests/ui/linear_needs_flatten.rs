use dp::dp_model;

#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
struct Model {
    #[layer(linear(out = 10))]
    fc: Linear,
}

fn main() {}
