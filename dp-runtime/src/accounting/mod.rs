//! Privacy accounting: how much privacy (ε at a given δ) a sequence of noisy, Poisson-subsampled steps
//! spends, and how much noise a target ε needs.
//!
//! Two accountants are offered ([`AccountantKind`]): RDP ([`rdp`], exact Rényi DP of the subsampled
//! Gaussian converted to (ε, δ)) and PLD (privacy loss distributions, tighter). The [`Ledger`] records
//! what a training run did, phase by phase, so that ε can be recomputed from a checkpoint.
//! The method, formulas and references are in docs/PRIVACY.md.

mod calibrate;
mod ledger;
mod logspace;
mod pld;
pub mod rdp;
pub mod subsampled;

pub use calibrate::calibrate_noise;
pub use ledger::{Ledger, LedgerEntry};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which accountant turns the recorded steps into ε.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountantKind {
    /// Rényi DP of the Poisson-subsampled Gaussian (Mironov, Talwar, Zhang 2019), exact at every order.
    Rdp,
    /// Privacy loss distributions composed by FFT (Koskela et al. 2020); tighter than RDP.
    Pld,
}

impl FromStr for AccountantKind {
    type Err = Error;

    /// Parses `rdp` or `pld` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            _ => Err(Error::invalid("accountant", format!("must be rdp or pld, got {s:?}"))),
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        })
    }
}

/// A privacy guarantee: (ε, δ)-DP at the δ it was computed for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epsilon {
    /// The ε of the guarantee.
    pub epsilon: f64,
    /// The RDP order at which the RDP accountant's bound is tightest; `None` for PLD.
    pub order: Option<f64>,
}

/// The noise mechanism of a step, as the accountant needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Mechanism {
    /// Continuous Gaussian noise N(0, σ²C²) on a sum of gradients clipped to norm C; σ is the entry's
    /// noise multiplier.
    Gaussian,
    /// Discrete Gaussian noise on the integer grid (the secure mode): `sigma` and `l2_sensitivity` are
    /// in grid units, `dimension` is the number of noised coordinates. Accounted as ½(Δ/σ)²-zCDP with the
    /// Zhu–Wang Poisson-subsampling bound at integer orders (see [`subsampled`]).
    DiscreteGaussian {
        /// L2 sensitivity Δ of the integer-valued clipped sum, in grid units.
        l2_sensitivity: f64,
        /// Scale σ of the discrete Gaussian, in grid units.
        sigma: f64,
        /// Number of coordinates that receive noise.
        dimension: usize,
    },
}

/// Checks a sampling rate: q ∈ (0, 1].
pub(crate) fn check_sampling_rate(q: f64) -> Result<()> {
    if q > 0.0 && q <= 1.0 {
        Ok(())
    } else {
        Err(Error::invalid("sampling_rate", format!("must be in (0, 1], got {q}")))
    }
}

/// Checks a noise multiplier: positive and finite.
pub(crate) fn check_noise_multiplier(sigma: f64) -> Result<()> {
    if sigma > 0.0 && sigma.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("noise_multiplier", format!("must be positive and finite, got {sigma}")))
    }
}

/// Checks δ ∈ (0, 1).
pub(crate) fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(Error::invalid("delta", format!("must be in (0, 1), got {delta}")))
    }
}

/// Checks a step count: at least one.
pub(crate) fn check_steps(steps: u64) -> Result<()> {
    if steps >= 1 {
        Ok(())
    } else {
        Err(Error::invalid("steps", "must be at least 1, got 0"))
    }
}

/// Checks a target ε: positive and finite.
pub(crate) fn check_target_epsilon(target: f64) -> Result<()> {
    if target > 0.0 && target.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("target_epsilon", format!("must be positive and finite, got {target}")))
    }
}

/// ε at `delta` after `steps` steps of the Poisson-subsampled Gaussian mechanism with sampling rate
/// `sampling_rate` and noise multiplier `noise_multiplier`.
///
/// Errors name the invalid argument (`sampling_rate`, `noise_multiplier`, `steps`, `delta`).
pub fn epsilon(
    kind: AccountantKind,
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
) -> Result<Epsilon> {
    check_sampling_rate(sampling_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_steps(steps)?;
    check_delta(delta)?;
    let mut ledger = Ledger::new();
    ledger.record(sampling_rate, noise_multiplier, Mechanism::Gaussian, steps);
    ledger.epsilon(kind, delta)
}
