use dp::dp_model;

#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
struct Model {
    #[layer(patches(size = 5), linear(out = 16), mean)]
    embed: Linear,
    #[layer(linear(out = 10))]
    head: Linear,
}

fn main() {}
