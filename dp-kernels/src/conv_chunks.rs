//! The passes of a convolution that need its patches (forward, per-example norms, the direct norms
//! that keep each example's gradient, weight gradient), example by example: each task of a pass owns
//! a slot of one example's patches, unfolds an example into it and runs that example's products
//! right after, on the same thread, while the patches are in its cache. A conv with few positions
//! and many channels instead folds chunks of examples into one product per pass ([`conv_folded`]).
//!
//! Unfolding the whole batch first writes `B·T·d` values to memory and reads them back (363 MB per
//! pass for the CIFAR-10 CNN at B = 128, which is bandwidth, not arithmetic); unfolding chunks of
//! examples and then multiplying them took two parallel loops per chunk, and the patches a thread
//! multiplied had often been unfolded by another.

use rayon::prelude::*;

use crate::conv::{self, Conv2dGeometry};
use crate::conv_folded;
use crate::gemm::{Op, Product};
use crate::gemm_bf16::{product_in, round_to_bf16_in_place, Precision, SharedLeft};
use crate::per_example::{self, Strategy};
use dp_spec::cost::TASKS_PER_THREAD;
use dp_spec::RowLayout;

/// The patches of one chunk are kept under this many bytes (about one core's L2), unless one
/// example alone is larger; a chunk always has at least one example per thread.
const CHUNK_PATCH_BYTES: usize = 2 << 20;

/// Examples per chunk for `geom` (at least one per thread, at most `batch`).
pub fn chunk_examples(geom: &Conv2dGeometry, batch: usize) -> usize {
    let per_example = 4 * geom.patches_len().max(1);
    (CHUNK_PATCH_BYTES / per_example).max(rayon::current_num_threads()).clamp(1, batch.max(1))
}

/// Calls `pass(first, len)` for consecutive chunks of examples covering `0..batch`, no chunk larger
/// than the patches of a scratch of `capacity` values hold (at least one example).
fn for_each_chunk(geom: &Conv2dGeometry, batch: usize, capacity: usize, mut pass: impl FnMut(usize, usize)) {
    let size = chunk_examples(geom, batch).min(patch_slots(geom, capacity));
    let mut first = 0;
    while first < batch {
        let len = size.min(batch - first);
        pass(first, len);
        first += len;
    }
}

/// Forward: `out[i][o][t] = bias[o] + Σ_k weight[o][k]·patch_{i,t}[k]`, example by example
/// (`forward_by_example`; `patches` needs room for one example's patches at least). `patches` and
/// `rows` need room for one chunk's patches and output when the conv folds (see [`chunk_examples`];
/// a batch's worth is always enough). A conv with few positions folds each chunk
/// into one product per group ([`conv_folded`]) and uses `rows` for its output; the others run one
/// product per example and leave `rows` alone. The products run in `precision`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    geom: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    patches: &mut [f32],
    rows: &mut [f32],
    out: &mut [f32],
    precision: Precision,
) {
    let (input_len, output_len) = (geom.input_len(), geom.output_len());
    assert!(x.len() >= batch * input_len, "conv2d: input has {} values", x.len());
    assert!(out.len() >= batch * output_len, "conv2d: output has {} values", out.len());
    if !conv_folded::folds(geom) {
        return forward_by_example(geom, batch, x, weight, bias, patches, out, precision);
    }
    for_each_chunk(geom, batch, patches.len(), |first, len| {
        let x = &x[first * input_len..(first + len) * input_len];
        let out = &mut out[first * output_len..(first + len) * output_len];
        conv_folded::forward(geom, len, x, weight, bias, patches, rows, out, precision);
    });
}

/// Consecutive examples per task of a pass that runs example by example, each task with its own
/// slot of one example's patches (`slots` of them in the scratch, and as many of any other scratch
/// the pass needs): at most [`TASKS_PER_THREAD`] tasks per thread, and no more than the slots.
fn examples_per_task(batch: usize, slots: usize) -> usize {
    let tasks = slots.min(batch).min(TASKS_PER_THREAD * rayon::current_num_threads());
    batch.div_ceil(tasks.max(1))
}

/// Slots of one example's patches (every group) in a scratch of `capacity` values: at least one.
fn patch_slots(geom: &Conv2dGeometry, capacity: usize) -> usize {
    let slot_len = geom.patches_len().max(1);
    assert!(capacity >= slot_len, "conv2d: patches has {capacity} values, one example needs {slot_len}");
    capacity / slot_len
}

/// One example's patches, every group (`[groups][d][T]`, a batch of one for [`im2col`]), into `slot`.
fn unfold_example(geom: &Conv2dGeometry, x_i: &[f32], slot: &mut [f32]) {
    let (t, d, cg) = (geom.positions(), geom.patch_len(), geom.in_c / geom.groups);
    for q in 0..geom.groups {
        conv::im2col_one(geom, q, 0..cg, x_i, &mut slot[q * d * t..(q + 1) * d * t], t);
    }
}

/// The forward one example at a time: each task unfolds its example into its own slot of
/// `patches` (one example's patches, every group) and multiplies right after, on the same thread,
/// while the patches are in its cache. One parallel loop for the whole batch: unfolding a chunk and
/// then multiplying it were two loops per chunk, each waking the pool (the residual CNN's convs ran
/// 43 chunks a pass), and a thread often multiplied patches that the other had unfolded.
#[allow(clippy::too_many_arguments)]
fn forward_by_example(
    geom: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    patches: &mut [f32],
    out: &mut [f32],
    precision: Precision,
) {
    geom.assert_valid();
    let (t, d, pg) = (geom.positions(), geom.patch_len(), geom.out_per_group());
    let (input_len, output_len) = (geom.input_len(), geom.output_len());
    assert!(weight.len() >= geom.weight_len(), "conv2d: weight has {} values", weight.len());
    if let Some(b) = bias {
        assert!(b.len() >= geom.out_c, "conv2d: bias has {} values", b.len());
    }
    if batch == 0 || pg * t == 0 {
        return;
    }
    let per_task = examples_per_task(batch, patch_slots(geom, patches.len()));
    // Each group's weight, packed once for every example's product in bf16.
    let weights: Vec<SharedLeft<'_>> = (0..geom.groups)
        .map(|q| SharedLeft::new(precision, Op::N, (pg, d), &weight[q * pg * d..(q + 1) * pg * d]))
        .collect();
    out[..batch * output_len]
        .par_chunks_mut(per_task * output_len)
        .zip(patches.par_chunks_mut(geom.patches_len().max(1)))
        .enumerate()
        .for_each(|(k, (out_k, slot))| {
            for (j, out_i) in out_k.chunks_mut(output_len).enumerate() {
                let i = k * per_task + j;
                unfold_example(geom, &x[i * input_len..(i + 1) * input_len], slot);
                for q in 0..geom.groups {
                    let block = &mut out_i[q * pg * t..(q + 1) * pg * t];
                    let beta = conv::fill_bias(bias, q, t, block);
                    weights[q].product_serial(Op::N, t, 1.0, &slot[q * d * t..(q + 1) * d * t], beta, block);
                }
            }
        });
}

/// Backward to the input: `dx` (overwritten, `[batch][in_c][in_h][in_w]`) from the NCHW output
/// gradient `dout`. A conv with few positions folds chunks of examples into one product per group
/// ([`conv_folded::backward_input`]; `patches` and `rows` then need room for one chunk's patches and
/// output); the others run [`conv::conv2d_backward_input`] with `patches` as its slots and leave
/// `rows` alone. The products run in `precision`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input(
    geom: &Conv2dGeometry,
    batch: usize,
    dout: &[f32],
    weight: &[f32],
    patches: &mut [f32],
    rows: &mut [f32],
    dx: &mut [f32],
    precision: Precision,
) {
    if !conv_folded::folds(geom) {
        return conv::conv2d_backward_input(geom, batch, dout, weight, patches, dx, precision);
    }
    let (input_len, output_len) = (geom.input_len(), geom.output_len());
    assert!(dout.len() >= batch * output_len, "conv2d: output gradient has {} values", dout.len());
    assert!(dx.len() >= batch * input_len, "conv2d: input gradient has {} values", dx.len());
    for_each_chunk(geom, batch, patches.len(), |first, len| {
        let dout = &dout[first * output_len..(first + len) * output_len];
        let dx = &mut dx[first * input_len..(first + len) * input_len];
        conv_folded::backward_input(geom, len, dout, weight, patches, rows, dx, precision);
    });
}

/// ADDS every example's squared weight-gradient norm (and bias-gradient norm if `bias`) into
/// `norms_sq[i * norm_stride]`, from the kept input `x` and output gradient `dout` (NCHW), one
/// example at a time as [`conv2d_kept_norms_sq`]: each task with a slot of `patches` (room for one
/// example's patches at least) and a slot of `norm_scratch` ([`per_example::scratch_len`]).
///
/// In bf16 ([`rounds_gradient_operands`]) the weight-gradient norm is that of the gradient of the
/// patches and `Δ` rounded to bf16, the operands [`conv2d_weight_gradient`]'s bf16 products read, so
/// that the clipped sum adds exactly the gradients normed here; the bias norm, like the bias sum, reads
/// `Δ` unrounded.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_norms_sq(
    geom: &Conv2dGeometry,
    strategy: Strategy,
    bias: bool,
    batch: usize,
    x: &[f32],
    dout: &[f32],
    patches: &mut [f32],
    norm_scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
    precision: Precision,
) {
    let layer = geom.layer();
    let (input_len, output_len) = (geom.input_len(), geom.output_len());
    let norm_slot = per_example::scratch_len(strategy, &layer).max(1);
    assert!(x.len() >= batch * input_len, "conv2d norms: input has {} values", x.len());
    assert!(dout.len() >= batch * output_len, "conv2d norms: output gradient has {} values", dout.len());
    if batch == 0 {
        return;
    }
    assert!(norms_sq.len() > (batch - 1) * norm_stride, "conv2d norms: {} norms", norms_sq.len());
    assert!(
        norm_scratch.len() >= norm_slot,
        "conv2d norms: scratch has {} values, one slot needs {norm_slot}",
        norm_scratch.len()
    );
    let slots = patch_slots(geom, patches.len()).min(norm_scratch.len() / norm_slot);
    let per_task = examples_per_task(batch, slots);
    let rounds = rounds_gradient_operands(geom, precision);
    norms_sq
        .par_chunks_mut(per_task * norm_stride.max(1))
        .zip(patches.par_chunks_mut(geom.patches_len().max(1)))
        .zip(norm_scratch.par_chunks_mut(norm_slot))
        .enumerate()
        .for_each(|(k, ((norms_k, slot), norm_slot))| {
            for i in k * per_task..((k + 1) * per_task).min(batch) {
                unfold_example(geom, &x[i * input_len..(i + 1) * input_len], slot);
                let dout_i = &dout[i * output_len..(i + 1) * output_len];
                // The bias norm reads `Δ` unrounded, as the bias sum does.
                let bias_delta = bias.then_some(dout_i);
                let norm = if rounds {
                    round_to_bf16_in_place(slot);
                    ROUNDED_DELTA.with_borrow_mut(|rounded| {
                        rounded.clear();
                        rounded.extend_from_slice(dout_i);
                        round_to_bf16_in_place(rounded);
                        per_example::norm_sq_of_one_by(
                            product_in(Precision::Bf16, true),
                            strategy,
                            &layer,
                            slot,
                            rounded,
                            bias_delta,
                            norm_slot,
                        )
                    })
                } else {
                    per_example::norm_sq_of_one(strategy, &layer, slot, dout_i, bias_delta, norm_slot)
                };
                norms_k[(i - k * per_task) * norm_stride] += norm as f32;
            }
        });
}

/// Whether a conv's weight gradients and their norms (not kept) read their operands rounded to bf16: in
/// bf16, for the convs whose gradient runs example by example, the factor the product's `alpha`, and
/// whose per-example product is large enough ([`BF16_GRADIENT_MIN_MACS`]). A conv that folds scales
/// `Δ` by the factors before its product ([`conv_folded::weight_gradient`]), so its operands would not
/// be those of its norms: it stays f32. The rule reads the shapes alone, so the norms and the sums
/// always agree.
pub fn rounds_gradient_operands(geom: &Conv2dGeometry, precision: Precision) -> bool {
    let macs = geom.patch_len() * geom.out_per_group() * geom.positions() * geom.groups;
    match precision {
        Precision::F32 => false,
        Precision::Bf16 => !conv_folded::folds(geom) && macs >= BF16_GRADIENT_MIN_MACS,
    }
}

/// Multiply-adds of one example's weight gradient below which a conv's gradient sums and norms stay
/// f32 in bf16: rounding the operands for the norms then costs more than the bf16 product saves (the
/// MNIST CNN's convs, 0.2 M each: its non-private bf16 step went from 3.9 to 5.0 ms; the CIFAR-10 CNN's
/// conv5 and conv6, 4.7 M and 9.4 M, gain).
pub const BF16_GRADIENT_MIN_MACS: usize = 1 << 20;

thread_local! {
    /// Each thread's copy of one example's `Δ` rounded to bf16, for the norms of [`conv2d_norms_sq`].
    static ROUNDED_DELTA: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The direct norms that keep what they form ([`per_example::kept_direct_norms_sq`]), one example
/// at a time on its task's slot of `patches` (room for one example's patches at least): writes
/// every example's weight gradient (and bias gradient if `bias`) into `kept[i·len..(i+1)·len]`,
/// `len = per_example::kept_len(&geom.layer(), bias)`, and ADDS its squared norm into
/// `norms_sq[i * norm_stride]`. The clipped sum is then
/// [`per_example::stored_clipped_sum`] over `kept`: no patches, no second product. The products that
/// form the kept gradients run in `precision`: what is kept is both what is normed and what is
/// summed, so an example's clipped contribution has the norm measured in either precision.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_kept_norms_sq(
    geom: &Conv2dGeometry,
    bias: bool,
    batch: usize,
    x: &[f32],
    dout: &[f32],
    patches: &mut [f32],
    kept: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
    precision: Precision,
) {
    let layer = geom.layer();
    let len = per_example::kept_len(&layer, bias);
    let (input_len, output_len) = (geom.input_len(), geom.output_len());
    assert!(kept.len() >= batch * len, "conv2d kept gradients: {} values, need {}", kept.len(), batch * len);
    assert!(x.len() >= batch * input_len, "conv2d kept norms: input has {} values", x.len());
    assert!(dout.len() >= batch * output_len, "conv2d kept norms: output gradient has {} values", dout.len());
    if batch == 0 || len == 0 {
        return;
    }
    assert!(norms_sq.len() > (batch - 1) * norm_stride, "conv2d kept norms: {} norms", norms_sq.len());
    // One example at a time, as the forward ([`forward_by_example`]); its NCHW output gradient is
    // already the `Δ` of a batch of one, every group's rows in turn.
    let per_task = examples_per_task(batch, patch_slots(geom, patches.len()));
    kept[..batch * len]
        .par_chunks_mut(per_task * len)
        .zip(norms_sq.par_chunks_mut(per_task * norm_stride.max(1)))
        .zip(patches.par_chunks_mut(geom.patches_len().max(1)))
        .enumerate()
        .for_each(|(k, ((kept_k, norms_k), slot))| {
            for (j, g) in kept_k.chunks_mut(len).enumerate() {
                let i = k * per_task + j;
                unfold_example(geom, &x[i * input_len..(i + 1) * input_len], slot);
                let dout_i = &dout[i * output_len..(i + 1) * output_len];
                let norm = per_example::kept_direct_norm_sq_of_one(&layer, slot, dout_i, bias, g, precision);
                norms_k[j * norm_stride] += norm as f32;
            }
        });
}

/// ADDS the weight gradient summed over the batch into `grad_w` (and the bias gradient into
/// `grad_b`), each example's scaled by its clip factor `factors.0[i * factors.1]` when `factors` is
/// given (an example with factor 0 contributes exactly 0, whatever its values), unscaled otherwise.
/// `patches` needs room for one example's patches at least; `rows` room for a chunk's output when
/// the conv folds (the compiler plans rows for folded convs only; the others leave it alone, and it
/// may be empty). Both are left holding scratch.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_gradient(
    geom: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    dout: &[f32],
    factors: Option<(&[f32], usize)>,
    patches: &mut [f32],
    rows: &mut [f32],
    grad_w: &mut [f32],
    mut grad_b: Option<&mut [f32]>,
    precision: Precision,
) {
    if conv_folded::folds(geom) {
        let (input_len, output_len) = (geom.input_len(), geom.output_len());
        assert!(x.len() >= batch * input_len, "conv2d gradient: input has {} values", x.len());
        assert!(
            dout.len() >= batch * output_len,
            "conv2d gradient: output gradient has {} values",
            dout.len()
        );
        return for_each_chunk(geom, batch, patches.len(), |first, len| {
            let (x, dout) = (&x[first * input_len..], &dout[first * output_len..]);
            let factors = factors.map(|(f, stride)| (&f[first * stride..], stride));
            let gb = grad_b.as_deref_mut();
            conv_folded::weight_gradient(geom, len, x, dout, factors, patches, rows, grad_w, gb);
        });
    }
    let rounds = rounds_gradient_operands(geom, precision);
    let product = product_in(if rounds { Precision::Bf16 } else { Precision::F32 }, true);
    gradient_by_example(geom, batch, x, dout, factors, patches, grad_w, grad_b, product);
}

/// Shares of the weight-gradient sum: at least this many, so that the threads have work to share,
/// more where the partial sums are small ([`PARTIAL_SUM_VALUES`]). Fixed by the shapes alone, so the
/// bits of the sum do not depend on the thread count.
const MIN_SUM_SHARES: usize = 8;

/// Values of the partial sums of a weight gradient, over all shares, below which more shares are
/// used (each holds one gradient).
const PARTIAL_SUM_VALUES: usize = 1 << 18;

/// [`conv2d_weight_gradient`] example by example: the examples are split into consecutive shares
/// fixed by the shapes, each with its own partial sum of the transposed gradient (`A_i·Δ_iᵀ`, `d×p`
/// per group, which packs the small `Δ_i`; see `per_example::example_gradient`) and of the bias
/// gradient; tasks take consecutive shares, each task with its own slot of `patches`; the partials
/// are then added in order, so the bits depend on the shapes alone. A clip factor scales its
/// example's product (`alpha`) and its bias sum; an example with factor 0 is skipped, so nothing of
/// it reaches the sum, NaN included.
#[allow(clippy::too_many_arguments)]
fn gradient_by_example(
    geom: &Conv2dGeometry,
    batch: usize,
    x: &[f32],
    dout: &[f32],
    factors: Option<(&[f32], usize)>,
    patches: &mut [f32],
    grad_w: &mut [f32],
    grad_b: Option<&mut [f32]>,
    product: Product,
) {
    geom.assert_valid();
    let (t, d, p, groups) = (geom.positions(), geom.patch_len(), geom.out_per_group(), geom.groups);
    let (input_len, output_len, slot_len) = (geom.input_len(), geom.output_len(), geom.patches_len().max(1));
    assert!(x.len() >= batch * input_len, "conv2d gradient: input has {} values", x.len());
    assert!(dout.len() >= batch * output_len, "conv2d gradient: output gradient has {} values", dout.len());
    assert!(
        grad_w.len() >= geom.weight_len(),
        "conv2d gradient: weight gradient has {} values",
        grad_w.len()
    );
    if let Some((f, stride)) = factors {
        assert!(batch == 0 || f.len() > (batch - 1) * stride, "conv2d gradient: {} clip factors", f.len());
    }
    if let Some(gb) = grad_b.as_deref() {
        assert!(gb.len() >= geom.out_c, "conv2d gradient: bias gradient has {} values", gb.len());
    }
    if batch == 0 || t * p == 0 {
        return;
    }
    let (weight_len, bias_len) = (groups * d * p, if grad_b.is_some() { groups * p } else { 0 });
    let unit = weight_len + bias_len;
    let shares = (PARTIAL_SUM_VALUES / unit.max(1)).max(MIN_SUM_SHARES).min(batch);
    let per_share = batch.div_ceil(shares);
    let shares = batch.div_ceil(per_share);
    let mut partials = vec![0.0f32; shares * unit];
    // Tasks take consecutive shares, each share its own partial: the slots decide only which task
    // sums a share, never what it sums.
    let shares_per_task = examples_per_task(shares, patch_slots(geom, patches.len()));
    partials
        .par_chunks_mut(shares_per_task * unit.max(1))
        .zip(patches.par_chunks_mut(slot_len))
        .enumerate()
        .for_each(|(task, (accs, slot))| {
            for (j, acc) in accs.chunks_mut(unit.max(1)).enumerate() {
                let k = task * shares_per_task + j;
                let (acc_w, acc_b) = acc.split_at_mut(weight_len);
                for i in k * per_share..((k + 1) * per_share).min(batch) {
                    let factor = factors.map_or(1.0, |(f, stride)| f[i * stride]);
                    if factor == 0.0 {
                        continue;
                    }
                    unfold_example(geom, &x[i * input_len..(i + 1) * input_len], slot);
                    let dout_i = &dout[i * output_len..(i + 1) * output_len];
                    for q in 0..groups {
                        let (a_q, delta_q) =
                            (&slot[q * d * t..(q + 1) * d * t], &dout_i[q * p * t..(q + 1) * p * t]);
                        let acc_q = &mut acc_w[q * d * p..(q + 1) * d * p];
                        product(Op::N, Op::T, d, p, t, factor, a_q, delta_q, 1.0, acc_q);
                        if bias_len > 0 {
                            let acc_b = &mut acc_b[q * p..(q + 1) * p];
                            per_example::for_each_bias_sum(
                                RowLayout::ChannelMajor,
                                delta_q,
                                t,
                                p,
                                |j, sum| acc_b[j] += factor * sum as f32,
                            );
                        }
                    }
                }
            }
        });
    // The partials are added in order where they lie, then written in the weight's order once.
    let total = per_example::add_partials_in_order(&mut partials, unit);
    let (total_w, total_b) = total.split_at(weight_len);
    for q in 0..groups {
        let g = &mut grad_w[q * p * d..(q + 1) * p * d];
        per_example::untranspose(&total_w[q * d * p..(q + 1) * d * p], p, g, |entry, v| *entry += v);
    }
    if let Some(gb) = grad_b {
        for (b, &v) in gb.iter_mut().zip(total_b) {
            *b += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{conv2d_forward_from_patches, im2col, output_grad_by_group};
    use crate::test_support::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool")
    }

    /// Equal bit for bit, NaN included.
    fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}: value {k}");
        }
    }

    /// Geometries whose patches are large enough that a batch of 7 runs in several chunks, with many
    /// positions and with few.
    fn geometries() -> Vec<Conv2dGeometry> {
        let g = |groups| Conv2dGeometry {
            in_c: 16,
            in_h: 32,
            in_w: 32,
            out_c: 8,
            kh: 3,
            kw: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            groups,
        };
        // Few positions (T = 16) and many channels: these chunks fold into one product per group.
        let few = |groups| Conv2dGeometry { in_c: 640, in_h: 4, in_w: 4, out_c: 128, ..g(groups) };
        vec![g(1), g(2), few(1), few(2)]
    }

    /// In bf16, a conv whose gradient runs example by example with large enough products norms and
    /// sums the gradients of its operands rounded to bf16 (the weight norms those of the rounded
    /// operands in f32 up to the order of the f32 sums, since the bf16 products of rounded operands are
    /// exact, and away from those of the unrounded ones; the bias norms and sums those of the unrounded
    /// `Δ`); the others (a conv that folds, a small one) run in f32, bit for bit.
    #[test]
    fn bf16_norms_and_sums_read_the_operands_a_bf16_product_reads() {
        use crate::gemm_bf16::round_to_bf16;
        let mut rng = rng(37);
        let batch = 5;
        let rounding =
            geometries().iter().map(|g| rounds_gradient_operands(g, Precision::Bf16)).collect::<Vec<_>>();
        assert!(
            rounding.contains(&true) && rounding.contains(&false),
            "convs that round and convs that do not"
        );
        for geom in geometries() {
            let x = uniform(&mut rng, batch * geom.input_len());
            let dout = uniform(&mut rng, batch * geom.output_len());
            let round = |v: &[f32]| v.iter().map(|&v| round_to_bf16(v)).collect::<Vec<f32>>();
            let (x_r, dout_r) = (round(&x), round(&dout));
            let rounds = rounds_gradient_operands(&geom, Precision::Bf16);
            assert!(!rounds || !conv_folded::folds(&geom), "a conv that folds stays f32");
            let layer = geom.layer();
            for strategy in [Strategy::Ghost, Strategy::Direct] {
                let norms = |x: &[f32], dout: &[f32], bias: bool, precision: Precision| {
                    let mut patches = vec![f32::NAN; batch * geom.patches_len()];
                    let mut scratch = vec![f32::NAN; batch * per_example::scratch_len(strategy, &layer)];
                    let mut out = vec![0.0f32; batch];
                    let (p, s) = (&mut patches, &mut scratch);
                    conv2d_norms_sq(&geom, strategy, bias, batch, x, dout, p, s, &mut out, 1, precision);
                    out
                };
                let what = format!("{geom:?} {strategy:?}");
                let got = norms(&x, &dout, false, Precision::Bf16);
                let want = if rounds {
                    // The products of rounded operands are exact in bf16; only the order of the f32
                    // sums differs from the f32 product's.
                    let want = norms(&x_r, &dout_r, false, Precision::F32);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!((g - w).abs() <= 1e-5 * w, "{what}: example {i}: {g} against {w}");
                    }
                    let unrounded = norms(&x, &dout, false, Precision::F32);
                    let moved = got.iter().zip(&unrounded).any(|(g, u)| (g - u).abs() > 1e-4 * u);
                    assert!(moved, "{what}: the norms are those of the unrounded operands");
                    want
                } else {
                    let want = norms(&x, &dout, false, Precision::F32);
                    assert_same_bits(&what, &got, &want);
                    want
                };
                // With the bias: its norm from the unrounded Δ, added to the rounded weights' norm.
                let with_bias = norms(&x, &dout, true, Precision::Bf16);
                let bias_only: Vec<f32> = norms(&x, &dout, true, Precision::F32)
                    .iter()
                    .zip(norms(&x, &dout, false, Precision::F32))
                    .map(|(all, weights)| all - weights)
                    .collect();
                for i in 0..batch {
                    let expected = want[i] + bias_only[i];
                    assert!((with_bias[i] - expected).abs() <= 1e-5 * expected, "{what}: example {i}");
                }
            }
            let factors: Vec<f32> = (0..batch).map(|i| [0.5, 0.0, 1.0][i % 3]).collect();
            let gradient = |x: &[f32], dout: &[f32], precision: Precision| {
                let mut patches = vec![f32::NAN; batch * geom.patches_len()];
                let mut rows = vec![f32::NAN; batch * geom.output_len()];
                let (mut gw, mut gb) = (vec![0.0f32; geom.weight_len()], vec![0.0f32; geom.out_c]);
                let f = Some((&factors[..], 1));
                conv2d_weight_gradient(
                    &geom,
                    batch,
                    x,
                    dout,
                    f,
                    &mut patches,
                    &mut rows,
                    &mut gw,
                    Some(&mut gb),
                    precision,
                );
                (gw, gb)
            };
            let (gw, gb) = gradient(&x, &dout, Precision::Bf16);
            let (_, want_b) = gradient(&x, &dout, Precision::F32);
            assert_same_bits(&format!("{geom:?} bias sums"), &gb, &want_b);
            if rounds {
                let (want_w, _) = gradient(&x_r, &dout_r, Precision::F32);
                let scale = want_w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (k, (g, w)) in gw.iter().zip(&want_w).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * scale, "{geom:?}: weight gradient {k}: {g} against {w}");
                }
            } else {
                let (want_w, _) = gradient(&x, &dout, Precision::F32);
                assert_same_bits(&format!("{geom:?} weight gradient"), &gw, &want_w);
            }
        }
    }

    /// The chunked passes against the same kernels over the whole batch at once (whose agreement
    /// with finite differences `conv::tests` checks).
    #[test]
    fn chunked_passes_match_whole_batch_passes() {
        let mut rng = rng(31);
        let batch = 7;
        let both = geometries().iter().map(conv_folded::folds).collect::<Vec<_>>();
        assert!(both.contains(&true) && both.contains(&false), "convs that fold and convs that do not");
        for geom in geometries() {
            assert!(chunk_examples(&geom, batch) < batch, "{geom:?} must run in several chunks");
            let layer = geom.layer();
            let x = uniform(&mut rng, batch * geom.input_len());
            let w = uniform(&mut rng, geom.weight_len());
            let b = uniform(&mut rng, geom.out_c);
            let dout = uniform(&mut rng, batch * geom.output_len());
            let mut patches = vec![f32::NAN; batch * geom.patches_len()];
            let mut rows = vec![f32::NAN; batch * geom.output_len()];

            let mut out = vec![f32::NAN; batch * geom.output_len()];
            conv2d_forward(
                &geom,
                batch,
                &x,
                &w,
                Some(&b),
                &mut patches,
                &mut rows,
                &mut out,
                crate::gemm_bf16::Precision::F32,
            );
            let mut whole_patches = vec![0.0; batch * geom.patches_len()];
            im2col(&geom, batch, &x, &mut whole_patches);
            let mut want_out = vec![0.0; batch * geom.output_len()];
            conv2d_forward_from_patches(&geom, batch, &whole_patches, &w, Some(&b), &mut want_out);
            // Sums of up to 5,760 products, added in another order when the chunks fold.
            assert_close("forward", &out, &wide(&want_out), 1e-4);
            if !conv_folded::folds(&geom) {
                // Example by example: the same bits whatever the tasks, the threads and the room.
                for (threads, slots) in [(1, 1), (3, 1), (3, 2), (3, batch)] {
                    let mut small = vec![f32::NAN; slots * geom.patches_len()];
                    let mut again = vec![f32::NAN; batch * geom.output_len()];
                    pool(threads).install(|| {
                        conv2d_forward(
                            &geom,
                            batch,
                            &x,
                            &w,
                            Some(&b),
                            &mut small,
                            &mut rows,
                            &mut again,
                            crate::gemm_bf16::Precision::F32,
                        )
                    });
                    assert_same_bits(&format!("forward, {threads} threads, {slots} slots"), &again, &out);
                }
            }

            let mut dx = vec![f32::NAN; batch * geom.input_len()];
            conv2d_backward_input(
                &geom,
                batch,
                &dout,
                &w,
                &mut patches,
                &mut rows,
                &mut dx,
                crate::gemm_bf16::Precision::F32,
            );
            let mut slots = vec![f32::NAN; conv::backward_input_scratch_len(&geom)];
            let mut want_dx = vec![f32::NAN; batch * geom.input_len()];
            conv::conv2d_backward_input(
                &geom,
                batch,
                &dout,
                &w,
                &mut slots,
                &mut want_dx,
                crate::gemm_bf16::Precision::F32,
            );
            assert_close("input gradient", &dx, &wide(&want_dx), 1e-4);

            let mut whole_rows = vec![0.0; batch * geom.output_len()];
            output_grad_by_group(&geom, batch, &dout, &mut whole_rows);
            for strategy in [Strategy::Ghost, Strategy::Direct] {
                let mut slots = vec![f32::NAN; 2 * per_example::scratch_len(strategy, &layer)];
                let mut norms = vec![0.0f32; 2 * batch];
                conv2d_norms_sq(
                    &geom,
                    strategy,
                    true,
                    batch,
                    &x,
                    &dout,
                    &mut patches,
                    &mut slots,
                    &mut norms,
                    2,
                    crate::gemm_bf16::Precision::F32,
                );
                let mut want = vec![0.0f32; 2 * batch];
                per_example::norms_sq(
                    strategy,
                    &layer,
                    batch,
                    &whole_patches,
                    &whole_rows,
                    &mut slots,
                    &mut want,
                    2,
                );
                per_example::bias_norms_sq(&layer, batch, &whole_rows, &mut want, 2);
                for (threads, slots) in [(1, 1), (3, 2), (3, batch)] {
                    let mut small = vec![f32::NAN; slots * geom.patches_len()];
                    let mut norm_slots = vec![f32::NAN; slots * per_example::scratch_len(strategy, &layer)];
                    let mut again = vec![0.0f32; 2 * batch];
                    pool(threads).install(|| {
                        conv2d_norms_sq(
                            &geom,
                            strategy,
                            true,
                            batch,
                            &x,
                            &dout,
                            &mut small,
                            &mut norm_slots,
                            &mut again,
                            2,
                            crate::gemm_bf16::Precision::F32,
                        )
                    });
                    assert_same_bits(
                        &format!("{strategy:?} norms, {threads} threads, {slots} slots"),
                        &again,
                        &norms,
                    );
                }
                for i in 0..batch {
                    assert_rel(
                        &format!("{strategy:?} norm {i}"),
                        norms[2 * i] as f64,
                        want[2 * i] as f64,
                        1e-5,
                    );
                    assert_eq!(norms[2 * i + 1], 0.0, "the other group's norms are untouched");
                }
            }

            // An example with factor 0 contributes exactly nothing, even when its values are not finite.
            let mut x_bad = x.clone();
            x_bad[3 * geom.input_len()] = f32::NAN;
            let factors = [0.5f32, 1.0, 2.0, 0.0, 0.25, 1.5, 0.75];
            let (mut gw, mut gb) = (vec![1.0f32; geom.weight_len()], vec![1.0f32; geom.out_c]);
            conv2d_weight_gradient(
                &geom,
                batch,
                &x_bad,
                &dout,
                Some((&factors, 1)),
                &mut patches,
                &mut rows,
                &mut gw,
                Some(&mut gb),
                crate::gemm_bf16::Precision::F32,
            );
            let (mut want_w, mut want_b) = (vec![1.0f32; geom.weight_len()], vec![1.0f32; geom.out_c]);
            let mut scaled = whole_rows.clone();
            let mut a = whole_patches.clone();
            per_example::clipped_sum(&layer, batch, &factors, 1, &mut a, &mut scaled, &mut want_w);
            per_example::bias_sum(&layer, batch, &scaled, &mut want_b);
            assert_close("clipped weight sum", &gw, &wide(&want_w), 1e-4);
            assert_close("clipped bias sum", &gb, &wide(&want_b), 1e-4);

            // Kept gradients: the same norms as the direct and bias norms, and their weighted sum the
            // same clipped sum, the NaN example skipped.
            let len = per_example::kept_len(&layer, true);
            let mut kept = vec![f32::NAN; batch * len];
            let mut norms = vec![0.0f32; 2 * batch];
            conv2d_kept_norms_sq(
                &geom,
                true,
                batch,
                &x_bad,
                &dout,
                &mut patches,
                &mut kept,
                &mut norms,
                2,
                crate::gemm_bf16::Precision::F32,
            );
            let mut want = vec![0.0f32; batch];
            let mut slots = vec![0.0f32; per_example::scratch_len(Strategy::Direct, &layer)];
            per_example::direct_norms_sq(
                &layer,
                batch,
                &whole_patches,
                &whole_rows,
                &mut slots,
                &mut want,
                1,
            );
            per_example::bias_norms_sq(&layer, batch, &whole_rows, &mut want, 1);
            for i in (0..batch).filter(|&i| i != 3) {
                assert_rel(&format!("kept norm {i}"), norms[2 * i] as f64, want[i] as f64, 1e-5);
                assert_eq!(norms[2 * i + 1], 0.0, "the other group's norms are untouched");
            }
            assert!(norms[6].is_nan(), "the NaN example's norm is NaN");
            for (threads, slots) in [(1, 1), (3, 1), (3, 2), (3, batch)] {
                let mut small = vec![f32::NAN; slots * geom.patches_len()];
                let mut again = vec![f32::NAN; batch * len];
                let mut again_norms = vec![0.0f32; 2 * batch];
                pool(threads).install(|| {
                    conv2d_kept_norms_sq(
                        &geom,
                        true,
                        batch,
                        &x_bad,
                        &dout,
                        &mut small,
                        &mut again,
                        &mut again_norms,
                        2,
                        crate::gemm_bf16::Precision::F32,
                    )
                });
                let what = format!("{threads} threads, {slots} slots");
                assert_same_bits(&format!("kept gradients, {what}"), &again, &kept);
                assert_same_bits(&format!("kept norms, {what}"), &again_norms, &norms);
            }
            let mut sum = vec![1.0f32; len];
            per_example::stored_clipped_sum(batch, len, &kept, &factors, 1, &mut sum);
            assert_close("kept clipped weight sum", &sum[..geom.weight_len()], &wide(&want_w), 1e-4);
            assert_close("kept clipped bias sum", &sum[geom.weight_len()..], &wide(&want_b), 1e-4);

            let (mut gw, mut gb) = (vec![0.0f32; geom.weight_len()], vec![0.0f32; geom.out_c]);
            conv2d_weight_gradient(
                &geom,
                batch,
                &x,
                &dout,
                None,
                &mut patches,
                &mut rows,
                &mut gw,
                Some(&mut gb),
                crate::gemm_bf16::Precision::F32,
            );
            let (mut want_w, mut want_b) = (vec![0.0f32; geom.weight_len()], vec![0.0f32; geom.out_c]);
            per_example::sum_outer(&layer, batch, &whole_patches, &whole_rows, &mut want_w);
            per_example::bias_sum(&layer, batch, &whole_rows, &mut want_b);
            assert_close("weight sum", &gw, &wide(&want_w), 1e-4);
            assert_close("bias sum", &gb, &wide(&want_b), 1e-4);
            // The sums' shares are fixed by the shapes and the room: the same bits on any thread
            // count, clipped or not, the NaN example with factor 0 skipped.
            for factors in [None, Some((&factors[..], 1))] {
                let sums = |threads: usize, x: &[f32], slots: usize| {
                    let (mut w_sum, mut b_sum) = (vec![0.0f32; geom.weight_len()], vec![0.0f32; geom.out_c]);
                    let (mut patches, mut rows) = (vec![f32::NAN; slots * geom.patches_len()], rows.clone());
                    pool(threads).install(|| {
                        conv2d_weight_gradient(
                            &geom,
                            batch,
                            x,
                            &dout,
                            factors,
                            &mut patches,
                            &mut rows,
                            &mut w_sum,
                            Some(&mut b_sum),
                            crate::gemm_bf16::Precision::F32,
                        )
                    });
                    (w_sum, b_sum)
                };
                let x = if factors.is_some() { &x_bad } else { &x };
                let (w1, b1) = sums(1, x, batch);
                let (w3, b3) = sums(3, x, batch);
                assert_same_bits(&format!("weight sum, {factors:?}"), &w3, &w1);
                assert_same_bits(&format!("bias sum, {factors:?}"), &b3, &b1);
                if !conv_folded::folds(&geom) {
                    // And whatever the slots: a task then sums several shares, each into its own partial.
                    let (w, b) = sums(3, x, 1);
                    assert_same_bits(&format!("weight sum, one slot, {factors:?}"), &w, &w1);
                    assert_same_bits(&format!("bias sum, one slot, {factors:?}"), &b, &b1);
                }
            }
        }
    }
}
