//! Element-wise activations: the fused bias + activation pass over a GEMM output and its backward.
//!
//! The derivatives of relu, tanh and sigmoid are computed from the activation's *output* y (relu: y > 0,
//! tanh: 1 − y², sigmoid: y(1 − y)), so a layer keeps one buffer per value, never its pre-activation as
//! well. GELU and SiLU have no such form: their backward reads the input x
//! ([`activation_backward_from_input`]), which the compiler then keeps.

use rayon::prelude::*;

use crate::fast_math;

/// Element counts below this run on the calling thread: waking the pool costs more than it saves.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// An element-wise activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// y = x (a linear layer with no activation after it).
    Identity,
    /// y = max(x, 0).
    Relu,
    /// y = tanh(x).
    Tanh,
    /// y = 1 / (1 + e^(−x)).
    Sigmoid,
    /// GELU in PyTorch's tanh form (`approximate = "tanh"`): y = x/2 · (1 + tanh(√(2/π)(x + 0.044715x³))).
    Gelu,
    /// SiLU (swish): y = x · sigmoid(x).
    Silu,
    /// GELU in its exact form (PyTorch's default `approximate = "none"`): y = x·Φ(x) = x/2 · (1 + erf(x/√2)).
    GeluExact,
}

/// √(2/π), GELU's tanh-form scale.
const GELU_SCALE: f32 = 0.797_884_6;
/// The cubic coefficient of GELU's tanh form.
const GELU_CUBIC: f32 = 0.044_715;
/// 1/√2 and 1/√(2π), of the exact GELU x·Φ(x) and its derivative Φ(x) + x·φ(x).
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `erf(x)`: for |x| < 1/2 its Taylor series to x¹³ (truncation < 2e−9, no cancellation near 0); else
/// Abramowitz & Stegun 7.1.26, `1 − (a₁t + … + a₅t⁵)·e^{−x²}`, `t = 1/(1 + p|x|)` (absolute error
/// ≤ 1.5e−7; within 4e−7 in f32 arithmetic). Odd in x; both forms are computed and one selected, so loops over it vectorise; NaN for
/// NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    // 2/√π · (−1)ⁿ/(n!(2n+1)), n = 0..6.
    const TAYLOR: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_4,
        0.112_837_92,
        -0.026_866_17,
        0.005_223_977,
        -0.000_854_832_7,
        0.000_120_553_3,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 1.0 - poly * fast_math::exp(-a * a);
    let z = a * a;
    let series = a
        * (TAYLOR[0]
            + z * (TAYLOR[1]
                + z * (TAYLOR[2] + z * (TAYLOR[3] + z * (TAYLOR[4] + z * (TAYLOR[5] + z * TAYLOR[6]))))));
    let value = if a < 0.5 { series } else { tail };
    value.copysign(x)
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            // Not `x.max(0.0)`: that turns NaN into 0 and would hide a non-finite example.
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Tanh => fast_math::tanh(x),
            Activation::Sigmoid => fast_math::sigmoid(x),
            Activation::Gelu => 0.5 * x * (1.0 + fast_math::tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x))),
            Activation::Silu => x * fast_math::sigmoid(x),
            Activation::GeluExact => 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2)),
        }
    }

    /// Whether the derivative needs the input x ([`Activation::derivative_from_input`]): the output
    /// does not determine it.
    pub const fn derivative_needs_input(self) -> bool {
        matches!(self, Activation::Gelu | Activation::Silu | Activation::GeluExact)
    }

    /// The derivative dy/dx expressed through the output y; NaN for the activations whose derivative
    /// needs the input (which [`activation_backward`] refuses).
    #[inline(always)]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Tanh => 1.0 - y * y,
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Gelu | Activation::Silu | Activation::GeluExact => f32::NAN,
        }
    }

    /// The derivative dy/dx at the input x.
    #[inline(always)]
    pub fn derivative_from_input(self, x: f32) -> f32 {
        match self {
            Activation::Identity | Activation::Relu | Activation::Tanh | Activation::Sigmoid => {
                self.derivative_from_output(self.apply(x))
            }
            Activation::Gelu => {
                let t = fast_math::tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x)
            }
            Activation::Silu => {
                let s = fast_math::sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Activation::GeluExact => {
                0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * fast_math::exp(-0.5 * x * x)
            }
        }
    }
}

/// The logistic function, stable for large |x| (never evaluates e^x for positive x): [`fast_math::sigmoid`],
/// branch-free so that loops over it vectorise.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    fast_math::sigmoid(x)
}

/// Binds `$f` to `$act`'s `$method` (`apply`, `derivative_from_output` or `derivative_from_input`) as a
/// closure of its own type and expands `$body` once per activation. A loop over `$f` then compiles to
/// straight-line vector code for each activation; a loop over `act.apply(x)` with `act` a run-time
/// value compiled to a jump through a table per value and, for relu, a branch mispredicted on about
/// half the values (13 % of the FCNN's private step).
macro_rules! per_activation {
    ($act:expr, $method:ident, $f:ident => $body:expr) => {
        match $act {
            Activation::Identity => {
                let $f = |x: f32| Activation::Identity.$method(x);
                $body
            }
            Activation::Relu => {
                let $f = |x: f32| Activation::Relu.$method(x);
                $body
            }
            Activation::Tanh => {
                let $f = |x: f32| Activation::Tanh.$method(x);
                $body
            }
            Activation::Sigmoid => {
                let $f = |x: f32| Activation::Sigmoid.$method(x);
                $body
            }
            Activation::Gelu => {
                let $f = |x: f32| Activation::Gelu.$method(x);
                $body
            }
            Activation::Silu => {
                let $f = |x: f32| Activation::Silu.$method(x);
                $body
            }
            Activation::GeluExact => {
                let $f = |x: f32| Activation::GeluExact.$method(x);
                $body
            }
        }
    };
}

/// Runs `f` over `rows` rows of `cols` values each, across threads when the matrix is large.
fn for_each_row(data: &mut [f32], rows: usize, cols: usize, f: impl Fn(&mut [f32]) + Sync) {
    let data = &mut data[..rows * cols];
    if cols == 0 {
        return;
    }
    if rows * cols >= PARALLEL_MIN_ELEMS {
        data.par_chunks_mut(cols).for_each(&f);
    } else {
        data.chunks_mut(cols).for_each(f);
    }
}

/// In place on a `rows × cols` GEMM output: y = act(x + bias) in one pass (`bias` has `cols` values).
pub fn bias_activation_forward(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    act: Activation,
) {
    if let Some(b) = bias {
        assert_eq!(b.len(), cols, "bias_activation_forward: bias has {} values for {cols} columns", b.len());
    }
    if bias.is_none() && act == Activation::Identity {
        return;
    }
    per_activation!(act, apply, apply => for_each_row(out, rows, cols, |row| {
        fast_math::with_widest_vectors(
            #[inline(always)]
            || match bias {
                Some(b) => row.iter_mut().zip(b).for_each(|(v, &bj)| *v = apply(*v + bj)),
                None => row.iter_mut().for_each(|v| *v = apply(*v)),
            },
        )
    }))
}

/// y = act(x) for `len` values (a standalone activation that follows no linear layer).
pub fn activation_forward(x: &[f32], y: &mut [f32], len: usize, act: Activation) {
    let (x, y) = (&x[..len], &mut y[..len]);
    per_activation!(act, apply, apply => fast_math::with_widest_vectors(
        #[inline(always)]
        || y.iter_mut().zip(x).for_each(|(yv, &xv)| *yv = apply(xv)),
    ))
}

/// In place: grad ← grad ⊙ act'(·), with the derivative taken from the activation's output `y`.
/// Turns the gradient of a layer's output into the gradient of its pre-activation (δ).
pub fn activation_backward(grad: &mut [f32], y: &[f32], len: usize, act: Activation) {
    assert!(
        !act.derivative_needs_input(),
        "{act:?}: the derivative needs the input (activation_backward_from_input)"
    );
    if act == Activation::Identity {
        return;
    }
    per_activation!(act, derivative_from_output, derivative => scale_by_derivative(grad, y, len, derivative))
}

/// In place: grad ← grad ⊙ act'(x), with the derivative taken from the activation's input `x`.
pub fn activation_backward_from_input(grad: &mut [f32], x: &[f32], len: usize, act: Activation) {
    if act == Activation::Identity {
        return;
    }
    per_activation!(act, derivative_from_input, derivative => scale_by_derivative(grad, x, len, derivative))
}

/// grad ← grad ⊙ derivative(v) over `len` values, across threads when there are many.
#[inline(always)]
fn scale_by_derivative(
    grad: &mut [f32],
    v: &[f32],
    len: usize,
    derivative: impl Fn(f32) -> f32 + Sync + Copy,
) {
    let scale = move |g: &mut [f32], v: &[f32]| {
        fast_math::with_widest_vectors(
            #[inline(always)]
            || g.iter_mut().zip(v).for_each(|(gv, &vv)| *gv *= derivative(vv)),
        )
    };
    let v = &v[..len];
    let grad = &mut grad[..len];
    if len >= PARALLEL_MIN_ELEMS {
        const CHUNK: usize = 1 << 14;
        grad.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(g, v)| scale(g, v));
    } else {
        scale(grad, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(act: Activation, x: f64) -> (f64, f64) {
        match act {
            Activation::Identity => (x, 1.0),
            Activation::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
            Activation::Tanh => (x.tanh(), 1.0 - x.tanh().powi(2)),
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                (s, s * (1.0 - s))
            }
            Activation::Gelu => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let t = (c * (x + 0.044715 * x.powi(3))).tanh();
                (
                    0.5 * x * (1.0 + t),
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x),
                )
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                (x * s, s * (1.0 + x * (1.0 - s)))
            }
            Activation::GeluExact => {
                let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (x * cdf, cdf + x * pdf)
            }
        }
    }

    const ALL: [Activation; 7] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Gelu,
        Activation::Silu,
        Activation::GeluExact,
    ];

    /// The backward each activation supports: from the output, or from the input when it needs it.
    fn backward(act: Activation, grad: &mut [f32], x: &[f32], y: &[f32]) {
        if act.derivative_needs_input() {
            activation_backward_from_input(grad, x, grad.len(), act);
        } else {
            activation_backward(grad, y, grad.len(), act);
        }
    }

    #[test]
    fn fused_bias_activation_and_backward_match_f64() {
        // Large enough (rows·cols ≥ 2^16) to take the threaded path too.
        for &(rows, cols) in &[(3usize, 5usize), (300, 300)] {
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
            let bias: Vec<f32> = (0..cols).map(|j| (j as f32 - 2.0) * 0.25).collect();
            let g: Vec<f32> = (0..rows * cols).map(|i| ((i * 11 % 23) as f32 - 11.0) / 7.0).collect();
            for act in ALL {
                for with_bias in [true, false] {
                    let mut y = x.clone();
                    bias_activation_forward(&mut y, rows, cols, with_bias.then_some(&bias[..]), act);
                    let mut d = g.clone();
                    let pre: Vec<f32> = (0..rows * cols)
                        .map(|i| x[i] + if with_bias { bias[i % cols] } else { 0.0 })
                        .collect();
                    backward(act, &mut d, &pre, &y);
                    for i in 0..rows * cols {
                        let pre = x[i] as f64 + if with_bias { bias[i % cols] as f64 } else { 0.0 };
                        let (want_y, want_dy) = reference(act, pre);
                        assert!(
                            (y[i] as f64 - want_y).abs() < 1e-6 * (1.0 + want_y.abs()),
                            "{act:?} forward at {i}"
                        );
                        let want_d = g[i] as f64 * want_dy;
                        assert!(
                            (d[i] as f64 - want_d).abs() < 1e-5 * (1.0 + want_d.abs()),
                            "{act:?} backward"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_vector_loops_give_the_bits_of_the_scalar_functions() {
        // Rows of 37 leave vector remainders; 300 × 300 takes the threaded path. NaN and ±0 included;
        // a NaN's sign may differ between the vector and scalar code, so NaNs compare as equal.
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for &(rows, cols) in &[(7usize, 37usize), (300, 300)] {
            let mut x: Vec<f32> =
                (0..rows * cols).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0).collect();
            x[3] = f32::NAN;
            x[5] = -0.0;
            x[6] = 0.0;
            let bias: Vec<f32> = (0..cols).map(|j| (j as f32 - 3.0) * 0.125).collect();
            let g: Vec<f32> = (0..rows * cols).map(|i| ((i * 11 % 23) as f32 - 11.0) / 7.0).collect();
            for act in ALL {
                let mut y = x.clone();
                bias_activation_forward(&mut y, rows, cols, Some(&bias), act);
                let mut plain = vec![0.0; x.len()];
                activation_forward(&x, &mut plain, x.len(), act);
                let mut from_input = g.clone();
                activation_backward_from_input(&mut from_input, &x, x.len(), act);
                for i in 0..x.len() {
                    let scalar = act.apply(x[i] + bias[i % cols]);
                    assert!(same(y[i], scalar), "{act:?} fused forward at {i}");
                    assert!(same(plain[i], act.apply(x[i])), "{act:?} forward at {i}");
                    let want = g[i] * act.derivative_from_input(x[i]);
                    assert!(same(from_input[i], want), "{act:?} backward at {i}");
                }
                if !act.derivative_needs_input() {
                    let mut from_output = g.clone();
                    activation_backward(&mut from_output, &plain, x.len(), act);
                    for i in 0..x.len() {
                        let want = g[i] * act.derivative_from_output(plain[i]);
                        assert!(same(from_output[i], want), "{act:?} backward at {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_derivative_from_the_input_agrees_with_the_one_from_the_output() {
        for act in [Activation::Identity, Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            for x in [-3.0f32, -0.5, 0.25, 2.0] {
                assert_eq!(act.derivative_from_input(x), act.derivative_from_output(act.apply(x)), "{act:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "needs the input")]
    fn the_backward_from_the_output_refuses_gelu() {
        activation_backward(&mut [1.0], &[0.5], 1, Activation::Gelu);
    }

    #[test]
    fn erf_is_within_4e_minus_7_of_f64_and_odd() {
        for k in -4000..=4000 {
            let x = k as f32 / 1000.0;
            let err = (erf(x) as f64 - libm::erf(x as f64)).abs();
            assert!(err < 4e-7, "erf({x}): error {err}");
            assert_eq!(erf(-x), -erf(x));
        }
        assert_eq!(erf(30.0), 1.0);
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn nan_propagates_through_every_activation() {
        for act in ALL {
            assert!(act.apply(f32::NAN).is_nan(), "{act:?}");
        }
    }

    #[test]
    fn standalone_activation_matches_f64_and_sigmoid_is_stable() {
        let x = [-100.0f32, -3.0, 0.0, 2.5, 100.0];
        for act in ALL {
            let mut y = [0.0f32; 5];
            activation_forward(&x, &mut y, 5, act);
            for i in 0..5 {
                assert!((y[i] as f64 - reference(act, x[i] as f64).0).abs() < 1e-6);
                assert!(y[i].is_finite());
            }
        }
    }
}
