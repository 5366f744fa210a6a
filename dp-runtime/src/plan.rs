//! The privacy plan: the ONE object that holds the sampling rate, the normalisation, the step count,
//! the noise multiplier and the ledger, so that sampling, noise and accounting cannot disagree.
//!
//! - sampling rate q = B / N for the expected batch size B and N training examples;
//! - the noisy clipped sum is divided by B (the expected size), never by the realised size;
//! - steps: given directly, or from epochs as T = round(epochs · N / B) (half up, at least 1), so an
//!   epoch is N/B steps on average; epoch e ends after step min(T, round(e · N / B));
//! - σ: given, or calibrated by the accountant for a target ε at (q, T, δ);
//! - every step is recorded in the ledger with this q and σ (and, in secure mode, as a discrete
//!   Gaussian with its grid sensitivity), whatever the realised batch size, including empty batches.

use crate::accounting::{self, AccountantKind, Epsilon, Ledger, Mechanism};
use crate::error::{Error, Result};
use crate::sampling::SamplingMode;

/// Refuses δ ≥ 1/N for N training examples, naming `delta`. A mechanism that publishes one randomly
/// chosen example in full is (0, 1/N)-differentially private, so a guarantee at δ ≥ 1/N allows
/// releasing someone's record outright: it protects nobody. The trainer calls this unless
/// `allow_large_delta(true)`; a command line can call it for its own δ.
pub fn check_delta_for_examples(delta: f64, examples: usize) -> Result<()> {
    if examples > 0 && delta * examples as f64 >= 1.0 {
        return Err(Error::invalid(
            "delta",
            format!(
                "{delta:e} is not below 1/N = {:e} for N = {examples} training examples: a mechanism that \
                 publishes one randomly chosen example outright satisfies (0, 1/N)-DP, so this delta \
                 protects nobody; choose delta well below 1/N (e.g. at most 1/(10 N) = {:e}), or allow it \
                 explicitly (allow_large_delta)",
                1.0 / examples as f64,
                0.1 / examples as f64
            ),
        ));
    }
    Ok(())
}

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    /// Epochs (may be fractional): T = round(epochs · N / B).
    Epochs(f64),
    /// Steps directly.
    Steps(u64),
}

/// Where the noise multiplier comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseSpec {
    /// σ given.
    Multiplier(f64),
    /// σ calibrated so that the whole plan spends this ε.
    TargetEpsilon(f64),
}

/// The grid of secure mode, fixed by the model's dimension and the clip norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecureGrid {
    /// L2 sensitivity of one example on the integer grid (C/γ + √d/2).
    pub l2_sensitivity: f64,
    /// Number of parameters d.
    pub dimension: usize,
}

/// Everything a plan is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// N, the number of training examples.
    pub examples: usize,
    /// B, the expected batch size.
    pub expected_batch_size: usize,
    /// Epochs or steps.
    pub length: Length,
    /// σ or a target ε.
    pub noise: NoiseSpec,
    /// δ of the reported ε.
    pub delta: f64,
    /// RDP or PLD.
    pub accountant: AccountantKind,
    /// Poisson or shuffled (accounted as Poisson either way).
    pub sampling: SamplingMode,
    /// `Some` in secure mode: steps are accounted as a discrete Gaussian on this grid.
    pub secure: Option<SecureGrid>,
}

/// The privacy plan of one training run (see the module docs).
#[derive(Debug, Clone)]
pub struct PrivacyPlan {
    examples: usize,
    expected_batch_size: usize,
    sampling_rate: f64,
    total_steps: u64,
    noise_multiplier: f64,
    delta: f64,
    accountant: AccountantKind,
    sampling: SamplingMode,
    secure: Option<SecureGrid>,
    /// The discrete Gaussian σ actually sampled, in grid units (secure mode), set by the trainer.
    discrete_sigma: Option<f64>,
    ledger: Ledger,
    /// Steps taken but not yet written to the ledger (recorded in runs to keep the ledger short).
    pending: u64,
}

impl PrivacyPlan {
    /// Validates `config` (errors name the builder field) and builds the plan, continuing `ledger`
    /// (empty for a new run, the checkpoint's for a resumed one).
    pub fn new(config: &PlanConfig, ledger: Ledger) -> Result<Self> {
        let n = config.examples;
        let b = config.expected_batch_size;
        if n == 0 {
            return Err(Error::invalid("train", "the training set is empty"));
        }
        if b == 0 || b > n {
            return Err(Error::invalid(
                "expected_batch_size",
                format!("{b} must be between 1 and the number of training examples ({n})"),
            ));
        }
        if !(config.delta > 0.0 && config.delta < 1.0) {
            return Err(Error::invalid("delta", format!("{} must be in (0, 1)", config.delta)));
        }
        let sampling_rate = b as f64 / n as f64;
        let total_steps = match config.length {
            Length::Steps(0) => return Err(Error::invalid("steps", "must be at least 1")),
            Length::Steps(t) => t,
            Length::Epochs(e) if !(e > 0.0 && e.is_finite()) => {
                return Err(Error::invalid("epochs", format!("{e} must be positive and finite")))
            }
            Length::Epochs(e) => ((e * n as f64 / b as f64 + 0.5).floor() as u64).max(1),
        };
        let mut plan = PrivacyPlan {
            examples: n,
            expected_batch_size: b,
            sampling_rate,
            total_steps,
            noise_multiplier: 0.0,
            delta: config.delta,
            accountant: config.accountant,
            sampling: config.sampling,
            secure: config.secure,
            discrete_sigma: None,
            ledger,
            pending: 0,
        };
        plan.noise_multiplier = match config.noise {
            NoiseSpec::Multiplier(s) if !(s > 0.0 && s.is_finite()) => {
                return Err(Error::invalid("noise_multiplier", format!("{s} must be positive and finite")))
            }
            NoiseSpec::Multiplier(s) => s,
            NoiseSpec::TargetEpsilon(e) if !(e > 0.0 && e.is_finite()) => {
                return Err(Error::invalid(
                    "target_privacy",
                    format!("epsilon {e} must be positive and finite"),
                ))
            }
            NoiseSpec::TargetEpsilon(e) => plan.calibrate(e)?,
        };
        Ok(plan)
    }

    /// σ for a target ε over the whole plan of T steps, as for a fresh run (so a resumed run finds the
    /// same σ): continuous Gaussian, the accountant's calibration; secure mode, bisection on the
    /// discrete Gaussian's ε to 1e-4 relative.
    fn calibrate(&self, target: f64) -> Result<f64> {
        let steps = self.total_steps;
        if self.secure.is_none() {
            return accounting::calibrate_noise(
                self.accountant,
                self.sampling_rate,
                steps,
                self.delta,
                target,
            )
            .map_err(|e| Error::invalid("target_privacy", e.to_string()));
        }
        let spent = |sigma: f64| -> Result<f64> {
            let mut ledger = Ledger::new();
            ledger.record(self.sampling_rate, sigma, self.mechanism(sigma, None), steps);
            Ok(ledger.epsilon(self.accountant, self.delta)?.epsilon)
        };
        let (mut low, mut high) = (1e-2, 1.0);
        while spent(high)? > target {
            high *= 2.0;
            if high > 1e6 {
                return Err(Error::invalid("target_privacy", format!("epsilon {target} is out of reach")));
            }
        }
        while (high - low) > 1e-4 * high {
            let mid = 0.5 * (low + high);
            if spent(mid)? > target {
                low = mid;
            } else {
                high = mid;
            }
        }
        Ok(high)
    }

    /// The mechanism of one step for noise multiplier `sigma` (`discrete_sigma`: the σ actually sampled).
    fn mechanism(&self, sigma: f64, discrete_sigma: Option<f64>) -> Mechanism {
        match self.secure {
            None => Mechanism::Gaussian,
            Some(grid) => Mechanism::DiscreteGaussian {
                l2_sensitivity: grid.l2_sensitivity,
                sigma: discrete_sigma.unwrap_or(sigma * grid.l2_sensitivity),
                dimension: grid.dimension,
            },
        }
    }

    /// Secure mode: the discrete Gaussian σ the sampler really uses (≥ σ·Δ), for the ledger.
    pub fn set_discrete_sigma(&mut self, sigma: f64) {
        self.discrete_sigma = Some(sigma);
    }

    /// q = B / N.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// B, the expected batch size: the divisor of the noisy sum.
    pub fn expected_batch_size(&self) -> usize {
        self.expected_batch_size
    }

    /// The normaliser of the noisy clipped sum: the expected batch size B, as `f64`.
    pub fn normaliser(&self) -> f64 {
        self.expected_batch_size as f64
    }

    /// N.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// T, the total number of steps of the run (including those of a resumed checkpoint).
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// σ, the noise multiplier: the noise std is σ·C.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// δ.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// The accountant used.
    pub fn accountant(&self) -> AccountantKind {
        self.accountant
    }

    /// The sampling mode (ε always assumes Poisson sampling).
    pub fn sampling(&self) -> SamplingMode {
        self.sampling
    }

    /// Average number of steps per epoch, N/B.
    pub fn steps_per_epoch(&self) -> f64 {
        self.examples as f64 / self.expected_batch_size as f64
    }

    /// The number of epochs the plan covers (at least 1).
    pub fn epochs(&self) -> usize {
        (self.total_steps as f64 / self.steps_per_epoch()).ceil().max(1.0) as usize
    }

    /// The step after which epoch `epoch` (from 1) ends.
    pub fn epoch_end(&self, epoch: usize) -> u64 {
        if epoch >= self.epochs() {
            return self.total_steps;
        }
        ((epoch as f64 * self.steps_per_epoch() + 0.5).floor() as u64).min(self.total_steps)
    }

    /// Steps accounted so far (ledger plus pending).
    pub fn steps_taken(&self) -> u64 {
        self.ledger.steps() + self.pending
    }

    /// Accounts one step (whatever its realised batch size, including 0).
    pub fn record_step(&mut self) {
        self.pending += 1;
    }

    /// Writes pending steps into the ledger.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            let mechanism = self.mechanism(self.noise_multiplier, self.discrete_sigma);
            self.ledger.record(self.sampling_rate, self.noise_multiplier, mechanism, self.pending);
            self.pending = 0;
        }
    }

    /// The ledger (after [`flush`](Self::flush)).
    pub fn ledger(&mut self) -> &Ledger {
        self.flush();
        &self.ledger
    }

    /// ε spent so far at δ.
    pub fn epsilon(&mut self) -> Result<Epsilon> {
        self.flush();
        if self.ledger.steps() == 0 {
            return Ok(Epsilon { epsilon: 0.0, order: None });
        }
        self.ledger.epsilon(self.accountant, self.delta)
    }

    /// ε after `more` further steps.
    pub fn epsilon_after(&mut self, more: u64) -> Result<Epsilon> {
        self.flush();
        let mut ledger = self.ledger.clone();
        if more > 0 {
            let mechanism = self.mechanism(self.noise_multiplier, self.discrete_sigma);
            ledger.record(self.sampling_rate, self.noise_multiplier, mechanism, more);
        }
        if ledger.steps() == 0 {
            return Ok(Epsilon { epsilon: 0.0, order: None });
        }
        ledger.epsilon(self.accountant, self.delta)
    }

    /// Steps still to take under the plan.
    pub fn remaining_steps(&self) -> u64 {
        self.total_steps.saturating_sub(self.steps_taken())
    }

    /// ε of the whole plan (spent plus remaining steps).
    pub fn planned_epsilon(&mut self) -> Result<Epsilon> {
        let remaining = self.remaining_steps();
        self.epsilon_after(remaining)
    }

    /// The largest number of further steps (≤ the remaining steps) that keeps ε ≤ `budget`, by bisection.
    pub fn steps_within_budget(&mut self, budget: f64) -> Result<u64> {
        let remaining = self.remaining_steps();
        if self.epsilon_after(remaining)?.epsilon <= budget {
            return Ok(remaining);
        }
        if self.epsilon_after(0)?.epsilon > budget {
            return Ok(0);
        }
        let (mut fits, mut exceeds) = (0u64, remaining);
        while exceeds - fits > 1 {
            let mid = fits + (exceeds - fits) / 2;
            if self.epsilon_after(mid)?.epsilon <= budget {
                fits = mid;
            } else {
                exceeds = mid;
            }
        }
        Ok(fits)
    }
}
