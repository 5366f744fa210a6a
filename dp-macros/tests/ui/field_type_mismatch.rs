use dp::dp_model;

#[dp_model(input = [104], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 50), relu)]
    fc1: Conv2d,
    #[layer(linear(out = 2))]
    fc2: Vec<f32>,
}

fn main() {}
