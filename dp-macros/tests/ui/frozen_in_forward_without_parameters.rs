use dp::dp_model;

#[dp_model(input = [4, 8], loss = cross_entropy(classes = 2))]
mod net {
    pub struct Net {
        #[layer(linear(out = 8), frozen)]
        fc1: Linear,
        #[layer(mean, frozen)]
        pool: Mean,
        #[layer(linear(out = 2))]
        head: Linear,
    }

    impl Net {
        fn forward(&self, x: Input) -> Output {
            let h = self.fc1(x);
            let h = self.pool(h + x);
            self.head(h)
        }
    }
}

fn main() {}
