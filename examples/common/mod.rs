//! The training loop shared by the examples, written once for any model: private (DP-SGD to a target
//! ε with the trainer) or, with `--non-private`, ordinary SGD on the same model for comparison.

use std::time::Instant;

use clap::Parser;
use dp::baseline::{self, BaselineConfig};
use dp::optim::{Schedule, Sgd};
use dp::{Dataset, DpModel, Report, Trainer};

/// Flags every example takes; each example sets its own defaults in [`Defaults`].
#[derive(Debug, Parser)]
pub struct Flags {
    /// Epochs (may be fractional).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Stop after this many steps (CI); the noise stays that of the whole plan.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// The ε to reach at the end of the plan.
    #[arg(long)]
    pub target_epsilon: Option<f64>,
    /// Train the same model without privacy, for comparison.
    #[arg(long)]
    pub non_private: bool,
}

/// The hyperparameters of one example.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub epochs: f64,
    pub target_epsilon: f64,
    pub delta: f64,
    pub batch_size: usize,
    pub clip_norm: f64,
    pub lr: f64,
    pub momentum: f64,
    /// The learning rate decays along a cosine to this fraction of `lr` by the last step.
    pub final_lr_fraction: f64,
}

/// Trains model `M` on `train`, evaluates on `test`, and prints accuracy, ε and wall time.
pub fn run<M: DpModel>(
    name: &str,
    train: &Dataset<M::Input>,
    test: &Dataset<M::Input>,
    defaults: Defaults,
) -> dp::Result<Report> {
    let flags = Flags::parse();
    let epochs = flags.epochs.unwrap_or(defaults.epochs);
    let optimizer = Sgd::new(defaults.lr)
        .momentum(defaults.momentum)
        .schedule(Schedule::Cosine { final_fraction: defaults.final_lr_fraction });
    let mut model = M::init(&mut dp::rng::from_os()?);
    println!(
        "{name}: {} parameters, {} training and {} test examples",
        M::PARAM_COUNT,
        train.len(),
        test.len()
    );
    let started = Instant::now();
    let report = if flags.non_private {
        let mut optimizer = optimizer;
        let config = BaselineConfig {
            batch_size: defaults.batch_size,
            epochs,
            max_steps: flags.max_steps,
            seed: None,
            quiet: false,
        };
        baseline::fit_non_private(&mut model, &mut optimizer, train, test, config, |_| {})?
    } else {
        let target = flags.target_epsilon.unwrap_or(defaults.target_epsilon);
        let mut trainer = Trainer::new(&mut model)
            .optimizer(optimizer)
            .clip_norm(defaults.clip_norm)
            .target_privacy(target, defaults.delta)
            .expected_batch_size(defaults.batch_size)
            .epochs(epochs);
        if let Some(max) = flags.max_steps {
            trainer = trainer.max_steps(max);
        }
        trainer.fit(train, Some(test))?
    };
    let seconds = started.elapsed().as_secs_f64();
    if report.stopped_at_max_steps {
        println!("(cut short by --max-steps: {} of {} planned steps)", report.steps, report.planned_steps);
    }
    let privacy = if report.epsilon.is_finite() {
        format!(
            "epsilon {:.3} at delta {:e} (noise multiplier {:.4})",
            report.epsilon, report.delta, report.noise_multiplier
        )
    } else {
        "without privacy".to_string()
    };
    println!(
        "test accuracy {:.2}% {privacy}; {} steps of expected batch {} in {seconds:.1} s",
        report.accuracy * 100.0,
        report.steps,
        report.expected_batch_size
    );
    Ok(report)
}
