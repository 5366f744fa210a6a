//! Private fine-tuning: pretrain without privacy on public data, then train privately on a different,
//! private task, four ways at the same ε, and print the table.
//!
//! ```sh
//! cargo run --release --example finetune                        # ε = 3, about three minutes on 2 cores
//! cargo run --release --example finetune -- --target-epsilon 1
//! ```
//!
//! **The data.** MNIST's training set split by class stands in for a public/private pair: the
//! pretraining set is the images of digits 0–4 (public here by assumption, as a published dataset
//! would be), the private task is telling apart digits 5–9, trained on the training images of 5–9 and
//! tested on the test images of 5–9. The two sets share no image, so the pretrained weights do not
//! depend on the private examples — what makes pretrained weights usable as public input
//! (docs/PRIVACY.md). The pretraining is not private and spends no ε of the private task.
//!
//! **The four ways** (the same CNN, MNIST's founding-paper architecture; the same DP-SGD recipe):
//! - *from scratch*: random initialisation, every parameter trained privately;
//! - *full fine-tuning*: from the pretrained weights, every parameter trained privately;
//! - *LoRA*: from the pretrained weights, both convolutions frozen, the first linear layer frozen with
//!   rank-4 adapters beside it, the classifier trained: 2,506 of 28,186 parameters get noise;
//! - *head only*: from the pretrained weights, everything frozen but the classifier (330 parameters).

use std::time::Instant;

use clap::Parser;
use dp::baseline::{self, BaselineConfig};
use dp::models::MnistCnn;
use dp::optim::Sgd;
use dp::pretrained::{self, InitOptions};
use dp::pytorch::{Layout, StateDict};
use dp::{dp_model, Dataset, DpModel, Trainer};

/// The MNIST CNN with its convolutions frozen and LoRA adapters on its first linear layer.
#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
pub struct LoraCnn {
    #[layer(
        conv2d(out = 16, kernel = 8, stride = 2, padding = 3),
        relu,
        max_pool2d(kernel = 2, stride = 1),
        frozen
    )]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 4, stride = 2), relu, max_pool2d(kernel = 2, stride = 1), frozen)]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32, lora(rank = 4, alpha = 8)), relu)]
    fc1: Linear,
    #[layer(linear(out = 10))]
    fc2: Linear,
}

/// The MNIST CNN with everything but its classifier frozen (a linear probe of the pretrained features).
#[dp_model(input = [1, 28, 28], loss = cross_entropy(classes = 10))]
pub struct HeadOnlyCnn {
    #[layer(
        conv2d(out = 16, kernel = 8, stride = 2, padding = 3),
        relu,
        max_pool2d(kernel = 2, stride = 1),
        frozen
    )]
    conv1: Conv2d,
    #[layer(conv2d(out = 32, kernel = 4, stride = 2), relu, max_pool2d(kernel = 2, stride = 1), frozen)]
    conv2: Conv2d,
    #[layer(flatten, linear(out = 32), relu, frozen)]
    fc1: Linear,
    #[layer(linear(out = 10))]
    fc2: Linear,
}

#[derive(Debug, Parser)]
struct Flags {
    /// The ε of each private run (δ = 1e-5).
    #[arg(long, default_value_t = 3.0)]
    target_epsilon: f64,
    /// Epochs of each private run over the private training set.
    #[arg(long, default_value_t = 10.0)]
    epochs: f64,
    /// Epochs of the non-private pretraining.
    #[arg(long, default_value_t = 2.0)]
    pretrain_epochs: f64,
    /// Stop each private run after this many steps (a quick look; the noise stays the whole plan's).
    #[arg(long)]
    max_steps: Option<u64>,
}

/// The DP-SGD recipe of every private run: the MNIST CNN's (`dp::models::recipe::MNIST_CNN`) with
/// its batch, clip norm and learning rate, over fewer epochs of a smaller dataset.
const BATCH: usize = 512;
const CLIP_NORM: f64 = 1.0;
const LR: f64 = 0.1;
const DELTA: f64 = 1e-5;

fn main() -> dp::Result<()> {
    let flags = Flags::parse();
    let (train, test) = dp::data::mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))?;
    let public = digits(&train, 0..5)?;
    let (private_train, private_test) = (digits(&train, 5..10)?, digits(&test, 5..10)?);
    println!(
        "public pretraining set: {} images of digits 0-4; private task: digits 5-9, {} training and {} test images",
        public.len(),
        private_train.len(),
        private_test.len()
    );

    let started = Instant::now();
    let mut pretrained = MnistCnn::init(&mut dp::rng::from_os()?);
    let config = BaselineConfig {
        batch_size: 128,
        epochs: flags.pretrain_epochs,
        max_steps: None,
        seed: None,
        quiet: true,
        precision: dp::Precision::F32,
    };
    let mut optimizer = Sgd::new(0.05).momentum(0.9);
    let public_test = digits(&test, 0..5)?;
    let report =
        baseline::fit_non_private(&mut pretrained, &mut optimizer, &public, &public_test, config, |_| {})?;
    println!(
        "pretrained without privacy on digits 0-4: {:.2}% on their test images, {:.1} s",
        report.accuracy * 100.0,
        started.elapsed().as_secs_f64()
    );
    let weights = StateDict {
        tensors: Layout::of::<MnistCnn>().export(pretrained.params())?,
        metadata: Default::default(),
    };

    let (train, test) = (&private_train, &private_test);
    let rows = [
        private_run::<MnistCnn>("from scratch", None, &flags, train, test)?,
        private_run::<MnistCnn>("full fine-tuning", Some(&weights), &flags, train, test)?,
        private_run::<LoraCnn>("LoRA (rank 4)", Some(&weights), &flags, train, test)?,
        private_run::<HeadOnlyCnn>("head only", Some(&weights), &flags, train, test)?,
    ];

    println!("\nprivate task (digits 5-9) at epsilon {} (delta {DELTA:e}):", flags.target_epsilon);
    println!("| run | trained parameters | test accuracy | epsilon | steps | seconds |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} of {} | {:.2}% | {:.3} | {} | {:.1} |",
            row.name, row.trained, row.total, row.accuracy, row.epsilon, row.steps, row.seconds
        );
    }
    Ok(())
}

/// One private run's line of the table.
struct Row {
    name: &'static str,
    trained: usize,
    total: usize,
    accuracy: f64,
    epsilon: f64,
    steps: u64,
    seconds: f64,
}

/// Trains `M` privately on the private task, from `weights` when given (missing keys — LoRA's
/// adapters — keep their initial values) or from a random initialisation.
fn private_run<M: DpModel<Input = f32>>(
    name: &'static str,
    weights: Option<&StateDict>,
    flags: &Flags,
    train: &Dataset<f32>,
    test: &Dataset<f32>,
) -> dp::Result<Row> {
    let mut model = M::init(&mut dp::rng::from_os()?);
    if let Some(weights) = weights {
        let options = InitOptions { strict: false, ..InitOptions::default() };
        let path = std::path::Path::new("<pretrained on digits 0-4>");
        let loaded =
            pretrained::init_from_dict(Layout::of::<M>(), model.params_mut(), path, weights, &options)?;
        println!("{name}: {}", loaded.summary());
    }
    let started = Instant::now();
    let mut trainer = Trainer::new(&mut model)
        .optimizer(Sgd::new(LR).momentum(0.9))
        .clip_norm(CLIP_NORM)
        .target_privacy(flags.target_epsilon, DELTA)
        .expected_batch_size(BATCH)
        .epochs(flags.epochs)
        .quiet(true);
    if let Some(max) = flags.max_steps {
        trainer = trainer.max_steps(max);
    }
    let report = trainer.fit(train, Some(test))?;
    let row = Row {
        name,
        trained: M::TRAINED_PARAM_COUNT,
        total: M::PARAM_COUNT,
        accuracy: report.accuracy * 100.0,
        epsilon: report.epsilon,
        steps: report.steps,
        seconds: started.elapsed().as_secs_f64(),
    };
    println!("{name}: {:.2}% at epsilon {:.3} in {:.1} s", row.accuracy, row.epsilon, row.seconds);
    Ok(row)
}

/// The examples of `data` whose class label is in `classes`.
fn digits(data: &Dataset<f32>, classes: std::ops::Range<usize>) -> dp::Result<Dataset<f32>> {
    let keep: Vec<usize> =
        (0..data.len()).filter(|&i| classes.contains(&(data.label(i)[0] as usize))).collect();
    let (mut inputs, mut labels) = (Vec::new(), Vec::new());
    data.gather(&keep, &mut inputs, &mut labels);
    Dataset::new(inputs, labels, data.example_shape.clone(), data.label_len)
}
