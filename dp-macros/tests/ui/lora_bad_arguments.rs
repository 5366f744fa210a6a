use dp::dp_model;

#[dp_model(input = [8], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(linear(out = 4, lora(rank = 0, alpha = -2.0)))]
    fc1: Linear,
    #[layer(linear(out = 4, lora = 3))]
    fc2: Linear,
    #[layer(linear(out = 2, lora(rank = 2, scale = 1)))]
    fc3: Linear,
}

fn main() {}
