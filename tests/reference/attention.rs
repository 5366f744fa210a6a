//! `torch.nn.MultiheadAttention(d, heads, batch_first=True)` used as self-attention on one example
//! (`attn(x, x, x, attn_mask=causal)[0]`, dropout 0), and a learned position embedding
//! (`x + P`, `P` a `[T, d]` table), in f64 with their analytic backward passes.
//!
//! Parameters as PyTorch stores them: `in_proj_weight` `[3d, d]` (rows of W_q, then W_k, then W_v),
//! `in_proj_bias` `[3d]`, `out_proj.weight` `[d, d]`, `out_proj.bias` `[d]`.

/// The four tensors of one attention layer and its configuration.
pub struct Mha<'a> {
    pub in_weight: &'a [f64],
    pub in_bias: &'a [f64],
    pub out_weight: &'a [f64],
    pub out_bias: &'a [f64],
    pub heads: usize,
    pub causal: bool,
}

/// The parameter gradients of one example and the input's.
pub struct MhaGrads {
    pub input: Vec<f64>,
    pub in_weight: Vec<f64>,
    pub in_bias: Vec<f64>,
    pub out_weight: Vec<f64>,
    pub out_bias: Vec<f64>,
}

/// `y_t = W x_t + b` at every row of `x` (`[T, inputs]`), `w` `[outputs, inputs]`.
fn affine_rows(w: &[f64], b: &[f64], x: &[f64], inputs: usize, outputs: usize) -> Vec<f64> {
    x.chunks(inputs)
        .flat_map(|row| {
            (0..outputs).map(move |o| b[o] + (0..inputs).map(|j| w[o * inputs + j] * row[j]).sum::<f64>())
        })
        .collect()
}

/// The intermediate values of one forward pass.
struct Forward {
    /// `[T, 3d]`.
    qkv: Vec<f64>,
    /// `[heads][T][T]`, 0 where masked.
    probs: Vec<f64>,
    /// `[T, d]`.
    context: Vec<f64>,
    output: Vec<f64>,
}

impl Mha<'_> {
    fn run(&self, x: &[f64], d: usize) -> Forward {
        let t = x.len() / d;
        let dh = d / self.heads;
        let qkv = affine_rows(self.in_weight, self.in_bias, x, d, 3 * d);
        let at = |s: usize, part: usize, h: usize, j: usize| qkv[s * 3 * d + part * d + h * dh + j];
        let mut probs = vec![0.0; self.heads * t * t];
        let mut context = vec![0.0; t * d];
        for h in 0..self.heads {
            for r in 0..t {
                let visible = if self.causal { r + 1 } else { t };
                let scores: Vec<f64> = (0..visible)
                    .map(|s| {
                        (0..dh).map(|j| at(r, 0, h, j) * at(s, 1, h, j)).sum::<f64>() / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (s, score) in scores.iter().enumerate() {
                    let p = (score - max).exp() / z;
                    probs[(h * t + r) * t + s] = p;
                    for j in 0..dh {
                        context[r * d + h * dh + j] += p * at(s, 2, h, j);
                    }
                }
            }
        }
        let output = affine_rows(self.out_weight, self.out_bias, &context, d, d);
        Forward { qkv, probs, context, output }
    }

    /// The output `[T, d]` of `x` `[T, d]`.
    pub fn forward(&self, x: &[f64], d: usize) -> Vec<f64> {
        self.run(x, d).output
    }

    /// Every gradient of `⟨dy, forward(x)⟩`.
    pub fn backward(&self, x: &[f64], d: usize, dy: &[f64]) -> MhaGrads {
        let t = x.len() / d;
        let dh = d / self.heads;
        let f = self.run(x, d);
        let (out_weight, out_bias, dcontext) = linear_rows_backward(self.out_weight, &f.context, dy, d, d);
        let mut dqkv = vec![0.0; t * 3 * d];
        let at = |s: usize, part: usize, h: usize, j: usize| f.qkv[s * 3 * d + part * d + h * dh + j];
        let scale = 1.0 / (dh as f64).sqrt();
        for h in 0..self.heads {
            for r in 0..t {
                let p = |s: usize| f.probs[(h * t + r) * t + s];
                // dP_rs = Σ_j dctx_rj v_sj; dS_rs = P_rs (dP_rs − Σ_u P_ru dP_ru).
                let dp: Vec<f64> = (0..t)
                    .map(|s| (0..dh).map(|j| dcontext[r * d + h * dh + j] * at(s, 2, h, j)).sum())
                    .collect();
                let mean: f64 = (0..t).map(|s| p(s) * dp[s]).sum();
                for s in 0..t {
                    let ds = p(s) * (dp[s] - mean) * scale;
                    for j in 0..dh {
                        dqkv[r * 3 * d + h * dh + j] += ds * at(s, 1, h, j);
                        dqkv[s * 3 * d + d + h * dh + j] += ds * at(r, 0, h, j);
                        dqkv[s * 3 * d + 2 * d + h * dh + j] += p(s) * dcontext[r * d + h * dh + j];
                    }
                }
            }
        }
        let (in_weight, in_bias, input) = linear_rows_backward(self.in_weight, x, &dqkv, d, 3 * d);
        MhaGrads { input, in_weight, in_bias, out_weight, out_bias }
    }
}

/// The backward of [`affine_rows`]: `(dW, db, dx)` summed over the rows.
pub fn linear_rows_backward(
    w: &[f64],
    x: &[f64],
    dy: &[f64],
    inputs: usize,
    outputs: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dw, mut db, mut dx) = (vec![0.0; outputs * inputs], vec![0.0; outputs], vec![0.0; x.len()]);
    for (r, (row, drow)) in x.chunks(inputs).zip(dy.chunks(outputs)).enumerate() {
        for o in 0..outputs {
            db[o] += drow[o];
            for j in 0..inputs {
                dw[o * inputs + j] += drow[o] * row[j];
                dx[r * inputs + j] += w[o * inputs + j] * drow[o];
            }
        }
    }
    (dw, db, dx)
}
