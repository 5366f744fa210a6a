//! Rényi differential privacy of the Poisson-subsampled Gaussian mechanism, and its conversion to (ε, δ).
//!
//! The RDP at order α of one step with sampling rate q and noise multiplier σ is
//! `ln(A_α) / (α − 1)` with `A_α = E_{z~μ0}[(μ(z)/μ0(z))^α]`, μ0 = N(0, σ²), μ = (1 − q)μ0 + q·N(1, σ²)
//! (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3).
//! Integer orders use the binomial expansion, fractional orders the paper's two alternating series whose
//! terms are summed with their signs. Everything is evaluated in log space, so orders up to 1024 and tiny
//! sampling rates neither overflow nor underflow.

use super::logspace::{ln_erfc, log_add, SignedLogSum};

/// Number of orders in [`DEFAULT_ORDERS`].
pub const DEFAULT_ORDER_COUNT: usize = 99 + 53 + 4;

/// The RDP orders searched by default: 1.1, 1.2, …, 10.9, then 11, 12, …, 63, then 128, 256, 512, 1024
/// (the default set of Google's dp-accounting).
pub const DEFAULT_ORDERS: [f64; DEFAULT_ORDER_COUNT] = default_orders();

const fn default_orders() -> [f64; DEFAULT_ORDER_COUNT] {
    let mut orders = [0.0; DEFAULT_ORDER_COUNT];
    let mut i = 0;
    // 1.1 ..= 10.9 as tenths: dividing the exact integer by 10 rounds exactly like the decimal literal.
    while i < 99 {
        orders[i] = (11 + i) as f64 / 10.0;
        i += 1;
    }
    while i < 99 + 53 {
        orders[i] = (11 + i - 99) as f64;
        i += 1;
    }
    orders[152] = 128.0;
    orders[153] = 256.0;
    orders[154] = 512.0;
    orders[155] = 1024.0;
    orders
}

/// RDP at order `alpha` of one step of the Poisson-subsampled Gaussian mechanism with sampling rate `q`
/// and noise multiplier `sigma` (noise standard deviation over L2 sensitivity).
///
/// Exact: at integer orders by the binomial sum, at fractional orders by the two-series formula of
/// Mironov, Talwar, Zhang (2019, §3.3) with signed terms; q = 1 gives the closed form α/(2σ²), q = 0 gives 0.
///
/// # Panics
/// When the arguments are outside their domain (q ∉ [0, 1], σ not positive and finite, α ≤ 1 or not
/// finite). The public accountant functions validate their inputs before calling this.
pub fn poisson_gaussian(q: f64, sigma: f64, alpha: f64) -> f64 {
    assert!((0.0..=1.0).contains(&q), "sampling rate {q} outside [0, 1]");
    assert!(sigma > 0.0 && sigma.is_finite(), "noise multiplier {sigma} not positive and finite");
    assert!(alpha > 1.0 && alpha.is_finite(), "RDP order {alpha} not a finite number above 1");
    if q == 0.0 {
        return 0.0;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64)
    } else {
        log_a_fractional(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// `ln A_α` at an integer order α ≥ 2, for 0 < q < 1.
///
/// Because Σ_k C(α,k) q^k (1−q)^(α−k) = 1, `A_α − 1 = Σ_{k≥2} C(α,k) q^k (1−q)^(α−k) (e^((k²−k)/(2σ²)) − 1)`,
/// a sum of positive terms; summing it instead of A_α keeps full relative precision when A_α is close to 1
/// (small q, large σ), where `ln A_α` is tiny.
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let a = alpha as f64;
    let mut log_binom = 0.0; // ln C(α, k), updated incrementally
    let mut log_a_minus_one = f64::NEG_INFINITY;
    for k in 1..=alpha {
        let kf = k as f64;
        log_binom += (a - kf + 1.0).ln() - kf.ln();
        if k < 2 {
            continue;
        }
        let exponent = (kf * kf - kf) / two_var;
        let term = log_binom + kf * log_q + (a - kf) * log_1mq + ln_expm1(exponent);
        log_a_minus_one = log_add(log_a_minus_one, term);
    }
    ln_1p_exp(log_a_minus_one)
}

/// `ln A_α` at a fractional order, for 0 < q < 1 (Mironov, Talwar, Zhang 2019, §3.3).
///
/// Splitting the real line at z0 = σ² ln(1/q − 1) + 1/2, where the two mixture components are equal,
/// and expanding (1 − q + q·e^((2z−1)/(2σ²)))^α binomially on each side gives
/// `A_α = Σ_i C(α,i) (1−q)^(α−i) q^i e^((i²−i)/(2σ²)) · ½erfc((i − z0)/(√2σ))`
/// `    + Σ_i C(α,i) (1−q)^i q^(α−i) e^(((α−i)²−(α−i))/(2σ²)) · ½erfc((z0 − (α−i))/(√2σ))`.
/// C(α,i) is negative for every other i > α, so the terms are summed with their signs. Past i > α the
/// series alternate with eventually decreasing terms, so stopping once a term is below 2⁻⁴⁰ of the running
/// A_α − 1 bounds the relative truncation error of A_α − 1 by 2⁻⁴⁰. The terms decay only polynomially
/// when q ≥ 1/2 and σ is large; there the sum stops after a million terms, where the first omitted term,
/// which bounds the error, is below 1e-14 (relative error of the RDP below 1e-6 even at σ = 1000).
///
/// To keep relative precision when A_α is close to 1, the sum accumulated is A_α − 1: the first series'
/// i = 0 and i = 1 terms are written as (1−q)^(α−1)(1 + (α−1)q) − 1 (computed with expm1/ln1p; it is
/// −C(α,2)q² to leading order) minus their complementary-erfc parts, which are small.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    const MAX_TERMS: u64 = 1_000_000;
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let erfc_scale = std::f64::consts::SQRT_2 * sigma;
    let log_half = 0.5f64.ln();
    let mut excess = SignedLogSum::new(); // A_α − 1
                                          // (1−q)^α + α(1−q)^(α−1) q − 1
    let head = ((alpha - 1.0) * log_1mq + ((alpha - 1.0) * q).ln_1p()).exp_m1();
    excess.add(head.signum(), head.abs().ln());
    // minus (1−q)^α·½erfc(z0/(√2σ)) and α(1−q)^(α−1) q·½erfc((z0 − 1)/(√2σ))
    excess.add(-1.0, alpha * log_1mq + log_half + ln_erfc(z0 / erfc_scale));
    excess.add(
        -1.0,
        alpha.ln() + (alpha - 1.0) * log_1mq + log_q + log_half + ln_erfc((z0 - 1.0) / erfc_scale),
    );
    let mut log_binom = 0.0; // ln |C(α, i)|
    let mut binom_negative = false;
    let mut i: u64 = 0;
    loop {
        let fi = i as f64;
        if i > 0 {
            let factor = alpha - fi + 1.0;
            log_binom += factor.abs().ln() - fi.ln();
            if factor < 0.0 {
                binom_negative = !binom_negative;
            }
        }
        let j = alpha - fi;
        let sign = if binom_negative { -1.0 } else { 1.0 };
        let log_t1 = log_binom + j * log_q + fi * log_1mq;
        let log_e1 = log_half + ln_erfc((z0 - j) / erfc_scale);
        let log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
        excess.add(sign, log_s1);
        let mut largest = log_s1;
        if i >= 2 {
            let log_t0 = log_binom + fi * log_q + j * log_1mq;
            let log_e0 = log_half + ln_erfc((fi - z0) / erfc_scale);
            let log_s0 = log_t0 + (fi * fi - fi) / two_var + log_e0;
            excess.add(sign, log_s0);
            largest = largest.max(log_s0);
        }
        i += 1;
        if (fi > alpha && largest < excess.log_abs() - 40.0 * std::f64::consts::LN_2) || i >= MAX_TERMS {
            break;
        }
    }
    excess.ln_1p()
}

/// ln(e^x − 1) for x > 0, accurate for tiny and huge x.
fn ln_expm1(x: f64) -> f64 {
    if x > 40.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    }
}

/// ln(1 + e^x), accurate for very negative and very positive x.
fn ln_1p_exp(x: f64) -> f64 {
    if x > 40.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The (ε, δ) guarantee implied by the RDP curve `rdp` (one value per order, already multiplied by the
/// number of steps): the minimum over orders α of `rdp(α) + ln((α−1)/α) − (ln δ + ln α)/(α − 1)`
/// (Balle et al. 2020, Thm 21; Canonne, Kamath, Steinke 2020), never negative.
///
/// Returns `(ε, α*)`, the best ε and the order attaining it. Orders with an infinite or NaN RDP value are
/// skipped; if no order is usable the result is `(∞, NaN)`. `orders` and `rdp` must have equal lengths
/// and every order must exceed 1.
pub fn to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    assert_eq!(orders.len(), rdp.len(), "one RDP value per order");
    let log_delta = delta.ln();
    let mut best = (f64::INFINITY, f64::NAN);
    for (&alpha, &value) in orders.iter().zip(rdp) {
        assert!(alpha > 1.0, "RDP order {alpha} must exceed 1");
        if !value.is_finite() {
            continue;
        }
        let eps = value + ((alpha - 1.0) / alpha).ln() - (log_delta + alpha.ln()) / (alpha - 1.0);
        let eps = eps.max(0.0);
        if eps < best.0 {
            best = (eps, alpha);
        }
    }
    best
}
