use dp::dp_model;

#[dp_model(input = [104], loss = mse)]
struct Model(Linear);

fn main() {}
