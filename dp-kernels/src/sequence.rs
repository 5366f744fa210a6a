//! Pooling over the sequence axis, `[batch][T][D] → [batch][D]`: the mean, or the first position (a
//! transformer's class token), and their backward passes.

use rayon::prelude::*;

/// The mean's `1/T` (0 for an empty sequence), as both its passes and the fused embedding mean
/// (`crate::embedding_mean`) apply it, so that the fused passes give the same bits.
pub(crate) fn mean_scale(steps: usize) -> f32 {
    if steps == 0 {
        0.0
    } else {
        1.0 / steps as f32
    }
}

/// `out[i][k] = (1/T)·Σ_t x[i][t][k]`.
pub fn mean_over_sequence_forward(batch: usize, steps: usize, dim: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() >= batch * steps * dim, "sequence mean: input has {} values", x.len());
    assert!(out.len() >= batch * dim, "sequence mean: output has {} values", out.len());
    if dim == 0 {
        return;
    }
    let scale = mean_scale(steps);
    out[..batch * dim].par_chunks_mut(dim).enumerate().for_each(|(i, o)| {
        o.fill(0.0);
        for row in x[i * steps * dim..(i + 1) * steps * dim].chunks(dim) {
            for (acc, &v) in o.iter_mut().zip(row) {
                *acc += v;
            }
        }
        o.iter_mut().for_each(|v| *v *= scale);
    });
}

/// `dx[i][t][k] = dout[i][k] / T` (overwrites `dx`).
pub fn mean_over_sequence_backward(batch: usize, steps: usize, dim: usize, dout: &[f32], dx: &mut [f32]) {
    assert!(dout.len() >= batch * dim, "sequence mean: output gradient has {} values", dout.len());
    assert!(dx.len() >= batch * steps * dim, "sequence mean: input gradient has {} values", dx.len());
    if steps * dim == 0 {
        return;
    }
    let scale = mean_scale(steps);
    dx[..batch * steps * dim].par_chunks_mut(steps * dim).enumerate().for_each(|(i, d)| {
        let g = &dout[i * dim..(i + 1) * dim];
        for row in d.chunks_mut(dim) {
            for (v, &gv) in row.iter_mut().zip(g) {
                *v = gv * scale;
            }
        }
    });
}

/// `out[i] = x[i] + table` for every example (`len` values each): a learned position embedding.
pub fn add_table_forward(batch: usize, len: usize, x: &[f32], table: &[f32], out: &mut [f32]) {
    assert!(
        x.len() >= batch * len && out.len() >= batch * len,
        "table add: {} / {} values",
        x.len(),
        out.len()
    );
    assert_eq!(table.len(), len, "table add: the table has {} values, not {len}", table.len());
    if len == 0 {
        return;
    }
    out[..batch * len].par_chunks_mut(len).zip(x[..batch * len].par_chunks(len)).for_each(|(o, xi)| {
        for ((o, &a), &b) in o.iter_mut().zip(xi).zip(table) {
            *o = a + b;
        }
    });
}

/// `out[i][k] = x[i][0][k]`.
pub fn first_of_sequence_forward(batch: usize, steps: usize, dim: usize, x: &[f32], out: &mut [f32]) {
    assert!(steps > 0, "first position of an empty sequence");
    assert!(x.len() >= batch * steps * dim, "sequence first: input has {} values", x.len());
    assert!(out.len() >= batch * dim, "sequence first: output has {} values", out.len());
    for i in 0..batch {
        out[i * dim..(i + 1) * dim].copy_from_slice(&x[i * steps * dim..i * steps * dim + dim]);
    }
}

/// `dx[i][0] = dout[i]`, `dx[i][t] = 0` for t > 0 (overwrites `dx`).
pub fn first_of_sequence_backward(batch: usize, steps: usize, dim: usize, dout: &[f32], dx: &mut [f32]) {
    assert!(dout.len() >= batch * dim, "sequence first: output gradient has {} values", dout.len());
    assert!(dx.len() >= batch * steps * dim, "sequence first: input gradient has {} values", dx.len());
    for i in 0..batch {
        let d = &mut dx[i * steps * dim..(i + 1) * steps * dim];
        d[..dim].copy_from_slice(&dout[i * dim..(i + 1) * dim]);
        d[dim..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn forward_and_backward_match_reference_and_finite_differences() {
        let mut rng = rng(31);
        let (batch, steps, dim) = (3, 7, 5);
        let x = uniform(&mut rng, batch * steps * dim);
        let r = uniform(&mut rng, batch * dim);
        let mut out = vec![f32::NAN; batch * dim];
        mean_over_sequence_forward(batch, steps, dim, &x, &mut out);
        let mut dx = vec![f32::NAN; batch * steps * dim];
        mean_over_sequence_backward(batch, steps, dim, &r, &mut dx);
        for i in 0..batch {
            let reference = |x: &[f64]| -> Vec<f64> {
                (0..dim).map(|k| (0..steps).map(|t| x[t * dim + k]).sum::<f64>() / steps as f64).collect()
            };
            let xi = wide(&x[i * steps * dim..(i + 1) * steps * dim]);
            assert_close("mean", &out[i * dim..(i + 1) * dim], &reference(&xi), 1e-6);
            let ri = wide(&r[i * dim..(i + 1) * dim]);
            let gx = finite_difference(&xi, 1e-6, |x| dot(&reference(x), &ri));
            assert_close("dx", &dx[i * steps * dim..(i + 1) * steps * dim], &gx, 1e-6);
        }
    }

    #[test]
    fn first_position_forward_and_backward() {
        let (batch, steps, dim) = (2, 3, 2);
        let x: Vec<f32> = (0..batch * steps * dim).map(|v| v as f32).collect();
        let mut out = vec![f32::NAN; batch * dim];
        first_of_sequence_forward(batch, steps, dim, &x, &mut out);
        assert_eq!(out, [0.0, 1.0, 6.0, 7.0]);
        let mut dx = vec![f32::NAN; batch * steps * dim];
        first_of_sequence_backward(batch, steps, dim, &[1.0, 2.0, 3.0, 4.0], &mut dx);
        assert_eq!(dx, [1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
