//! `torch.nn.Embedding(vocab, dim)` (weight `[vocab, dim]`; token `t` reads row `t`) over one
//! sequence of token ids, and the mean over the sequence axis (`[T, D] → [D]`).

/// The rows of `weight` for `tokens`: output `[T, dim]`.
pub fn embedding_forward(weight: &[f64], dim: usize, tokens: &[usize]) -> Vec<f64> {
    let vocab = weight.len() / dim;
    tokens
        .iter()
        .flat_map(|&t| {
            assert!(t < vocab, "token {t} out of the vocabulary ({vocab})");
            weight[t * dim..(t + 1) * dim].iter().copied()
        })
        .collect()
}

/// The weight gradient of [`embedding_forward`], ADDED into `dweight` (`[vocab, dim]`): row `t`
/// receives the sum of `dy` over every position holding token `t` (a repeated token adds up).
pub fn embedding_backward(dim: usize, tokens: &[usize], dy: &[f64], dweight: &mut [f64]) {
    assert_eq!(dy.len(), tokens.len() * dim, "embedding output gradient shape");
    for (pos, &t) in tokens.iter().enumerate() {
        for d in 0..dim {
            dweight[t * dim + d] += dy[pos * dim + d];
        }
    }
}

/// The mean over the sequence axis of `x` (`[T, dim]`).
pub fn mean_over_sequence_forward(x: &[f64], dim: usize) -> Vec<f64> {
    let steps = x.len() / dim;
    (0..dim).map(|d| (0..steps).map(|t| x[t * dim + d]).sum::<f64>() / steps as f64).collect()
}

/// The input gradient of [`mean_over_sequence_forward`] over `steps` positions.
pub fn mean_over_sequence_backward(dy: &[f64], steps: usize) -> Vec<f64> {
    (0..steps).flat_map(|_| dy.iter().map(move |g| g / steps as f64)).collect()
}
