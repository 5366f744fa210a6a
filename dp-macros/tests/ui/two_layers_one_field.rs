use dp::dp_model;

#[dp_model(input = [104], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 50), relu, linear(out = 2))]
    fc: Linear,
}

fn main() {}
