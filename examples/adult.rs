//! The quick job: the founding paper's fully connected network on UCI Adult, trained privately to
//! ε = 1 (δ = 1e-5) in seconds, printing test accuracy and ε.
//!
//! ```sh
//! cargo run --release --example adult
//! cargo run --release --example adult -- --non-private   # the same model without privacy
//! ```
//! Flags: `--epochs`, `--max-steps`, `--target-epsilon`, `--non-private`.

mod common;

use common::Defaults;
use dp::models::recipe;
use dp::models::AdultFfnn;

fn main() -> dp::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/adult");
    let (train, test) =
        dp::data::adult::load(format!("{dir}/adult_train.csv.gz"), format!("{dir}/adult_test.csv.gz"))?;
    let defaults = Defaults { target_epsilon: 1.0, delta: 1e-5, recipe: recipe::FFNN };
    common::run::<AdultFfnn>("AdultFfnn", train, test, defaults)?;
    Ok(())
}
