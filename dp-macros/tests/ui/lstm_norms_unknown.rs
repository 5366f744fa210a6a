use dp::dp_model;

#[dp_model(input = [8, 4], loss = mse)]
struct Model {
    #[layer(lstm(hidden = 3, norms = exact), mean)]
    rnn: Lstm,
}

fn main() {}
