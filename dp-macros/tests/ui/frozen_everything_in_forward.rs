use dp::dp_model;

#[dp_model(input = [4, 8], loss = cross_entropy(classes = 2))]
mod net {
    pub struct Net {
        #[layer(linear(out = 8), frozen)]
        fc1: Linear,
        #[layer(mean, linear(out = 2), frozen)]
        head: Linear,
    }

    impl Net {
        fn forward(&self, x: Input) -> Output {
            let h = self.fc1(x);
            self.head(h + x)
        }
    }
}

fn main() {}
