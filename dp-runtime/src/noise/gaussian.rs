//! Standard normal samples from a ChaCha20 stream, by the Box–Muller transform.
//!
//! Each pair of outputs uses two uniforms with 53 random bits: U₁ on (0, 1] (so ln U₁ is finite) and U₂
//! on [0, 1); R = √(−2 ln U₁), Θ = 2πU₂ give the independent normals R cos Θ and R sin Θ. The largest
//! magnitude reachable is √(2·53·ln 2) ≈ 8.57, so tails beyond 8.5 standard deviations (probability
//! below 10⁻¹⁶) are not produced.

use rand_chacha::ChaCha20Rng;

use crate::rng::{uniform_f64, uniform_open_closed};

/// A stream of independent N(0, 1) values over a ChaCha20 generator.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha20Rng,
    spare: Option<f64>,
}

impl GaussianNoise {
    /// A noise stream that owns `rng` (the run's noise stream).
    pub fn new(rng: ChaCha20Rng) -> Self {
        GaussianNoise { rng, spare: None }
    }

    /// The next N(0, 1) value.
    #[inline]
    pub fn standard_normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (a, b) = self.pair();
        self.spare = Some(b);
        a
    }

    /// Two independent N(0, 1) values.
    #[inline]
    pub fn pair(&mut self) -> (f64, f64) {
        let radius = (-2.0 * uniform_open_closed(&mut self.rng).ln()).sqrt();
        let angle = std::f64::consts::TAU * uniform_f64(&mut self.rng);
        let (sin, cos) = angle.sin_cos();
        (radius * cos, radius * sin)
    }

    /// Fills `out` with N(0, 1) values.
    pub fn fill(&mut self, out: &mut [f64]) {
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let (a, b) = self.pair();
            pair[0] = a;
            pair[1] = b;
        }
        if let [last] = pairs.into_remainder() {
            *last = self.standard_normal();
        }
    }

    /// The underlying generator (the discrete sampler of secure mode draws from the same stream).
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        // A cached Box–Muller value would otherwise survive a switch of samplers; drop it.
        self.spare = None;
        &mut self.rng
    }
}
