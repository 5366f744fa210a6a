//! Standard normal samples from a ChaCha20 stream.
//!
//! Two exact-in-distribution methods over f64 uniforms with 53 random bits:
//!
//! - the **ziggurat** (Marsaglia & Tsang 2000, in Doornik's 2005 form "An Improved Ziggurat Method to
//!   Generate Normal Random Samples", 128 layers, R = 3.442619855899), used by
//!   [`GaussianNoise::standard_normal`]: one 64-bit draw gives the layer (7 bits) and a uniform in
//!   [−1, 1) (53 other bits); about 98.8% of draws are accepted by one comparison; the rest take the
//!   exact wedge test or Marsaglia's exact tail beyond R (unbounded);
//! - **Box–Muller** ([`GaussianNoise::pair`]): U₁ on (0, 1], U₂ on [0, 1), R = √(−2 ln U₁) and
//!   Θ = 2πU₂ give R cos Θ and R sin Θ; magnitudes beyond √(2·53·ln 2) ≈ 8.57 (probability below 10⁻¹⁶)
//!   are not produced.

use rand_chacha::ChaCha20Rng;

use std::sync::OnceLock;

use rand::RngCore;

use crate::rng::{uniform_f64, uniform_open_closed};

/// Number of ziggurat layers.
const LAYERS: usize = 128;
/// Start of the tail (right edge of the base layer).
const TAIL_START: f64 = 3.442619855899;
/// Area of each layer.
const LAYER_AREA: f64 = 9.91256303526217e-3;

/// Layer edges x_i (x_0 is the base strip's pseudo-edge V/f(R), x_128 = 0) and ratios x_{i+1}/x_i.
struct Ziggurat {
    edge: [f64; LAYERS + 1],
    ratio: [f64; LAYERS],
}

fn ziggurat() -> &'static Ziggurat {
    static TABLES: OnceLock<Ziggurat> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut edge = [0.0; LAYERS + 1];
        let mut f = (-0.5 * TAIL_START * TAIL_START).exp();
        edge[0] = LAYER_AREA / f;
        edge[1] = TAIL_START;
        for i in 2..LAYERS {
            edge[i] = (-2.0 * (LAYER_AREA / edge[i - 1] + f).ln()).sqrt();
            f = (-0.5 * edge[i] * edge[i]).exp();
        }
        edge[LAYERS] = 0.0;
        let mut ratio = [0.0; LAYERS];
        for i in 0..LAYERS {
            ratio[i] = edge[i + 1] / edge[i];
        }
        Ziggurat { edge, ratio }
    })
}

/// A stream of independent N(0, 1) values over a ChaCha20 generator.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha20Rng,
    tables: &'static Ziggurat,
}

impl std::fmt::Debug for Ziggurat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ziggurat")
    }
}

impl GaussianNoise {
    /// A noise stream that owns `rng` (the run's noise stream).
    pub fn new(rng: ChaCha20Rng) -> Self {
        GaussianNoise { rng, tables: ziggurat() }
    }

    /// The next N(0, 1) value (ziggurat).
    #[inline]
    pub fn standard_normal(&mut self) -> f64 {
        let z = self.tables;
        loop {
            let bits = self.rng.next_u64();
            let layer = (bits & 0x7f) as usize;
            // 53 bits disjoint from the layer bits: u uniform on [−1, 1).
            let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
            if u.abs() < z.ratio[layer] {
                return u * z.edge[layer];
            }
            if layer == 0 {
                return self.tail(u < 0.0);
            }
            let x = u * z.edge[layer];
            let outer = (-0.5 * (z.edge[layer] * z.edge[layer] - x * x)).exp();
            let inner = (-0.5 * (z.edge[layer + 1] * z.edge[layer + 1] - x * x)).exp();
            if inner + uniform_f64(&mut self.rng) * (outer - inner) < 1.0 {
                return x;
            }
        }
    }

    /// A sample of the normal tail beyond R (Marsaglia 1964), exact.
    #[cold]
    fn tail(&mut self, negative: bool) -> f64 {
        loop {
            let x = uniform_open_closed(&mut self.rng).ln() / TAIL_START;
            let y = uniform_open_closed(&mut self.rng).ln();
            if -2.0 * y >= x * x {
                return if negative { x - TAIL_START } else { TAIL_START - x };
            }
        }
    }

    /// Two independent N(0, 1) values.
    #[inline]
    pub fn pair(&mut self) -> (f64, f64) {
        let radius = (-2.0 * uniform_open_closed(&mut self.rng).ln()).sqrt();
        let angle = std::f64::consts::TAU * uniform_f64(&mut self.rng);
        let (sin, cos) = angle.sin_cos();
        (radius * cos, radius * sin)
    }

    /// Fills `out` with N(0, 1) values (ziggurat).
    pub fn fill(&mut self, out: &mut [f64]) {
        for v in out {
            *v = self.standard_normal();
        }
    }

    /// Fills `out` with N(0, 1) values by Box–Muller (the reference method).
    pub fn fill_box_muller(&mut self, out: &mut [f64]) {
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let (a, b) = self.pair();
            pair[0] = a;
            pair[1] = b;
        }
        if let [last] = pairs.into_remainder() {
            *last = self.pair().0;
        }
    }

    /// The underlying generator (the discrete sampler of secure mode draws from the same stream).
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }
}
