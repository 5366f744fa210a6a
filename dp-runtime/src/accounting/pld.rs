//! Privacy-loss-distribution (PLD) accounting of the Poisson-subsampled Gaussian mechanism
//! (Koskela, Jälkö, Honkela 2020; as in Google's dp-accounting `PLDAccountant`).
//!
//! For a dominating pair (P, Q) of one step, the privacy loss L = ln(P(x)/Q(x)), x ~ P, determines
//! δ(ε) = E[(1 − e^(ε−L))₊] + P(L = ∞), and the loss of a composition is the sum of independent losses.
//! Under add-or-remove adjacency with Poisson sampling the two pairs are
//! *remove*: P = (1−q)·N(0,σ²) + q·N(1,σ²), Q = N(0,σ²), and *add*: P = N(0,σ²), Q = the mixture.
//! Each is discretised onto the grid h·ℤ, composed by FFT convolution (repeated squaring), and
//! ε(δ) is read off; the reported ε is the larger of the two directions.
//!
//! Every approximation errs on the pessimistic side, so the result is an upper bound:
//! - discretisation is "connect the dots" (Doroshenko et al. 2022): a loss ℓ between grid points
//!   a < b is split between a and b so that E[e^(−L)] is kept; δ(ε) is the expectation of a convex
//!   function of e^(−L), so by Jensen's inequality the split only increases δ at every ε, and it
//!   keeps the mean of L to second order in h (rounding up would add h/2 per step);
//! - loss mass below the lowest grid point is moved up to it, mass above the highest goes to L = ∞;
//! - after each convolution, each end is trimmed the same way: up to 10⁻¹⁵ of probability, and
//!   beyond that the points at the FFT's rounding-noise level (below 10⁻¹⁶ of the largest point);
//! - a distribution longer than 2²¹ points is moved to a grid twice as coarse, splitting each dropped
//!   point between its neighbours as above (again by Jensen's inequality, only increasing δ).

use super::logspace::{log_add, normal_cdf, normal_sf};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// Default grid spacing of the privacy loss (dp-accounting's default `value_discretization_interval`).
const DEFAULT_INTERVAL: f64 = 1e-4;
/// Target number of grid points of a composed distribution when choosing the spacing.
const MAX_BINS: f64 = (1u64 << 20) as f64;
/// A distribution longer than this is moved to a coarser grid.
const MAX_LEN: usize = 1 << 21;
/// Points below this fraction of the largest are at the level of FFT rounding noise.
const NOISE_FLOOR: f64 = 1e-16;
/// Per-step truncation of the noise, in standard deviations (P(Z > 8.5) ≈ 1e-17).
const TAIL_SIGMAS: f64 = 8.5;
/// Probability trimmed from each end of a distribution after a convolution (pessimistically).
const TRUNCATION_MASS: f64 = 1e-15;
/// Below this length, convolution is done directly (exact and cheaper than an FFT).
const DIRECT_CONVOLUTION_LEN: usize = 48;

/// One of the two dominating pairs of the Poisson-subsampled Gaussian under add-or-remove adjacency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Remove,
    Add,
}

/// A discrete privacy loss distribution on the grid h·ℤ: `probs[i]` is the probability of loss
/// `(offset + i)·h`; `infinity` is P(L = ∞).
#[derive(Clone, Debug)]
struct LossPmf {
    h: f64,
    offset: i64,
    probs: Vec<f64>,
    infinity: f64,
}

/// The Poisson-subsampled Gaussian pair of one step.
#[derive(Clone, Copy, Debug)]
struct SubsampledGaussian {
    q: f64,
    sigma: f64,
    direction: Direction,
}

/// P(L > ε), P(L ≤ ε), Q(L > ε), Q(L ≤ ε): each computed directly from a normal tail so that small
/// probabilities keep their relative precision.
#[derive(Clone, Copy, Debug)]
struct Tails {
    p_above: f64,
    p_below: f64,
    q_above: f64,
    q_below: f64,
}

impl SubsampledGaussian {
    /// ln(1 − q + q·e^((2x−1)/(2σ²))), the log-likelihood ratio of the mixture to N(0, σ²) at x.
    fn log_ratio(&self, x: f64) -> f64 {
        let log_1mq = (-self.q).ln_1p();
        log_add(log_1mq, self.q.ln() + (2.0 * x - 1.0) / (2.0 * self.sigma * self.sigma))
    }

    /// The privacy loss at noise value x.
    fn loss(&self, x: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.log_ratio(x),
            Direction::Add => -self.log_ratio(x),
        }
    }

    /// The range of losses of x within `TAIL_SIGMAS` standard deviations of P's components.
    fn loss_range(&self) -> (f64, f64) {
        let reach = TAIL_SIGMAS * self.sigma;
        match self.direction {
            Direction::Remove => (self.loss(-reach), self.loss(1.0 + reach)),
            Direction::Add => (self.loss(reach), self.loss(-reach)),
        }
    }

    /// ln(e^t − (1 − q)), or None when it is not positive; the log-likelihood ratio exceeds t exactly
    /// when x exceeds σ²(this − ln q) + 1/2.
    fn log_excess(&self, t: f64) -> Option<f64> {
        let value = if t > 0.0 {
            // e^t (1 − (1−q)e^(−t)), in logs so that large t does not overflow
            t + (-(1.0 - self.q) * (-t).exp()).ln_1p()
        } else {
            let difference = t.exp_m1() + self.q;
            if difference <= 0.0 {
                return None;
            }
            difference.ln()
        };
        value.is_finite().then_some(value)
    }

    fn tails(&self, eps: f64) -> Tails {
        let sigma = self.sigma;
        let q = self.q;
        // Mixture and base probabilities of {x > x*} and {x ≤ x*}.
        let mixture_above = |x: f64| (1.0 - q) * normal_sf(x / sigma) + q * normal_sf((x - 1.0) / sigma);
        let mixture_below = |x: f64| (1.0 - q) * normal_cdf(x / sigma) + q * normal_cdf((x - 1.0) / sigma);
        match self.direction {
            Direction::Remove => match self.log_excess(eps) {
                // L = log_ratio(x) > ε  ⇔  x > x*
                None => Tails { p_above: 1.0, p_below: 0.0, q_above: 1.0, q_below: 0.0 },
                Some(log_c) => {
                    let x = sigma * sigma * (log_c - q.ln()) + 0.5;
                    Tails {
                        p_above: mixture_above(x),
                        p_below: mixture_below(x),
                        q_above: normal_sf(x / sigma),
                        q_below: normal_cdf(x / sigma),
                    }
                }
            },
            Direction::Add => match self.log_excess(-eps) {
                // L = −log_ratio(x) > ε  ⇔  x < x*
                None => Tails { p_above: 0.0, p_below: 1.0, q_above: 0.0, q_below: 1.0 },
                Some(log_c) => {
                    let x = sigma * sigma * (log_c - q.ln()) + 0.5;
                    Tails {
                        p_above: normal_cdf(x / sigma),
                        p_below: normal_sf(x / sigma),
                        q_above: mixture_below(x),
                        q_below: mixture_above(x),
                    }
                }
            },
        }
    }

    /// The connect-the-dots discretisation of this pair's privacy loss on the grid h·ℤ.
    fn discretise(&self, h: f64) -> LossPmf {
        let (low, high) = self.loss_range();
        let first = (low / h).floor() as i64;
        let last = ((high / h).ceil() as i64).max(first + 1);
        let bins = (last - first + 1) as usize;
        let mut probs = vec![0.0; bins];
        let decay = (-h).exp();
        let mut lower_tails = self.tails(first as f64 * h);
        // Losses at or below the first grid point are rounded up to it.
        probs[0] = lower_tails.p_below;
        for i in 0..bins - 1 {
            let upper_tails = self.tails((first + i as i64 + 1) as f64 * h);
            let p_mass = interval_mass(
                lower_tails.p_above,
                lower_tails.p_below,
                upper_tails.p_above,
                upper_tails.p_below,
            );
            let q_mass = interval_mass(
                lower_tails.q_above,
                lower_tails.q_below,
                upper_tails.q_above,
                upper_tails.q_below,
            );
            if p_mass > 0.0 {
                // On this interval Q-mass = E_P[e^(−L)]; the share w kept at the left point a solves
                // w·e^(−a) + (P − w)·e^(−a−h) = Q, i.e. w = P·(Q/P·e^a − e^(−h)) / (1 − e^(−h)).
                let left = (first + i as i64) as f64 * h;
                let scaled = if q_mass > 0.0 { (q_mass.ln() - p_mass.ln() + left).exp() } else { 0.0 };
                let share = ((scaled.clamp(decay, 1.0) - decay) / (1.0 - decay)).clamp(0.0, 1.0);
                probs[i] += p_mass * share;
                probs[i + 1] += p_mass * (1.0 - share);
            }
            lower_tails = upper_tails;
        }
        // Losses above the last grid point count as infinite.
        LossPmf { h, offset: first, probs, infinity: lower_tails.p_above }
    }
}

/// The probability of (a, b] given the probabilities above and below a and b, using whichever side
/// is smaller so that the difference does not cancel.
fn interval_mass(above_a: f64, below_a: f64, above_b: f64, below_b: f64) -> f64 {
    let mass = if above_a < below_b { above_a - above_b } else { below_b - below_a };
    mass.max(0.0)
}

impl LossPmf {
    /// The loss that is zero with certainty: the identity of composition.
    fn certain_zero(h: f64) -> Self {
        LossPmf { h, offset: 0, probs: vec![1.0], infinity: 0.0 }
    }

    fn variance(&self) -> f64 {
        let h = self.h;
        let total: f64 = self.probs.iter().sum();
        let mean =
            self.probs.iter().enumerate().map(|(i, p)| p * (self.offset + i as i64) as f64 * h).sum::<f64>()
                / total;
        self.probs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let d = (self.offset + i as i64) as f64 * h - mean;
                p * d * d
            })
            .sum::<f64>()
            / total
    }

    /// The same distribution on the grid 2h·ℤ: a point between two coarse points is split between them
    /// keeping E[e^(−L)] (a loss a + h goes to a with probability e^(−h)/(1 + e^(−h))), which only
    /// increases δ(ε).
    fn coarsen(&mut self) {
        let share_low = (-self.h).exp() / (1.0 + (-self.h).exp());
        let new_offset = self.offset.div_euclid(2);
        let last = (self.offset + self.probs.len() as i64 - 1).div_euclid(2) + 1;
        let mut coarse = vec![0.0; (last - new_offset + 1) as usize];
        for (i, &p) in self.probs.iter().enumerate() {
            let index = self.offset + i as i64;
            let k = (index.div_euclid(2) - new_offset) as usize;
            if index.rem_euclid(2) == 0 {
                coarse[k] += p;
            } else {
                coarse[k] += p * share_low;
                coarse[k + 1] += p * (1.0 - share_low);
            }
        }
        while coarse.len() > 1 && coarse[coarse.len() - 1] == 0.0 {
            coarse.pop();
        }
        self.h *= 2.0;
        self.offset = new_offset;
        self.probs = coarse;
    }

    /// Coarsens until the spacing is `h` (spacings are the same base spacing times powers of two).
    fn coarsen_to(&mut self, h: f64) {
        while self.h < h * (1.0 - 1e-9) {
            self.coarsen();
        }
    }

    /// The distribution of the sum of independent losses from `self` and `other`, trimmed.
    fn convolve(&self, other: &LossPmf, planner: &mut FftPlanner<f64>) -> LossPmf {
        if self.h < other.h {
            let mut coarser = self.clone();
            coarser.coarsen_to(other.h);
            return coarser.convolve(other, planner);
        }
        if other.h < self.h {
            let mut coarser = other.clone();
            coarser.coarsen_to(self.h);
            return self.convolve(&coarser, planner);
        }
        let probs = convolve_slices(&self.probs, &other.probs, planner);
        let infinity = self.infinity + other.infinity - self.infinity * other.infinity;
        let mut result = LossPmf { h: self.h, offset: self.offset + other.offset, probs, infinity };
        result.trim();
        while result.probs.len() > MAX_LEN {
            result.coarsen();
            result.trim();
        }
        result
    }

    /// Removes negative rounding noise and trims up to `TRUNCATION_MASS` from each end: the low end's
    /// mass moves up to the first kept point, the high end's to infinity (both pessimistic).
    fn trim(&mut self) {
        for p in &mut self.probs {
            *p = p.max(0.0); // also maps NaN to 0
        }
        let floor = NOISE_FLOOR * self.probs.iter().cloned().fold(0.0, f64::max);
        let trimmable = |cut: f64, p: f64| cut + p <= TRUNCATION_MASS || p <= floor;
        let mut cut_low = 0.0;
        let mut start = 0;
        while start + 1 < self.probs.len() && trimmable(cut_low, self.probs[start]) {
            cut_low += self.probs[start];
            start += 1;
        }
        let mut cut_high = 0.0;
        let mut end = self.probs.len();
        while end > start + 1 && trimmable(cut_high, self.probs[end - 1]) {
            cut_high += self.probs[end - 1];
            end -= 1;
        }
        self.probs.truncate(end);
        self.probs.drain(..start);
        self.probs[0] += cut_low;
        self.offset += start as i64;
        self.infinity += cut_high;
    }

    /// The `times`-fold composition, by repeated squaring.
    fn self_compose(&self, times: u64, planner: &mut FftPlanner<f64>) -> LossPmf {
        let mut result = LossPmf::certain_zero(self.h);
        let mut power = self.clone();
        let mut remaining = times;
        while remaining > 0 {
            if remaining & 1 == 1 {
                result = result.convolve(&power, planner);
            }
            remaining >>= 1;
            if remaining > 0 {
                power = power.convolve(&power, planner);
            }
        }
        result
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta`, or ∞ when P(L = ∞) ≥ δ.
    ///
    /// Scanning down the grid keeps S = Σ_{j>k} p_j and U = Σ_{j>k} p_j e^(−(ℓ_j − ℓ_k)), so that
    /// δ(ε) = P(∞) + S − e^(ε−ℓ_k)·U on [ℓ_k, ℓ_{k+1}], without ever forming e^(ℓ).
    fn epsilon_for_delta(&self, delta: f64) -> f64 {
        let h = self.h;
        if self.infinity >= delta {
            return f64::INFINITY;
        }
        let decay = (-h).exp();
        let loss = |k: usize| (self.offset + k as i64) as f64 * h;
        let mut above = 0.0;
        let mut weighted = 0.0;
        for k in (0..self.probs.len() - 1).rev() {
            above += self.probs[k + 1];
            weighted = decay * (self.probs[k + 1] + weighted);
            if self.infinity + above - weighted > delta {
                let eps = loss(k) + ((self.infinity + above - delta) / weighted).ln();
                return eps.max(0.0);
            }
        }
        // δ(ℓ₀) ≤ δ: solve below the lowest grid point, where every point counts.
        let above = above + self.probs[0];
        let weighted = self.probs[0] + weighted;
        let excess = self.infinity + above - delta;
        if excess <= 0.0 {
            return 0.0;
        }
        (loss(0) + (excess / weighted).ln()).max(0.0)
    }
}

/// Linear convolution of two non-negative sequences: directly when one is short, else by FFT.
fn convolve_slices(a: &[f64], b: &[f64], planner: &mut FftPlanner<f64>) -> Vec<f64> {
    let out_len = a.len() + b.len() - 1;
    if a.len().min(b.len()) <= DIRECT_CONVOLUTION_LEN {
        let mut out = vec![0.0; out_len];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        return out;
    }
    let n = out_len.next_power_of_two();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let to_complex = |s: &[f64]| {
        let mut v: Vec<Complex<f64>> = s.iter().map(|&x| Complex::new(x, 0.0)).collect();
        v.resize(n, Complex::new(0.0, 0.0));
        v
    };
    let mut fa = to_complex(a);
    forward.process(&mut fa);
    if std::ptr::eq(a, b) {
        for x in &mut fa {
            *x = *x * *x;
        }
    } else {
        let mut fb = to_complex(b);
        forward.process(&mut fb);
        for (x, y) in fa.iter_mut().zip(&fb) {
            *x *= *y;
        }
    }
    inverse.process(&mut fa);
    let scale = 1.0 / n as f64;
    fa.iter().take(out_len).map(|c| c.re * scale).collect()
}

/// ε(δ) by PLD for a sequence of Poisson-subsampled Gaussian phases `(q, σ, steps)` (validated by the
/// caller). When δ is below the accountant's resolution, the error holds that resolution: the
/// probability the composed distribution assigns to an infinite loss.
pub(crate) fn gaussian_epsilon(phases: &[(f64, f64, u64)], delta: f64) -> Result<f64, f64> {
    let mut planner = FftPlanner::new();
    let mut worst: f64 = 0.0;
    for direction in [Direction::Remove, Direction::Add] {
        let pairs: Vec<(SubsampledGaussian, u64)> = phases
            .iter()
            .map(|&(q, sigma, steps)| (SubsampledGaussian { q, sigma, direction }, steps))
            .collect();
        let h = grid_interval(&pairs);
        let mut composed = LossPmf::certain_zero(h);
        for (pair, steps) in &pairs {
            let step = pair.discretise(h);
            composed = composed.convolve(&step.self_compose(*steps, &mut planner), &mut planner);
        }
        if composed.infinity >= delta {
            return Err(composed.infinity);
        }
        worst = worst.max(composed.epsilon_for_delta(delta));
    }
    Ok(worst)
}

/// The grid spacing: dp-accounting's 1e-4 unless the composed distribution would need more than
/// `MAX_BINS` points, judged from the per-step loss ranges and a ±12 standard deviation window of the
/// composed loss.
fn grid_interval(pairs: &[(SubsampledGaussian, u64)]) -> f64 {
    let mut h = DEFAULT_INTERVAL;
    let mut step_width: f64 = 0.0;
    for (pair, _) in pairs {
        let (low, high) = pair.loss_range();
        step_width = step_width.max(high - low);
    }
    h = h.max(step_width / MAX_BINS);
    let variance: f64 = pairs.iter().map(|(pair, steps)| pair.discretise(h).variance() * *steps as f64).sum();
    let width = step_width + 24.0 * variance.sqrt();
    h.max(width / MAX_BINS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// δ(ε) of a discrete distribution, summed directly.
    fn delta_at(pmf: &LossPmf, eps: f64) -> f64 {
        pmf.infinity
            + pmf
                .probs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let loss = (pmf.offset + i as i64) as f64 * pmf.h;
                    p * (1.0 - (eps - loss).exp()).max(0.0)
                })
                .sum::<f64>()
    }

    fn q_mass(pmf: &LossPmf) -> f64 {
        pmf.probs.iter().enumerate().map(|(i, p)| p * (-((pmf.offset + i as i64) as f64 * pmf.h)).exp()).sum()
    }

    #[test]
    fn discretisation_keeps_both_masses_and_only_raises_delta() {
        for direction in [Direction::Remove, Direction::Add] {
            let pair = SubsampledGaussian { q: 0.2, sigma: 0.9, direction };
            let pmf = pair.discretise(1e-3);
            let p_total: f64 = pmf.probs.iter().sum::<f64>() + pmf.infinity;
            assert!((p_total - 1.0).abs() < 1e-12, "{direction:?}: P-mass {p_total}");
            // E_P[e^(−L)] is the Q-mass of P's support: 1 up to the truncated tails.
            assert!((q_mass(&pmf) - 1.0).abs() < 1e-9, "{direction:?}: Q-mass {}", q_mass(&pmf));
            for eps in [0.0, 0.1, 0.5, 1.0, 2.0] {
                let tails = pair.tails(eps);
                let exact = tails.p_above - eps.exp() * tails.q_above;
                let discrete = delta_at(&pmf, eps);
                assert!(discrete >= exact - 1e-15, "{direction:?} ε={eps}: {discrete} < {exact}");
                assert!(discrete - exact < 1e-6, "{direction:?} ε={eps}: {discrete} vs {exact}");
            }
        }
    }

    #[test]
    fn coarsening_keeps_masses_and_only_raises_delta() {
        let pair = SubsampledGaussian { q: 0.3, sigma: 1.2, direction: Direction::Remove };
        let fine = pair.discretise(1e-3);
        let mut coarse = fine.clone();
        coarse.coarsen();
        coarse.coarsen();
        assert_eq!(coarse.h, 4e-3);
        let fine_total: f64 = fine.probs.iter().sum();
        let coarse_total: f64 = coarse.probs.iter().sum();
        assert!((fine_total - coarse_total).abs() < 1e-14);
        assert!((q_mass(&fine) - q_mass(&coarse)).abs() < 1e-12);
        for eps in [-0.05, 0.0, 0.013, 0.2, 0.7, 1.5] {
            assert!(delta_at(&coarse, eps) >= delta_at(&fine, eps) - 1e-15, "ε={eps}");
        }
    }

    #[test]
    fn epsilon_for_delta_inverts_delta() {
        let pair = SubsampledGaussian { q: 0.05, sigma: 0.8, direction: Direction::Remove };
        let mut planner = FftPlanner::new();
        let pmf = pair.discretise(1e-4).self_compose(100, &mut planner);
        for delta in [1e-3, 1e-5, 1e-8] {
            let eps = pmf.epsilon_for_delta(delta);
            assert!((delta_at(&pmf, eps) - delta).abs() < 1e-9 * delta.max(1e-6), "δ={delta}: ε={eps}");
        }
    }
}
