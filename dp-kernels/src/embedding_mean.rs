//! An embedding averaged over the sequence (`embedding(dim = D), mean`), as one op: the `[T][dim]`
//! rows and their gradient are never stored.
//!
//! Example `i` with tokens `v_{i,t}` and the mean's output gradient `g_i` (`[dim]`) gives every position
//! the same row gradient `δ_i = g_i / T`, so its table gradient is `G_i[v] = count_{i,v}·δ_i` and
//! `‖G_i‖² = ‖δ_i‖² · Σ_v count_{i,v}²`: the norm needs the example's token counts (a small hash
//! table of its T tokens) and one row, never T rows. The clipped sum is the embedding's scatter-add, adding
//! `c_i·δ_i` at every position. Forward, gradient sums and clipped sums do the f32 operations of the
//! unfused pair (gather then `mean`; `mean`'s backward then the scatter-add) in the same order, so
//! their results are the same bits; the norm is exact where the unfused one adds rows in f32.
//!
//! Layouts: ids `[batch][T]`, table `[vocab][dim]`, output and its gradient `[batch][dim]`.

use rayon::prelude::*;

use crate::embedding::{check_ids, norms_in_slots, scatter_add, u32_scratch, ScatterRows};
use crate::per_example::sum_squares;
use crate::sequence::mean_scale;

/// Scratch `f32`s per parallel slot of [`embedding_mean_norms_sq`]: a hash table of the example's
/// tokens and their counts (`u32` pairs), at most half full, and the example's row gradient.
pub const fn norm_scratch_len(steps: usize, dim: usize) -> usize {
    2 * count_table_len(steps) + dim
}

/// Entries of the token-count table: a power of two at least twice the positions.
const fn count_table_len(steps: usize) -> usize {
    (2 * steps).next_power_of_two()
}

/// Forward: `out[i] = (Σ_t table[ids[i][t]]) / T`.
pub fn embedding_mean_forward(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    table: &[f32],
    out: &mut [f32],
) {
    assert!(ids.len() >= batch * steps, "embedding mean: ids has {} values", ids.len());
    assert!(table.len() >= vocab * dim, "embedding mean: table has {} values", table.len());
    assert!(out.len() >= batch * dim, "embedding mean: output has {} values", out.len());
    check_ids(&ids[..batch * steps], vocab);
    if dim == 0 {
        return;
    }
    let scale = mean_scale(steps);
    out[..batch * dim].par_chunks_mut(dim).enumerate().for_each(|(i, o)| {
        o.fill(0.0);
        for &v in &ids[i * steps..(i + 1) * steps] {
            for (acc, &x) in o.iter_mut().zip(&table[v as usize * dim..(v as usize + 1) * dim]) {
                *acc += x;
            }
        }
        o.iter_mut().for_each(|x| *x *= scale);
    });
}

/// ADDS every example's squared table-gradient norm `‖g_i / T‖² · Σ_v count_{i,v}²` into
/// `norms_sq[i * norm_stride]`. `scratch` holds one or more slots of [`norm_scratch_len`].
#[allow(clippy::too_many_arguments)]
pub fn embedding_mean_norms_sq(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    out_grad: &[f32],
    scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    assert!(ids.len() >= batch * steps, "embedding mean: ids has {} values", ids.len());
    assert!(out_grad.len() >= batch * dim, "embedding mean: gradient has {} values", out_grad.len());
    assert!(steps <= 1 << 30, "embedding mean: {steps} steps is more than the count table can index");
    check_ids(&ids[..batch * steps], vocab);
    let scale = mean_scale(steps);
    let slot_len = norm_scratch_len(steps, dim);
    norms_in_slots("embedding mean", batch, scratch, slot_len, norms_sq, norm_stride, |i, slot| {
        let (table, row) = slot.split_at_mut(2 * count_table_len(steps));
        // δ_i as the unfused `mean` backward writes it, so the norm is of the rows it would add.
        for (r, &g) in row[..dim].iter_mut().zip(&out_grad[i * dim..(i + 1) * dim]) {
            *r = g * scale;
        }
        let repeats = sum_of_squared_counts(&ids[i * steps..(i + 1) * steps], u32_scratch(table));
        repeats as f64 * sum_squares(&row[..dim])
    });
}

/// `Σ_v count_v²` of one example's tokens: the number of position pairs (ordered, each position with
/// itself included) that hold the same token. Counted in an open-addressing table (`[token, count]`
/// pairs, linear probing, a count of 0 marks a free entry) that is at most half full, so a token
/// costs a hash and about one probe: ~6× faster than sorting the positions as the unfused norm must.
fn sum_of_squared_counts(ids: &[u32], table: &mut [u32]) -> u64 {
    let entries = count_table_len(ids.len());
    let table = &mut table[..2 * entries];
    table.fill(0);
    // With a token there are at least 2 entries, so the shift is below 32.
    let (mask, shift) = (entries - 1, u32::BITS - entries.trailing_zeros());
    let mut total = 0u64;
    for &v in ids {
        // Fibonacci hashing: the high bits of the product, well spread for nearby ids.
        let mut slot = (v.wrapping_mul(0x9e37_79b9) >> shift) as usize;
        loop {
            let (token, count) = (table[2 * slot], table[2 * slot + 1]);
            if count == 0 || token == v {
                // (c + 1)² − c² = 2c + 1.
                total += 2 * count as u64 + 1;
                table[2 * slot] = v;
                table[2 * slot + 1] = count + 1;
                break;
            }
            slot = (slot + 1) & mask;
        }
    }
    total
}

/// The clipped sum: ADDS `Σ_i c_i · count_{i,v} · g_i / T` into row `v` of `grad` (`[vocab][dim]`),
/// `c_i = factors[i * factor_stride]`; examples whose factor is 0 are skipped (NaN and ∞ included).
#[allow(clippy::too_many_arguments)]
pub fn embedding_mean_clipped_sum(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    out_grad: &[f32],
    factors: &[f32],
    factor_stride: usize,
    grad: &mut [f32],
) {
    let rows = ScatterRows::PerExample { rows: out_grad, scale: mean_scale(steps) };
    scatter_add(vocab, dim, batch, steps, ids, rows, Some((factors, factor_stride)), grad);
}

/// The non-private table gradient: ADDS `Σ_i count_{i,v} · g_i / T` into row `v` of `grad`.
pub fn embedding_mean_backward(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    out_grad: &[f32],
    grad: &mut [f32],
) {
    let rows = ScatterRows::PerExample { rows: out_grad, scale: mean_scale(steps) };
    scatter_add(vocab, dim, batch, steps, ids, rows, None, grad);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::{embedding_backward, embedding_clipped_sum, embedding_forward};
    use crate::sequence::{mean_over_sequence_backward, mean_over_sequence_forward};
    use crate::test_support::*;
    use rand::Rng;

    /// The fused passes against the unfused pair they replace: forward, gradient sum and clipped sum
    /// bit for bit; the norm against `Σ_v ‖count_v·δ‖²` in f64 from a map of counts.
    #[test]
    fn fused_passes_equal_the_embedding_then_mean() {
        let mut rng = rng(61);
        // Rows shorter than a vector chunk, exactly one, and one with a remainder; one position; a
        // sequence longer than the scatter-add's scan block; a vocabulary too large for the radix sort.
        for (vocab, dim, steps) in
            [(300, 5, 9), (10_004, 16, 256), (70, 37, 300), (50, 3, 1), (1 << 30, 4, 12)]
        {
            let batch = 5;
            let table_rows = vocab.min(1 << 16);
            // A vocabulary past the table's rows is only for the norms (which never read the table).
            let draw = if vocab > table_rows { vocab as u32 } else { table_rows as u32 };
            let palette: Vec<u32> = (0..7).map(|_| rng.random_range(0..draw)).collect();
            let mut ids: Vec<u32> =
                (0..batch * steps).map(|_| palette[rng.random_range(0..palette.len())]).collect();
            ids[..steps].fill(palette[0]); // example 0: one token at every position
            let out_grad = uniform(&mut rng, batch * dim);
            let mut dx = vec![0.0f32; batch * steps * dim];
            mean_over_sequence_backward(batch, steps, dim, &out_grad, &mut dx);

            let mut scratch = vec![f32::NAN; 2 * norm_scratch_len(steps, dim)];
            let mut norms = vec![0.5f32; 2 * batch];
            embedding_mean_norms_sq(vocab, dim, batch, steps, &ids, &out_grad, &mut scratch, &mut norms, 2);
            for i in 0..batch {
                let mut counts = std::collections::BTreeMap::<u32, f64>::new();
                ids[i * steps..(i + 1) * steps].iter().for_each(|&v| *counts.entry(v).or_default() += 1.0);
                let row = &dx[i * steps * dim..(i * steps + 1) * dim];
                let want: f64 = counts.values().map(|c| c * c * sum_squares(row)).sum();
                assert_rel("fused embedding norm", norms[2 * i] as f64 - 0.5, want, 1e-6);
                assert_eq!(norms[2 * i + 1], 0.5, "the stride's gaps are left alone");
            }
            if vocab > table_rows {
                continue;
            }

            let table = uniform(&mut rng, vocab * dim);
            let (mut rows, mut unfused, mut fused) =
                (vec![0.0; batch * steps * dim], vec![0.0; batch * dim], vec![f32::NAN; batch * dim]);
            embedding_forward(vocab, dim, &ids, &table, &mut rows);
            mean_over_sequence_forward(batch, steps, dim, &rows, &mut unfused);
            embedding_mean_forward(vocab, dim, batch, steps, &ids, &table, &mut fused);
            assert_eq!(fused, unfused, "forward");

            let factors = [0.5f32, 2.0, 0.0, 1.5, 1.0];
            // Example 2's factor is 0: its NaN must not reach the sum.
            let mut poisoned = out_grad.clone();
            poisoned[2 * dim] = f32::NAN;
            let mut poisoned_dx = dx.clone();
            poisoned_dx[2 * steps * dim..3 * steps * dim].fill(f32::NAN);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let (mut want, mut got) = (vec![1.0f32; vocab * dim], vec![1.0f32; vocab * dim]);
                pool.install(|| {
                    embedding_clipped_sum(
                        vocab,
                        dim,
                        batch,
                        steps,
                        &ids,
                        &poisoned_dx,
                        &factors,
                        1,
                        &mut want,
                    );
                    embedding_mean_clipped_sum(
                        vocab, dim, batch, steps, &ids, &poisoned, &factors, 1, &mut got,
                    );
                });
                assert_eq!(got, want, "clipped sum, {threads} threads");
                assert!(got.iter().all(|v| v.is_finite()));
                let (mut want, mut got) = (vec![0.0f32; vocab * dim], vec![0.0f32; vocab * dim]);
                pool.install(|| {
                    embedding_backward(vocab, dim, batch, steps, &ids, &dx, &mut want);
                    embedding_mean_backward(vocab, dim, batch, steps, &ids, &out_grad, &mut got);
                });
                assert_eq!(got, want, "gradient sum, {threads} threads");
            }
        }
    }
}
