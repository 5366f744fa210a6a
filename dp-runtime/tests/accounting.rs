//! Checks of the privacy accountants against closed forms, independent computations done here in f64,
//! and published values.

use dp_runtime::accounting::rdp::{self, DEFAULT_ORDERS};
use dp_runtime::accounting::{calibrate_noise, epsilon, AccountantKind, Epsilon, Ledger, Mechanism};
use dp_runtime::Error;

const DELTA: f64 = 1e-5;
const MNIST_Q: f64 = 256.0 / 60000.0;

fn relative_error(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

fn rdp_eps(q: f64, sigma: f64, steps: u64) -> Epsilon {
    epsilon(AccountantKind::Rdp, q, sigma, steps, DELTA).unwrap()
}

fn pld_eps(q: f64, sigma: f64, steps: u64) -> Epsilon {
    epsilon(AccountantKind::Pld, q, sigma, steps, DELTA).unwrap()
}

/// ln Σ e^(x_i), for the test's own computations.
fn log_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// ln C(n, k) for integer n, by summing logarithms.
fn log_binomial(n: u64, k: u64) -> f64 {
    (1..=k).map(|i| ((n - k + i) as f64).ln() - (i as f64).ln()).sum()
}

/// RDP at integer order α from the plain binomial sum A_α = Σ_k C(α,k)(1−q)^(α−k) q^k e^((k²−k)/(2σ²)).
fn rdp_binomial_sum(q: f64, sigma: f64, alpha: u64) -> f64 {
    let terms: Vec<f64> = (0..=alpha)
        .map(|k| {
            let kf = k as f64;
            log_binomial(alpha, k)
                + (alpha - k) as f64 * (1.0 - q).ln()
                + kf * q.ln()
                + (kf * kf - kf) / (2.0 * sigma * sigma)
        })
        .collect();
    log_sum_exp(&terms) / (alpha as f64 - 1.0)
}

/// Neumaier-compensated sum, so that the test's quadrature adds no rounding error of its own.
fn compensated_sum(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0f64, 0.0f64);
    for x in xs {
        let t = sum + x;
        compensation += if sum.abs() >= x.abs() { (sum - t) + x } else { (x - t) + sum };
        sum = t;
    }
    sum + compensation
}

/// RDP at any order α from the defining expectation A_α = E_{z~N(0,σ²)}[(1 − q + q·e^((2z−1)/(2σ²)))^α],
/// integrated by the trapezoidal rule (spectrally accurate for this smooth, fast-decaying integrand).
/// Large values are integrated in log space; small ones as A_α − 1 = E[(ratio)^α − 1], which keeps
/// the relative precision of the tiny RDP values of small q.
fn rdp_numerical_integration(q: f64, sigma: f64, alpha: f64) -> f64 {
    // The integrand peaks between 0 and α and decays like a Gaussian of width σ on either side.
    let low = -14.0 * sigma;
    let high = alpha + 14.0 * sigma;
    let step = sigma / 100.0;
    let n = ((high - low) / step).ceil() as usize;
    let var2 = 2.0 * sigma * sigma;
    let log_density = |z: f64| -z * z / var2 - (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
    let weight = |i: usize| -> f64 {
        if i == 0 || i == n {
            0.5
        } else {
            1.0
        }
    };
    let log_ratio = |z: f64| {
        let w = (2.0 * z - 1.0) / var2;
        // ln(1 − q + q e^w) = ln(1 + q (e^w − 1))
        if w < 1.0 {
            (q * w.exp_m1()).ln_1p()
        } else {
            log_sum_exp(&[(1.0 - q).ln(), q.ln() + w])
        }
    };
    let logs: Vec<f64> = (0..=n)
        .map(|i| {
            let z = low + i as f64 * step;
            weight(i).ln() + alpha * log_ratio(z) + log_density(z)
        })
        .collect();
    let log_a = log_sum_exp(&logs) + step.ln();
    if log_a > 0.5 {
        return log_a / (alpha - 1.0);
    }
    let excess = compensated_sum((0..=n).map(|i| {
        let z = low + i as f64 * step;
        let exponent = alpha * log_ratio(z);
        // (ratio^α − 1)·density, without overflow where the ratio is large and the density tiny
        let value = if exponent > 1.0 {
            (exponent + log_density(z)).exp() - log_density(z).exp()
        } else {
            exponent.exp_m1() * log_density(z).exp()
        };
        weight(i) * value
    })) * step;
    excess.ln_1p() / (alpha - 1.0)
}

#[test]
fn default_orders_are_dp_accountings_set() {
    assert_eq!(DEFAULT_ORDERS.len(), 99 + 53 + 4);
    assert_eq!(DEFAULT_ORDERS[0], 1.1);
    assert_eq!(DEFAULT_ORDERS[70], 8.1);
    assert_eq!(DEFAULT_ORDERS[98], 10.9);
    assert_eq!(DEFAULT_ORDERS[99], 11.0);
    assert_eq!(DEFAULT_ORDERS[151], 63.0);
    assert_eq!(&DEFAULT_ORDERS[152..], &[128.0, 256.0, 512.0, 1024.0]);
    assert!(DEFAULT_ORDERS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn full_batch_matches_closed_form() {
    for sigma in [0.3, 0.7, 1.0, 2.5, 10.0] {
        for &alpha in &DEFAULT_ORDERS {
            let closed = alpha / (2.0 * sigma * sigma);
            assert_eq!(rdp::poisson_gaussian(1.0, sigma, alpha), closed);
            // The general formulas (integer and fractional) approach the closed form as q → 1.
            if alpha <= 64.0 {
                let near = rdp::poisson_gaussian(1.0 - 1e-9, sigma, alpha);
                assert!(relative_error(near, closed) < 1e-6, "σ={sigma} α={alpha}: {near} vs {closed}");
            }
        }
    }
}

#[test]
fn integer_orders_match_binomial_sum() {
    for q in [1e-4, 0.003, 0.01, 0.1, 0.5, 0.9] {
        for sigma in [0.5, 0.8, 1.1, 2.0, 4.0, 10.0] {
            for alpha in [2u64, 3, 5, 8, 13, 21, 32, 63, 128, 256, 1024] {
                let got = rdp::poisson_gaussian(q, sigma, alpha as f64);
                let want = rdp_binomial_sum(q, sigma, alpha);
                // The plain sum has absolute rounding ~1e-16 in A_α; compare with matching slack.
                let slack = 1e-14 / (alpha as f64 - 1.0);
                assert!(
                    (got - want).abs() <= 1e-10 * want + slack,
                    "q={q} σ={sigma} α={alpha}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn fractional_orders_match_numerical_integration() {
    for q in [0.001, 0.01, 0.1, 0.5, 0.9] {
        for sigma in [0.5, 0.8, 1.1, 2.0, 5.0, 20.0, 1000.0] {
            for alpha in [1.1, 1.5, 2.5, 3.7, 5.3, 8.1, 10.9] {
                let got = rdp::poisson_gaussian(q, sigma, alpha);
                let want = rdp_numerical_integration(q, sigma, alpha);
                // At σ = 1000 the RDP is ~1e-13 and both computations lose a few digits to cancellation.
                let tolerance = if sigma > 100.0 { 1e-6 } else { 1e-9 };
                assert!((got - want).abs() <= tolerance * want, "q={q} σ={sigma} α={alpha}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn fractional_and_integer_paths_agree_near_integers() {
    for (q, sigma) in [(0.01, 1.0), (0.1, 0.5), (0.5, 2.0)] {
        for alpha in [2.0, 3.0, 7.0, 20.0] {
            let exact = rdp::poisson_gaussian(q, sigma, alpha);
            let near = rdp::poisson_gaussian(q, sigma, alpha + 1e-7);
            assert!(relative_error(near, exact) < 1e-5, "q={q} σ={sigma} α={alpha}: {near} vs {exact}");
        }
    }
}

#[test]
fn rdp_is_nondecreasing_in_the_order_and_finite_at_large_orders() {
    for (q, sigma) in [(1e-10, 0.7), (1e-6, 1.0), (MNIST_Q, 1.1), (0.01, 4.0), (0.1, 0.5), (0.7, 3.0)] {
        let curve: Vec<f64> = DEFAULT_ORDERS.iter().map(|&a| rdp::poisson_gaussian(q, sigma, a)).collect();
        assert!(curve.iter().all(|v| v.is_finite() && *v >= 0.0), "q={q} σ={sigma}: {curve:?}");
        for (w, a) in curve.windows(2).zip(DEFAULT_ORDERS.windows(2)) {
            assert!(
                w[1] >= w[0] * (1.0 - 1e-12),
                "q={q} σ={sigma}: RDP({}) = {} < RDP({}) = {}",
                a[1],
                w[1],
                a[0],
                w[0]
            );
        }
    }
}

#[test]
fn epsilon_is_monotone_in_noise_rate_and_steps() {
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let eps = |q: f64, sigma: f64, steps: u64| epsilon(kind, q, sigma, steps, DELTA).unwrap().epsilon;
        let base = eps(0.01, 1.0, 1000);
        assert!(eps(0.01, 1.2, 1000) < base, "{kind}: more noise must lower ε");
        assert!(eps(0.01, 0.9, 1000) > base, "{kind}: less noise must raise ε");
        assert!(eps(0.02, 1.0, 1000) > base, "{kind}: a higher rate must raise ε");
        assert!(eps(0.005, 1.0, 1000) < base, "{kind}: a lower rate must lower ε");
        assert!(eps(0.01, 1.0, 2000) > base, "{kind}: more steps must raise ε");
        assert!(eps(0.01, 1.0, 500) < base, "{kind}: fewer steps must lower ε");
    }
}

#[test]
fn conversion_is_never_negative() {
    // At δ = 0.5 the bound ln((α−1)/α) − (ln δ + ln α)/(α−1) is negative at every order.
    let e = epsilon(AccountantKind::Rdp, 1e-4, 50.0, 1, 0.5).unwrap();
    assert_eq!(e.epsilon, 0.0);
    let (eps, _) = rdp::to_epsilon(&[2.0, 3.0], &[0.0, 0.0], 0.5);
    assert_eq!(eps, 0.0);
}

#[test]
fn published_values_rdp() {
    let e = rdp_eps(MNIST_Q, 1.1, 14_063);
    assert!(relative_error(e.epsilon, 2.59666) < 1e-4, "{e:?}");
    assert_eq!(e.order, Some(8.1));
    let e = rdp_eps(0.01, 4.0, 10_000);
    assert!(relative_error(e.epsilon, 1.03549) < 1e-4, "{e:?}");
    assert_eq!(e.order, Some(17.0));
}

#[test]
fn published_values_pld() {
    for (q, sigma, steps, want) in [(MNIST_Q, 1.1, 14_063, 2.3818), (0.01, 4.0, 10_000, 0.9470)] {
        let pld = pld_eps(q, sigma, steps);
        let rdp = rdp_eps(q, sigma, steps);
        assert!(pld.epsilon <= rdp.epsilon, "PLD {pld:?} above RDP {rdp:?}");
        assert!(relative_error(pld.epsilon, want) < 0.01, "{pld:?} vs {want}");
        assert_eq!(pld.order, None);
    }
}

/// Without subsampling, T steps of the Gaussian mechanism are one Gaussian mechanism with μ = √T/σ, whose
/// exact δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Balle & Wang 2018) is solved here for ε.
#[test]
fn pld_matches_the_exact_gaussian_curve_without_subsampling() {
    fn normal_cdf(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }
    for (sigma, steps) in [(1.0, 1u64), (2.0, 10), (5.0, 100), (10.0, 1000)] {
        let mu = (steps as f64).sqrt() / sigma;
        let delta_of =
            |eps: f64| normal_cdf(-eps / mu + mu / 2.0) - eps.exp() * normal_cdf(-eps / mu - mu / 2.0);
        let (mut low, mut high) = (0.0, 100.0);
        for _ in 0..200 {
            let mid = 0.5 * (low + high);
            if delta_of(mid) > DELTA {
                low = mid;
            } else {
                high = mid;
            }
        }
        let exact = high;
        let pld = pld_eps(1.0, sigma, steps).epsilon;
        assert!(pld >= exact - 1e-9, "σ={sigma} T={steps}: PLD {pld} below the exact {exact}");
        assert!(relative_error(pld, exact) < 1e-3, "σ={sigma} T={steps}: PLD {pld} vs exact {exact}");
    }
}

#[test]
fn calibration_round_trip() {
    for (kind, q, steps, target) in [
        (AccountantKind::Rdp, MNIST_Q, 14_063, 3.0),
        (AccountantKind::Rdp, 0.01, 10_000, 1.0),
        (AccountantKind::Rdp, 0.1, 100, 8.0),
        (AccountantKind::Pld, 0.01, 1_000, 1.0),
    ] {
        let sigma = calibrate_noise(kind, q, steps, DELTA, target).unwrap();
        let got = epsilon(kind, q, sigma, steps, DELTA).unwrap().epsilon;
        assert!(got <= target && target - got < 1e-3, "{kind} q={q} T={steps}: σ={sigma} gives ε={got}");
        let slightly_less = epsilon(kind, q, sigma - 2e-4, steps, DELTA).unwrap().epsilon;
        assert!(slightly_less > target, "{kind}: σ={sigma} is not the smallest σ meeting {target}");
    }
}

#[test]
fn calibration_reports_an_unreachable_target() {
    // At δ = 1e-300 even a vanishing RDP leaves ε ≈ 0.67 at order 1024.
    let err = calibrate_noise(AccountantKind::Rdp, 0.01, 100, 1e-300, 0.1).unwrap_err();
    match err {
        Error::InvalidArgument { name, message } => {
            assert_eq!(name, "target_epsilon");
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
}

fn invalid_name(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::InvalidArgument { name, .. }) => name,
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
}

#[test]
fn invalid_arguments_name_the_argument() {
    let rdp = AccountantKind::Rdp;
    for q in [0.0, -0.1, 1.5, f64::NAN] {
        assert_eq!(invalid_name(epsilon(rdp, q, 1.0, 10, DELTA)), "sampling_rate");
        assert_eq!(invalid_name(calibrate_noise(rdp, q, 10, DELTA, 1.0)), "sampling_rate");
    }
    for sigma in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        assert_eq!(invalid_name(epsilon(rdp, 0.1, sigma, 10, DELTA)), "noise_multiplier");
    }
    for delta in [0.0, 1.0, -1e-5, 2.0, f64::NAN] {
        assert_eq!(invalid_name(epsilon(rdp, 0.1, 1.0, 10, delta)), "delta");
        assert_eq!(invalid_name(calibrate_noise(rdp, 0.1, 10, delta, 1.0)), "delta");
        assert_eq!(invalid_name(Ledger::new().epsilon(rdp, delta)), "delta");
    }
    assert_eq!(invalid_name(epsilon(rdp, 0.1, 1.0, 0, DELTA)), "steps");
    assert_eq!(invalid_name(calibrate_noise(rdp, 0.1, 0, DELTA, 1.0)), "steps");
    for target in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(invalid_name(calibrate_noise(rdp, 0.1, 10, DELTA, target)), "target_epsilon");
    }
    let mut ledger = Ledger::new();
    ledger.record(0.1, 1.0, Mechanism::DiscreteGaussian { l2_sensitivity: 0.0, sigma: 5.0, dimension: 3 }, 4);
    assert_eq!(invalid_name(ledger.epsilon(rdp, DELTA)), "l2_sensitivity");
}

#[test]
fn accountant_kind_parses_and_prints() {
    assert_eq!("rdp".parse::<AccountantKind>().unwrap(), AccountantKind::Rdp);
    assert_eq!("PLD".parse::<AccountantKind>().unwrap(), AccountantKind::Pld);
    assert_eq!(AccountantKind::Pld.to_string(), "pld");
    assert_eq!(invalid_name("prv".parse::<AccountantKind>()), "accountant");
}

#[test]
fn ledger_merges_identical_consecutive_records() {
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 100);
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 50);
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 0);
    assert_eq!(ledger.entries().len(), 1);
    assert_eq!(ledger.entries()[0].steps, 150);
    ledger.record(0.02, 1.0, Mechanism::Gaussian, 10);
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 10);
    assert_eq!(ledger.entries().len(), 3);
    assert_eq!(ledger.steps(), 170);
    // Recording in pieces gives the same ε as one uninterrupted record.
    let mut pieces = Ledger::new();
    for _ in 0..10 {
        pieces.record(MNIST_Q, 1.1, Mechanism::Gaussian, 1000);
    }
    let whole = rdp_eps(MNIST_Q, 1.1, 10_000);
    assert_eq!(pieces.epsilon(AccountantKind::Rdp, DELTA).unwrap(), whole);
    assert_eq!(Ledger::new().epsilon(AccountantKind::Pld, DELTA).unwrap().epsilon, 0.0);
}

#[test]
fn ledger_composes_heterogeneous_phases() {
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 300);
    ledger.record(0.05, 2.0, Mechanism::Gaussian, 200);
    // RDP: the per-order sum of both phases, converted once.
    let total: Vec<f64> = DEFAULT_ORDERS
        .iter()
        .map(|&a| 300.0 * rdp::poisson_gaussian(0.01, 1.0, a) + 200.0 * rdp::poisson_gaussian(0.05, 2.0, a))
        .collect();
    let (want, order) = rdp::to_epsilon(&DEFAULT_ORDERS, &total, DELTA);
    let got = ledger.epsilon(AccountantKind::Rdp, DELTA).unwrap();
    assert_eq!(got, Epsilon { epsilon: want, order: Some(order) });
    // It exceeds each phase alone and is below the sum of the two ε (composition is sublinear).
    let first = rdp_eps(0.01, 1.0, 300).epsilon;
    let second = rdp_eps(0.05, 2.0, 200).epsilon;
    assert!(got.epsilon > first.max(second) && got.epsilon < first + second);
    // PLD of the same ledger: tighter than RDP, above each phase's PLD.
    let pld = ledger.epsilon(AccountantKind::Pld, DELTA).unwrap().epsilon;
    assert!(pld <= got.epsilon);
    assert!(pld > pld_eps(0.01, 1.0, 300).epsilon.max(pld_eps(0.05, 2.0, 200).epsilon));
}

#[test]
fn ledger_serde_round_trip() {
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 300);
    ledger.record(
        0.01,
        1.0,
        Mechanism::DiscreteGaussian { l2_sensitivity: 1024.0, sigma: 1024.0, dimension: 101_770 },
        200,
    );
    let json = serde_json::to_string(&ledger).unwrap();
    let back: Ledger = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ledger);
    assert_eq!(
        back.epsilon(AccountantKind::Rdp, DELTA).unwrap(),
        ledger.epsilon(AccountantKind::Rdp, DELTA).unwrap()
    );
}

fn discrete(q: f64, sigma: f64, steps: u64, kind: AccountantKind) -> Epsilon {
    let mut ledger = Ledger::new();
    let mechanism = Mechanism::DiscreteGaussian { l2_sensitivity: 1.0, sigma, dimension: 10_000 };
    ledger.record(q, sigma, mechanism, steps);
    ledger.epsilon(kind, DELTA).unwrap()
}

#[test]
fn discrete_gaussian_is_bounded_above_continuous_and_close_when_q_sigma_squared_is_small() {
    for (q, sigma, steps) in
        [(MNIST_Q, 1.1, 14_063), (0.01, 4.0, 10_000), (0.001, 2.0, 100_000), (0.1, 0.8, 100)]
    {
        let continuous = rdp_eps(q, sigma, steps).epsilon;
        let dg = discrete(q, sigma, steps, AccountantKind::Rdp);
        assert!(dg.epsilon >= continuous, "q={q} σ={sigma}: {dg:?} < {continuous}");
        assert_eq!(dg.order.map(f64::fract), Some(0.0), "discrete Gaussian entries use integer orders only");
        // Under PLD the discrete phases fall back to RDP.
        assert_eq!(discrete(q, sigma, steps, AccountantKind::Pld), dg);
    }
    // The Zhu–Wang bound exceeds the exact binomial sum by twice its terms of order ℓ ≥ 3, which vanish
    // faster than the ℓ = 2 term as q → 0: the gap is small at small q and shrinks with q.
    let gap = |q: f64, sigma: f64, steps: u64| {
        let continuous = rdp_eps(q, sigma, steps).epsilon;
        relative_error(discrete(q, sigma, steps, AccountantKind::Rdp).epsilon, continuous)
    };
    assert!(gap(MNIST_Q, 1.1, 14_063) < 0.1);
    let gaps = [gap(0.01, 2.0, 10_000), gap(0.001, 2.0, 100_000), gap(1e-4, 2.0, 1_000_000)];
    assert!(gaps[0] > gaps[1] && gaps[1] > gaps[2] && gaps[2] < 0.02, "{gaps:?}");
    // Without subsampling the discrete Gaussian's bound is the continuous one at integer orders.
    let dg = discrete(1.0, 3.0, 50, AccountantKind::Rdp);
    let integer_orders: Vec<f64> = DEFAULT_ORDERS.iter().cloned().filter(|a| a.fract() == 0.0).collect();
    let curve: Vec<f64> = integer_orders.iter().map(|a| 50.0 * a / 18.0).collect();
    assert!(relative_error(dg.epsilon, rdp::to_epsilon(&integer_orders, &curve, DELTA).0) < 1e-12);
}

#[test]
fn mixed_ledger_under_pld_is_no_worse_than_rdp() {
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 5000);
    ledger.record(
        0.01,
        1.0,
        Mechanism::DiscreteGaussian { l2_sensitivity: 1.0, sigma: 1.0, dimension: 100 },
        10,
    );
    let rdp = ledger.epsilon(AccountantKind::Rdp, DELTA).unwrap().epsilon;
    let pld = ledger.epsilon(AccountantKind::Pld, DELTA).unwrap().epsilon;
    assert!(pld <= rdp, "{pld} > {rdp}");
    assert!(pld >= pld_eps(0.01, 1.0, 5000).epsilon);
}

/// The (ε, δ) conversion, written out here independently of the library.
fn reference_conversion(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    orders
        .iter()
        .zip(rdp)
        .map(|(&a, &r)| ((r + ((a - 1.0) / a).ln() - (delta.ln() + a.ln()) / (a - 1.0)).max(0.0), a))
        .fold((f64::INFINITY, f64::NAN), |best, x| if x.0 < best.0 { x } else { best })
}

/// The settings of the comparison table in docs/PRIVACY.md: the library's RDP ε against ε from the
/// test's own numerical integration at every default order, and PLD against RDP. Run with
/// `--nocapture` to print the table rows.
#[test]
fn comparison_table() {
    let settings: [(f64, f64, u64); 6] = [
        (MNIST_Q, 1.1, 14_063),
        (0.01, 4.0, 10_000),
        (0.1, 0.5, 100),
        (0.001, 0.8, 100_000),
        (0.05, 1.5, 2_000),
        (1.0, 5.0, 100),
    ];
    for (q, sigma, steps) in settings {
        let curve: Vec<f64> = DEFAULT_ORDERS
            .iter()
            .map(|&a| {
                let per_step =
                    if q == 1.0 { a / (2.0 * sigma * sigma) } else { rdp_numerical_integration(q, sigma, a) };
                per_step * steps as f64
            })
            .collect();
        let (reference, reference_order) = reference_conversion(&DEFAULT_ORDERS, &curve, DELTA);
        let rdp = rdp_eps(q, sigma, steps);
        let pld = pld_eps(q, sigma, steps);
        eprintln!(
            "| {q:.6} | {sigma} | {steps} | {:.5} (α = {}) | {reference:.5} (α = {reference_order}) | {:.5} |",
            rdp.epsilon,
            rdp.order.unwrap(),
            pld.epsilon
        );
        assert!(relative_error(rdp.epsilon, reference) < 1e-6, "q={q} σ={sigma}: {rdp:?} vs {reference}");
        assert_eq!(rdp.order, Some(reference_order));
        assert!(pld.epsilon <= rdp.epsilon);
    }
}

/// Settings whose composed loss distribution would need far more than 2²¹ points at the default
/// spacing, so the PLD accountant must widen its grid (up front, or by coarsening while composing):
/// ε stays finite, below RDP and, where RDP is tight, not far from it.
#[test]
fn pld_widens_its_grid_for_wide_distributions() {
    for (q, sigma, steps, ratio) in
        [(0.5, 0.6, 100_000, 0.8), (1.0, 0.1, 300, 0.8), (1e-6, 0.5, 10_000_000, 0.05)]
    {
        let pld = pld_eps(q, sigma, steps).epsilon;
        let rdp = rdp_eps(q, sigma, steps).epsilon;
        assert!(
            pld.is_finite() && pld <= rdp && pld >= ratio * rdp,
            "q={q} σ={sigma} T={steps}: {pld} vs {rdp}"
        );
    }
}

#[test]
fn pld_reports_a_delta_below_its_resolution() {
    let err = epsilon(AccountantKind::Pld, 0.01, 1.0, 1000, 1e-20).unwrap_err();
    match err {
        Error::InvalidArgument { name, message } => {
            assert_eq!(name, "delta");
            assert!(message.contains("resolution"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
    // A mixed ledger then falls back to RDP for everything.
    let mut ledger = Ledger::new();
    ledger.record(0.01, 1.0, Mechanism::Gaussian, 1000);
    ledger.record(
        0.01,
        1.0,
        Mechanism::DiscreteGaussian { l2_sensitivity: 1.0, sigma: 1.0, dimension: 10 },
        10,
    );
    let pld = ledger.epsilon(AccountantKind::Pld, 1e-20).unwrap();
    assert_eq!(pld, ledger.epsilon(AccountantKind::Rdp, 1e-20).unwrap());
}
