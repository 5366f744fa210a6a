use dp::dp_model;

#[dp_model(input = [32], loss = cross_entropy(classes = 2))]
struct Model {
    #[layer(position_embedding)]
    pos: PositionEmbedding,
    #[layer(linear(out = 2))]
    head: Linear,
}

fn main() {}
