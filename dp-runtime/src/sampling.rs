//! Batch sampling: Poisson (the default, what the accountant assumes) and shuffled fixed-size batches.
//!
//! Poisson sampling keeps each example independently with probability q, so a batch's size is
//! Binomial(N, q) and may be 0 (an empty batch is still a step: noise is added and it is accounted).
//! The kept indices are found by geometric skips: the gap before the next kept example is
//! Geometric(q), drawn as ⌊ln U / ln(1 − q)⌋ with U uniform on (0, 1], so a step costs O(qN), not O(N).

use rand::RngCore;

use crate::rng::{uniform_below, uniform_open_closed};

/// How batches are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SamplingMode {
    /// Each example kept independently with probability q (the accountant's assumption).
    Poisson,
    /// Batches of exactly the expected size from a shuffled permutation. The reported ε still
    /// assumes Poisson sampling, which this mode does not provide: an explicit, weaker choice.
    Shuffled,
}

impl std::fmt::Display for SamplingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SamplingMode::Poisson => f.write_str("poisson"),
            SamplingMode::Shuffled => f.write_str("shuffled (epsilon assumes Poisson sampling)"),
        }
    }
}

/// Poisson sampling of indices `0..n` with rate `q`.
#[derive(Debug, Clone)]
pub struct PoissonSampler {
    n: usize,
    q: f64,
    /// ln(1 − q), cached; −∞ when q = 1.
    log_keep_complement: f64,
}

impl PoissonSampler {
    /// A sampler over `n` examples with rate `q` in (0, 1] (checked by the privacy plan).
    pub fn new(n: usize, q: f64) -> Self {
        PoissonSampler { n, q, log_keep_complement: (-q).ln_1p() }
    }

    /// The sampling rate.
    pub fn rate(&self) -> f64 {
        self.q
    }

    /// Writes one batch's indices (ascending) into `out`, cleared first.
    pub fn sample<R: RngCore + ?Sized>(&self, rng: &mut R, out: &mut Vec<usize>) {
        out.clear();
        if self.q >= 1.0 {
            out.extend(0..self.n);
            return;
        }
        let mut next = 0usize;
        loop {
            // Number of rejected examples before the next kept one: Geometric(q) on {0, 1, ...}.
            let skip = (uniform_open_closed(rng).ln() / self.log_keep_complement).floor();
            // `skip` is ≥ 0 and never NaN (ln U ≤ 0, ln(1 − q) < 0); it may be +∞ for tiny q.
            if skip >= (self.n - next) as f64 {
                return;
            }
            next += skip as usize;
            out.push(next);
            next += 1;
            if next >= self.n {
                return;
            }
        }
    }
}

/// Shuffled fixed-size batches: consecutive slices of a random permutation, reshuffled when fewer
/// than `batch` indices remain. Every batch has exactly `batch` examples.
#[derive(Debug, Clone)]
pub struct ShuffledSampler {
    permutation: Vec<usize>,
    position: usize,
    batch: usize,
}

impl ShuffledSampler {
    /// Batches of `batch` examples (1 ≤ batch ≤ n, checked by the privacy plan) from `0..n`.
    pub fn new(n: usize, batch: usize) -> Self {
        ShuffledSampler { permutation: (0..n).collect(), position: n, batch }
    }

    /// Writes the next batch's indices into `out`, cleared first.
    pub fn sample<R: RngCore + ?Sized>(&mut self, rng: &mut R, out: &mut Vec<usize>) {
        out.clear();
        if self.position + self.batch > self.permutation.len() {
            // Fisher–Yates with exact uniform indices.
            for i in (1..self.permutation.len()).rev() {
                let j = uniform_below(rng, i + 1);
                self.permutation.swap(i, j);
            }
            self.position = 0;
        }
        out.extend_from_slice(&self.permutation[self.position..self.position + self.batch]);
        self.position += self.batch;
    }
}

/// Either sampler, chosen by [`SamplingMode`].
#[derive(Debug, Clone)]
pub enum Sampler {
    /// See [`PoissonSampler`].
    Poisson(PoissonSampler),
    /// See [`ShuffledSampler`].
    Shuffled(ShuffledSampler),
}

impl Sampler {
    /// The sampler for `mode` over `n` examples with expected batch size `expected_batch`.
    pub fn new(mode: SamplingMode, n: usize, expected_batch: usize) -> Self {
        match mode {
            SamplingMode::Poisson => {
                Sampler::Poisson(PoissonSampler::new(n, expected_batch as f64 / n as f64))
            }
            SamplingMode::Shuffled => Sampler::Shuffled(ShuffledSampler::new(n, expected_batch)),
        }
    }

    /// Writes the next batch's indices into `out`.
    pub fn sample<R: RngCore + ?Sized>(&mut self, rng: &mut R, out: &mut Vec<usize>) {
        match self {
            Sampler::Poisson(s) => s.sample(rng, out),
            Sampler::Shuffled(s) => s.sample(rng, out),
        }
    }
}
