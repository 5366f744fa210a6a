//! The training loop shared by the examples, written once for any model: private (DP-SGD to a target
//! ε with the trainer) or, with `--non-private`, ordinary SGD on the same model for comparison.

use std::time::Instant;

use clap::Parser;
use dp::baseline::{self, BaselineConfig};
use dp::models::recipe::Recipe;
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
    /// The learning rate instead of the recipe's (a recipe's rate is for clipped gradients; an
    /// unclipped `--non-private` run may need a smaller one).
    #[arg(long)]
    pub lr: Option<f64>,
}

/// The privacy target and training recipe of one example (the recipe `dp train` uses for the model).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub target_epsilon: f64,
    pub delta: f64,
    pub recipe: Recipe,
}

/// Trains model `M` on `train`, evaluates on `test`, and prints accuracy, ε and wall time.
pub fn run<M: DpModel>(
    name: &str,
    train: Dataset<M::Input>,
    test: Dataset<M::Input>,
    defaults: Defaults,
) -> dp::Result<Report> {
    let flags = Flags::parse();
    let recipe = Recipe { lr: flags.lr.unwrap_or(defaults.recipe.lr), ..defaults.recipe };
    let (mut train, mut test) = (train, test);
    if let Some(standardization) = recipe.input_standardization {
        standardization.apply(&mut train)?;
        standardization.apply(&mut test)?;
    }
    let epochs = flags.epochs.unwrap_or(recipe.epochs);
    let optimizer = recipe.optimizer();
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
            batch_size: recipe.batch_size,
            epochs,
            max_steps: flags.max_steps,
            seed: None,
            quiet: false,
            precision: dp::Precision::F32,
        };
        baseline::fit_non_private(&mut model, &mut optimizer, &train, &test, config, |_| {})?
    } else {
        let target = flags.target_epsilon.unwrap_or(defaults.target_epsilon);
        let mut trainer = Trainer::new(&mut model)
            .optimizer(optimizer)
            .clip_norm(recipe.clip_norm)
            .target_privacy(target, defaults.delta)
            .expected_batch_size(recipe.batch_size)
            .epochs(epochs);
        if let Some(decay) = recipe.ema_decay {
            trainer = trainer.ema(decay);
        }
        if let Some(max) = flags.max_steps {
            trainer = trainer.max_steps(max);
        }
        trainer.fit(&train, Some(&test))?
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
