use dp::dp_model;

#[dp_model(input = [2, 8, 8], loss = cross_entropy(classes = 6))]
struct Model {
    #[layer(conv2d(out = 6, kernel = 3, groups = 3), global_avg_pool)]
    conv: Conv2d,
}

fn main() {}
