//! Embedding lookup over token ids: gather forward, and a backward that never forms a dense
//! `[vocab, dim]` gradient per example.
//!
//! Example `i` with tokens `v_{i,t}` and output gradients `δ_{i,t}` (`[T][dim]`) has the table gradient
//! `G_i[v] = Σ_{t: v_{i,t} = v} δ_{i,t}`: only the rows of its distinct tokens are non-zero, and rows
//! hit by the same token add up BEFORE squaring. The per-example norm groups equal tokens by sorting
//! the example's T positions: an LSD radix sort of packed `token << bits | position` keys, 8 token
//! bits a pass (cost ~T·⌈log₂(vocab)/8⌉ + T·dim, never the vocabulary size); the clipped sum is a
//! scatter-add of `c_i·δ_{i,t}` into row `v_{i,t}` of the table gradient.
//!
//! Layouts: ids `[batch][T]`, table `[vocab][dim]` (PyTorch's `embedding.weight`), output and its
//! gradient `[batch][T][dim]`. A token id ≥ vocab is the caller's error; the kernels assert.

use rayon::prelude::*;

use crate::per_example::{sum_by_lanes, sum_squares};

/// Scratch `f32`s per parallel slot of [`embedding_norms_sq`]: the example's positions (as `u32`) and
/// one row accumulator.
pub const fn norm_scratch_len(steps: usize, dim: usize) -> usize {
    steps + dim
}

/// Views an `f32` workspace slice as `u32`s (for integer scratch, e.g. max pooling's argmax, carved
/// from the `f32` arena).
pub fn u32_scratch(x: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is valid for both;
    // the returned slice borrows `x` mutably for its whole life, so nothing else aliases it.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<u32>(), x.len()) }
}

/// A standard normal value from 64 random bits (Box–Muller on two 24-bit uniforms, the first in (0, 1]):
/// PyTorch initialises embedding tables from N(0, 1).
#[inline]
pub fn normal_from_bits(a: u32, b: u32) -> f32 {
    let scale = 1.0 / (1u32 << 24) as f64;
    let u1 = ((a >> 8) as f64 + 1.0) * scale;
    let u2 = (b >> 8) as f64 * scale;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

pub(crate) fn check_ids(ids: &[u32], vocab: usize) {
    if let Some(&bad) = ids.iter().find(|&&v| v as usize >= vocab) {
        panic!("embedding: token id {bad} is not below the vocabulary size {vocab}");
    }
}

/// Forward: `out[n] = table[ids[n]]` for every token of the batch (`ids.len()` rows of `dim`).
pub fn embedding_forward(vocab: usize, dim: usize, ids: &[u32], table: &[f32], out: &mut [f32]) {
    assert!(table.len() >= vocab * dim, "embedding: table has {} values", table.len());
    assert!(out.len() >= ids.len() * dim, "embedding: output has {} values", out.len());
    check_ids(ids, vocab);
    if dim == 0 {
        return;
    }
    out[..ids.len() * dim].par_chunks_mut(dim).zip(ids.par_iter()).for_each(|(row, &v)| {
        row.copy_from_slice(&table[v as usize * dim..(v as usize + 1) * dim]);
    });
}

/// ADDS every example's squared table-gradient norm `Σ_v ‖Σ_{t: v_t = v} δ_t‖²` into
/// `norms_sq[i * norm_stride]`. `scratch` holds one or more slots of [`norm_scratch_len`].
#[allow(clippy::too_many_arguments)]
pub fn embedding_norms_sq(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    delta: &[f32],
    scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    assert!(ids.len() >= batch * steps, "embedding: ids has {} values", ids.len());
    assert!(delta.len() >= batch * steps * dim, "embedding: delta has {} values", delta.len());
    assert!(steps <= u32::MAX as usize, "embedding: too many steps for u32 positions");
    check_ids(&ids[..batch * steps], vocab);
    let slot_len = norm_scratch_len(steps, dim);
    norms_in_slots("embedding", batch, scratch, slot_len, norms_sq, norm_stride, |i, slot| {
        let (order, acc) = slot.split_at_mut(steps);
        let ids_i = &ids[i * steps..(i + 1) * steps];
        let delta_i = &delta[i * steps * dim..(i + 1) * steps * dim];
        example_norm_sq(vocab, dim, ids_i, delta_i, u32_scratch(order), &mut acc[..dim])
    });
}

/// ADDS `norm(i, slot)` into `norms_sq[i * norm_stride]` for every example of the batch: the examples
/// split evenly over as many parallel tasks as `scratch` holds slots of `slot_len`, each task passing
/// its own slot to every example it takes.
pub(crate) fn norms_in_slots(
    kernel: &str,
    batch: usize,
    scratch: &mut [f32],
    slot_len: usize,
    norms_sq: &mut [f32],
    norm_stride: usize,
    norm: impl Fn(usize, &mut [f32]) -> f64 + Sync,
) {
    if batch == 0 {
        return;
    }
    assert!(norm_stride >= 1 && norms_sq.len() > (batch - 1) * norm_stride, "{kernel}: norms too short");
    let slot_len = slot_len.max(1);
    let slots = (scratch.len() / slot_len).min(batch);
    assert!(slots >= 1, "{kernel} norms: scratch has {} values, one slot needs {slot_len}", scratch.len());
    let per_slot = batch.div_ceil(slots);
    norms_sq
        .par_chunks_mut(per_slot * norm_stride)
        .zip(scratch.par_chunks_mut(slot_len))
        .enumerate()
        .for_each(|(k, (norms, slot))| {
            for i in k * per_slot..((k + 1) * per_slot).min(batch) {
                norms[(i - k * per_slot) * norm_stride] += norm(i, slot) as f32;
            }
        });
}

/// Longest sequence whose positions are grouped by the radix sort; its second buffer lives on the
/// stack (4 KiB), so the kernel's scratch stays one `u32` per position. Longer sequences, and
/// vocabularies too large to pack token and position into one `u32`, take an indirect comparison sort.
const RADIX_MAX_STEPS: usize = 1024;

/// Widest radix digit: 256 counters per pass.
const MAX_DIGIT_BITS: u32 = 8;

/// Bits needed to write every value below `n` (0 for `n ≤ 1`).
fn bits_below(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

/// One example: group its positions by token, then square each token's summed row.
fn example_norm_sq(
    vocab: usize,
    dim: usize,
    ids: &[u32],
    delta: &[f32],
    order: &mut [u32],
    acc: &mut [f32],
) -> f64 {
    let steps = ids.len();
    let (position_bits, token_bits) = (bits_below(steps), bits_below(vocab));
    if steps <= RADIX_MAX_STEPS && position_bits + token_bits <= u32::BITS {
        let mut spare = [0u32; RADIX_MAX_STEPS];
        let keys = radix_sort_keys(ids, position_bits, token_bits, order, &mut spare[..steps]);
        let mask = (1u32 << position_bits) - 1;
        grouped_norm_sq(dim, delta, keys, |k| k >> position_bits, |k| (k & mask) as usize, acc)
    } else {
        for (t, o) in order.iter_mut().enumerate() {
            *o = t as u32;
        }
        order.sort_unstable_by_key(|&t| (ids[t as usize], t));
        grouped_norm_sq(dim, delta, order, |t| ids[t as usize], |t| t as usize, acc)
    }
}

/// Sorts the keys `token << position_bits | position` of one example by an LSD radix sort (stable
/// counting passes of at most 8 token bits; the positions come out ascending within a token, as
/// written) and returns the sorted keys: in `order` or in `spare`, whichever the last pass wrote.
/// The first pass reads the tokens straight from `ids`, so two buffers of `steps` suffice.
fn radix_sort_keys<'a>(
    ids: &[u32],
    position_bits: u32,
    token_bits: u32,
    order: &'a mut [u32],
    spare: &'a mut [u32],
) -> &'a [u32] {
    let passes = token_bits.div_ceil(MAX_DIGIT_BITS);
    if passes == 0 {
        // One token in the vocabulary: the positions in order are already grouped.
        for (t, o) in order.iter_mut().enumerate() {
            *o = t as u32;
        }
        return order;
    }
    let digit_bits = token_bits.div_ceil(passes);
    let digit_mask = (1u32 << digit_bits) - 1;
    let mut starts = [[0u32; 1 << MAX_DIGIT_BITS]; (u32::BITS / MAX_DIGIT_BITS) as usize];
    let starts = &mut starts[..passes as usize];
    // Digits are at most 8 bits, so `as u8` changes no value and spares the bounds checks.
    let digit = |k: u32, shift: u32| ((k >> shift) & digit_mask) as u8 as usize;
    for (p, counts) in starts.iter_mut().enumerate() {
        let shift = p as u32 * digit_bits;
        for &v in ids {
            counts[digit(v, shift)] += 1;
        }
    }
    for counts in starts.iter_mut() {
        let mut sum = 0;
        for c in counts[..=digit_mask as usize].iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
    }
    // An odd number of passes ends in `order` when the first writes to it; an even number, when the
    // first writes to `spare`.
    let (mut from, mut to) = if passes % 2 == 1 { (spare, order) } else { (order, spare) };
    for (t, &v) in ids.iter().enumerate() {
        let next = &mut starts[0][digit(v, 0)];
        to[*next as usize] = v << position_bits | t as u32;
        *next += 1;
    }
    for (p, next) in starts.iter_mut().enumerate().skip(1) {
        (from, to) = (to, from);
        let shift = position_bits + p as u32 * digit_bits;
        for &k in from.iter() {
            let slot = &mut next[digit(k, shift)];
            to[*slot as usize] = k;
            *slot += 1;
        }
    }
    to
}

/// `Σ_v ‖Σ_{t: v_t = v} δ_t‖²` over `sorted` entries grouped by token (`token(e)`, `position(e)` read
/// an entry): `Σ_t ‖δ_t‖²` over every position in one vectorised pass, then for each repeated token
/// `‖Σ δ_t‖² − Σ ‖δ_t‖²` (its rows added in f32 in `acc`, every square summed in f64).
fn grouped_norm_sq(
    dim: usize,
    delta: &[f32],
    sorted: &[u32],
    token: impl Fn(u32) -> u32,
    position: impl Fn(u32) -> usize,
    acc: &mut [f32],
) -> f64 {
    let row = |e: u32| {
        let t = position(e);
        &delta[t * dim..(t + 1) * dim]
    };
    let mut total = sum_squares(&delta[..sorted.len() * dim]);
    crate::fast_math::with_widest_vectors(
        #[inline(always)]
        || {
            let mut start = 0;
            while start < sorted.len() {
                let first = sorted[start];
                let mut end = start + 1;
                while end < sorted.len() && token(sorted[end]) == token(first) {
                    end += 1;
                }
                if end - start > 1 {
                    acc.copy_from_slice(row(first));
                    let mut rows_sq = sum_by_lanes::<ROW_CHUNK>(acc, |v| v as f64 * v as f64);
                    for &e in &sorted[start + 1..end] {
                        rows_sq += add_and_square(acc, row(e));
                    }
                    total += sum_by_lanes::<ROW_CHUNK>(acc, |v| v as f64 * v as f64) - rows_sq;
                }
                start = end;
            }
        },
    );
    // Cancelling rows make the true norm 0 and the difference above may round below it; a negative
    // squared norm would read as invalid downstream (NaN stays NaN: the comparison is false).
    if total < 0.0 {
        0.0
    } else {
        total
    }
}

/// The clipped sum by scatter-add: ADDS `Σ_i c_i Σ_t δ_{i,t}` into rows `v_{i,t}` of `grad`
/// (`[vocab][dim]`), `c_i = factors[i * factor_stride]`; examples whose factor is 0 are skipped.
#[allow(clippy::too_many_arguments)]
pub fn embedding_clipped_sum(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    delta: &[f32],
    factors: &[f32],
    factor_stride: usize,
    grad: &mut [f32],
) {
    let rows = ScatterRows::PerPosition(delta);
    scatter_add(vocab, dim, batch, steps, ids, rows, Some((factors, factor_stride)), grad);
}

/// The non-private table gradient: ADDS `Σ_i Σ_t δ_{i,t}` into rows `v_{i,t}` of `grad`.
pub fn embedding_backward(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    delta: &[f32],
    grad: &mut [f32],
) {
    scatter_add(vocab, dim, batch, steps, ids, ScatterRows::PerPosition(delta), None, grad);
}

/// Tokens per block of the scatter-add's scan: a block's positions whose token falls in the task's rows
/// are listed without a branch, then added. (A branch per token, taken or not at random, cost more than
/// the add it guarded.)
const SCAN_BLOCK: usize = 256;

/// The rows a scatter-add adds: one per position, or one per example added at each of its positions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScatterRows<'a> {
    /// `δ` as `[batch][T][dim]`.
    PerPosition(&'a [f32]),
    /// `[batch][dim]` rows, each times `scale` (a sequence mean's output gradient and `1/T`: the rows
    /// its backward would write at every position, computed as it computes them).
    PerExample { rows: &'a [f32], scale: f32 },
}

/// Scatter-add with a per-example factor `c_i = factors[i * stride]` (1 for every example with `None`:
/// the non-private gradient). One task per thread, each owning a contiguous range of table
/// rows and scanning every token once, so no two threads write the same row. (Frequent tokens, which
/// real text has, make the ranges unequal in work; splitting by examples instead would need a private
/// table gradient per thread and a reduction over the whole table.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn scatter_add(
    vocab: usize,
    dim: usize,
    batch: usize,
    steps: usize,
    ids: &[u32],
    rows: ScatterRows<'_>,
    factors: Option<(&[f32], usize)>,
    grad: &mut [f32],
) {
    assert!(ids.len() >= batch * steps, "embedding: ids has {} values", ids.len());
    if let (Some((factors, stride)), true) = (factors, batch > 0) {
        assert!(stride >= 1 && factors.len() > (batch - 1) * stride, "embedding: factors too short");
    }
    let factor = |i: usize| factors.map_or(1.0, |(factors, stride)| factors[i * stride]);
    match rows {
        ScatterRows::PerPosition(delta) => {
            assert!(delta.len() >= batch * steps * dim, "embedding: delta has {} values", delta.len())
        }
        ScatterRows::PerExample { rows, .. } => {
            assert!(rows.len() >= batch * dim, "embedding: rows has {} values", rows.len())
        }
    }
    assert!(grad.len() >= vocab * dim, "embedding: gradient has {} values", grad.len());
    check_ids(&ids[..batch * steps], vocab);
    if dim == 0 || vocab == 0 {
        return;
    }
    let rows_per_task = vocab.div_ceil(rayon::current_num_threads().max(1));
    grad[..vocab * dim].par_chunks_mut(rows_per_task * dim).enumerate().for_each(|(k, table_rows)| {
        let (first, len) = ((k * rows_per_task) as u32, (table_rows.len() / dim) as u32);
        let mut hits = [0u32; SCAN_BLOCK];
        let mut pooled = match rows {
            ScatterRows::PerPosition(_) => Vec::new(),
            ScatterRows::PerExample { .. } => vec![0.0f32; dim],
        };
        crate::fast_math::with_widest_vectors(
            #[inline(always)]
            || {
                for i in 0..batch {
                    let c = factor(i);
                    if c == 0.0 {
                        continue;
                    }
                    let ids_i = &ids[i * steps..(i + 1) * steps];
                    // The example's rows and the distance between two positions' rows.
                    let (rows_i, position_stride) = match rows {
                        ScatterRows::PerPosition(delta) => {
                            (&delta[i * steps * dim..(i + 1) * steps * dim], dim)
                        }
                        ScatterRows::PerExample { rows, scale } => {
                            for (p, &g) in pooled.iter_mut().zip(&rows[i * dim..(i + 1) * dim]) {
                                *p = g * scale;
                            }
                            (&pooled[..], 0)
                        }
                    };
                    for (b, block) in ids_i.chunks(SCAN_BLOCK).enumerate() {
                        let mut found = 0;
                        for (t, &v) in block.iter().enumerate() {
                            // `found ≤ t < SCAN_BLOCK`, so the slot exists; it is kept only if the
                            // token is in this task's rows.
                            hits[found] = t as u32;
                            found += usize::from(v.wrapping_sub(first) < len);
                        }
                        for &t in &hits[..found] {
                            let t = b * SCAN_BLOCK + t as usize;
                            let row = (ids_i[t] - first) as usize;
                            let at = t * position_stride;
                            add_scaled(&mut table_rows[row * dim..(row + 1) * dim], c, &rows_i[at..at + dim]);
                        }
                    }
                }
            },
        );
    });
}

/// Values per step of the row loops below: one AVX-512 vector, so that a row of the paper's embedding
/// model (16 values) is one vector operation (seen in the disassembly of the scatter-add).
const ROW_CHUNK: usize = 16;

/// `dst += c · src`, row by row in chunks of [`ROW_CHUNK`].
#[inline(always)]
fn add_scaled(dst: &mut [f32], c: f32, src: &[f32]) {
    let mut dst_chunks = dst.chunks_exact_mut(ROW_CHUNK);
    let mut src_chunks = src.chunks_exact(ROW_CHUNK);
    for (d, s) in (&mut dst_chunks).zip(&mut src_chunks) {
        // Whole-chunk loads and stores: with element-wise accesses the compiler cannot rule out that
        // `d` and `s` overlap and keeps the chunk scalar.
        let (mut sum, add): ([f32; ROW_CHUNK], [f32; ROW_CHUNK]) = (load(d), load(s));
        for k in 0..ROW_CHUNK {
            sum[k] += c * add[k];
        }
        d.copy_from_slice(&sum);
    }
    for (d, &s) in dst_chunks.into_remainder().iter_mut().zip(src_chunks.remainder()) {
        *d += c * s;
    }
}

/// A chunk of [`ROW_CHUNK`] values as an array (`chunk` has exactly that many).
#[inline(always)]
fn load(chunk: &[f32]) -> [f32; ROW_CHUNK] {
    let mut values = [0.0; ROW_CHUNK];
    values.copy_from_slice(chunk);
    values
}

/// `acc += row`, returning `‖row‖²` (each square exact in f64, summed in f64 lanes).
#[inline(always)]
fn add_and_square(acc: &mut [f32], row: &[f32]) -> f64 {
    let mut squares = [0.0f64; ROW_CHUNK];
    let mut acc_chunks = acc.chunks_exact_mut(ROW_CHUNK);
    let mut row_chunks = row.chunks_exact(ROW_CHUNK);
    for (a, r) in (&mut acc_chunks).zip(&mut row_chunks) {
        let (mut sum, add) = (load(a), load(r));
        for k in 0..ROW_CHUNK {
            sum[k] += add[k];
            squares[k] += add[k] as f64 * add[k] as f64;
        }
        a.copy_from_slice(&sum);
    }
    let mut tail = 0.0;
    for (a, &r) in acc_chunks.into_remainder().iter_mut().zip(row_chunks.remainder()) {
        *a += r;
        tail += r as f64 * r as f64;
    }
    squares.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use rand::Rng;

    /// One example's dense table gradient in f64, by finite differences of `Σ_t table[v_t]·δ_t`.
    fn reference_grad(vocab: usize, dim: usize, ids: &[u32], delta: &[f32], table: &[f32]) -> Vec<f64> {
        let d = wide(delta);
        finite_difference(&wide(table), 1e-6, |tab| {
            ids.iter()
                .enumerate()
                .map(|(t, &v)| {
                    dot(&tab[v as usize * dim..(v as usize + 1) * dim], &d[t * dim..(t + 1) * dim])
                })
                .sum()
        })[..vocab * dim]
            .to_vec()
    }

    #[test]
    fn forward_norms_with_repeated_tokens_and_clipped_sums_match_reference() {
        // Rows shorter than a vector chunk, exactly one, and two with a remainder; sequences longer than
        // the scatter-add's scan block.
        for (vocab, dim, steps) in [(300, 5, 9), (300, 16, 9), (70, 37, 300)] {
            check_forward_norms_and_sums(vocab, dim, steps);
        }
    }

    fn check_forward_norms_and_sums(vocab: usize, dim: usize, steps: usize) {
        let mut rng = rng(51);
        let batch = 4;
        let table = uniform(&mut rng, vocab * dim);
        let mut ids: Vec<u32> = (0..batch * steps).map(|_| rng.random_range(0..vocab as u32)).collect();
        // Example 0: one token everywhere; example 1: two tokens alternating; the rest random.
        ids[..steps].fill(7);
        for t in 0..steps {
            ids[steps + t] = if t % 2 == 0 { vocab as u32 - 1 } else { 0 };
        }
        let delta = uniform(&mut rng, batch * steps * dim);
        let mut out = vec![f32::NAN; batch * steps * dim];
        embedding_forward(vocab, dim, &ids, &table, &mut out);
        for (n, &v) in ids.iter().enumerate() {
            assert_eq!(&out[n * dim..(n + 1) * dim], &table[v as usize * dim..(v as usize + 1) * dim]);
        }
        let grads: Vec<Vec<f64>> = (0..batch)
            .map(|i| {
                let range = i * steps..(i + 1) * steps;
                reference_grad(
                    vocab,
                    dim,
                    &ids[range],
                    &delta[i * steps * dim..(i + 1) * steps * dim],
                    &table,
                )
            })
            .collect();
        for slots in [1, 3, batch] {
            let mut scratch = vec![f32::NAN; slots * norm_scratch_len(steps, dim)];
            let mut norms = vec![0.25f32; 2 * batch];
            embedding_norms_sq(vocab, dim, batch, steps, &ids, &delta, &mut scratch, &mut norms, 2);
            for i in 0..batch {
                assert_rel("embedding norm", norms[2 * i] as f64 - 0.25, dot(&grads[i], &grads[i]), 1e-4);
                assert_eq!(norms[2 * i + 1], 0.25);
            }
        }
        // Adding rows before squaring matters: the sum of squared rows differs for example 0.
        let rows_squared: f64 = (0..steps).map(|t| sum_squares(&delta[t * dim..(t + 1) * dim])).sum();
        assert!((rows_squared - dot(&grads[0], &grads[0])).abs() > 1e-3);

        let mut dropped = delta.clone();
        dropped[2 * steps * dim] = f32::NAN; // example 2 gets factor 0
        let factors = [0.5f32, 2.0, 0.0, 1.5];
        let clipped: Vec<f64> = (0..vocab * dim)
            .map(|j| 1.0 + (0..batch).map(|i| factors[i] as f64 * grads[i][j]).sum::<f64>())
            .collect();
        let summed: Vec<f64> = (0..vocab * dim).map(|j| (0..batch).map(|i| grads[i][j]).sum()).collect();
        // The scatter-add gives each thread a range of table rows: every split, and more threads than
        // some ranges have rows, give the same sums.
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut grad = vec![1.0f32; vocab * dim];
            pool.install(|| {
                embedding_clipped_sum(vocab, dim, batch, steps, &ids, &dropped, &factors, 1, &mut grad)
            });
            assert_close("clipped sum", &grad, &clipped, 1e-4);
            let mut plain = vec![0.0f32; vocab * dim];
            pool.install(|| embedding_backward(vocab, dim, batch, steps, &ids, &delta, &mut plain));
            assert_close("gradient", &plain, &summed, 1e-4);
        }
    }

    /// Every example's `Σ_v ‖Σ_{t: v_t = v} δ_t‖²` in f64, grouping with a map.
    fn reference_norms(dim: usize, steps: usize, ids: &[u32], delta: &[f32]) -> Vec<f64> {
        let batch = ids.len() / steps.max(1);
        (0..batch)
            .map(|i| {
                let mut rows = std::collections::BTreeMap::<u32, Vec<f64>>::new();
                for t in 0..steps {
                    let row = rows.entry(ids[i * steps + t]).or_insert_with(|| vec![0.0; dim]);
                    let n = i * steps + t;
                    row.iter_mut().zip(&delta[n * dim..(n + 1) * dim]).for_each(|(r, &d)| *r += d as f64);
                }
                rows.values().map(|r| dot(r, r)).sum()
            })
            .collect()
    }

    #[test]
    fn norms_match_reference_on_every_grouping_path() {
        let mut rng = rng(53);
        // (vocab, steps): one token (no pass); one, two, three and four radix passes (the last packs
        // 26 token and 6 position bits); a sequence of one position; then the comparison sort, for a
        // sequence past the radix limit and for token and position bits past 32.
        let shapes = [
            (1usize, 7usize),
            (200, 5),
            (10_004, 256),
            (1 << 20, 64),
            (1 << 26, 40),
            (70_000, 1),
            (50, RADIX_MAX_STEPS + 3),
            (1 << 30, 64),
        ];
        let (dim, batch) = (3, 5);
        for (vocab, steps) in shapes {
            // Tokens from a few values spread over the whole vocabulary (high bits included), so that
            // most examples repeat tokens and grouping needs every radix pass; example 0 repeats
            // only the last token, a padding-like run.
            let mut palette: Vec<u32> = (0..6).map(|_| rng.random_range(0..vocab as u32)).collect();
            // Two tokens that share their low byte (the first radix digit) with palette[0].
            let low = palette[0] & 0xff;
            palette.extend([
                0,
                vocab as u32 - 1,
                low,
                low | ((vocab as u32 - 1) & !0xff).saturating_sub(0x100),
            ]);
            let mut ids: Vec<u32> =
                (0..batch * steps).map(|_| palette[rng.random_range(0..palette.len())]).collect();
            ids[..steps].fill(vocab as u32 - 1);
            let delta = uniform(&mut rng, batch * steps * dim);
            let want = reference_norms(dim, steps, &ids, &delta);
            let mut scratch = vec![f32::NAN; 2 * norm_scratch_len(steps, dim)];
            let mut norms = vec![0.0f32; batch];
            embedding_norms_sq(vocab, dim, batch, steps, &ids, &delta, &mut scratch, &mut norms, 1);
            for i in 0..batch {
                assert_rel(
                    &format!("norm, vocab {vocab}, {steps} steps, example {i}"),
                    norms[i] as f64,
                    want[i],
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn cancelling_rows_of_one_token_give_a_zero_norm_never_a_negative_one() {
        let mut rng = rng(55);
        let (vocab, dim, batch, steps) = (40, 7, 64, 6);
        // Each example: three tokens, each hit twice with opposite rows, so its gradient is exactly 0
        // while Σ_t ‖δ_t‖² is not; the difference must not round below zero.
        let mut ids = Vec::new();
        let mut delta = Vec::new();
        for _ in 0..batch {
            for _ in 0..steps / 2 {
                let v = rng.random_range(0..vocab as u32);
                let row: Vec<f32> =
                    uniform(&mut rng, dim).iter().map(|x| x * 10f32.powi(rng.random_range(-3..4))).collect();
                ids.extend([v, v]);
                delta.extend(&row);
                delta.extend(row.iter().map(|x| -x));
            }
        }
        let mut scratch = vec![f32::NAN; norm_scratch_len(steps, dim)];
        let mut norms = vec![0.0f32; batch];
        embedding_norms_sq(vocab, dim, batch, steps, &ids, &delta, &mut scratch, &mut norms, 1);
        for (i, &n) in norms.iter().enumerate() {
            // Zero up to f64 rounding of the squares it cancels.
            let rows_sq = sum_squares(&delta[i * steps * dim..(i + 1) * steps * dim]);
            assert!(n >= 0.0 && n as f64 <= 1e-14 * rows_sq, "example {i}: {n} (rows {rows_sq})");
        }
    }

    #[test]
    fn radix_sort_orders_by_token_then_position() {
        let mut rng = rng(54);
        for (vocab, steps) in [(3usize, 1000usize), (10_004, 256), (1 << 20, 17), (1 << 26, 60)] {
            let ids: Vec<u32> = (0..steps).map(|_| rng.random_range(0..vocab as u32)).collect();
            let (position_bits, token_bits) = (bits_below(steps), bits_below(vocab));
            let (mut order, mut spare) = (vec![0u32; steps], vec![0u32; steps]);
            let keys = radix_sort_keys(&ids, position_bits, token_bits, &mut order, &mut spare).to_vec();
            let mut want: Vec<(u32, u32)> = ids.iter().enumerate().map(|(t, &v)| (v, t as u32)).collect();
            want.sort();
            let mask = (1u32 << position_bits) - 1;
            let got: Vec<(u32, u32)> = keys.iter().map(|&k| (k >> position_bits, k & mask)).collect();
            assert_eq!(got, want, "vocab {vocab}, {steps} steps");
        }
        assert_eq!(
            [bits_below(0), bits_below(1), bits_below(2), bits_below(256), bits_below(257)],
            [0, 0, 1, 8, 9]
        );
    }

    #[test]
    fn normal_init_has_mean_zero_and_unit_variance() {
        let mut rng = rng(52);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| normal_from_bits(rng.random(), rng.random()) as f64).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let within_one = draws.iter().filter(|v| v.abs() < 1.0).count() as f64 / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!((within_one - 0.6827).abs() < 0.005, "mass within one sigma {within_one}");
        assert!(draws.iter().all(|v| v.is_finite()));
        assert!(normal_from_bits(0, 0).is_finite(), "u1 is never 0");
    }

    #[test]
    #[should_panic(expected = "not below the vocabulary size")]
    fn token_out_of_vocabulary_is_refused() {
        let mut out = [0.0f32; 2];
        embedding_forward(3, 2, &[3], &[0.0; 6], &mut out);
    }
}
