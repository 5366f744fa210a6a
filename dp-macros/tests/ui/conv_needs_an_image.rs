use dp::dp_model;

#[dp_model(input = [64], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(conv2d(out = 2, kernel = 3), global_avg_pool)]
    conv: Conv2d,
}

fn main() {}
