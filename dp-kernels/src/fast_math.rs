//! Branch-free `f32` exp, sigmoid and tanh that LLVM vectorises, and a dispatcher that compiles a loop
//! for the widest vector instructions the CPU has.
//!
//! libm's `expf`/`tanhf` are scalar calls with branches, so a loop over them never vectorises; in the
//! LSTM they were a third of the step. Here every function is straight-line code (selects, no calls):
//!
//! - `exp`: `x = n·ln2 + r` with `n` rounded to nearest (Cody–Waite: `ln2` split in two so `n·ln2_hi` is
//!   exact), `e^r` by its Taylor polynomial of degree 7 on `|r| ≤ ln2/2` (truncation below 2⁻²⁷), then
//!   `2^n` applied as two exact power-of-two factors so that overflow gives `inf` and underflow
//!   gradual subnormals, as libm does.
//! - `sigmoid(x) = num / (1 + t)` with `t = e^{−|x|}` and `num = 1` for `x ≥ 0`, `t` below: `e^x` is never
//!   evaluated for positive `x`, so nothing overflows, and tiny results keep their relative accuracy.
//! - `tanh(x) = sign(x) · e / (e + 2)` with `e = expm1(2|x|)`; `expm1` reuses the reduction and
//!   adds `2^n − 1` separately, which is exact for `n = 0`, so small `|x|` lose nothing to cancellation.
//!   `|x|` is capped at 10, where `tanh` rounds to exactly ±1.
//!
//! The code has no fused multiply-adds (which would need a libm call on CPUs without FMA), so the
//! results are bit-identical whatever vector width the dispatcher picks.
//!
//! Measured maximum error against the f64 functions, over every 97th `f32` of the domain (unit tests
//! below; an ulp is the `f32` spacing at the true value): `exp` 1 ulp on [−87, 88] (normal results),
//! `sigmoid` 2 ulp, `tanh` 2 ulp. Each saturates to exactly 0 / 1 / ±1 and maps NaN to NaN.

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// The high part of `ln 2`: its low 9 mantissa bits are zero, so `n·LN2_HI` is exact for `|n| < 512`.
const LN2_HI: f32 = 0.693_145_75;
/// `ln 2 − LN2_HI`.
const LN2_LO: f32 = 1.428_606_8e-6;
/// `1.5·2²³`: adding it rounds a value of magnitude below 2²² to an integer, which then sits in the
/// low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below this `exp` is 0 in `f32` (`e^{−104} < 2⁻¹⁵⁰`, half the smallest subnormal).
const EXP_MIN_ARG: f32 = -104.0;
/// Above this `exp` overflows to `inf` (`e^{89} > f32::MAX`).
const EXP_MAX_ARG: f32 = 89.0;
/// `tanh(10)` rounds to exactly 1 in `f32` (`1 − tanh(10) ≈ 4·10⁻⁹`, below half an ulp of 1).
const TANH_SATURATION: f32 = 10.0;
/// Where `tanh` switches from `e/(e + 2)` to `1 − 2/(e + 2)` (`e = expm1(2|x|) = 2` at `|x| = ln(3)/2`).
const TANH_FORM_SWITCH: f32 = 0.55;

/// `x` with its integer part split off: `x = n·ln 2 + r`, `|r| ≤ ln2/2` (slightly more from rounding).
/// `x` must lie in [−2²¹, 2²¹]; NaN gives NaN `r` (and some `n`).
#[inline(always)]
fn reduce(x: f32) -> (f32, i32) {
    let shifted = x * LOG2_E + ROUND_MAGIC;
    let n_float = shifted - ROUND_MAGIC;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = (x - n_float * LN2_HI) - n_float * LN2_LO;
    (r, n)
}

/// `(e^r − 1 − r) / r²` for `|r| ≤ 0.35`: the Taylor polynomial to degree 7 of `e^r`, less its first
/// two terms, in Horner form.
#[inline(always)]
fn exp_tail(r: f32) -> f32 {
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    p * r + 0.5
}

/// `2^n` for `n` in [−126, 127] (other `n` give some finite or infinite power, never a trap).
#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// `v` clamped to `[lo, hi]`, NaN kept (`f32::clamp` would keep it too, but these selects vectorise).
#[inline(always)]
fn clamp_keep_nan(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// `e^x`, within 1 ulp for normal results; 0 below −104, `inf` above 89, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (r, n) = reduce(clamp_keep_nan(x, EXP_MIN_ARG, EXP_MAX_ARG));
    // n ∈ [−150, 129]: each half is a normal power of two; the second product rounds once, into
    // the subnormals or to inf, exactly where the true value lands.
    let half = n >> 1;
    (1.0 + (r + (r * r) * exp_tail(r))) * pow2(half) * pow2(n - half)
}

/// `e^y − 1` for `y` in [0, 2·TANH_SATURATION] (or NaN).
#[inline(always)]
fn expm1_small_positive(y: f32) -> f32 {
    let (r, n) = reduce(y);
    // e^y − 1 = 2^n·(e^r − 1 + (1 − 2^−n)); the constant joins r first: for n = 0 it is 0 (and r stays
    // exact), for n ≥ 1 both sums are of positive terms (r + ½ is even exact for n = 1 and r < 0),
    // so nothing cancels, and the product with 2^n is exact.
    let offset = 1.0 - pow2(-n);
    ((r + offset) + (r * r) * exp_tail(r)) * pow2(n)
}

/// The logistic function `1 / (1 + e^{−x})`, within 2.5 ulp; exactly 1 for `x ≥ 17` and 0 for
/// `x ≤ −104`, NaN for NaN.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let t = exp(-x.abs());
    let numerator = if x >= 0.0 { 1.0 } else { t };
    numerator / (1.0 + t)
}

/// `tanh(x)`, within 2.5 ulp; exactly ±1 for `|x| ≥ 10`, NaN for NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = clamp_keep_nan(x.abs(), 0.0, TANH_SATURATION);
    let e = expm1_small_positive(a + a);
    // Both forms are exact in real arithmetic; the first rounds less for small |x|, the second is
    // monotone near saturation (where e + 2 rounds).
    let t = if a < TANH_FORM_SWITCH { e / (e + 2.0) } else { 1.0 - 2.0 / (e + 2.0) };
    t.copysign(x)
}

/// Runs `body` compiled for AVX-512 or AVX2 when the CPU has them (the crate itself targets baseline
/// x86-64, i.e. 4-wide SSE2). Mark the closure `#[inline(always)]` (else LLVM may keep it a separate,
/// baseline function); the functions here are inlined into it, calls to other functions run their own
/// code.
#[inline(always)]
pub fn with_widest_vectors<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the only feature the function enables.
            return unsafe { run_avx512(body) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature the function enables.
            return unsafe { run_avx2(body) };
        }
    }
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<R>(body: impl FnOnce() -> R) -> R {
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// In place: `v ← sigmoid(v)`.
pub fn sigmoid_in_place(values: &mut [f32]) {
    with_widest_vectors(
        #[inline(always)]
        || values.iter_mut().for_each(|v| *v = sigmoid(*v)),
    );
}

/// In place: `v ← tanh(v)`.
pub fn tanh_in_place(values: &mut [f32]) {
    with_widest_vectors(
        #[inline(always)]
        || values.iter_mut().for_each(|v| *v = tanh(*v)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spacing of `f32` at the magnitude of `v` (the subnormal spacing below the normals).
    fn ulp(v: f64) -> f64 {
        let a = (v.abs() as f32).max(f32::MIN_POSITIVE);
        // Round-to-nearest may have carried into the next binade; the spacing below is the finer one.
        let below = f32::from_bits(a.to_bits() - 1);
        (a - below) as f64
    }

    /// Every `stride`-th `f32` (by bit pattern) in `[lo, hi]`, both signs covered by the caller.
    fn grid(lo: f32, hi: f32, stride: u32) -> impl Iterator<Item = f32> {
        let to_key = |v: f32| if v >= 0.0 { v.to_bits() as i64 } else { -((-v).to_bits() as i64) };
        let (a, b) = (to_key(lo), to_key(hi));
        (a..=b).step_by(stride as usize).map(|k| {
            if k >= 0 {
                f32::from_bits(k as u32)
            } else {
                -f32::from_bits((-k) as u32)
            }
        })
    }

    /// The largest error in ulps of `f` against `reference` over the grid.
    fn max_ulp_error(lo: f32, hi: f32, f: impl Fn(f32) -> f32, reference: impl Fn(f64) -> f64) -> (f64, f32) {
        let mut worst = (0.0f64, 0.0f32);
        for x in grid(lo, hi, 97) {
            let want = reference(x as f64);
            let err = (f(x) as f64 - want).abs() / ulp(want);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        worst
    }

    fn sigmoid_f64(x: f64) -> f64 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            x.exp() / (1.0 + x.exp())
        }
    }

    #[test]
    fn exp_is_within_one_ulp_where_the_result_is_normal() {
        let (err, at) = max_ulp_error(-87.0, 88.0, exp, f64::exp);
        println!("exp: max {err:.3} ulp at {at}");
        assert!(err <= 1.0, "exp: {err} ulp at {at}");
    }

    #[test]
    fn exp_saturates_and_underflows_gradually() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // A subnormal result, to within one subnormal step.
        let (got, want) = (exp(-100.0) as f64, (-100.0f64).exp());
        assert!((got - want).abs() <= 2f64.powi(-149), "exp(-100) = {got}, want {want}");
    }

    #[test]
    fn sigmoid_is_within_two_and_a_half_ulp() {
        let (err, at) = max_ulp_error(-110.0, 110.0, sigmoid, sigmoid_f64);
        println!("sigmoid: max {err:.3} ulp at {at}");
        assert!(err <= 2.5, "sigmoid: {err} ulp at {at}");
    }

    #[test]
    fn tanh_is_within_two_and_a_half_ulp() {
        let (err, at) = max_ulp_error(-12.0, 12.0, tanh, f64::tanh);
        println!("tanh: max {err:.3} ulp at {at}");
        assert!(err <= 2.5, "tanh: {err} ulp at {at}");
        // The smallest magnitudes (also subnormal inputs) keep their value: tanh(x) = x there.
        for x in [1e-30f32, -3e-39, 1e-10, f32::MIN_POSITIVE] {
            assert_eq!(tanh(x), x, "tanh({x})");
        }
    }

    #[test]
    fn large_inputs_saturate_exactly_and_nan_propagates() {
        for x in [17.0f32, 30.0, 104.0, 1e10, f32::MAX, f32::INFINITY] {
            assert_eq!(sigmoid(x), 1.0, "sigmoid({x})");
            assert_eq!(sigmoid(-x - 100.0), 0.0, "sigmoid({})", -x - 100.0);
            assert_eq!(tanh(x), 1.0, "tanh({x})");
            assert_eq!(tanh(-x), -1.0, "tanh({})", -x);
        }
        assert_eq!(tanh(10.0), 1.0);
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(tanh(0.0), 0.0);
        assert!(tanh(-0.0).is_sign_negative());
        assert!(sigmoid(f32::NAN).is_nan());
        assert!(tanh(f32::NAN).is_nan());
        assert!(tanh(-f32::NAN).is_nan());
        let mut v = [f32::NAN, 1.0, -f32::NAN];
        sigmoid_in_place(&mut v);
        assert!(v[0].is_nan() && v[2].is_nan());
        tanh_in_place(&mut v);
        assert!(v[0].is_nan() && v[2].is_nan());
    }

    #[test]
    fn both_functions_are_monotone_on_a_fine_sample() {
        let (mut last_s, mut last_t) = (0.0f32, -1.0f32);
        for x in grid(-20.0, 20.0, 4099) {
            let (s, t) = (sigmoid(x), tanh(x));
            assert!(s >= last_s, "sigmoid decreases at {x}");
            assert!(t >= last_t, "tanh decreases at {x}");
            (last_s, last_t) = (s, t);
        }
        // Consecutive floats around the switch points of the formulas: the roundings of a quotient can
        // step back by one ulp between neighbours (e / (e + 2) when e + 2 rounds up), never more.
        for centre in
            [0.1733f32, -0.1733, 0.3466, 0.5199, 0.55, -0.55, std::f32::consts::LN_2, 10.0, -10.0, 17.0]
        {
            let mut x = centre - 1e-3;
            let (mut s0, mut t0) = (sigmoid(x), tanh(x));
            while x < centre + 1e-3 {
                x = x.next_up();
                let (s, t) = (sigmoid(x), tanh(x));
                assert!(s >= s0.next_down() && t >= t0.next_down(), "decreases by over an ulp at {x}");
                (s0, t0) = (s, t);
            }
        }
    }

    #[test]
    fn slice_versions_match_the_scalar_functions_bit_for_bit() {
        // Odd length, so that both the vector body and the scalar tail run.
        let x: Vec<f32> = (0..1037).map(|i| (i as f32 - 518.0) * 0.0371).collect();
        let (mut s, mut t) = (x.clone(), x.clone());
        sigmoid_in_place(&mut s);
        tanh_in_place(&mut t);
        for i in 0..x.len() {
            assert_eq!(s[i].to_bits(), sigmoid(x[i]).to_bits(), "sigmoid at {}", x[i]);
            assert_eq!(t[i].to_bits(), tanh(x[i]).to_bits(), "tanh at {}", x[i]);
        }
    }
}
