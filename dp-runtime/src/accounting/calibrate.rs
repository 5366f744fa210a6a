//! Calibration: the smallest noise multiplier whose ε meets a target, by bisection.

use super::{check_delta, check_sampling_rate, check_steps, check_target_epsilon, epsilon, AccountantKind};
use crate::error::{Error, Result};

/// Bisection stops when the bracket is this narrow (relative to max(1, σ)).
const TOLERANCE: f64 = 1e-4;
/// Search limits for σ.
const SMALLEST_SIGMA: f64 = 1e-3;
const LARGEST_SIGMA: f64 = 1e6;

/// The noise multiplier σ, to within 1e-4 and rounded up, whose ε at `delta` after `steps` steps with
/// sampling rate `sampling_rate` is at most `target_epsilon`.
///
/// ε decreases as σ grows, so the answer is found by bracketing and bisection. Errors name the invalid
/// argument; an unreachable target (δ so small that even σ = 10⁶ does not meet it) or one met without
/// meaningful noise (σ = 10⁻³ already meets it) is an error on `target_epsilon`.
pub fn calibrate_noise(
    kind: AccountantKind,
    sampling_rate: f64,
    steps: u64,
    delta: f64,
    target_epsilon: f64,
) -> Result<f64> {
    check_sampling_rate(sampling_rate)?;
    check_steps(steps)?;
    check_delta(delta)?;
    check_target_epsilon(target_epsilon)?;
    let eps = |sigma: f64| epsilon(kind, sampling_rate, sigma, steps, delta).map(|e| e.epsilon);

    // Bracket: ε(low) > target ≥ ε(high).
    let mut high = 1.0;
    while eps(high)? > target_epsilon {
        if high >= LARGEST_SIGMA {
            return Err(Error::invalid(
                "target_epsilon",
                format!(
                    "{target_epsilon} is unreachable at delta {delta}: even noise multiplier {LARGEST_SIGMA:e} gives ε = {:.4}",
                    eps(high)?
                ),
            ));
        }
        high = (high * 2.0).min(LARGEST_SIGMA);
    }
    let mut low = high / 2.0;
    while eps(low)? <= target_epsilon {
        high = low;
        if low <= SMALLEST_SIGMA {
            return Err(Error::invalid(
                "target_epsilon",
                format!("{target_epsilon} is met even with noise multiplier {SMALLEST_SIGMA}; no meaningful noise is needed"),
            ));
        }
        low = (low / 2.0).max(SMALLEST_SIGMA);
    }
    while high - low > TOLERANCE * high.max(1.0) {
        let mid = 0.5 * (low + high);
        if eps(mid)? > target_epsilon {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(high)
}
