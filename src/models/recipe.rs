//! Recommended training recipes of the built-in models: what `dp train --model M --data D
//! --target-epsilon E` uses for every hyperparameter the command line does not set, what `dp models`
//! prints, and what the examples train with.
//!
//! A recipe is chosen on public data (the datasets shipped in `data/`) or taken from the literature,
//! never tuned on a user's private data: tuning on private data spends privacy that no ledger records.
//! Each recipe says where it came from.

use dp_runtime::data::standardize::{self, Standardization};
use dp_runtime::optim::{Schedule, Sgd};

/// The momentum of every recipe's SGD (the usual value, as in the founding paper's runs).
pub const MOMENTUM: f64 = 0.9;

/// The hyperparameters of one private training run, apart from the privacy target.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Recipe {
    /// Expected batch size B (Poisson sampling with rate B/N).
    pub batch_size: usize,
    /// Epochs: round(epochs · N / B) steps.
    pub epochs: f64,
    /// Clip norm C of each example's gradient.
    pub clip_norm: f64,
    /// Base learning rate of SGD with momentum [`MOMENTUM`].
    pub lr: f64,
    /// The learning rate decays along a cosine to this fraction of `lr` by the last step (1: constant).
    pub final_lr_fraction: f64,
    /// The decay of the moving average of the parameters that is evaluated and saved instead of the
    /// raw parameters (`Trainer::ema`; post-processing, no privacy cost); `None`: the raw parameters.
    pub ema_decay: Option<f64>,
    /// Public constants the inputs are standardised with after loading; `None`: inputs as loaded.
    pub input_standardization: Option<Standardization>,
    /// Where the recipe comes from, and what it measured.
    pub source: &'static str,
}

impl Recipe {
    /// The recipe's optimizer: SGD with momentum and its learning-rate schedule.
    pub fn optimizer(&self) -> Sgd {
        Sgd::new(self.lr).momentum(MOMENTUM).schedule(schedule(self.final_lr_fraction))
    }
}

/// A cosine decay of the learning rate to `final_fraction` of it by the last step; constant at 1.
pub fn schedule(final_fraction: f64) -> Schedule {
    if final_fraction == 1.0 {
        Schedule::Constant
    } else {
        Schedule::Cosine { final_fraction }
    }
}

/// Logistic regression on Adult.
pub const LOGREG: Recipe = Recipe {
    batch_size: 256,
    epochs: 10.0,
    clip_norm: 1.0,
    lr: 0.05,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source: "the fully connected network's recipe applied unchanged (not tuned for this model)",
};

/// The founding paper's fully connected network on Adult.
pub const FFNN: Recipe = Recipe {
    batch_size: 256,
    epochs: 10.0,
    clip_norm: 1.0,
    lr: 0.05,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source: "measured on the shipped Adult data: 85.2% at epsilon 1 (examples/adult.rs, docs/CLI.md)",
};

/// The founding paper's MNIST CNN: the main job's recipe.
pub const MNIST_CNN: Recipe = Recipe {
    batch_size: 512,
    epochs: 30.0,
    clip_norm: 1.0,
    lr: 0.1,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source:
        "the DP-SGD literature for this model (Abadi et al. 2016; Papernot et al. 2021), measured on the \
             shipped MNIST (the main job, examples/mnist.rs)",
};

/// The MNIST CNN with tanh (Papernot et al. 2021).
pub const MNIST_CNN_TANH: Recipe = Recipe {
    batch_size: 512,
    epochs: 30.0,
    clip_norm: 1.0,
    lr: 0.1,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: Some(standardize::MNIST),
    source: "the MNIST CNN's recipe with MNIST's public standardisation; measured on the shipped MNIST: \
             98.01 +- 0.13% at epsilon 3 (3 runs; Papernot et al. 2021: 98.1% at epsilon 2.93), \
             docs/ACCURACY.md",
};

/// The CNN on ScatterNet features (Tramèr & Boneh 2021).
pub const SCATTER_CNN: Recipe = Recipe {
    batch_size: 1024,
    epochs: 30.0,
    clip_norm: 0.1,
    lr: 4.0,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source: "after Tramer & Boneh 2021 (clip norm 0.1, SGD with momentum 0.9, large batches); measured on \
             the shipped MNIST: 98.26 +- 0.07% at epsilon 3 (5 runs), 98.06 +- 0.15% at epsilon 2 (3 runs), \
             88.85% at epsilon 3 on Animal-MNIST unchanged (docs/ACCURACY.md)",
};

/// The founding paper's CIFAR-10 CNN and the residual CNN.
pub const CIFAR10_CNN: Recipe = Recipe {
    batch_size: 512,
    epochs: 30.0,
    clip_norm: 1.0,
    lr: 0.1,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source: "the MNIST CNN's recipe; not measured on CIFAR-10, which the project does not ship",
};

/// The embedding network and the LSTM on the reviews text.
pub const TEXT: Recipe = Recipe {
    batch_size: 256,
    epochs: 10.0,
    clip_norm: 1.0,
    lr: 0.5,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source: "not tuned: the settings of the earlier reviews examples; measured on the shipped reviews the \
             embedding network stays at the majority class (81.4% at epsilon 3, also without privacy; LSTM not \
             measured), see docs/MODELS.md"
};

/// The text transformer on the reviews text.
pub const TEXT_TRANSFORMER: Recipe = Recipe {
    batch_size: 256,
    epochs: 1.0,
    clip_norm: 1.0,
    lr: 0.1,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source: "not tuned, and not a good recipe yet: measured on the shipped reviews it stays at the majority class \
             (81.39% at epsilon 3 after 1 epoch; the same with Adam at lr 0.001), see docs/MODELS.md",
};

/// The vision transformer on MNIST.
pub const MNIST_VIT: Recipe = Recipe {
    batch_size: 512,
    epochs: 3.0,
    clip_norm: 1.0,
    lr: 0.5,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source:
        "not tuned (the third of four guesses): the MNIST CNN's batch and clip norm; measured on the shipped \
             MNIST: 85.90% at epsilon 3 (one run), docs/MODELS.md",
};

/// The LoRA text transformer, fine-tuned from a `text-transformer` checkpoint.
pub const TEXT_TRANSFORMER_LORA: Recipe = Recipe {
    batch_size: 256,
    epochs: 1.0,
    clip_norm: 1.0,
    lr: 0.1,
    final_lr_fraction: 0.1,
    ema_decay: None,
    input_standardization: None,
    source:
        "the text transformer's recipe, not tuned for LoRA and not measured: the model exists to measure \
             the speed of private LoRA fine-tuning (docs/MODELS.md)",
};
