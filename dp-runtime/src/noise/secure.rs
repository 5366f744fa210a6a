//! Secure mode: integer-grid aggregation with exact discrete Gaussian noise, against the
//! floating-point attacks of Mironov ("On Significance of the Least Significant Bits for Differential
//! Privacy", CCS 2012) on textbook floating-point Gaussian/Laplace samplers.
//!
//! Each example's clipped gradient x_i (‖x_i‖ ≤ C) is scaled onto a grid of step γ and rounded to the
//! nearest integer vector z_i = round(x_i/γ). Nearest rounding moves each coordinate by at most ½, so
//! ‖z_i‖ ≤ C/γ + √d/2 =: Δ, deterministically; the runtime also checks ‖z_i‖² ≤ Δ² in exact integer
//! arithmetic and shrinks x_i until it holds, so float error in the model cannot break the bound. The
//! z_i are summed exactly in `i64`, discrete Gaussian noise N_Z(0, (σΔ)²) (exact sampler, see
//! [`super::discrete_gaussian`]) is added to every coordinate, and only then is the result converted
//! back to floating point (γ·(Σz_i + noise)): post-processing. The accountant records the mechanism as
//! a discrete Gaussian with sensitivity Δ, its σ and the dimension d.
//!
//! The grid: C/γ = max(2¹⁰, 50·√d), so the rounding term √d/2 costs at most 1% of extra noise.

use rand::RngCore;

use super::discrete_gaussian::{DiscreteGaussian, MAX_SIGMA};
use crate::error::{Error, Result};

/// Minimum number of grid steps per clip norm.
const MIN_LEVELS: f64 = 1024.0;
/// Grid steps per clip norm per √d: keeps the rounding term √d/2 at ≤ 1% of C/γ.
const LEVELS_PER_SQRT_DIM: f64 = 50.0;

/// Accumulates per-example clipped gradients on the integer grid and releases the noisy sum.
#[derive(Debug, Clone)]
pub struct SecureAggregator {
    /// Grid step γ.
    step: f64,
    /// Sensitivity Δ = C/γ + √d/2 of one example on the grid.
    sensitivity: f64,
    /// ⌊Δ²⌋: the exact bound on ‖z_i‖².
    max_sq_norm: u128,
    sampler: DiscreteGaussian,
    sum: Vec<i64>,
    scratch: Vec<i64>,
}

impl SecureAggregator {
    /// The grid sensitivity Δ = C/γ + √d/2 (in grid units) for `dimension` parameters; it does not
    /// depend on C, since the grid step γ is proportional to C.
    pub fn grid_sensitivity(dimension: usize) -> f64 {
        let root_d = (dimension as f64).sqrt();
        (LEVELS_PER_SQRT_DIM * root_d).max(MIN_LEVELS) + root_d / 2.0
    }

    /// An aggregator for `dimension` parameters, clip norm `clip_norm` and noise multiplier
    /// `noise_multiplier` (σ relative to the grid sensitivity).
    pub fn new(dimension: usize, clip_norm: f64, noise_multiplier: f64) -> Result<Self> {
        if dimension == 0 {
            return Err(Error::invalid("secure_noise", "the model has no parameters"));
        }
        let root_d = (dimension as f64).sqrt();
        let levels = (LEVELS_PER_SQRT_DIM * root_d).max(MIN_LEVELS);
        let step = clip_norm / levels;
        let sensitivity = levels + root_d / 2.0;
        let sigma = noise_multiplier * sensitivity;
        if sigma > MAX_SIGMA {
            return Err(Error::invalid(
                "secure_noise",
                format!(
                    "noise multiplier {noise_multiplier} on a grid of {levels:.0} levels needs sigma \
                     {sigma:.3e} > {MAX_SIGMA:e}; use a smaller noise multiplier"
                ),
            ));
        }
        let sampler = DiscreteGaussian::new(sigma)?;
        // ⌊Δ²⌋ with a relative margin far above f64 rounding error: a slightly tighter check is safe.
        let max_sq_norm = (sensitivity * sensitivity * (1.0 - 1e-12)).floor() as u128;
        Ok(SecureAggregator {
            step,
            sensitivity,
            max_sq_norm,
            sampler,
            sum: vec![0; dimension],
            scratch: vec![0; dimension],
        })
    }

    /// The grid step γ.
    pub fn grid_step(&self) -> f64 {
        self.step
    }

    /// The L2 sensitivity Δ of one example on the grid.
    pub fn l2_sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// The σ of the discrete Gaussian actually sampled (≥ noise multiplier × Δ).
    pub fn sigma(&self) -> f64 {
        self.sampler.sigma()
    }

    /// The number of coordinates.
    pub fn dimension(&self) -> usize {
        self.sum.len()
    }

    /// Clears the running sum before a new batch.
    pub fn reset(&mut self) {
        self.sum.fill(0);
    }

    /// Adds one example's clipped gradient (norm ≤ C up to float error), rounded onto the grid. A
    /// non-finite gradient contributes zero and returns `false`.
    pub fn add_example(&mut self, clipped: &[f32]) -> Result<bool> {
        if clipped.len() != self.sum.len() {
            return Err(Error::invalid(
                "secure_noise",
                format!("gradient of {} values, {} expected", clipped.len(), self.sum.len()),
            ));
        }
        if clipped.iter().any(|v| !v.is_finite()) {
            return Ok(false);
        }
        let mut shrink = 1.0f64;
        for attempt in 0.. {
            let inverse = shrink / self.step;
            let mut sq_norm: u128 = 0;
            for (z, &x) in self.scratch.iter_mut().zip(clipped) {
                *z = (x as f64 * inverse).round() as i64;
                sq_norm += (z.unsigned_abs() as u128).pow(2);
            }
            if sq_norm <= self.max_sq_norm {
                break;
            }
            if attempt == 16 {
                // The model returned a gradient far above C: it contributes nothing rather than leak.
                self.scratch.fill(0);
                break;
            }
            // Float error pushed the example past the bound: shrink by the excess and round again.
            shrink *= (self.max_sq_norm as f64 / sq_norm as f64).sqrt() * (1.0 - 1e-6);
        }
        for (s, &z) in self.sum.iter_mut().zip(&self.scratch) {
            *s += z;
        }
        Ok(true)
    }

    /// Adds discrete Gaussian noise to every coordinate of the sum and writes γ·(Σz + noise) into `out`.
    pub fn release<R: RngCore + ?Sized>(&mut self, rng: &mut R, out: &mut [f32]) {
        for (o, &s) in out.iter_mut().zip(&self.sum) {
            let noisy = s + self.sampler.sample(rng);
            *o = (noisy as f64 * self.step) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_sum_is_exact_and_bounded() {
        let mut agg = SecureAggregator::new(4, 1.0, 1e-3).unwrap();
        assert!((agg.l2_sensitivity() - (1024.0 + 1.0)).abs() < 1e-9);
        agg.add_example(&[0.6, 0.8, 0.0, 0.0]).unwrap();
        agg.add_example(&[0.0, 0.0, -1.0, 0.0]).unwrap();
        assert!(!agg.add_example(&[f32::NAN, 0.0, 0.0, 0.0]).unwrap());
        assert_eq!(agg.sum, vec![614, 819, -1024, 0]);
        assert!(agg.add_example(&[1.0; 3]).is_err());
    }
}
