//! The accountant's history: which sampling rate, noise and mechanism were used for how many steps.
//! It is all a checkpoint needs to resume the accounting exactly.

use super::rdp::{self, DEFAULT_ORDERS};
use super::subsampled::{discrete_gaussian_rho, poisson_subsampled_upper_bound};
use super::{
    check_delta, check_noise_multiplier, check_sampling_rate, pld, AccountantKind, Epsilon, Mechanism,
};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One phase of training: `steps` consecutive steps with the same sampling rate, noise and mechanism.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    /// Poisson sampling rate q = expected batch size / dataset size.
    pub sampling_rate: f64,
    /// Noise multiplier σ (noise standard deviation over the clipping norm). Discrete Gaussian entries
    /// are accounted from their mechanism's own `l2_sensitivity` and `sigma`; for them this field is the
    /// nominal multiplier, for the record.
    pub noise_multiplier: f64,
    /// Number of steps of this phase.
    pub steps: u64,
    /// The noise mechanism of these steps.
    pub mechanism: Mechanism,
}

/// The sequence of phases a training run went through, in order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    entries: Vec<LedgerEntry>,
}

impl Ledger {
    /// An empty ledger (no privacy spent).
    pub fn new() -> Self {
        Ledger { entries: Vec::new() }
    }

    /// Records `steps` steps; consecutive records with the same sampling rate, noise multiplier and
    /// mechanism are merged into one entry. Recording zero steps changes nothing. Values are checked
    /// when ε is computed.
    pub fn record(&mut self, sampling_rate: f64, noise_multiplier: f64, mechanism: Mechanism, steps: u64) {
        if steps == 0 {
            return;
        }
        if let Some(last) = self.entries.last_mut() {
            if last.sampling_rate == sampling_rate
                && last.noise_multiplier == noise_multiplier
                && last.mechanism == mechanism
            {
                last.steps += steps;
                return;
            }
        }
        self.entries.push(LedgerEntry { sampling_rate, noise_multiplier, steps, mechanism });
    }

    /// The recorded phases, oldest first.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// Total number of recorded steps.
    pub fn steps(&self) -> u64 {
        self.entries.iter().map(|e| e.steps).sum()
    }

    /// Checks every recorded phase, naming the offending field and phase: a ledger read from a file
    /// (a checkpoint) may be corrupted, and it must be refused when it is read, not when ε is next
    /// computed. Each phase has at least one step, a sampling rate in (0, 1], a positive finite noise
    /// multiplier, and (discrete Gaussian) a positive finite sensitivity and σ and a dimension ≥ 1.
    /// An empty ledger is valid: nothing was spent.
    pub fn validate(&self) -> Result<()> {
        for (index, entry) in self.entries.iter().enumerate() {
            let in_phase = |error: Error| match error {
                Error::InvalidArgument { name, message } => {
                    Error::invalid(format!("ledger phase {index}: {name}"), message)
                }
                other => other,
            };
            if entry.steps == 0 {
                return Err(Error::invalid(
                    format!("ledger phase {index}: steps"),
                    "a phase has at least 1 step",
                ));
            }
            check_entry(entry).map_err(in_phase)?;
        }
        Ok(())
    }

    /// ε at `delta` of everything recorded, by the accountant `kind`. An empty ledger spends ε = 0.
    ///
    /// Under PLD, discrete Gaussian phases cannot be turned into a privacy loss distribution here; a
    /// ledger with such phases is bounded by the smaller of (a) RDP for the whole ledger and (b) PLD
    /// for the continuous phases at δ/2 plus RDP for the discrete ones at δ/2 (basic composition).
    pub fn epsilon(&self, kind: AccountantKind, delta: f64) -> Result<Epsilon> {
        check_delta(delta)?;
        for entry in &self.entries {
            check_entry(entry)?;
        }
        if self.entries.is_empty() {
            return Ok(Epsilon { epsilon: 0.0, order: None });
        }
        match kind {
            AccountantKind::Rdp => rdp_epsilon(&self.entries, delta),
            AccountantKind::Pld => {
                let (continuous, discrete): (Vec<&LedgerEntry>, Vec<&LedgerEntry>) =
                    self.entries.iter().partition(|e| e.mechanism == Mechanism::Gaussian);
                if discrete.is_empty() {
                    return pld_epsilon(&continuous, delta);
                }
                let all_rdp = rdp_epsilon(&self.entries, delta)?;
                if continuous.is_empty() {
                    return Ok(all_rdp);
                }
                let discrete: Vec<LedgerEntry> = discrete.into_iter().cloned().collect();
                // If δ/2 is below the PLD resolution, the whole-ledger RDP bound stands alone.
                let split = match (pld_epsilon(&continuous, delta / 2.0), rdp_epsilon(&discrete, delta / 2.0))
                {
                    (Ok(continuous), Ok(discrete)) => continuous.epsilon + discrete.epsilon,
                    _ => f64::INFINITY,
                };
                if split < all_rdp.epsilon {
                    Ok(Epsilon { epsilon: split, order: None })
                } else {
                    Ok(all_rdp)
                }
            }
        }
    }
}

/// Checks the values of a recorded phase, naming the offending field.
fn check_entry(entry: &LedgerEntry) -> Result<()> {
    check_sampling_rate(entry.sampling_rate)?;
    check_noise_multiplier(entry.noise_multiplier)?;
    if let Mechanism::DiscreteGaussian { l2_sensitivity, sigma, dimension } = entry.mechanism {
        if !(l2_sensitivity > 0.0 && l2_sensitivity.is_finite()) {
            return Err(Error::invalid(
                "l2_sensitivity",
                format!("must be positive and finite, got {l2_sensitivity}"),
            ));
        }
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(Error::invalid("sigma", format!("must be positive and finite, got {sigma}")));
        }
        if dimension == 0 {
            return Err(Error::invalid("dimension", "must be at least 1, got 0"));
        }
    }
    Ok(())
}

/// RDP of one step of `entry` at order `alpha`; ∞ where the entry has no bound at that order
/// (discrete Gaussian entries are bounded at integer orders ≥ 2 only).
fn entry_rdp(entry: &LedgerEntry, alpha: f64) -> f64 {
    match entry.mechanism {
        Mechanism::Gaussian => rdp::poisson_gaussian(entry.sampling_rate, entry.noise_multiplier, alpha),
        Mechanism::DiscreteGaussian { l2_sensitivity, sigma, .. } => {
            if alpha.fract() != 0.0 || alpha < 2.0 {
                return f64::INFINITY;
            }
            let rho = discrete_gaussian_rho(l2_sensitivity, sigma);
            poisson_subsampled_upper_bound(entry.sampling_rate, alpha as u64, |order| rho * order)
        }
    }
}

fn rdp_epsilon(entries: &[LedgerEntry], delta: f64) -> Result<Epsilon> {
    let mut total = [0.0; DEFAULT_ORDERS.len()];
    for entry in entries {
        for (sum, &alpha) in total.iter_mut().zip(DEFAULT_ORDERS.iter()) {
            *sum += entry_rdp(entry, alpha) * entry.steps as f64;
        }
    }
    let (epsilon, order) = rdp::to_epsilon(&DEFAULT_ORDERS, &total, delta);
    if !epsilon.is_finite() {
        return Err(Error::Budget(format!("the RDP accountant found no finite ε at delta {delta}")));
    }
    Ok(Epsilon { epsilon, order: Some(order) })
}

fn pld_epsilon(entries: &[&LedgerEntry], delta: f64) -> Result<Epsilon> {
    let phases: Vec<(f64, f64, u64)> =
        entries.iter().map(|e| (e.sampling_rate, e.noise_multiplier, e.steps)).collect();
    match pld::gaussian_epsilon(&phases, delta) {
        Ok(epsilon) => Ok(Epsilon { epsilon, order: None }),
        Err(resolution) => Err(Error::invalid(
            "delta",
            format!(
                "{delta:e} is below the PLD accountant's resolution for this plan ({resolution:.1e}); use the RDP accountant or a larger delta"
            ),
        )),
    }
}
