use dp::dp_model;

#[dp_model(input = [104], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(lineer(out = 2))]
    fc: Linear,
}

fn main() {}
