//! The main job: MNIST to ε = 3 (δ = 1e-5) with the project's best recipe, printing test accuracy
//! and ε: about 4–7 minutes on a 2-core machine, depending on the machine (docs/ACCURACY.md).
//!
//! ```sh
//! cargo run --release --example mnist                      # the full run
//! cargo run --release --example mnist -- --max-steps 200   # a short run (CI)
//! cargo run --release --example mnist -- --non-private --lr 0.1   # the same model without privacy
//! ```
//! Flags: `--epochs`, `--max-steps`, `--target-epsilon`, `--non-private`, `--lr`.
//!
//! The recipe is Tramèr & Boneh's (ICLR 2021): every image becomes its ScatterNet features (a fixed
//! 2-D scattering transform, J = 2, L = 8: 81 channels of 7×7; a per-example function, so it costs
//! no privacy), and a small CNN with group norm and tanh (`ScatterCnn`, 33,228 parameters) is trained
//! on them with DP-SGD: Poisson batches, per-example clipping, the noise multiplier calibrated for
//! ε = 3 over the whole plan. The hyperparameters are `dp::models::recipe::SCATTER_CNN` (`dp models`
//! prints them); docs/ACCURACY.md has the measured accuracies.

mod common;

use std::time::Instant;

use common::Defaults;
use dp::data::scattering::Scattering2d;
use dp::models::recipe;
use dp::models::ScatterCnn;

fn main() -> dp::Result<()> {
    let (train, test) = dp::data::mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))?;
    let started = Instant::now();
    let scattering = Scattering2d::new(28, 28, 2, 8)?;
    let (train, test) = (scattering.transform_dataset(&train)?, scattering.transform_dataset(&test)?);
    println!(
        "ScatterNet features (J = 2, L = 8, {:?} per image) of {} images in {:.1} s",
        scattering.output_shape(),
        train.len() + test.len(),
        started.elapsed().as_secs_f64()
    );
    let defaults = Defaults { target_epsilon: 3.0, delta: 1e-5, recipe: recipe::SCATTER_CNN };
    common::run::<ScatterCnn>("ScatterCnn", train, test, defaults)?;
    Ok(())
}
