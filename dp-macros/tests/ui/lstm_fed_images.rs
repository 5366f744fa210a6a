use dp::dp_model;

#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
struct Model {
    #[layer(lstm(hidden = 32), mean)]
    rnn: Lstm,
    #[layer(linear(out = 10))]
    fc: Linear,
}

fn main() {}
