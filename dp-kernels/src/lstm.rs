//! One LSTM layer over a whole sequence (zero initial state), returning every step's hidden state.
//!
//! Gates in PyTorch's order i, f, g, o: `pre_t = W_ih x_t + W_hh h_{t−1} + b`, `i, f, o = σ(·)`,
//! `g = tanh(·)`, `c_t = f⊙c_{t−1} + i⊙g`, `h_t = o⊙tanh(c_t)`, with ONE bias `b` (`[4h]`; PyTorch's
//! `bias_ih + bias_hh`).
//!
//! The forward is a loop over time: the input projection of all steps of all examples is one product,
//! then each step is one recurrent product (`[rows, h] × [h, 4h]`) and a fused gate pass. The
//! recurrence of one example never reads another's, so each thread runs the whole time loop for its
//! own block of examples with serial products: a step needs no hand-off between threads (with one
//! parallel product per step, the 2·T hand-offs cost more than the products gained). The gate
//! nonlinearities are [`fast_math`]'s vectorised ones, compiled for the widest vectors the CPU has.
//!
//! The backward through time (split over threads the same way) gives the gate pre-activation
//! gradients `δ_t` (`[4h]`) of every step, so each weight is a layer applied at T positions
//! ([`crate::per_example`]): `W_ih` with `a_t = x_t`, `W_hh` with `a_t = h_{t−1}` (saved as `hprev`),
//! the bias with `a_t = 1`.
//!
//! Layouts: input `[batch][T][d]`, output `[batch][T][h]`, `W_ih` `[4h][d]`, `W_hh` `[4h][h]`; the
//! saved buffers are `gates` `[batch][T][4h]` (activated i, f, g, o), `cells` `[batch][T][h]` and
//! `hprev` `[batch][T][h]`; the backward's `delta` is `[batch][T][4h]`.

use rayon::prelude::*;

use crate::fast_math::{self, with_widest_vectors};
use crate::gemm::{sgemm, sgemm_serial, Op};
use crate::gemm_bf16::{gemm_in, Precision, SharedRight};
use crate::per_example::{self, Strategy};

// The dimensions are shared with the compiler, which plans with the same formulas.
pub use dp_spec::LstmDims;

/// Scratch `f32`s of [`lstm_forward`] for `batch` examples: the step's hidden states and recurrent
/// products, `batch·5h`.
pub const fn forward_scratch_len(dims: &LstmDims, batch: usize) -> usize {
    batch * 5 * dims.hidden
}

/// Scratch `f32`s of [`lstm_backward`] for `batch` examples: the step's gate gradients, recurrent
/// hidden-state gradients and cell gradients, `batch·6h`.
pub const fn backward_scratch_len(dims: &LstmDims, batch: usize) -> usize {
    batch * 6 * dims.hidden
}

/// Scratch `f32`s per parallel slot of [`lstm_norms_sq`] with the given strategies.
pub const fn norm_scratch_len(
    dims: &LstmDims,
    input_strategy: Strategy,
    recurrent_strategy: Strategy,
) -> usize {
    let a = per_example::scratch_len(input_strategy, &dims.input_layer());
    let b = per_example::scratch_len(recurrent_strategy, &dims.recurrent_layer());
    if a > b {
        a
    } else {
        b
    }
}

/// The buffers the forward saves for the backward (each example-major, see the module docs).
#[derive(Debug)]
pub struct LstmSaved<'a> {
    /// `[batch][T][4h]`: activated gates i, f, g, o.
    pub gates: &'a mut [f32],
    /// `[batch][T][h]`: cell states `c_t`.
    pub cells: &'a mut [f32],
    /// `[batch][T][h]`: `h_{t−1}` (zero at t = 0), the recurrent weight's inputs.
    pub hprev: &'a mut [f32],
}

/// Forward over all steps: writes `out` (`[batch][T][h]`) and the saved buffers. The products run in
/// `precision`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward(
    dims: &LstmDims,
    batch: usize,
    x: &[f32],
    w_ih: &[f32],
    w_hh: &[f32],
    bias: &[f32],
    saved: LstmSaved<'_>,
    out: &mut [f32],
    scratch: &mut [f32],
    precision: Precision,
) {
    let (t_n, d, h) = (dims.steps, dims.input, dims.hidden);
    let g4 = 4 * h;
    assert!(x.len() >= batch * dims.input_len(), "lstm: input has {} values", x.len());
    assert!(w_ih.len() >= dims.weight_ih_len(), "lstm: weight_ih has {} values", w_ih.len());
    assert!(w_hh.len() >= dims.weight_hh_len(), "lstm: weight_hh has {} values", w_hh.len());
    assert!(bias.len() >= g4, "lstm: bias has {} values", bias.len());
    assert!(saved.gates.len() >= batch * dims.gates_len(), "lstm: gates has {} values", saved.gates.len());
    assert!(saved.cells.len() >= batch * dims.output_len(), "lstm: cells has {} values", saved.cells.len());
    assert!(saved.hprev.len() >= batch * dims.output_len(), "lstm: hprev has {} values", saved.hprev.len());
    assert!(out.len() >= batch * dims.output_len(), "lstm: output has {} values", out.len());
    assert!(scratch.len() >= forward_scratch_len(dims, batch), "lstm: scratch has {} values", scratch.len());
    if batch == 0 || t_n == 0 || h == 0 {
        return;
    }
    let gates = &mut saved.gates[..batch * dims.gates_len()];
    let cells = &mut saved.cells[..batch * dims.output_len()];
    let hprev = &mut saved.hprev[..batch * dims.output_len()];
    let out = &mut out[..batch * dims.output_len()];
    let (h_step, rest) = scratch.split_at_mut(batch * h);
    let rec = &mut rest[..batch * g4];

    // Input projection of every step of every example (the gate pass adds the bias: one pass less
    // over the whole buffer).
    gemm_in(precision, Op::N, Op::T, (batch * t_n, g4, d), 1.0, x, w_ih, 0.0, gates);

    // h_{t−1}·W_hhᵀ at every step: in bf16 the weight is packed once for all of them.
    let recurrent = SharedRight::new(precision, Op::T, (h, g4), w_hh);
    let rows = examples_per_block(batch);
    gates
        .par_chunks_mut(rows * dims.gates_len())
        .zip(cells.par_chunks_mut(rows * dims.output_len()))
        .zip(hprev.par_chunks_mut(rows * dims.output_len()))
        .zip(out.par_chunks_mut(rows * dims.output_len()))
        .zip(h_step.par_chunks_mut(rows * h))
        .zip(rec.par_chunks_mut(rows * g4))
        .for_each(|(((((gates, cells), hprev), out), h_step), rec)| {
            let block = ForwardBlock { gates, cells, hprev, out, h_step, rec };
            forward_block(dims, &recurrent, &bias[..g4], block);
        });
}

/// Examples per thread's block: the batch split evenly over the pool's threads.
fn examples_per_block(batch: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// One block of examples' slices of the forward's buffers (`h_step`, `rec`: their scratch rows).
struct ForwardBlock<'a> {
    gates: &'a mut [f32],
    cells: &'a mut [f32],
    hprev: &'a mut [f32],
    out: &'a mut [f32],
    h_step: &'a mut [f32],
    rec: &'a mut [f32],
}

/// The recurrence of one block of examples over all steps, on the calling thread.
fn forward_block(dims: &LstmDims, recurrent: &SharedRight<'_>, bias: &[f32], b: ForwardBlock<'_>) {
    let (h, g4) = (dims.hidden, 4 * dims.hidden);
    let (gates_len, out_len) = (dims.gates_len(), dims.output_len());
    let rows = b.h_step.len() / h;
    b.h_step.fill(0.0);
    for t in 0..dims.steps {
        if t > 0 {
            recurrent.product_serial(Op::N, rows, 1.0, b.h_step, 0.0, b.rec);
        }
        with_widest_vectors(
            #[inline(always)]
            || {
                for i in 0..rows {
                    if t + 1 < dims.steps {
                        // Each example's rows sit T·4h apart, too many streams for the hardware
                        // prefetcher; ask for the next step's while the other examples run.
                        prefetch(&b.gates[i * gates_len + (t + 1) * g4..][..g4]);
                        prefetch(&b.cells[i * out_len + (t + 1) * h..][..h]);
                        prefetch(&b.hprev[i * out_len + (t + 1) * h..][..h]);
                        prefetch(&b.out[i * out_len + (t + 1) * h..][..h]);
                    }
                    let gates_t = &mut b.gates[i * gates_len + t * g4..][..g4];
                    let cells_i = &mut b.cells[i * out_len..][..out_len];
                    let h_i = &mut b.h_step[i * h..][..h];
                    b.hprev[i * out_len + t * h..][..h].copy_from_slice(h_i);
                    let out_t = &mut b.out[i * out_len + t * h..][..h];
                    if t == 0 {
                        gate_step::<true>(h, gates_t, bias, &[], &[], &mut cells_i[..h], out_t, h_i);
                    } else {
                        let (before, now) = cells_i.split_at_mut(t * h);
                        let rec_i = &b.rec[i * g4..][..g4];
                        gate_step::<false>(
                            h,
                            gates_t,
                            bias,
                            rec_i,
                            &before[(t - 1) * h..],
                            &mut now[..h],
                            out_t,
                            h_i,
                        );
                    }
                }
            },
        );
    }
}

/// Asks the CPU to start loading `values` into its caches (a hint: no effect on results).
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const PER_LINE: usize = 64 / std::mem::size_of::<f32>();
        let lines = values.iter().step_by(PER_LINE).chain(values.last());
        for v in lines {
            // SAFETY: a prefetch never faults, and the address is that of a live value.
            unsafe { _mm_prefetch::<_MM_HINT_T0>((v as *const f32).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// One example's step: the gate pre-activations (`gates`, the input projection, plus `bias` plus the
/// recurrent product `rec`) become the activated gates in place; writes `c_t`, and `h_t` to `out` and `h_next`. At
/// the first step (`FIRST`) there is no recurrent product and `c_{t−1} = 0` (`rec`, `c_prev` unread).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gate_step<const FIRST: bool>(
    h: usize,
    gates: &mut [f32],
    bias: &[f32],
    rec: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    out: &mut [f32],
    h_next: &mut [f32],
) {
    let (pre_i, rest) = gates[..4 * h].split_at_mut(h);
    let (pre_f, rest) = rest.split_at_mut(h);
    let (pre_g, pre_o) = rest.split_at_mut(h);
    let (rec, c_prev) = if FIRST { (&[][..], &[][..]) } else { (&rec[..4 * h], &c_prev[..h]) };
    let (c, out, h_next, bias) = (&mut c[..h], &mut out[..h], &mut h_next[..h], &bias[..4 * h]);
    for j in 0..h {
        let rec_at = |k: usize| bias[k * h + j] + if FIRST { 0.0 } else { rec[k * h + j] };
        let i_g = fast_math::sigmoid(pre_i[j] + rec_at(0));
        let f_g = fast_math::sigmoid(pre_f[j] + rec_at(1));
        let g_g = fast_math::tanh(pre_g[j] + rec_at(2));
        let o_g = fast_math::sigmoid(pre_o[j] + rec_at(3));
        let c_new = if FIRST { i_g * g_g } else { f_g * c_prev[j] + i_g * g_g };
        let h_new = o_g * fast_math::tanh(c_new);
        (pre_i[j], pre_f[j], pre_g[j], pre_o[j]) = (i_g, f_g, g_g, o_g);
        c[j] = c_new;
        out[j] = h_new;
        h_next[j] = h_new;
    }
}

/// Backward through time from the output gradient `dout` (`[batch][T][h]`): writes the gate
/// pre-activation gradients `delta` (`[batch][T][4h]`) and the input gradient `dx` (`[batch][T][d]`,
/// overwritten; one product over all steps). The products run in `precision`: the gate gradients
/// are those of the forward that ran in it.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward(
    dims: &LstmDims,
    batch: usize,
    dout: &[f32],
    w_ih: &[f32],
    w_hh: &[f32],
    gates: &[f32],
    cells: &[f32],
    delta: &mut [f32],
    dx: &mut [f32],
    scratch: &mut [f32],
    precision: Precision,
) {
    let (t_n, d, h) = (dims.steps, dims.input, dims.hidden);
    let g4 = 4 * h;
    assert!(dout.len() >= batch * dims.output_len(), "lstm: output gradient has {} values", dout.len());
    assert!(w_ih.len() >= dims.weight_ih_len(), "lstm: weight_ih has {} values", w_ih.len());
    assert!(w_hh.len() >= dims.weight_hh_len(), "lstm: weight_hh has {} values", w_hh.len());
    assert!(gates.len() >= batch * dims.gates_len(), "lstm: gates has {} values", gates.len());
    assert!(cells.len() >= batch * dims.output_len(), "lstm: cells has {} values", cells.len());
    assert!(delta.len() >= batch * dims.gates_len(), "lstm: delta has {} values", delta.len());
    assert!(dx.len() >= batch * dims.input_len(), "lstm: input gradient has {} values", dx.len());
    assert!(scratch.len() >= backward_scratch_len(dims, batch), "lstm: scratch has {} values", scratch.len());
    if batch == 0 || t_n == 0 {
        return;
    }
    if h == 0 {
        dx[..batch * dims.input_len()].fill(0.0);
        return;
    }
    let delta = &mut delta[..batch * dims.gates_len()];
    let (d_step, rest) = scratch.split_at_mut(batch * g4);
    let (dh_rec, rest) = rest.split_at_mut(batch * h);
    let dc = &mut rest[..batch * h];

    // δ_t·W_hh at every step: in bf16 the weight is packed once for all of them.
    let recurrent = SharedRight::new(precision, Op::N, (g4, h), w_hh);
    let rows = examples_per_block(batch);
    delta
        .par_chunks_mut(rows * dims.gates_len())
        .zip(dout[..batch * dims.output_len()].par_chunks(rows * dims.output_len()))
        .zip(gates[..batch * dims.gates_len()].par_chunks(rows * dims.gates_len()))
        .zip(cells[..batch * dims.output_len()].par_chunks(rows * dims.output_len()))
        .zip(d_step.par_chunks_mut(rows * g4))
        .zip(dh_rec.par_chunks_mut(rows * h))
        .zip(dc.par_chunks_mut(rows * h))
        .for_each(|((((((delta, dout), gates), cells), d_step), dh_rec), dc)| {
            let block = BackwardBlock { dout, gates, cells, delta, d_step, dh_rec, dc };
            backward_block(dims, &recurrent, block);
        });
    gemm_in(precision, Op::N, Op::N, (batch * t_n, d, g4), 1.0, delta, w_ih, 0.0, dx);
}

/// One block of examples' slices of the backward's buffers (`d_step`, `dh_rec`, `dc`: scratch rows).
struct BackwardBlock<'a> {
    dout: &'a [f32],
    gates: &'a [f32],
    cells: &'a [f32],
    delta: &'a mut [f32],
    d_step: &'a mut [f32],
    dh_rec: &'a mut [f32],
    dc: &'a mut [f32],
}

/// Backward through time of one block of examples, on the calling thread.
fn backward_block(dims: &LstmDims, recurrent: &SharedRight<'_>, b: BackwardBlock<'_>) {
    let (t_n, h, g4) = (dims.steps, dims.hidden, 4 * dims.hidden);
    let (gates_len, out_len) = (dims.gates_len(), dims.output_len());
    let rows = b.dc.len() / h;
    b.dc.fill(0.0);
    for t in (0..t_n).rev() {
        let last = t + 1 == t_n;
        if !last {
            // Gradient reaching h_t through the next step's recurrent product.
            recurrent.product_serial(Op::N, rows, 1.0, b.d_step, 0.0, b.dh_rec);
        }
        with_widest_vectors(
            #[inline(always)]
            || {
                for i in 0..rows {
                    if t > 0 {
                        prefetch(&b.gates[i * gates_len + (t - 1) * g4..][..g4]);
                        prefetch(&b.delta[i * gates_len + (t - 1) * g4..][..g4]);
                        prefetch(&b.dout[i * out_len + (t - 1) * h..][..h]);
                        prefetch(&b.cells[i * out_len + (t - 1).saturating_sub(1) * h..][..h]);
                    }
                    let cells_i = &b.cells[i * out_len..][..out_len];
                    let c_now = &cells_i[t * h..][..h];
                    // At t = 0 c_{t−1} is 0; `c_now` only stands in for a slice that is not read.
                    let c_prev = if t > 0 { &cells_i[(t - 1) * h..][..h] } else { c_now };
                    let step = GateGradientStep {
                        gates: &b.gates[i * gates_len + t * g4..][..g4],
                        c_now,
                        c_prev,
                        dout: &b.dout[i * out_len + t * h..][..h],
                        dh_rec: &b.dh_rec[i * h..][..h],
                        dc: &mut b.dc[i * h..][..h],
                        d_gates: &mut b.d_step[i * g4..][..g4],
                    };
                    gate_gradient_step(h, t == 0, last, step);
                    b.delta[i * gates_len + t * g4..][..g4].copy_from_slice(&b.d_step[i * g4..][..g4]);
                }
            },
        );
    }
}

/// One example's slices at one step of the backward.
struct GateGradientStep<'a> {
    /// Activated i, f, g, o.
    gates: &'a [f32],
    c_now: &'a [f32],
    c_prev: &'a [f32],
    dout: &'a [f32],
    /// The gradient reaching `h_t` through the next step (not read at the last step).
    dh_rec: &'a [f32],
    /// In: the gradient reaching `c_t` from the next step (0 at the last); out: the one reaching `c_{t−1}`.
    dc: &'a mut [f32],
    /// Out: the gate pre-activation gradients.
    d_gates: &'a mut [f32],
}

/// The gate pre-activation gradients of one example's step. `first`: `c_{t−1} = 0`; `last`: no gradient
/// from a next step. Both are selects, so the unread slices may hold anything (even NaN).
#[inline(always)]
fn gate_gradient_step(h: usize, first: bool, last: bool, s: GateGradientStep<'_>) {
    let (i_gate, f_gate, g_gate, o_gate) =
        (&s.gates[..h], &s.gates[h..2 * h], &s.gates[2 * h..3 * h], &s.gates[3 * h..4 * h]);
    let (c_now, c_prev, dout, dh_rec, dc) =
        (&s.c_now[..h], &s.c_prev[..h], &s.dout[..h], &s.dh_rec[..h], &mut s.dc[..h]);
    let (d_i, rest) = s.d_gates[..4 * h].split_at_mut(h);
    let (d_f, rest) = rest.split_at_mut(h);
    let (d_g, d_o) = rest.split_at_mut(h);
    for j in 0..h {
        let dh = dout[j] + if last { 0.0 } else { dh_rec[j] };
        let (i_g, f_g, g_g, o_g) = (i_gate[j], f_gate[j], g_gate[j], o_gate[j]);
        let tc = fast_math::tanh(c_now[j]);
        let c_before = if first { 0.0 } else { c_prev[j] };
        let dcv = dc[j] + dh * o_g * (1.0 - tc * tc);
        d_i[j] = dcv * g_g * i_g * (1.0 - i_g);
        d_f[j] = dcv * c_before * f_g * (1.0 - f_g);
        d_g[j] = dcv * i_g * (1.0 - g_g * g_g);
        d_o[j] = dh * tc * o_g * (1.0 - o_g);
        dc[j] = dcv * f_g;
    }
}

/// ADDS every example's squared gradient norm of `W_ih`, `W_hh` and the bias into
/// `norms_sq[i * norm_stride]`. `scratch` holds one or more slots of [`norm_scratch_len`].
#[allow(clippy::too_many_arguments)]
pub fn lstm_norms_sq(
    dims: &LstmDims,
    batch: usize,
    input_strategy: Strategy,
    recurrent_strategy: Strategy,
    x: &[f32],
    hprev: &[f32],
    delta: &[f32],
    scratch: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
) {
    let (li, lh) = (dims.input_layer(), dims.recurrent_layer());
    let slot = norm_scratch_len(dims, input_strategy, recurrent_strategy).max(1);
    let slots = (scratch.len() / slot).min(batch.max(1));
    // Both norms index the scratch in their own slot sizes; keep them to the same number of slots.
    let usable = &mut scratch[..slots * slot];
    let ih_len = slots * per_example::scratch_len(input_strategy, &li).max(1);
    per_example::norms_sq(input_strategy, &li, batch, x, delta, &mut usable[..ih_len], norms_sq, norm_stride);
    let hh_len = slots * per_example::scratch_len(recurrent_strategy, &lh).max(1);
    per_example::norms_sq(
        recurrent_strategy,
        &lh,
        batch,
        hprev,
        delta,
        &mut usable[..hh_len],
        norms_sq,
        norm_stride,
    );
    per_example::bias_norms_sq(&li, batch, delta, norms_sq, norm_stride);
}

/// Values of one example's kept gradient ([`lstm_kept_norms_sq`]): `W_ih`, `W_hh` and the bias, in the
/// order of the parameter buffer.
pub const fn kept_len(dims: &LstmDims) -> usize {
    dims.weight_ih_len() + dims.weight_hh_len() + 4 * dims.hidden
}

/// The direct norms of both weights and the bias, keeping what they form: writes every example's
/// gradient `[G_ih (4h×d), G_hh (4h×h), g_b (4h)]` into `kept[i·len..(i+1)·len]` (`len` =
/// [`kept_len`]) and ADDS its squared norm into `norms_sq[i * norm_stride]`. The clipped sum is then
/// [`per_example::stored_clipped_sum`] over `kept` instead of [`lstm_clipped_sum`]'s products. The
/// products run in `precision`: what is kept is both what is normed and what is summed.
#[allow(clippy::too_many_arguments)]
pub fn lstm_kept_norms_sq(
    dims: &LstmDims,
    batch: usize,
    x: &[f32],
    hprev: &[f32],
    delta: &[f32],
    kept: &mut [f32],
    norms_sq: &mut [f32],
    norm_stride: usize,
    precision: Precision,
) {
    let (t, d, h, g4) = (dims.steps, dims.input, dims.hidden, 4 * dims.hidden);
    assert!(x.len() >= batch * t * d, "lstm: input has {} values", x.len());
    assert!(hprev.len() >= batch * t * h, "lstm: hprev has {} values", hprev.len());
    assert!(delta.len() >= batch * t * g4, "lstm: delta has {} values", delta.len());
    per_example::keep_per_example(
        batch,
        kept_len(dims),
        kept,
        norms_sq,
        norm_stride,
        precision,
        |i, g, product| {
            let (g_ih, rest) = g.split_at_mut(dims.weight_ih_len());
            let (g_hh, g_b) = rest.split_at_mut(dims.weight_hh_len());
            let delta_i = &delta[i * t * g4..(i + 1) * t * g4];
            product(Op::T, Op::N, g4, d, t, 1.0, delta_i, &x[i * t * d..(i + 1) * t * d], 0.0, g_ih);
            product(Op::T, Op::N, g4, h, t, 1.0, delta_i, &hprev[i * t * h..(i + 1) * t * h], 0.0, g_hh);
            per_example::column_sums(delta_i, t, g4, g_b);
        },
    );
}

/// The clipped sums by book-keeping: ADDS `Σ_i c_i G_i` of `W_ih`, `W_hh` and the bias into `grad_ih`,
/// `grad_hh`, `grad_bias`. Scales `delta` once by the factors and zeroes the `x` and `hprev` rows of
/// examples whose factor is 0 (all three are consumed); then one product per weight.
#[allow(clippy::too_many_arguments)]
pub fn lstm_clipped_sum(
    dims: &LstmDims,
    batch: usize,
    factors: &[f32],
    factor_stride: usize,
    x: &mut [f32],
    hprev: &mut [f32],
    delta: &mut [f32],
    grad_ih: &mut [f32],
    grad_hh: &mut [f32],
    grad_bias: &mut [f32],
) {
    let (t, d, h) = (dims.steps, dims.input, dims.hidden);
    per_example::scale_examples(1, batch, t, 4 * h, factors, factor_stride, delta);
    per_example::zero_unclipped_examples(1, batch, t, d, factors, factor_stride, x);
    per_example::zero_unclipped_examples(1, batch, t, h, factors, factor_stride, hprev);
    lstm_weight_gradients(dims, batch, x, hprev, delta, grad_ih, grad_hh, grad_bias);
}

/// The non-private weight gradients: ADDS `Σ_i G_i` of `W_ih`, `W_hh` and the bias: `Δᵀ X`, `Δᵀ H_prev`
/// and the column sums of `Δ`, over all T·batch positions at once.
#[allow(clippy::too_many_arguments)]
pub fn lstm_weight_gradients(
    dims: &LstmDims,
    batch: usize,
    x: &[f32],
    hprev: &[f32],
    delta: &[f32],
    grad_ih: &mut [f32],
    grad_hh: &mut [f32],
    grad_bias: &mut [f32],
) {
    let (rows, d, h, g4) = (batch * dims.steps, dims.input, dims.hidden, 4 * dims.hidden);
    assert!(x.len() >= rows * d, "lstm: input has {} values", x.len());
    assert!(hprev.len() >= rows * h, "lstm: hprev has {} values", hprev.len());
    assert!(delta.len() >= rows * g4, "lstm: delta has {} values", delta.len());
    assert!(grad_ih.len() >= dims.weight_ih_len(), "lstm: weight_ih gradient has {} values", grad_ih.len());
    assert!(grad_hh.len() >= dims.weight_hh_len(), "lstm: weight_hh gradient has {} values", grad_hh.len());
    assert!(grad_bias.len() >= g4, "lstm: bias gradient has {} values", grad_bias.len());
    let delta = &delta[..rows * g4];
    if rayon::current_num_threads() <= 2 {
        // Two products of the same size over all T·batch positions, one per thread (each long enough
        // in k to run at full speed alone), each thread also summing half of the bias columns: no
        // hand-offs inside, no partial results to add up.
        let (bias_first, bias_second) = grad_bias[..g4].split_at_mut(2 * h);
        rayon::join(
            || {
                sgemm_serial(Op::T, Op::N, g4, d, rows, 1.0, delta, x, 1.0, grad_ih);
                add_column_sums(delta, g4, 0, bias_first);
            },
            || {
                sgemm_serial(Op::T, Op::N, g4, h, rows, 1.0, delta, hprev, 1.0, grad_hh);
                add_column_sums(delta, g4, 2 * h, bias_second);
            },
        );
    } else {
        // More threads than products: each product splits itself over the pool.
        sgemm(Op::T, Op::N, g4, d, rows, 1.0, delta, x, 1.0, grad_ih);
        sgemm(Op::T, Op::N, g4, h, rows, 1.0, delta, hprev, 1.0, grad_hh);
        grad_bias[..g4]
            .par_chunks_mut(COLUMNS_PER_PASS)
            .enumerate()
            .for_each(|(k, sums)| add_column_sums(delta, g4, k * COLUMNS_PER_PASS, sums));
    }
}

/// Columns whose sums one pass over the rows accumulates (2 KiB of f64 in L1): wide enough that each
/// row is read in one run, which the hardware prefetcher follows (64 columns per pass took 1.5× as long).
const COLUMNS_PER_PASS: usize = 256;

/// ADDS the sums over all rows of `matrix` (rows of `width`) of the columns `first..first + sums.len()`
/// into `sums`, accumulating in f64 (T·batch terms).
fn add_column_sums(matrix: &[f32], width: usize, first: usize, sums: &mut [f32]) {
    if sums.is_empty() {
        return;
    }
    let rows = matrix.len() / width;
    with_widest_vectors(
        #[inline(always)]
        || {
            for (k, out) in sums.chunks_mut(COLUMNS_PER_PASS).enumerate() {
                let start = first + k * COLUMNS_PER_PASS;
                let mut acc = [0.0f64; COLUMNS_PER_PASS];
                for r in 0..rows {
                    let row = &matrix[r * width + start..][..out.len()];
                    acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
                }
                out.iter_mut().zip(&acc).for_each(|(o, &a)| *o += a as f32);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    /// One example's outputs `[T][h]` in f64, straight from the equations.
    fn reference_forward(dims: &LstmDims, x: &[f64], w_ih: &[f64], w_hh: &[f64], b: &[f64]) -> Vec<f64> {
        let (d, h) = (dims.input, dims.hidden);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut hs, mut cs) = (vec![0.0; h], vec![0.0; h]);
        let mut out = Vec::new();
        for t in 0..dims.steps {
            let pre: Vec<f64> = (0..4 * h)
                .map(|r| {
                    b[r] + (0..d).map(|k| w_ih[r * d + k] * x[t * d + k]).sum::<f64>()
                        + (0..h).map(|k| w_hh[r * h + k] * hs[k]).sum::<f64>()
                })
                .collect();
            for j in 0..h {
                let (i, f, g, o) = (sig(pre[j]), sig(pre[h + j]), pre[2 * h + j].tanh(), sig(pre[3 * h + j]));
                cs[j] = f * cs[j] + i * g;
                hs[j] = o * cs[j].tanh();
            }
            out.extend_from_slice(&hs);
        }
        out
    }

    /// Per-example gradients of (W_ih, W_hh, bias).
    type Grads = (Vec<f64>, Vec<f64>, Vec<f64>);

    struct Run {
        out: Vec<f32>,
        x: Vec<f32>,
        w_ih: Vec<f32>,
        w_hh: Vec<f32>,
        bias: Vec<f32>,
        r: Vec<f32>,
        hprev: Vec<f32>,
        delta: Vec<f32>,
        dx: Vec<f32>,
    }

    fn run(dims: &LstmDims, batch: usize, seed: u64) -> Run {
        let mut rng = rng(seed);
        let x = uniform(&mut rng, batch * dims.input_len());
        let w_ih = uniform(&mut rng, dims.weight_ih_len());
        let w_hh = uniform(&mut rng, dims.weight_hh_len());
        let bias = uniform(&mut rng, 4 * dims.hidden);
        let r = uniform(&mut rng, batch * dims.output_len());
        let mut gates = vec![f32::NAN; batch * dims.gates_len()];
        let mut cells = vec![f32::NAN; batch * dims.output_len()];
        let mut hprev = vec![f32::NAN; batch * dims.output_len()];
        let mut out = vec![f32::NAN; batch * dims.output_len()];
        let mut scratch = vec![f32::NAN; forward_scratch_len(dims, batch)];
        let saved = LstmSaved { gates: &mut gates, cells: &mut cells, hprev: &mut hprev };
        lstm_forward(
            dims,
            batch,
            &x,
            &w_ih,
            &w_hh,
            &bias,
            saved,
            &mut out,
            &mut scratch,
            crate::gemm_bf16::Precision::F32,
        );
        let mut delta = vec![f32::NAN; batch * dims.gates_len()];
        let mut dx = vec![f32::NAN; batch * dims.input_len()];
        let mut scratch = vec![f32::NAN; backward_scratch_len(dims, batch)];
        lstm_backward(
            dims,
            batch,
            &r,
            &w_ih,
            &w_hh,
            &gates,
            &cells,
            &mut delta,
            &mut dx,
            &mut scratch,
            crate::gemm_bf16::Precision::F32,
        );
        Run { out, x, w_ih, w_hh, bias, r, hprev, delta, dx }
    }

    #[test]
    fn forward_backward_norms_and_clipped_sums_match_finite_differences() {
        let dims = LstmDims { steps: 6, input: 3, hidden: 4 };
        let batch = 3;
        let mut run = run(&dims, batch, 61);
        let (wi, wh, wb) = (wide(&run.w_ih), wide(&run.w_hh), wide(&run.bias));
        let mut per_example_grads = Vec::new();
        for i in 0..batch {
            let xi = wide(&run.x[i * dims.input_len()..(i + 1) * dims.input_len()]);
            let ri = wide(&run.r[i * dims.output_len()..(i + 1) * dims.output_len()]);
            let out_range = i * dims.output_len()..(i + 1) * dims.output_len();
            assert_close("out", &run.out[out_range], &reference_forward(&dims, &xi, &wi, &wh, &wb), 1e-5);
            let loss =
                |x: &[f64], a: &[f64], b: &[f64], c: &[f64]| dot(&reference_forward(&dims, x, a, b, c), &ri);
            let gx = finite_difference(&xi, 1e-6, |x| loss(x, &wi, &wh, &wb));
            assert_close("dx", &run.dx[i * dims.input_len()..(i + 1) * dims.input_len()], &gx, 1e-4);
            let g_ih = finite_difference(&wi, 1e-6, |w| loss(&xi, w, &wh, &wb));
            let g_hh = finite_difference(&wh, 1e-6, |w| loss(&xi, &wi, w, &wb));
            let g_b = finite_difference(&wb, 1e-6, |b| loss(&xi, &wi, &wh, b));
            per_example_grads.push((g_ih, g_hh, g_b));
        }
        for (s_ih, s_hh) in [
            (Strategy::Ghost, Strategy::Ghost),
            (Strategy::Direct, Strategy::Direct),
            (Strategy::Ghost, Strategy::Direct),
        ] {
            for slots in [1, batch] {
                let mut scratch = vec![f32::NAN; slots * norm_scratch_len(&dims, s_ih, s_hh)];
                let mut norms = vec![0.0f32; batch];
                lstm_norms_sq(
                    &dims,
                    batch,
                    s_ih,
                    s_hh,
                    &run.x,
                    &run.hprev,
                    &run.delta,
                    &mut scratch,
                    &mut norms,
                    1,
                );
                for (i, (a, b, c)) in per_example_grads.iter().enumerate() {
                    let want = dot(a, a) + dot(b, b) + dot(c, c);
                    assert_rel(&format!("{s_ih:?}/{s_hh:?} norm {i}"), norms[i] as f64, want, 1e-4);
                }
            }
        }
        // Kept gradients: each example's whole gradient, and its squared norm.
        let mut kept = vec![f32::NAN; batch * kept_len(&dims)];
        let mut norms = vec![0.25f32; batch];
        lstm_kept_norms_sq(
            &dims,
            batch,
            &run.x,
            &run.hprev,
            &run.delta,
            &mut kept,
            &mut norms,
            1,
            Precision::F32,
        );
        for (i, (a, b, c)) in per_example_grads.iter().enumerate() {
            let want: Vec<f64> = a.iter().chain(b).chain(c).copied().collect();
            let g = &kept[i * kept_len(&dims)..(i + 1) * kept_len(&dims)];
            assert_close(&format!("kept gradient {i}"), g, &want, 1e-4);
            assert_rel(&format!("kept norm {i}"), norms[i] as f64 - 0.25, dot(&want, &want), 1e-4);
        }
        // Example 1 is dropped and its saved activations are not finite.
        run.x[dims.input_len()] = f32::NAN;
        run.hprev[dims.output_len() + 1] = f32::INFINITY;
        run.delta[dims.gates_len() + 2] = f32::NAN;
        let factors = [0.5f32, 0.0, 3.0];
        let mut g_ih = vec![0.0f32; dims.weight_ih_len()];
        let mut g_hh = vec![0.0f32; dims.weight_hh_len()];
        let mut g_b = vec![0.0f32; 4 * dims.hidden];
        lstm_clipped_sum(
            &dims,
            batch,
            &factors,
            1,
            &mut run.x,
            &mut run.hprev,
            &mut run.delta,
            &mut g_ih,
            &mut g_hh,
            &mut g_b,
        );
        let sum = |pick: &dyn Fn(&Grads) -> &Vec<f64>, len: usize| -> Vec<f64> {
            (0..len)
                .map(|k| (0..batch).map(|i| factors[i] as f64 * pick(&per_example_grads[i])[k]).sum())
                .collect()
        };
        assert_close("clipped W_ih", &g_ih, &sum(&|g| &g.0, g_ih.len()), 1e-4);
        assert_close("clipped W_hh", &g_hh, &sum(&|g| &g.1, g_hh.len()), 1e-4);
        assert_close("clipped bias", &g_b, &sum(&|g| &g.2, g_b.len()), 1e-4);
        // The weighted sum of the kept gradients, example 1 dropped with a NaN in its gradient.
        kept[kept_len(&dims) + 3] = f32::NAN;
        let mut clipped = vec![0.0f32; kept_len(&dims)];
        per_example::stored_clipped_sum(batch, kept_len(&dims), &kept, &factors, 1, &mut clipped);
        let (ih, hh) = (dims.weight_ih_len(), dims.weight_hh_len());
        assert_close("kept clipped W_ih", &clipped[..ih], &sum(&|g| &g.0, ih), 1e-4);
        assert_close("kept clipped W_hh", &clipped[ih..ih + hh], &sum(&|g| &g.1, hh), 1e-4);
        assert_close("kept clipped bias", &clipped[ih + hh..], &sum(&|g| &g.2, 4 * dims.hidden), 1e-4);
    }

    #[test]
    fn non_private_gradients_are_the_sum_of_per_example_gradients() {
        let dims = LstmDims { steps: 4, input: 2, hidden: 3 };
        let batch = 2;
        let run = run(&dims, batch, 62);
        let mut g =
            (vec![0.0f32; dims.weight_ih_len()], vec![0.0f32; dims.weight_hh_len()], vec![0.0f32; 12]);
        lstm_weight_gradients(&dims, batch, &run.x, &run.hprev, &run.delta, &mut g.0, &mut g.1, &mut g.2);
        let (wi, wh, wb) = (wide(&run.w_ih), wide(&run.w_hh), wide(&run.bias));
        let total = |arg: usize| -> Vec<f64> {
            let mut acc: Vec<f64> = Vec::new();
            for i in 0..batch {
                let xi = wide(&run.x[i * dims.input_len()..(i + 1) * dims.input_len()]);
                let ri = wide(&run.r[i * dims.output_len()..(i + 1) * dims.output_len()]);
                let params = [&wi, &wh, &wb][arg];
                let gi = finite_difference(params, 1e-6, |p| {
                    let (a, b, c) = match arg {
                        0 => (p, &wh[..], &wb[..]),
                        1 => (&wi[..], p, &wb[..]),
                        _ => (&wi[..], &wh[..], p),
                    };
                    dot(&reference_forward(&dims, &xi, a, b, c), &ri)
                });
                acc.resize(gi.len(), 0.0);
                acc.iter_mut().zip(&gi).for_each(|(s, v)| *s += v);
            }
            acc
        };
        assert_close("W_ih", &g.0, &total(0), 1e-4);
        assert_close("W_hh", &g.1, &total(1), 1e-4);
        assert_close("bias", &g.2, &total(2), 1e-4);
    }

    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        // 4h = 520 bias columns: two column passes per half with two threads, three with more.
        let dims = LstmDims { steps: 5, input: 3, hidden: 130 };
        let batch = 5;
        let (rows, g4) = (batch * dims.steps, 4 * dims.hidden);
        let outcome = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let r = run(&dims, batch, 63);
                let mut g = (
                    vec![0.5f32; dims.weight_ih_len()],
                    vec![0.5f32; dims.weight_hh_len()],
                    vec![0.5f32; g4],
                );
                lstm_weight_gradients(&dims, batch, &r.x, &r.hprev, &r.delta, &mut g.0, &mut g.1, &mut g.2);
                (r, g)
            })
        };
        let (base, _) = outcome(1);
        // The weight gradients straight from their definition (plus the 0.5 they were added to).
        let sum = |a: &[f32], width: usize| -> Vec<f64> {
            let mut out = vec![0.5f64; g4 * width];
            for r in 0..rows {
                for p in 0..g4 {
                    for k in 0..width {
                        out[p * width + k] += base.delta[r * g4 + p] as f64 * a[r * width + k] as f64;
                    }
                }
            }
            out
        };
        let ones = vec![1.0f32; rows];
        let want = (sum(&base.x, dims.input), sum(&base.hprev, dims.hidden), sum(&ones, 1));
        for threads in [1, 2, 3, 4] {
            let (r, g) = outcome(threads);
            let what = |name: &str| format!("{name} with {threads} threads");
            assert_close(&what("out"), &r.out, &wide(&base.out), 1e-5);
            assert_close(&what("delta"), &r.delta, &wide(&base.delta), 1e-5);
            assert_close(&what("dx"), &r.dx, &wide(&base.dx), 1e-5);
            assert_close(&what("W_ih gradient"), &g.0, &want.0, 1e-5);
            assert_close(&what("W_hh gradient"), &g.1, &want.1, 1e-5);
            assert_close(&what("bias gradient"), &g.2, &want.2, 1e-5);
        }
    }

    #[test]
    fn empty_shapes_leave_gradients_unchanged() {
        for (dims, batch) in
            [(LstmDims { steps: 3, input: 2, hidden: 0 }, 2), (LstmDims { steps: 3, input: 2, hidden: 4 }, 0)]
        {
            let r = run(&dims, batch, 64);
            assert!(r.dx.iter().all(|&v| v == 0.0), "{dims:?} batch {batch}");
            let mut g = (
                vec![0.25f32; dims.weight_ih_len()],
                vec![0.25f32; dims.weight_hh_len()],
                vec![0.25f32; 4 * dims.hidden],
            );
            lstm_weight_gradients(&dims, batch, &r.x, &r.hprev, &r.delta, &mut g.0, &mut g.1, &mut g.2);
            assert!(g.0.iter().chain(&g.1).chain(&g.2).all(|&v| v == 0.25), "{dims:?} batch {batch}");
        }
    }
}
