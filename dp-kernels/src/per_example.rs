//! Per-example gradient norms and clipped gradient sums for a layer applied at T positions.
//!
//! A parameterised layer whose weight `W` (`p×d`) is applied at `T` positions of one example (a conv at
//! every output pixel, an LSTM weight at every step, a linear layer once) has the per-example gradient
//! `G_i = Δ_iᵀ A_i`, where the rows of `A_i` (`T×d`) are the layer's inputs at each position and the
//! rows of `Δ_i` (`T×p`) are the gradients of the loss with respect to its outputs there.
//!
//! Two ways to get `‖G_i‖²_F`:
//! - **ghost norm** (Goodfellow 2015; Li et al. 2021): `Σ_{t,s}(a_t·a_s)(δ_t·δ_s)`, the element-wise
//!   product of the Gram matrices `A_i A_iᵀ` and `Δ_i Δ_iᵀ`; never forms `G_i`;
//! - **direct**: form `G_i` with one product and square it; memory `p·d` per example.
//!
//! [`choose_strategy`] picks the cheaper from the static shapes. The clipped sum `Σ_i c_i G_i` is
//! formed by book-keeping (Bu et al. 2023) as ONE product `(c ⊙ Δ)ᵀ A` over every example's positions,
//! or, for a direct layer whose gradients were kept by [`kept_direct_norms_sq`], as the weighted sum
//! of the kept `G_i` ([`stored_clipped_sum`]): `B·p·d` multiply-adds instead of `B·T·p·d`.
//!
//! # Layouts
//! With `groups` independent blocks (grouped convolutions; 1 otherwise), `A` is `[groups][batch][T][d]`,
//! `Δ` is `[groups][batch][T][p]` (position-major; channel-major, [`RowLayout::ChannelMajor`], stores
//! each example's `A` as `[d][T]` and `Δ` as `[p][T]`, a conv's patches and NCHW output gradient),
//! the weight gradient `[groups][p][d]` (PyTorch's `[out, in/groups]`),
//! the bias gradient `[groups][p]`. Per-example outputs (`norms_sq`) and clip factors are read at index
//! `i * stride`, so a `[batch, parameter groups]` table can be filled column by column.

use rayon::prelude::*;

use crate::gemm::{product_for, sgemm, sgemm_serial, sgemm_strided_serial, Op, Product, Strided};
use crate::gemm_bf16::{product_in, Precision};

// The strategies, the positional layer and the cost formulas are shared with the compiler, which
// chooses with the same formulas the kernels run.
pub use dp_spec::cost::{
    choose_strategy, direct_bytes, direct_flops, direct_scratch_len, ghost_bytes, ghost_flops,
    ghost_scratch_len, keeps_gradients, kept_sum_flops, scratch_len, DIRECT_MEMORY_CAP_BYTES, GHOST_TILE,
    KEPT_GRADIENTS_CAP_BYTES,
};
pub use dp_spec::{PositionalLayer, RowLayout, Strategy};

/// Values of the partial gradient sums the channel-major [`sum_outer`] allocates at most (1 MiB).
const PARTIAL_SUM_VALUES: usize = 1 << 18;

/// Columns summed together on the stack in bias reductions.
const COLUMN_CHUNK: usize = 64;

/// Values of the gradient one task of [`stored_clipped_sum`] accumulates (8 KiB): its block stays in
/// L1 while the examples' blocks stream past it.
const SUM_BLOCK: usize = 2048;

/// ADDS every example's squared weight-gradient norm, computed with `strategy`, into
/// `norms_sq[i * norm_stride]`. `scratch` holds one or more slots of [`scratch_len`].
#[allow(clippy::too_many_arguments)]
pub fn norms_sq(
    strategy: Strategy,
    layer: &PositionalLayer,
    batch: usize,
    a: &[f32],
    delta: &[f32],
    scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    let slot_len = scratch_len(strategy, layer);
    per_example_with_scratch(
        layer,
        batch,
        a,
        delta,
        scratch,
        slot_len,
        norms_sq,
        norm_stride,
        |a_i, delta_i, slot, product| group_norm_sq(strategy, layer, a_i, delta_i, slot, product),
    );
}

/// ADDS `‖Σ_t a_t δ_tᵀ‖²` of every example into `norms_sq[i * norm_stride]` by the ghost norm.
pub fn ghost_norms_sq(
    layer: &PositionalLayer,
    batch: usize,
    a: &[f32],
    delta: &[f32],
    scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    self::norms_sq(Strategy::Ghost, layer, batch, a, delta, scratch, norms_sq, norm_stride);
}

/// ADDS `‖Δ_iᵀ A_i‖²` of every example into `norms_sq[i * norm_stride]`, forming each gradient.
pub fn direct_norms_sq(
    layer: &PositionalLayer,
    batch: usize,
    a: &[f32],
    delta: &[f32],
    scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    self::norms_sq(Strategy::Direct, layer, batch, a, delta, scratch, norms_sq, norm_stride);
}

/// The squared weight-gradient norm of one example and group, by `strategy`, in `slot` (one slot of
/// [`scratch_len`]).
fn group_norm_sq(
    strategy: Strategy,
    layer: &PositionalLayer,
    a_i: &[f32],
    delta_i: &[f32],
    slot: &mut [f32],
    product: Product,
) -> f64 {
    let (t, d, p, layout) = (layer.positions, layer.in_width, layer.out_width, layer.layout);
    match strategy {
        Strategy::Ghost => ghost_one(layout, t, d, p, a_i, delta_i, slot, product),
        Strategy::Direct => {
            let g = &mut slot[..p * d];
            match layout {
                RowLayout::PositionMajor => example_gradient(layout, product, (t, d, p), delta_i, a_i, g),
                // The norm of the transpose is the norm: no copy.
                RowLayout::ChannelMajor => transposed_gradient(product, (t, d, p), delta_i, a_i, 0.0, g),
            }
            sum_squares(g)
        }
    }
}

/// [`norms_sq`] of one example on the calling thread, its `a` and `delta` laid out as a batch of one
/// (every group's rows in turn: a conv's patches of one example and its NCHW output gradient), with
/// the bias-gradient norm of `bias_delta` too if given ([`bias_norms_sq`]: `delta` itself, or the
/// unrounded `Δ` where `delta` was rounded for bf16); `slot` is one slot of [`scratch_len`]. Returns
/// the squared norm.
pub fn norm_sq_of_one(
    strategy: Strategy,
    layer: &PositionalLayer,
    a: &[f32],
    delta: &[f32],
    bias_delta: Option<&[f32]>,
    slot: &mut [f32],
) -> f64 {
    norm_sq_of_one_by(sgemm_serial, strategy, layer, a, delta, bias_delta, slot)
}

/// [`norm_sq_of_one`] with its products (a ghost norm's Gram matrices, a direct norm's gradient) run
/// by `product`: the bf16 product where `a` and `delta` are already rounded to bf16, so that the
/// products are exact and only the f32 sums' order differs from the f32 product.
pub fn norm_sq_of_one_by(
    product: Product,
    strategy: Strategy,
    layer: &PositionalLayer,
    a: &[f32],
    delta: &[f32],
    bias_delta: Option<&[f32]>,
    slot: &mut [f32],
) -> f64 {
    let (t, d, p) = (layer.positions, layer.in_width, layer.out_width);
    check_len("A", a.len(), layer.a_len());
    check_len("delta", delta.len(), layer.delta_len());
    check_len("norm scratch", slot.len(), scratch_len(strategy, layer));
    if let Some(bias_delta) = bias_delta {
        check_len("bias delta", bias_delta.len(), layer.delta_len());
    }
    let mut total = 0.0;
    for q in 0..layer.groups {
        let (a_q, delta_q) = (&a[q * t * d..(q + 1) * t * d], &delta[q * t * p..(q + 1) * t * p]);
        total += group_norm_sq(strategy, layer, a_q, delta_q, slot, product);
        if let Some(bias_delta) = bias_delta {
            let delta_q = &bias_delta[q * t * p..(q + 1) * t * p];
            for_each_bias_sum(layer.layout, delta_q, t, p, |_, s| total += s * s);
        }
    }
    total
}

/// Values of one example's kept gradient of `layer`: the weight gradient of every group
/// (`[groups][p][d]`), then with `bias` the bias gradient (`[groups][p]`), the order of the parameter
/// buffer.
pub const fn kept_len(layer: &PositionalLayer, bias: bool) -> usize {
    layer.weight_len() + if bias { layer.bias_len() } else { 0 }
}

/// The direct norm that keeps what it forms: writes every example's weight gradient
/// `G_{q,i} = Δ_{q,i}ᵀ A_{q,i}` of every group and, with `bias`, its bias gradient `Σ_t δ_{q,i,t}`
/// into `kept[i·len..(i+1)·len]` (`len` = [`kept_len`]), and ADDS the squared norm of the whole
/// (weight and bias) into `norms_sq[i * norm_stride]`. [`stored_clipped_sum`] then forms the clipped
/// sum from `kept` without another product. The products run in `precision`: what is kept is both
/// what is normed and what is summed.
#[allow(clippy::too_many_arguments)]
pub fn kept_direct_norms_sq(
    layer: &PositionalLayer,
    batch: usize,
    a: &[f32],
    delta: &[f32],
    bias: bool,
    kept: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
    precision: Precision,
) {
    let (t, d, p) = (layer.positions, layer.in_width, layer.out_width);
    check_len("A", a.len(), batch * layer.a_len());
    check_len("delta", delta.len(), batch * layer.delta_len());
    keep_per_example(
        batch,
        kept_len(layer, bias),
        kept,
        norms_sq,
        norm_stride,
        precision,
        |i, g, product| {
            let unit = |q: usize| q * batch + i;
            form_kept(
                layer,
                bias,
                g,
                product,
                |q| &a[unit(q) * t * d..(unit(q) + 1) * t * d],
                |q| &delta[unit(q) * t * p..(unit(q) + 1) * t * p],
            );
        },
    );
}

/// [`kept_direct_norms_sq`] of one example on the calling thread, its `a` and `delta` laid out as a
/// batch of one (every group's rows in turn: a conv's patches of one example and its NCHW output
/// gradient): writes its kept gradient into `g` ([`kept_len`] values) and returns its squared norm.
pub fn kept_direct_norm_sq_of_one(
    layer: &PositionalLayer,
    a: &[f32],
    delta: &[f32],
    bias: bool,
    g: &mut [f32],
    precision: Precision,
) -> f64 {
    let (t, d, p) = (layer.positions, layer.in_width, layer.out_width);
    check_len("A", a.len(), layer.a_len());
    check_len("delta", delta.len(), layer.delta_len());
    check_len("kept", g.len(), kept_len(layer, bias));
    form_kept(
        layer,
        bias,
        g,
        product_in(precision, true),
        |q| &a[q * t * d..(q + 1) * t * d],
        |q| &delta[q * t * p..(q + 1) * t * p],
    );
    sum_squares(g)
}

/// Overwrites `g` with one example's weight gradient of every group and, with `bias`, its bias
/// gradient; `a_q(q)` and `delta_q(q)` are the example's rows of group `q`.
fn form_kept<'x>(
    layer: &PositionalLayer,
    bias: bool,
    g: &mut [f32],
    product: Product,
    a_q: impl Fn(usize) -> &'x [f32],
    delta_q: impl Fn(usize) -> &'x [f32],
) {
    let (t, d, p) = (layer.positions, layer.in_width, layer.out_width);
    let (weights, biases) = g.split_at_mut(layer.weight_len());
    for q in 0..layer.groups {
        let (a_i, delta_i) = (a_q(q), delta_q(q));
        let g = &mut weights[q * p * d..(q + 1) * p * d];
        example_gradient(layer.layout, product, (t, d, p), delta_i, a_i, g);
        if bias {
            let b = &mut biases[q * p..(q + 1) * p];
            for_each_bias_sum(layer.layout, delta_i, t, p, |j, s| b[j] = s as f32);
        }
    }
}

/// `g = Δ_iᵀ A_i` (`p×d`, overwritten) for one example and group stored in `layout`.
///
/// Channel-major, the product runs as `g_t = A_i·Δ_iᵀ` (`d×p`) into a scratch of the calling thread
/// and is transposed into `g`: the GEMM then packs the small `Δ_i` instead of the `d×T` patches,
/// which measured up to 2.3× faster on the conv shapes of the built-in models (the `p·d` copy is
/// negligible against the `2·T·p·d` product).
fn example_gradient(
    layout: RowLayout,
    product: Product,
    (t, d, p): (usize, usize, usize),
    delta_i: &[f32],
    a_i: &[f32],
    g: &mut [f32],
) {
    match layout {
        RowLayout::PositionMajor => product(Op::T, Op::N, p, d, t, 1.0, delta_i, a_i, 0.0, g),
        RowLayout::ChannelMajor => TRANSPOSED_GRADIENT.with_borrow_mut(|g_t| {
            if g_t.len() < p * d {
                g_t.resize(p * d, 0.0);
            }
            let g_t = &mut g_t[..p * d];
            transposed_gradient(product, (t, d, p), delta_i, a_i, 0.0, g_t);
            untranspose(g_t, p, g, |entry, v| *entry = v);
        }),
    }
}

/// `g_t = beta·g_t + A_i·Δ_iᵀ` (`d×p`, the transposed gradient) for one channel-major example.
fn transposed_gradient(
    product: Product,
    (t, d, p): (usize, usize, usize),
    delta_i: &[f32],
    a_i: &[f32],
    beta: f32,
    g_t: &mut [f32],
) {
    product(Op::N, Op::T, d, p, t, 1.0, a_i, delta_i, beta, g_t);
}

/// Adds the partial sums of `partials` (consecutive blocks of `unit` values) into the first, in
/// order and where they lie, and returns it: the same bits whatever the threads that formed them.
pub(crate) fn add_partials_in_order(partials: &mut [f32], unit: usize) -> &mut [f32] {
    let (total, rest) = partials.split_at_mut(unit);
    crate::fast_math::with_widest_vectors(
        #[inline(always)]
        || {
            for partial in rest.chunks_exact(unit) {
                for (t, &v) in total.iter_mut().zip(partial) {
                    *t += v;
                }
            }
        },
    );
    total
}

/// Calls `combine(&mut g[o·d + k], g_t[k·p + o])` for every entry of the `d×p` transposed gradient
/// `g_t`: writes or adds it into `g` in the weight's order (`p×d`).
pub(crate) fn untranspose(g_t: &[f32], p: usize, g: &mut [f32], combine: impl Fn(&mut f32, f32)) {
    let d = g_t.len() / p;
    for (k, row) in g_t.chunks_exact(p).enumerate() {
        for (o, &v) in row.iter().enumerate() {
            combine(&mut g[o * d + k], v);
        }
    }
}

thread_local! {
    /// The transposed gradient [`example_gradient`] forms before writing it in the weight's order: one
    /// buffer per thread, grown to the largest weight it has seen, so no step allocates once warm.
    static TRANSPOSED_GRADIENT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f(j, Σ_t δ_{t,j})` for every output `j < p` of one example and group's `Δ` stored in
/// `layout`, each sum in f64.
pub(crate) fn for_each_bias_sum(
    layout: RowLayout,
    delta_i: &[f32],
    t: usize,
    p: usize,
    mut f: impl FnMut(usize, f64),
) {
    match layout {
        RowLayout::PositionMajor => for_each_column_sum(delta_i, t, p, f),
        RowLayout::ChannelMajor => {
            for j in 0..p {
                f(j, sum_wide(&delta_i[j * t..(j + 1) * t]));
            }
        }
    }
}

/// Runs `form(i, g_i, product)` for every example in parallel, `g_i = kept[i·len..(i+1)·len]`, which
/// `form` must overwrite with the example's whole gradient, then ADDS `‖g_i‖²` into
/// `norms_sq[i * norm_stride]`. `product` runs on the calling thread when several examples run.
pub fn keep_per_example(
    batch: usize,
    len: usize,
    kept: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
    precision: Precision,
    form: impl Fn(usize, &mut [f32], Product) + Sync,
) {
    if batch == 0 || len == 0 {
        return;
    }
    check_len("kept", kept.len(), batch * len);
    check_norms(norms_sq.len(), batch, norm_stride);
    let product = product_in(precision, batch > 1 && rayon::current_num_threads() > 1);
    kept[..batch * len].par_chunks_mut(len).zip(norms_sq.par_chunks_mut(norm_stride)).enumerate().for_each(
        |(i, (g, norm))| {
            form(i, g, product);
            norm[0] += sum_squares(g) as f32;
        },
    );
}

/// Writes the column sums of a row-major `rows×width` matrix into `out` (`width` values), each summed
/// in f64.
pub fn column_sums(m: &[f32], rows: usize, width: usize, out: &mut [f32]) {
    check_len("matrix", m.len(), rows * width);
    check_len("column sums", out.len(), width);
    for_each_column_sum(m, rows, width, |j, s| out[j] = s as f32);
}

/// Runs `one(A_{q,i}, Δ_{q,i}, slot, product)` for every example and group, examples spread over the
/// scratch slots in parallel, and adds each example's sum over groups to its norm. With more than one
/// slot the slots are the parallelism and `product` runs on its thread ([`product_for`]).
#[allow(clippy::too_many_arguments)]
fn per_example_with_scratch<F>(
    layer: &PositionalLayer,
    batch: usize,
    a: &[f32],
    delta: &[f32],
    scratch: &mut [f32],
    slot_len: usize,
    norms_sq: &mut [f32],
    norm_stride: usize,
    one: F,
) where
    F: Fn(&[f32], &[f32], &mut [f32], Product) -> f64 + Sync,
{
    if batch == 0 {
        return;
    }
    let (t, d, p, groups) = (layer.positions, layer.in_width, layer.out_width, layer.groups);
    check_len("A", a.len(), batch * layer.a_len());
    check_len("delta", delta.len(), batch * layer.delta_len());
    check_norms(norms_sq.len(), batch, norm_stride);
    let slot_len = slot_len.max(1);
    // No more slots than threads: a slot reused example after example stays in cache.
    let slots = (scratch.len() / slot_len).min(batch).min(rayon::current_num_threads());
    assert!(slots >= 1, "per-example norms: scratch has {} values, one slot needs {slot_len}", scratch.len());
    let per_slot = batch.div_ceil(slots);
    let product = product_for(batch.div_ceil(per_slot) > 1);
    let norm_chunk = per_slot * norm_stride.max(1);
    norms_sq.par_chunks_mut(norm_chunk).zip(scratch.par_chunks_mut(slot_len)).enumerate().for_each(
        |(k, (norms, slot))| {
            let first = k * per_slot;
            let last = (first + per_slot).min(batch);
            for i in first..last {
                let mut total = 0.0f64;
                for q in 0..groups {
                    let unit = q * batch + i;
                    let a_i = &a[unit * t * d..(unit + 1) * t * d];
                    let delta_i = &delta[unit * t * p..(unit + 1) * t * p];
                    total += one(a_i, delta_i, slot, product);
                }
                norms[(i - first) * norm_stride] += total as f32;
            }
        },
    );
}

/// The ghost norm of one example and group: upper-triangular Gram tiles, off-diagonal terms twice.
/// Channel-major tiles are strided column blocks, always formed on the calling thread.
#[allow(clippy::too_many_arguments)]
fn ghost_one(
    layout: RowLayout,
    t: usize,
    d: usize,
    p: usize,
    a: &[f32],
    delta: &[f32],
    scratch: &mut [f32],
    product: Product,
) -> f64 {
    if t == 0 {
        return 0.0;
    }
    if t == 1 {
        // A linear layer: ‖δ aᵀ‖² = ‖a‖²‖δ‖², no product needed (either layout stores a vector).
        return sum_squares(&a[..d]) * sum_squares(&delta[..p]);
    }
    let tile = t.min(GHOST_TILE);
    let (gram_a, rest) = scratch.split_at_mut(tile * t);
    let gram_d = &mut rest[..tile * t];
    let mut total = 0.0f64;
    let mut r0 = 0;
    while r0 < t {
        let rows = tile.min(t - r0);
        let cols = t - r0;
        // Rows r0..r0+rows of the Gram against columns r0..t.
        match layout {
            RowLayout::PositionMajor => {
                // The rows of A from r0 on are contiguous.
                let a_tail = &a[r0 * d..t * d];
                let d_tail = &delta[r0 * p..t * p];
                product(Op::N, Op::T, rows, cols, d, 1.0, a_tail, a_tail, 0.0, gram_a);
                product(Op::N, Op::T, rows, cols, p, 1.0, d_tail, d_tail, 0.0, gram_d);
            }
            // One tile over every position (T ≤ GHOST_TILE: each matrix whole and dense) runs through
            // `product`, which may be a bf16 product of operands already rounded to bf16 (exact
            // products, f32 sums: the norm of the gradient a bf16 clipped sum adds).
            RowLayout::ChannelMajor if rows == t => {
                product(Op::T, Op::N, t, t, d, 1.0, &a[..d * t], &a[..d * t], 0.0, gram_a);
                product(Op::T, Op::N, t, t, p, 1.0, &delta[..p * t], &delta[..p * t], 0.0, gram_d);
            }
            RowLayout::ChannelMajor => {
                // Positions are columns: the tile reads columns r0.. of every row, `t` apart.
                let gram = |x: &[f32], width: usize, out: &mut [f32]| {
                    let tail = |op| Strided { data: &x[r0..width * t], stride: t, op };
                    sgemm_strided_serial(rows, cols, width, 1.0, tail(Op::T), tail(Op::N), 0.0, out, cols);
                };
                gram(a, d, gram_a);
                gram(delta, p, gram_d);
            }
        }
        for r in 0..rows {
            let ga = &gram_a[r * cols..(r + 1) * cols];
            let gd = &gram_d[r * cols..(r + 1) * cols];
            let mut off = 0.0f64;
            for s in r + 1..cols {
                off += ga[s] as f64 * gd[s] as f64;
            }
            total += ga[r] as f64 * gd[r] as f64 + 2.0 * off;
        }
        r0 += tile;
    }
    total
}

/// ADDS every example's squared bias-gradient norm `‖Σ_t δ_t‖²` into `norms_sq[i * norm_stride]`.
pub fn bias_norms_sq(
    layer: &PositionalLayer,
    batch: usize,
    delta: &[f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    if batch == 0 {
        return;
    }
    let (t, p, groups) = (layer.positions, layer.out_width, layer.groups);
    check_len("delta", delta.len(), batch * layer.delta_len());
    check_norms(norms_sq.len(), batch, norm_stride);
    norms_sq.par_chunks_mut(norm_stride.max(1)).take(batch).enumerate().for_each(|(i, norm)| {
        let mut total = 0.0f64;
        for q in 0..groups {
            let unit = q * batch + i;
            let delta_i = &delta[unit * t * p..(unit + 1) * t * p];
            for_each_bias_sum(layer.layout, delta_i, t, p, |_, s| total += s * s);
        }
        norm[0] += total as f32;
    });
}

/// Calls `f(column, sum)` with the sum over `rows` rows of every column of a row-major `rows×width`
/// matrix, reading it row by row in chunks of columns (no allocation).
fn for_each_column_sum(m: &[f32], rows: usize, width: usize, mut f: impl FnMut(usize, f64)) {
    let mut c0 = 0;
    while c0 < width {
        let n = COLUMN_CHUNK.min(width - c0);
        let mut acc = [0.0f64; COLUMN_CHUNK];
        for r in 0..rows {
            let row = &m[r * width + c0..r * width + c0 + n];
            for (s, &v) in acc.iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        for (j, &s) in acc[..n].iter().enumerate() {
            f(c0 + j, s);
        }
        c0 += n;
    }
}

/// Multiplies the rows of every example `i` of `x` (`[groups][batch][rows][width]`) by
/// `factors[i * factor_stride]`; an example whose factor is exactly 0 is overwritten with zeros
/// (never multiplied, so NaN or infinities in it do not survive).
pub fn scale_examples(
    groups: usize,
    batch: usize,
    rows: usize,
    width: usize,
    factors: &[f32],
    factor_stride: usize,
    x: &mut [f32],
) {
    for_each_example_block(groups, batch, rows * width, factors, factor_stride, x, |c, block| {
        if c == 0.0 {
            block.fill(0.0);
        } else if c != 1.0 {
            block.iter_mut().for_each(|v| *v *= c);
        }
    });
}

/// Overwrites with zeros the rows of every example of `x` (`[groups][batch][rows][width]`) whose
/// factor is exactly 0, so that a product with zero-scaled output gradients stays exactly 0.
pub fn zero_unclipped_examples(
    groups: usize,
    batch: usize,
    rows: usize,
    width: usize,
    factors: &[f32],
    factor_stride: usize,
    x: &mut [f32],
) {
    for_each_example_block(groups, batch, rows * width, factors, factor_stride, x, |c, block| {
        if c == 0.0 {
            block.fill(0.0);
        }
    });
}

/// Calls `f(factor, block)` in parallel for every example's block of `unit` values in `x`
/// (`[groups][batch][unit]`), with that example's factor `factors[i * factor_stride]`.
fn for_each_example_block(
    groups: usize,
    batch: usize,
    unit: usize,
    factors: &[f32],
    factor_stride: usize,
    x: &mut [f32],
    f: impl Fn(f32, &mut [f32]) + Sync,
) {
    check_len("x", x.len(), groups * batch * unit);
    check_factors(factors.len(), batch, factor_stride);
    if unit == 0 {
        return;
    }
    x[..groups * batch * unit]
        .par_chunks_mut(unit)
        .enumerate()
        .for_each(|(u, block)| f(factors[(u % batch) * factor_stride], block));
}

/// ADDS `Σ_i Δ_iᵀ A_i` into `grad` (`[groups][p][d]`). With `Δ` scaled by the clip factors this is
/// the clipped sum; unscaled, the ordinary (non-private) weight gradient. Position-major: one product
/// per group over every example's positions. Channel-major (an example's positions are not rows of
/// one matrix with the next example's): the examples are split into as many consecutive shares as
/// partial sums of the gradient fit in `PARTIAL_SUM_VALUES`, each share's products summed into its
/// partial (the shares in parallel), the partials then added in order and into `grad`. The shares
/// depend on the shapes alone, so the bits do not depend on the thread count; with one share the
/// examples' products are added one after the other, each threaded when large.
pub fn sum_outer(layer: &PositionalLayer, batch: usize, a: &[f32], delta: &[f32], grad: &mut [f32]) {
    let (t, d, p, groups) = (layer.positions, layer.in_width, layer.out_width, layer.groups);
    check_len("A", a.len(), batch * layer.a_len());
    check_len("delta", delta.len(), batch * layer.delta_len());
    check_len("grad", grad.len(), layer.weight_len());
    if batch == 0 || p * d == 0 {
        return;
    }
    let rows = batch * t;
    for q in 0..groups {
        let g = &mut grad[q * p * d..(q + 1) * p * d];
        match layer.layout {
            RowLayout::PositionMajor => {
                let a_q = &a[q * rows * d..(q + 1) * rows * d];
                let d_q = &delta[q * rows * p..(q + 1) * rows * p];
                sgemm(Op::T, Op::N, p, d, rows, 1.0, d_q, a_q, 1.0, g);
            }
            RowLayout::ChannelMajor => {
                // Partial sums of the transposed gradient (`d×p`, see [`example_gradient`]).
                let add_examples = |examples: std::ops::Range<usize>, product: Product, acc: &mut [f32]| {
                    for i in examples {
                        let u = q * batch + i;
                        let (a_i, delta_i) =
                            (&a[u * t * d..(u + 1) * t * d], &delta[u * t * p..(u + 1) * t * p]);
                        transposed_gradient(product, (t, d, p), delta_i, a_i, 1.0, acc);
                    }
                };
                let parts = (PARTIAL_SUM_VALUES / (p * d)).clamp(1, batch);
                let mut partials = vec![0.0f32; parts * p * d];
                if parts == 1 {
                    add_examples(0..batch, sgemm, &mut partials);
                } else {
                    let per_part = batch.div_ceil(parts);
                    partials.par_chunks_mut(p * d).enumerate().for_each(|(k, acc)| {
                        add_examples(k * per_part..((k + 1) * per_part).min(batch), sgemm_serial, acc);
                    });
                }
                // Written in the weight's order once: an untransposing pass per partial wrote a
                // column of `g` per row.
                let total = add_partials_in_order(&mut partials, p * d);
                untranspose(total, p, g, |entry, v| *entry += v);
            }
        }
    }
}

/// ADDS `Σ_i Σ_t δ_{i,t}` into `grad_bias` (`[groups][p]`): the bias gradient (clipped if `Δ` was
/// scaled by [`scale_examples`]).
pub fn bias_sum(layer: &PositionalLayer, batch: usize, delta: &[f32], grad_bias: &mut [f32]) {
    let (t, p, groups) = (layer.positions, layer.out_width, layer.groups);
    check_len("delta", delta.len(), batch * layer.delta_len());
    check_len("grad_bias", grad_bias.len(), layer.bias_len());
    if p == 0 {
        return;
    }
    let rows = batch * t;
    match layer.layout {
        RowLayout::PositionMajor => {
            grad_bias[..groups * p].par_chunks_mut(p).enumerate().for_each(|(q, g)| {
                for_each_column_sum(&delta[q * rows * p..(q + 1) * rows * p], rows, p, |j, s| {
                    g[j] += s as f32
                });
            })
        }
        // Channel by channel in parallel: an ungrouped conv is one group.
        RowLayout::ChannelMajor => grad_bias[..groups * p].par_iter_mut().enumerate().for_each(|(qj, g)| {
            let (q, j) = (qj / p, qj % p);
            let sum: f64 = (0..batch)
                .map(|i| {
                    let row = ((q * batch + i) * p + j) * t;
                    sum_wide(&delta[row..row + t])
                })
                .sum();
            *g += sum as f32;
        }),
    }
}

/// The clipped weight-gradient sum by book-keeping: ADDS `Σ_i c_i Δ_iᵀ A_i` into `grad` with ONE
/// product per group over all positions of all examples. Scales `delta` in place by the factors and
/// zeroes the `A` rows of examples whose factor is 0 (both are consumed). When several weights share
/// `Δ` (an LSTM's), call [`scale_examples`] once and [`zero_unclipped_examples`] + [`sum_outer`] per
/// weight instead.
#[allow(clippy::too_many_arguments)]
pub fn clipped_sum(
    layer: &PositionalLayer,
    batch: usize,
    factors: &[f32],
    factor_stride: usize,
    a: &mut [f32],
    delta: &mut [f32],
    grad: &mut [f32],
) {
    let (t, groups) = (layer.positions, layer.groups);
    scale_examples(groups, batch, t, layer.out_width, factors, factor_stride, delta);
    zero_unclipped_examples(groups, batch, t, layer.in_width, factors, factor_stride, a);
    sum_outer(layer, batch, a, delta, grad);
}

/// ADDS `‖g_i‖²` of per-example gradients stored whole (`[batch][len]`, e.g. a norm layer's affine
/// gradients) into `norms_sq[i * norm_stride]`.
pub fn stored_norms_sq(batch: usize, len: usize, grads: &[f32], norms_sq: &mut [f32], norm_stride: usize) {
    check_len("grads", grads.len(), batch * len);
    check_norms(norms_sq.len(), batch, norm_stride);
    for i in 0..batch {
        norms_sq[i * norm_stride] += sum_squares(&grads[i * len..(i + 1) * len]) as f32;
    }
}

/// ADDS `Σ_i c_i g_i` of per-example gradients stored whole (`[batch][len]`: a norm layer's affine
/// gradients, a direct layer's kept gradients) into `grad`; examples whose factor is 0 are skipped,
/// never multiplied, so NaN or infinities in them cannot reach the sum. The gradient is split into
/// blocks of `SUM_BLOCK` summed in parallel, each over the examples in order (so the result does
/// not depend on the thread count).
pub fn stored_clipped_sum(
    batch: usize,
    len: usize,
    grads: &[f32],
    factors: &[f32],
    factor_stride: usize,
    grad: &mut [f32],
) {
    check_len("grads", grads.len(), batch * len);
    check_len("grad", grad.len(), len);
    check_factors(factors.len(), batch, factor_stride);
    let add_block = |start: usize, block: &mut [f32]| {
        for i in 0..batch {
            let c = factors[i * factor_stride];
            if c != 0.0 {
                let g = &grads[i * len + start..i * len + start + block.len()];
                for (s, &v) in block.iter_mut().zip(g) {
                    *s += c * v;
                }
            }
        }
    };
    if len <= SUM_BLOCK {
        add_block(0, &mut grad[..len]);
    } else {
        grad[..len]
            .par_chunks_mut(SUM_BLOCK)
            .enumerate()
            .for_each(|(b, block)| add_block(b * SUM_BLOCK, block));
    }
}

/// Independent f64 partial sums in [`sum_by_lanes`] for long slices: a sequential sum cannot be
/// vectorised (the compiler may not reorder it); thirty-two lanes fill four AVX-512 registers, enough
/// independent additions to cover their latency.
pub(crate) const SUM_LANES: usize = 32;

/// `Σ f(v)` over `x` in f64, in `LANES` partial sums ([`SUM_LANES`] for long slices; as many as a
/// short row has, so that it is not left to the scalar tail). Inline it into code compiled for wide
/// vectors (`with_widest_vectors`), as [`sum_squares`] and [`sum_wide`] do.
#[inline(always)]
pub(crate) fn sum_by_lanes<const LANES: usize>(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut partial = [0.0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &v) in partial.iter_mut().zip(chunk) {
            *p += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    partial.iter().sum::<f64>() + tail
}

/// `Σ x²` accumulated in f64 (each square of an f32 is exact in f64; the sum runs in thirty-two lanes,
/// compiled for the widest vectors the CPU has).
pub fn sum_squares(x: &[f32]) -> f64 {
    crate::fast_math::with_widest_vectors(
        #[inline(always)]
        || sum_by_lanes::<SUM_LANES>(x, |v| v as f64 * v as f64),
    )
}

/// `Σ x` accumulated in f64, as [`sum_squares`] accumulates.
pub fn sum_wide(x: &[f32]) -> f64 {
    crate::fast_math::with_widest_vectors(
        #[inline(always)]
        || sum_by_lanes::<SUM_LANES>(x, |v| v as f64),
    )
}

fn check_len(name: &str, len: usize, need: usize) {
    assert!(len >= need, "per-example kernel: {name} has {len} values, needs {need}");
}

fn check_norms(len: usize, batch: usize, stride: usize) {
    if batch > 0 {
        assert!(stride >= 1, "per-example kernel: norm stride 0");
        check_len("norms_sq", len, (batch - 1) * stride + 1);
    }
}

fn check_factors(len: usize, batch: usize, stride: usize) {
    if batch > 0 {
        assert!(stride >= 1, "per-example kernel: factor stride 0");
        check_len("factors", len, (batch - 1) * stride + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    /// `G_{q,i} = Δ_{q,i}ᵀ A_{q,i}` in f64, `[groups][p][d]` per example.
    fn reference_grads(layer: &PositionalLayer, batch: usize, a: &[f32], delta: &[f32]) -> Vec<Vec<f64>> {
        let (t, d, p, groups) = (layer.positions, layer.in_width, layer.out_width, layer.groups);
        (0..batch)
            .map(|i| {
                let mut g = vec![0.0f64; groups * p * d];
                for q in 0..groups {
                    let unit = q * batch + i;
                    for s in 0..t {
                        for o in 0..p {
                            let dv = delta[(unit * t + s) * p + o] as f64;
                            for k in 0..d {
                                g[(q * p + o) * d + k] += dv * a[(unit * t + s) * d + k] as f64;
                            }
                        }
                    }
                }
                g
            })
            .collect()
    }

    fn reference_bias(layer: &PositionalLayer, batch: usize, delta: &[f32]) -> Vec<Vec<f64>> {
        let (t, p, groups) = (layer.positions, layer.out_width, layer.groups);
        (0..batch)
            .map(|i| {
                let mut g = vec![0.0f64; groups * p];
                for q in 0..groups {
                    for s in 0..t {
                        for o in 0..p {
                            g[q * p + o] += delta[((q * batch + i) * t + s) * p + o] as f64;
                        }
                    }
                }
                g
            })
            .collect()
    }

    fn position_major(t: usize, d: usize, p: usize, groups: usize) -> PositionalLayer {
        PositionalLayer { positions: t, in_width: d, out_width: p, groups, layout: RowLayout::PositionMajor }
    }

    /// `x` stored position-major (`[units][t][width]`) in `layout`: channel-major transposes each unit.
    fn in_layout(layout: RowLayout, units: usize, t: usize, width: usize, x: &[f32]) -> Vec<f32> {
        match layout {
            RowLayout::PositionMajor => x.to_vec(),
            RowLayout::ChannelMajor => {
                let mut y = vec![f32::NAN; x.len()];
                for u in 0..units {
                    for s in 0..t {
                        for j in 0..width {
                            y[(u * width + j) * t + s] = x[(u * t + s) * width + j];
                        }
                    }
                }
                y
            }
        }
    }

    /// The layer in both layouts, each with its `A` and `Δ` (given position-major).
    fn both_layouts(
        layer: &PositionalLayer,
        batch: usize,
        a: &[f32],
        delta: &[f32],
    ) -> Vec<(PositionalLayer, Vec<f32>, Vec<f32>)> {
        let (units, t) = (layer.groups * batch, layer.positions);
        [RowLayout::PositionMajor, RowLayout::ChannelMajor]
            .into_iter()
            .map(|layout| {
                let a = in_layout(layout, units, t, layer.in_width, a);
                let delta = in_layout(layout, units, t, layer.out_width, delta);
                (PositionalLayer { layout, ..*layer }, a, delta)
            })
            .collect()
    }

    const SHAPES: [(usize, usize, usize, usize); 5] =
        [(1, 7, 3, 1), (5, 4, 6, 1), (9, 3, 5, 2), (70, 6, 4, 1), (130, 2, 3, 3)];

    #[test]
    fn ghost_and_direct_norms_match_reference_with_stride_and_any_slot_count() {
        let mut rng = rng(11);
        for &(t, d, p, groups) in &SHAPES {
            let layer = position_major(t, d, p, groups);
            let batch = 3;
            let a = uniform(&mut rng, batch * layer.a_len());
            let delta = uniform(&mut rng, batch * layer.delta_len());
            let want: Vec<f64> = reference_grads(&layer, batch, &a, &delta)
                .iter()
                .map(|g| g.iter().map(|v| v * v).sum())
                .collect();
            for ((layer, a, delta), strategy) in
                both_layouts(&layer, batch, &a, &delta).into_iter().flat_map(|stored| {
                    [Strategy::Ghost, Strategy::Direct].map(|strategy| (stored.clone(), strategy))
                })
            {
                for slots in [1, 2, batch] {
                    let mut scratch = vec![f32::NAN; slots * scratch_len(strategy, &layer)];
                    // Column 1 of a [batch, 2] table that already holds 0.5 everywhere.
                    let mut table = vec![0.5f32; batch * 2];
                    norms_sq(strategy, &layer, batch, &a, &delta, &mut scratch, &mut table[1..], 2);
                    for i in 0..batch {
                        assert_eq!(table[2 * i], 0.5, "column 0 untouched");
                        assert_rel(
                            &format!("{strategy:?} {layer:?} slots={slots} example {i}"),
                            table[2 * i + 1] as f64 - 0.5,
                            want[i],
                            1e-4,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bias_norms_and_sums_match_reference() {
        let mut rng = rng(12);
        for &(t, d, p, groups) in &SHAPES {
            let layer = position_major(t, d, 70 + p, groups);
            let batch = 4;
            let a = vec![0.0f32; batch * layer.a_len()];
            let delta = uniform(&mut rng, batch * layer.delta_len());
            let per_example = reference_bias(&layer, batch, &delta);
            for (layer, _, delta) in both_layouts(&layer, batch, &a, &delta) {
                let mut norms = vec![0.0f32; batch];
                bias_norms_sq(&layer, batch, &delta, &mut norms, 1);
                for i in 0..batch {
                    let want = per_example[i].iter().map(|v| v * v).sum();
                    assert_rel(&format!("bias norm {layer:?}"), norms[i] as f64, want, 1e-4);
                }
                let mut sum = vec![1.0f32; layer.bias_len()];
                bias_sum(&layer, batch, &delta, &mut sum);
                let want: Vec<f64> = (0..layer.bias_len())
                    .map(|j| 1.0 + per_example.iter().map(|g| g[j]).sum::<f64>())
                    .collect();
                assert_close(&format!("bias sum {layer:?}"), &sum, &want, 1e-4);
            }
        }
    }

    #[test]
    fn clipped_sum_is_one_product_and_never_leaks_nan_of_zero_factor_examples() {
        let mut rng = rng(13);
        for &(t, d, p, groups) in &SHAPES {
            let layer = position_major(t, d, p, groups);
            let batch = 4;
            let (mut a, mut delta) =
                (uniform(&mut rng, batch * layer.a_len()), uniform(&mut rng, batch * layer.delta_len()));
            let grads = reference_grads(&layer, batch, &a, &delta);
            let bias = reference_bias(&layer, batch, &delta);
            // Example 2 is dropped (factor 0) and its activations and gradients are NaN/infinite.
            for q in 0..groups {
                let unit = q * batch + 2;
                a[unit * t * d] = f32::NAN;
                delta[unit * t * p + p - 1] = f32::INFINITY;
            }
            for (layer, mut a, mut delta) in both_layouts(&layer, batch, &a, &delta) {
                let factors = [0.25f32, 9.0, 3.0, 9.0, 0.0, 9.0, 1.0];
                let stride = 2; // factors read at 0, 2, 4, 6: example 2 is dropped
                let mut grad = vec![0.5f32; layer.weight_len()];
                let mut grad_bias = vec![0.0f32; layer.bias_len()];
                let mut scaled = delta.clone();
                scale_examples(groups, batch, t, p, &factors, stride, &mut scaled);
                bias_sum(&layer, batch, &scaled, &mut grad_bias);
                clipped_sum(&layer, batch, &factors, stride, &mut a, &mut delta, &mut grad);
                let c = |i: usize| factors[i * stride] as f64;
                let want: Vec<f64> = (0..layer.weight_len())
                    .map(|j| 0.5 + (0..batch).map(|i| c(i) * grads[i][j]).sum::<f64>())
                    .collect();
                assert_close(&format!("clipped weight sum {layer:?}"), &grad, &want, 1e-4);
                let want_bias: Vec<f64> =
                    (0..layer.bias_len()).map(|j| (0..batch).map(|i| c(i) * bias[i][j]).sum()).collect();
                assert_close(&format!("clipped bias sum {layer:?}"), &grad_bias, &want_bias, 1e-4);
            }
        }
    }

    /// The kept gradients' norms equal the direct and bias norms, and their weighted sum equals the
    /// book-keeping product `(c ⊙ Δ)ᵀ A` and bias sum, with a dropped example (factor 0) whose
    /// activations are NaN and output gradients infinite: it is skipped, never multiplied.
    #[test]
    fn kept_gradients_weighted_sum_matches_the_book_keeping_product_and_skips_dropped_examples() {
        let mut rng = rng(14);
        // The last shape's gradient (3,000 values) spans two blocks of the parallel sum.
        let shapes = SHAPES.iter().copied().chain([(4, 50, 60, 1)]);
        for (t, d, p, groups) in shapes {
            let layer = position_major(t, d, p, groups);
            let batch = 4;
            let mut a = uniform(&mut rng, batch * layer.a_len());
            let mut delta = uniform(&mut rng, batch * layer.delta_len());
            for q in 0..groups {
                let unit = q * batch + 2;
                a[unit * t * d] = f32::NAN;
                delta[unit * t * p + p - 1] = f32::INFINITY;
            }
            for ((layer, a, delta), bias) in both_layouts(&layer, batch, &a, &delta)
                .into_iter()
                .flat_map(|stored| [false, true].map(|bias| (stored.clone(), bias)))
            {
                let len = kept_len(&layer, bias);
                assert_eq!(len, layer.weight_len() + if bias { layer.bias_len() } else { 0 });
                let mut kept = vec![f32::NAN; batch * len];
                // Column 1 of a [batch, 2] table that already holds 0.5 everywhere.
                let mut table = vec![0.5f32; batch * 2];
                kept_direct_norms_sq(
                    &layer,
                    batch,
                    &a,
                    &delta,
                    bias,
                    &mut kept,
                    &mut table[1..],
                    2,
                    Precision::F32,
                );
                let mut want = vec![0.5f32; batch * 2];
                let mut slot = vec![0.0f32; scratch_len(Strategy::Direct, &layer)];
                direct_norms_sq(&layer, batch, &a, &delta, &mut slot, &mut want[1..], 2);
                if bias {
                    bias_norms_sq(&layer, batch, &delta, &mut want[1..], 2);
                }
                for i in [0, 1, 3] {
                    assert_eq!(table[2 * i], 0.5, "column 0 untouched");
                    let what = format!("kept norm {layer:?} bias={bias} example {i}");
                    assert_rel(&what, table[2 * i + 1] as f64, want[2 * i + 1] as f64, 1e-5);
                }
                assert!(table[2 * 2 + 1].is_nan(), "the NaN example's norm is NaN (its factor will be 0)");

                let factors = [0.25f32, 9.0, 3.0, 9.0, 0.0, 9.0, 1.0];
                let stride = 2; // factors read at 0, 2, 4, 6: example 2 is dropped
                let mut sum = vec![0.5f32; len];
                stored_clipped_sum(batch, len, &kept, &factors, stride, &mut sum);
                let (mut want_w, mut want_b) =
                    (vec![0.5f32; layer.weight_len()], vec![0.5f32; layer.bias_len()]);
                let (mut a_used, mut scaled) = (a.clone(), delta.clone());
                clipped_sum(&layer, batch, &factors, stride, &mut a_used, &mut scaled, &mut want_w);
                bias_sum(&layer, batch, &scaled, &mut want_b);
                let mut want = wide(&want_w);
                if bias {
                    want.extend(wide(&want_b));
                }
                assert_close(&format!("weighted sum {layer:?} bias={bias}"), &sum, &want, 1e-4);
            }
        }
    }

    /// The channel-major sum splits the examples by shape, not by thread: the same bits on 1, 2 and 3
    /// threads, for a small weight (a share per example) and one whose partial fills the budget alone
    /// (one share, each product threaded).
    #[test]
    fn channel_major_sum_is_the_same_bits_whatever_the_threads() {
        let mut rng = rng(15);
        for (t, d, p) in [(30, 8, 4), (40, 600, 500)] {
            let layer = PositionalLayer { layout: RowLayout::ChannelMajor, ..PositionalLayer::new(t, d, p) };
            let batch = 7;
            let a = uniform(&mut rng, batch * layer.a_len());
            let delta = uniform(&mut rng, batch * layer.delta_len());
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let mut grad = vec![0.5f32; layer.weight_len()];
                    sum_outer(&layer, batch, &a, &delta, &mut grad);
                    grad.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                })
            };
            let one = run(1);
            assert_eq!(one, run(2), "t={t} d={d} p={p}: 2 threads");
            assert_eq!(one, run(3), "t={t} d={d} p={p}: 3 threads");
        }
    }

    #[test]
    fn stored_gradients_norms_and_clipped_sum() {
        let grads = [1.0f32, 2.0, f32::NAN, 0.0, 3.0, 4.0];
        let mut norms = [0.0f32; 3];
        stored_norms_sq(3, 2, &grads, &mut norms, 1);
        assert_eq!(norms[0], 5.0);
        assert!(norms[1].is_nan());
        assert_eq!(norms[2], 25.0);
        let mut sum = [1.0f32, 1.0];
        stored_clipped_sum(3, 2, &grads, &[0.5, 0.0, 2.0], 1, &mut sum);
        assert_eq!(sum, [1.0 + 0.5 + 6.0, 1.0 + 1.0 + 8.0]);
    }

    #[test]
    fn cost_functions_and_strategy_choice() {
        // One tile of 2 rows × 2 columns: 2·2·2·(3+4) for the Grams + 2·2·2 for the products.
        assert_eq!(ghost_flops(2, 3, 4), 64);
        assert_eq!(direct_flops(2, 3, 4), 2 * 2 * 3 * 4 + 2 * 12);
        assert_eq!(direct_bytes(32, 512), 65536);
        // The symmetric tiled ghost norm costs about T²(d+p+1)(1 + tile/T), half the full Grams.
        let big = ghost_flops(1024, 10, 10) as f64;
        let ratio = big / (1024.0f64 * 1024.0 * 21.0 * (1.0 + 64.0 / 1024.0));
        assert!((ratio - 1.0).abs() < 0.01, "{big}");
        // A linear layer (T = 1): ghost is ‖a‖²‖δ‖², far cheaper than forming p·d.
        assert_eq!(choose_strategy(1, 512, 32, u64::MAX), Strategy::Ghost);
        // Many positions, small weight: direct, unless the cap forbids it.
        assert_eq!(choose_strategy(1024, 27, 32, u64::MAX), Strategy::Direct);
        assert_eq!(choose_strategy(1024, 27, 32, direct_bytes(32, 27)), Strategy::Direct);
        assert_eq!(choose_strategy(1024, 27, 32, direct_bytes(32, 27) - 1), Strategy::Ghost);
        let layer = PositionalLayer { groups: 3, ..PositionalLayer::new(9, 4, 6) };
        assert_eq!(layer.ghost_flops(), 3 * ghost_flops(9, 4, 6));
        assert_eq!(layer.choose_strategy(u64::MAX), choose_strategy(9, 4, 6, u64::MAX));
        assert_eq!((Strategy::Ghost.name(), Strategy::Direct.name()), ("ghost", "direct"));
        assert_eq!(layer.direct_flops(), 3 * direct_flops(9, 4, 6));
    }

    /// The founding paper's parameterised layers (T, d, p) and the strategy picked without a memory cap.
    #[test]
    fn strategies_for_the_founding_models() {
        use Strategy::{Direct, Ghost};
        let table = [
            ("logreg fc", 1, 104, 1, Ghost),
            ("ffnn fc1", 1, 104, 50, Ghost),
            ("ffnn fc2", 1, 50, 2, Ghost),
            ("mnist conv1", 196, 64, 16, Direct),
            ("mnist conv2", 25, 256, 32, Ghost),
            ("mnist fc1", 1, 512, 32, Ghost),
            ("mnist fc2", 1, 32, 10, Ghost),
            ("cifar conv1", 1024, 27, 32, Direct),
            ("cifar conv2", 1024, 288, 32, Direct),
            ("cifar conv3", 256, 288, 64, Direct),
            ("cifar conv4", 256, 576, 64, Direct),
            ("cifar conv5", 64, 576, 128, Ghost),
            ("cifar conv6", 64, 1152, 128, Ghost),
            ("cifar conv7", 16, 1152, 256, Ghost),
            ("cifar conv8", 16, 2304, 10, Direct),
            ("embedding fc", 1, 16, 2, Ghost),
            ("lstm W_ih", 256, 100, 400, Direct),
            ("lstm W_hh", 256, 100, 400, Direct),
            ("lstm fc", 1, 100, 2, Ghost),
        ];
        for (name, t, d, p, want) in table {
            assert_eq!(choose_strategy(t, d, p, u64::MAX), want, "{name}");
        }
        // MNIST conv2 is the close call of the mixed rule: 361,250 ghost FLOPs against 425,984 direct.
        assert_eq!((ghost_flops(25, 256, 32), direct_flops(25, 256, 32)), (361_250, 425_984));
    }
}
