use dp::dp_model;

#[dp_model(input = [1, 8, 8], loss = cross_entropy(classes = 4))]
struct Model {
    #[layer(conv2d(out = 4, kernel = 3))]
    conv: Conv2d,
    #[layer(group_norm(groups = 3), global_avg_pool)]
    norm: GroupNorm,
}

fn main() {}
