//! Arithmetic on logarithms of (possibly signed) quantities, and normal tail probabilities: the numeric
//! primitives the accountants share.

/// ln(e^a + e^b) without overflow.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln erfc(x) for every real x, including arguments where erfc(x) underflows (x > 26).
pub(crate) fn ln_erfc(x: f64) -> f64 {
    if x < 26.0 {
        libm::erfc(x).ln()
    } else {
        // Asymptotic series: erfc(x) = e^(−x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …);
        // at x ≥ 26 the first omitted term is below 1e-13 relative.
        let inv2 = 1.0 / (x * x);
        let series = 1.0 - inv2 * (0.5 - inv2 * (0.75 - inv2 * (1.875 - inv2 * 6.5625)));
        -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
    }
}

/// P(Z > z) for a standard normal Z, accurate in the upper tail.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// P(Z ≤ z) for a standard normal Z, accurate in the lower tail.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// A running sum of signed terms given by their signs and the logarithms of their magnitudes; the sum is
/// kept as `value · e^scale` so that terms spanning hundreds of orders of magnitude neither overflow nor
/// underflow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SignedLogSum {
    scale: f64,
    value: f64,
}

impl SignedLogSum {
    /// The empty sum.
    pub(crate) fn new() -> Self {
        SignedLogSum { scale: f64::NEG_INFINITY, value: 0.0 }
    }

    /// Adds `sign · e^log_magnitude` (`sign` is ±1).
    pub(crate) fn add(&mut self, sign: f64, log_magnitude: f64) {
        if log_magnitude == f64::NEG_INFINITY {
            return;
        }
        if log_magnitude > self.scale {
            let rescale =
                if self.scale == f64::NEG_INFINITY { 0.0 } else { (self.scale - log_magnitude).exp() };
            self.value = self.value * rescale + sign;
            self.scale = log_magnitude;
        } else {
            self.value += sign * (log_magnitude - self.scale).exp();
        }
    }

    /// ln |sum| (−∞ for an exact zero).
    pub(crate) fn log_abs(&self) -> f64 {
        if self.value == 0.0 {
            f64::NEG_INFINITY
        } else {
            self.scale + self.value.abs().ln()
        }
    }

    /// ln(1 + sum), accurate when the sum is tiny or huge; NaN when the sum is below −1.
    pub(crate) fn ln_1p(&self) -> f64 {
        if self.value == 0.0 {
            return 0.0;
        }
        let log_abs = self.log_abs();
        if self.value > 0.0 && log_abs > 40.0 {
            log_abs + (-log_abs).exp().ln_1p()
        } else {
            (self.value.signum() * log_abs.exp()).ln_1p()
        }
    }
}
