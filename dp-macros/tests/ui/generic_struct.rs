use dp::dp_model;

#[dp_model(input = [104], loss = mse)]
struct Model<T> {
    #[layer(linear(out = 1))]
    fc: T,
}

fn main() {}
