//! The exact discrete Gaussian sampler of Canonne, Kamath and Steinke, "The Discrete Gaussian for
//! Differential Privacy" (NeurIPS 2020), with only integer arithmetic.
//!
//! N_Z(0, σ²) has P[X = x] ∝ exp(−x²/(2σ²)) on the integers. The sampler takes σ² as a rational
//! `num/den` and composes three exact steps:
//!
//! 1. Bernoulli(exp(−γ)) for rational γ (their Algorithm 1): for γ ≤ 1 draw Bernoulli(γ/k) for
//!    k = 1, 2, … until one fails and return whether the number of draws is odd; for γ > 1 multiply
//!    ⌊γ⌋ draws of Bernoulli(exp(−1)) with one of Bernoulli(exp(−(γ − ⌊γ⌋))). A Bernoulli(a/b) is an
//!    exact uniform integer below b compared with a.
//! 2. The discrete Laplace with integer scale t (their Algorithm 2).
//! 3. Rejection from the discrete Laplace with t = ⌊σ⌋ + 1, accepting Y with probability
//!    exp(−(|Y| − σ²/t)²/(2σ²)) (their Algorithm 3).
//!
//! Integers are `u128`; σ² is rounded UP to a multiple of 2⁻¹⁰ (more noise, never less), and σ is
//! limited to 2²⁴ so that every product stays in range. The only inexactness: a Laplace proposal
//! beyond about 2⁴⁰ (more than 2¹⁶ σ away, probability below exp(−2¹⁶)) is rejected outright.

use rand::RngCore;

use crate::error::{Error, Result};
use crate::rng::uniform_below_u128;

/// Denominator of the rational σ².
const SIGMA_SQ_DEN: u128 = 1 << 10;
/// Largest σ the sampler accepts (keeps every intermediate product below 2¹²⁸).
pub const MAX_SIGMA: f64 = (1u64 << 24) as f64;

/// A discrete Gaussian N_Z(0, σ²) sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscreteGaussian {
    sigma_sq_num: u128,
    /// ⌊σ⌋ + 1, the scale of the discrete Laplace proposal.
    laplace_scale: u128,
}

impl DiscreteGaussian {
    /// A sampler with standard deviation parameter at least `sigma` (σ² rounded up to a multiple of 2⁻¹⁰).
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma > 0.0 && sigma <= MAX_SIGMA) {
            return Err(Error::invalid(
                "secure_noise",
                format!("discrete Gaussian sigma {sigma} is outside (0, {MAX_SIGMA}]"),
            ));
        }
        // One extra unit absorbs the rounding of the f64 product: num/den ≥ σ² always.
        let num = (sigma * sigma * SIGMA_SQ_DEN as f64).ceil() as u128 + 1;
        let floor_sigma = isqrt(num / SIGMA_SQ_DEN);
        Ok(DiscreteGaussian { sigma_sq_num: num, laplace_scale: floor_sigma + 1 })
    }

    /// The σ actually sampled: √(num/2¹⁰) ≥ the requested σ. Account with this value.
    pub fn sigma(&self) -> f64 {
        (self.sigma_sq_num as f64 / SIGMA_SQ_DEN as f64).sqrt()
    }

    /// σ² as the exact rational `(numerator, denominator)`.
    pub fn sigma_sq(&self) -> (u128, u128) {
        (self.sigma_sq_num, SIGMA_SQ_DEN)
    }

    /// One sample.
    pub fn sample<R: RngCore + ?Sized>(&self, rng: &mut R) -> i64 {
        let t = self.laplace_scale;
        let (sn, sd) = (self.sigma_sq_num, SIGMA_SQ_DEN);
        let den = 2 * sn * t * t * sd;
        loop {
            let y = discrete_laplace(rng, t);
            let magnitude = y.unsigned_abs() as u128;
            // γ = (|Y| − σ²/t)² / (2σ²) = (|Y|·t·sd − sn)² / (2·sn·t²·sd).
            let Some(scaled) = magnitude.checked_mul(t).and_then(|v| v.checked_mul(sd)) else { continue };
            let diff = scaled.abs_diff(sn);
            let Some(num) = diff.checked_mul(diff) else { continue };
            if bernoulli_exp_neg(rng, num, den) {
                return y;
            }
        }
    }
}

/// ⌊√n⌋ exactly.
fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = (n as f64).sqrt() as u128;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

/// Bernoulli(num/den) exactly (`num ≤ den`, `den > 0`).
#[inline]
pub fn bernoulli<R: RngCore + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    uniform_below_u128(rng, den) < num
}

/// Bernoulli(exp(−num/den)) exactly (Canonne, Kamath, Steinke 2020, Algorithm 1).
pub fn bernoulli_exp_neg<R: RngCore + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    if num <= den {
        let mut k: u128 = 1;
        loop {
            // Bernoulli(γ/k), as one draw when den·k fits, else as Bernoulli(γ)·Bernoulli(1/k).
            let success = match den.checked_mul(k) {
                Some(dk) => bernoulli(rng, num, dk),
                None => bernoulli(rng, num, den) && bernoulli(rng, 1, k),
            };
            if !success {
                return k % 2 == 1;
            }
            k += 1;
        }
    }
    let whole = num / den;
    for _ in 0..whole {
        if !bernoulli_exp_neg(rng, 1, 1) {
            return false;
        }
    }
    bernoulli_exp_neg(rng, num % den, den)
}

/// The discrete Laplace with scale `t ≥ 1`: P[X = x] ∝ exp(−|x|/t) (Algorithm 2).
pub fn discrete_laplace<R: RngCore + ?Sized>(rng: &mut R, t: u128) -> i64 {
    loop {
        let u = uniform_below_u128(rng, t);
        if !bernoulli_exp_neg(rng, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp_neg(rng, 1, 1) {
            v += 1;
        }
        let x = u + t * v;
        let negative = rng.next_u32() & 1 == 1;
        if negative && x == 0 {
            continue;
        }
        let x = x.min(i64::MAX as u128) as i64;
        return if negative { -x } else { x };
    }
}

/// The probability mass P[X = x] of N_Z(0, σ²), by direct summation in f64 (for tests and docs).
pub fn pmf(sigma: f64, x: i64) -> f64 {
    let weight = |k: f64| (-k * k / (2.0 * sigma * sigma)).exp();
    let reach = (sigma * 40.0).ceil() as i64 + 1;
    let total: f64 = (-reach..=reach).map(|k| weight(k as f64)).sum();
    weight(x as f64) / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bernoulli_exp_neg_has_the_right_mean() {
        let mut rng = crate::rng::seeded(3);
        for &(num, den) in &[(1u128, 2u128), (3, 1), (7, 4)] {
            let n = 40_000;
            let hits = (0..n).filter(|_| bernoulli_exp_neg(&mut rng, num, den)).count() as f64;
            let p = (-(num as f64) / den as f64).exp();
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((hits / n as f64 - p).abs() < 5.0 * se, "{num}/{den}: {} vs {p}", hits / n as f64);
        }
    }

    #[test]
    fn sigma_is_rounded_up_and_limited() {
        let d = DiscreteGaussian::new(3.3).unwrap();
        assert!(d.sigma() >= 3.3 && d.sigma() < 3.3 + 1e-3);
        assert_eq!(isqrt(99), 9);
        assert!(DiscreteGaussian::new(0.0).is_err());
        assert!(DiscreteGaussian::new(f64::NAN).is_err());
        assert!(DiscreteGaussian::new(1e9).is_err());
    }
}
