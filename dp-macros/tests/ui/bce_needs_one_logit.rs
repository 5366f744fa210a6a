use dp::dp_model;

#[dp_model(input = [104], loss = binary_cross_entropy)]
struct Model {
    #[layer(linear(out = 2))]
    fc: Linear,
}

fn main() {}
