use dp::dp_model;

#[dp_model(input = [1, 6, 6], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(conv2d(out = 2, kernel = 3), max_pool2d(kernel = 5), global_avg_pool)]
    conv: Conv2d,
}

fn main() {}
