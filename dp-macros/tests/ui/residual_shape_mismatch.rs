use dp::dp_model;

#[dp_model(input = [2, 8, 8], loss = cross_entropy(classes = 2))]
mod net {
    pub struct Net {
        #[layer(conv2d(out = 4, kernel = 3, padding = 1))]
        a: Conv2d,
        #[layer(global_avg_pool, linear(out = 2))]
        head: Linear,
    }

    impl Net {
        fn forward(&self, x: Input) -> Output {
            let h = self.a(x);
            self.head(h + x)
        }
    }
}

fn main() {}
