use dp::dp_model;

#[dp_model(loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 2))]
    fc: Linear,
}

fn main() {}
