//! `torch.nn.GroupNorm(groups, channels, eps = 1e-5)` on one `[C, …]` example: each group of
//! `C / groups` consecutive channels is normalised over all its values with the biased variance,
//! then every channel gets its own affine `γ_c x̂ + β_c`. `LayerNorm` over a whole example is the
//! one-group case with an elementwise affine; it is given here through the same core.

/// PyTorch's default epsilon.
pub const EPS: f64 = 1e-5;

/// `x̂ = (x − mean) / √(var + ε)` over one set of values, and `1 / √(var + ε)`.
fn normalise(x: &[f64]) -> (Vec<f64>, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let inv_std = 1.0 / (var + EPS).sqrt();
    (x.iter().map(|v| (v - mean) * inv_std).collect(), inv_std)
}

/// The gradient through [`normalise`]: `dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂)) / σ`.
fn normalise_backward(xhat: &[f64], inv_std: f64, dxhat: &[f64]) -> Vec<f64> {
    let n = xhat.len() as f64;
    let mean_d = dxhat.iter().sum::<f64>() / n;
    let mean_dx = dxhat.iter().zip(xhat).map(|(d, x)| d * x).sum::<f64>() / n;
    xhat.iter().zip(dxhat).map(|(x, d)| (d - mean_d - x * mean_dx) * inv_std).collect()
}

/// `group_norm` of `x` (`channels` channels of `x.len() / channels` values each), `γ, β` of `[C]`.
pub fn group_norm_forward(
    x: &[f64],
    channels: usize,
    groups: usize,
    gamma: &[f64],
    beta: &[f64],
) -> Vec<f64> {
    assert_eq!(channels % groups, 0, "group_norm: groups must divide the channels");
    assert_eq!((gamma.len(), beta.len()), (channels, channels), "group_norm affine shape");
    let plane = x.len() / channels;
    let mut y = Vec::with_capacity(x.len());
    for chunk in x.chunks(x.len() / groups) {
        y.extend(normalise(chunk).0);
    }
    y.iter_mut().enumerate().for_each(|(k, v)| *v = *v * gamma[k / plane] + beta[k / plane]);
    y
}

/// The gradients of [`group_norm_forward`]: `(dx, dγ, dβ)` from `dy`.
pub fn group_norm_backward(
    x: &[f64],
    channels: usize,
    groups: usize,
    gamma: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let plane = x.len() / channels;
    let group_len = x.len() / groups;
    let (mut dx, mut dgamma, mut dbeta) =
        (Vec::with_capacity(x.len()), vec![0.0; channels], vec![0.0; channels]);
    for (g, chunk) in x.chunks(group_len).enumerate() {
        let (xhat, inv_std) = normalise(chunk);
        let dxhat: Vec<f64> = (0..group_len)
            .map(|k| {
                let (flat, c) = (g * group_len + k, (g * group_len + k) / plane);
                dgamma[c] += dy[flat] * xhat[k];
                dbeta[c] += dy[flat];
                dy[flat] * gamma[c]
            })
            .collect();
        dx.extend(normalise_backward(&xhat, inv_std, &dxhat));
    }
    (dx, dgamma, dbeta)
}

/// `layer_norm` over the whole example with an elementwise affine (`γ, β` shaped like `x`).
pub fn layer_norm_forward(x: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    let (xhat, _) = normalise(x);
    xhat.iter().zip(gamma.iter().zip(beta)).map(|(v, (g, b))| v * g + b).collect()
}

/// The gradients of [`layer_norm_forward`]: `(dx, dγ, dβ)`.
pub fn layer_norm_backward(x: &[f64], gamma: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (xhat, inv_std) = normalise(x);
    let dxhat: Vec<f64> = dy.iter().zip(gamma).map(|(d, g)| d * g).collect();
    let dgamma = dy.iter().zip(&xhat).map(|(d, v)| d * v).collect();
    (normalise_backward(&xhat, inv_std, &dxhat), dgamma, dy.to_vec())
}
