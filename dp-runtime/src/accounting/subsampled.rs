//! RDP of Poisson-subsampled mechanisms other than the continuous Gaussian: the general upper bound of
//! Zhu & Wang (2019), applied to the discrete Gaussian of the secure mode.
//!
//! The discrete Gaussian N_Z(0, σ²) added independently to each of d integer coordinates satisfies
//! ½(Δ/σ)²-zCDP for integer-valued queries of L2 sensitivity Δ (Canonne, Kamath, Steinke 2020: the
//! one-dimensional divergence bound D_α(N_Z(μ,σ²) ‖ N_Z(ν,σ²)) ≤ α(μ−ν)²/(2σ²) for integers μ, ν, and
//! Rényi divergences of product distributions add over coordinates). The inflation term τ of their
//! multivariate theorem as used for *sums* of discrete Gaussians (Kairouz, Liu, Steinke 2021,
//! τ = 10·Σ_{k=1}^{n−1} e^(−2π²σ²·k/(k+1)) for n summed shares) is zero for the single noise draw made
//! here (n = 1), so the zCDP parameter does not depend on the dimension.
//!
//! Poisson subsampling of a mechanism known only through its RDP curve ε(·) is bounded at integer orders
//! α ≥ 2 by Zhu & Wang (2019, "Poisson Subsampled Rényi Differential Privacy", Thm 6):
//! `ε'(α) ≤ 1/(α−1) · ln[(1−γ)^(α−1)(αγ−γ+1) + C(α,2)γ²(1−γ)^(α−2)e^(ε(2))
//!                      + 3·Σ_{ℓ=3}^{α} C(α,ℓ)(1−γ)^(α−ℓ)γ^ℓ e^((ℓ−1)ε(ℓ))]`.
//! The result is also capped by the unsubsampled ε(α), which is itself a valid bound.

use super::logspace::log_add;

/// The zCDP parameter ρ = Δ²/(2σ²) of the discrete Gaussian mechanism with L2 sensitivity
/// `l2_sensitivity` and per-coordinate scale `sigma` (both in units of the integer grid); its RDP at
/// order α is ρ·α.
pub fn discrete_gaussian_rho(l2_sensitivity: f64, sigma: f64) -> f64 {
    let ratio = l2_sensitivity / sigma;
    0.5 * ratio * ratio
}

/// Upper bound on the RDP at integer order `alpha` ≥ 2 of a mechanism with RDP curve `base_rdp`,
/// applied to a Poisson subsample with rate `gamma` ∈ (0, 1] (Zhu & Wang 2019, Thm 6), capped by the
/// unsubsampled `base_rdp(alpha)`.
pub fn poisson_subsampled_upper_bound(gamma: f64, alpha: u64, base_rdp: impl Fn(f64) -> f64) -> f64 {
    assert!(alpha >= 2, "the Zhu–Wang bound needs an integer order of at least 2, got {alpha}");
    assert!(gamma > 0.0 && gamma <= 1.0, "sampling rate {gamma} outside (0, 1]");
    let unsubsampled = base_rdp(alpha as f64);
    if gamma == 1.0 {
        return unsubsampled;
    }
    // Since Σ_ℓ C(α,ℓ)(1−γ)^(α−ℓ)γ^ℓ = 1, the bracket minus one is
    // C(α,2)γ²(1−γ)^(α−2)(e^(ε(2)) − 1) + Σ_{ℓ≥3} C(α,ℓ)(1−γ)^(α−ℓ)γ^ℓ (3e^((ℓ−1)ε(ℓ)) − 1), all terms
    // positive; summing that keeps precision when the bracket is close to one.
    let a = alpha as f64;
    let log_gamma = gamma.ln();
    let log_1mg = (-gamma).ln_1p();
    let mut log_binom = a.ln(); // ln C(α, 1)
    let mut log_excess = f64::NEG_INFINITY;
    for l in 2..=alpha {
        let lf = l as f64;
        log_binom += (a - lf + 1.0).ln() - lf.ln();
        let exponent = (lf - 1.0) * base_rdp(lf);
        let log_factor = if l == 2 {
            // ln(e^x − 1)
            if exponent > 40.0 {
                exponent
            } else {
                exponent.exp_m1().ln()
            }
        } else {
            // ln(3e^x − 1) = x + ln(3 − e^(−x))
            exponent + (3.0 - (-exponent).exp()).ln()
        };
        let term = log_binom + (a - lf) * log_1mg + lf * log_gamma + log_factor;
        log_excess = log_add(log_excess, term);
    }
    let log_bracket =
        if log_excess > 40.0 { log_excess + (-log_excess).exp().ln_1p() } else { log_excess.exp().ln_1p() };
    (log_bracket / (a - 1.0)).min(unsubsampled)
}
