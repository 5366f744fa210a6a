//! `torch.nn.Linear` (weight `[out, in]`, `y = W x + b`), the elementwise activations relu, tanh,
//! sigmoid, GELU (tanh and exact forms) and SiLU, and flatten (which, on row-major NCHW data, leaves the values in place).

/// `y_o = Σ_j W[o, j] x_j + b_o`, with `w` of shape `[outputs, inputs]`.
pub fn linear_forward(w: &[f64], b: Option<&[f64]>, x: &[f64], outputs: usize) -> Vec<f64> {
    let inputs = x.len();
    assert_eq!(w.len(), outputs * inputs, "linear weight shape");
    (0..outputs)
        .map(|o| {
            let z: f64 = (0..inputs).map(|j| w[o * inputs + j] * x[j]).sum();
            z + b.map_or(0.0, |b| b[o])
        })
        .collect()
}

/// The gradients of [`linear_forward`]: `(dx, dW, db)` from `dy`; `dW = dy xᵀ`, `db = dy`, `dx = Wᵀ dy`.
pub fn linear_backward(w: &[f64], x: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (inputs, outputs) = (x.len(), dy.len());
    let mut dw = vec![0.0; outputs * inputs];
    let mut dx = vec![0.0; inputs];
    for o in 0..outputs {
        for j in 0..inputs {
            dw[o * inputs + j] = dy[o] * x[j];
            dx[j] += w[o * inputs + j] * dy[o];
        }
    }
    (dx, dw, dy.to_vec())
}

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    /// `torch.nn.GELU(approximate="tanh")`.
    Gelu,
    /// `torch.nn.SiLU`.
    Silu,
    /// `torch.nn.GELU()` (the exact form, `x·Φ(x)`).
    GeluExact,
}

/// √(2/π) and the cubic coefficient of GELU's tanh form.
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044_715;

/// Φ(x), the standard normal distribution function, through `libm`'s f64 `erf`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The logistic function `1 / (1 + e^{−x})`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Activation {
    /// The activation of one value.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => sigmoid(x),
            Activation::Gelu => 0.5 * x * (1.0 + (GELU_SCALE * (x + GELU_CUBIC * x.powi(3))).tanh()),
            Activation::Silu => x * sigmoid(x),
            Activation::GeluExact => x * normal_cdf(x),
        }
    }

    /// Its derivative at `x` (relu's is taken as 0 at 0, as PyTorch does).
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Relu => f64::from(u8::from(x > 0.0)),
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Sigmoid => sigmoid(x) * (1.0 - sigmoid(x)),
            Activation::Gelu => {
                let t = (GELU_SCALE * (x + GELU_CUBIC * x.powi(3))).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x)
            }
            Activation::Silu => sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))),
            Activation::GeluExact => {
                normal_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
            }
        }
    }

    /// The activation of every value.
    pub fn forward(self, x: &[f64]) -> Vec<f64> {
        x.iter().map(|&v| self.apply(v)).collect()
    }

    /// `dx = dy ⊙ f′(x)`.
    pub fn backward(self, x: &[f64], dy: &[f64]) -> Vec<f64> {
        x.iter().zip(dy).map(|(&v, &g)| g * self.derivative(v)).collect()
    }
}
