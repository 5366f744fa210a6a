//! Fully connected layers over a batch: forward with the fused epilogue, backward, the per-example
//! gradient norms of the Goodfellow identity, and the clipped gradient sum by book-keeping.
//!
//! Layouts: activations `a` are `[rows, in]`, output gradients δ `[rows, out]`, the weight `[out, in]`
//! (PyTorch's), all row-major. Clip factors are `[rows, groups]`, example-major; a layer reads the
//! column of its own group.

use crate::activation::{bias_activation_forward, Activation};
use crate::fast_math::with_widest_vectors;
use crate::gemm::{sgemm, Op};
use crate::gemm_bf16::{gemm_in, Precision};
use rayon::prelude::*;

/// Rows·width below this run on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// y = act(a·Wᵀ + b): one GEMM (in `precision`), then the bias and activation in one pass over its
/// output.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    a: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    inputs: usize,
    outputs: usize,
    act: Activation,
    y: &mut [f32],
    precision: Precision,
) {
    gemm_in(precision, Op::N, Op::T, (rows, outputs, inputs), 1.0, a, weight, 0.0, y);
    bias_activation_forward(y, rows, outputs, bias, act);
}

/// The gradient with respect to the layer's input: g_a = δ·W (`[rows, in]`, overwritten), the
/// product in `precision`.
pub fn linear_input_grad(
    delta: &[f32],
    weight: &[f32],
    rows: usize,
    inputs: usize,
    outputs: usize,
    ga: &mut [f32],
    precision: Precision,
) {
    gemm_in(precision, Op::N, Op::N, (rows, inputs, outputs), 1.0, delta, weight, 0.0, ga);
}

/// Non-private accumulation: g_W += δᵀ·a (one GEMM), g_b += Σ_i δ_i.
#[allow(clippy::too_many_arguments)]
pub fn linear_grad_add(
    a: &[f32],
    delta: &[f32],
    rows: usize,
    inputs: usize,
    outputs: usize,
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) {
    sgemm(Op::T, Op::N, outputs, inputs, rows, 1.0, delta, a, 1.0, grad_weight);
    if let Some(gb) = grad_bias {
        column_sums_add(delta, rows, outputs, gb);
    }
}

/// `out[j] += Σ_i x[i, j]` over a `rows × cols` matrix.
pub fn column_sums_add(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    let out = &mut out[..cols];
    for row in x[..rows * cols].chunks_exact(cols) {
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
    }
}

/// `out[i] = ‖x_i‖²` for each row of a `rows × cols` matrix.
pub fn row_sq_norms(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    with_widest_vectors(
        #[inline(always)]
        || {
            for (o, row) in out[..rows].iter_mut().zip(x.chunks_exact(cols.max(1))) {
                *o = sq_norm(&row[..cols]);
            }
        },
    );
}

/// Lanes of independent partial sums in [`sq_norm`]: a sequential f32 sum cannot be vectorised (the
/// compiler may not reorder it); sixteen partial sums let it use full SIMD registers.
const SUM_LANES: usize = 16;

/// `‖v‖²` in sixteen f32 lanes. Always inlined, so that it takes the vector width of the
/// [`with_widest_vectors`] body that calls it.
#[inline(always)]
fn sq_norm(v: &[f32]) -> f32 {
    let mut partial = [0.0f32; SUM_LANES];
    let mut chunks = v.chunks_exact(SUM_LANES);
    for chunk in &mut chunks {
        for (p, &x) in partial.iter_mut().zip(chunk) {
            *p += x * x;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| x * x).sum();
    partial.iter().sum::<f32>() + tail
}

/// Per-example squared gradient norms of a linear layer that sees one position per example, from the
/// Goodfellow identity: ‖g_W‖² = ‖a_i‖²·‖δ_i‖², ‖g_b‖² = ‖δ_i‖². Writes column `group` of
/// `sq_norms` (`[rows, groups]`); no per-example gradient is ever formed.
#[allow(clippy::too_many_arguments)]
pub fn linear_ghost_sq_norms(
    a: &[f32],
    delta: &[f32],
    rows: usize,
    inputs: usize,
    outputs: usize,
    has_bias: bool,
    sq_norms: &mut [f32],
    groups: usize,
    group: usize,
) {
    assert!(group < groups && sq_norms.len() >= rows * groups);
    assert!(a.len() >= rows * inputs && delta.len() >= rows * outputs);
    // Rows `first..` of `sq_norms`: with AVX-512 intrinsics where the CPU has them, else one loop
    // compiled for the widest vectors.
    let rows_from = |first: usize, out: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the only feature the function enables.
            unsafe { x86::ghost_rows_avx512(a, delta, inputs, outputs, has_bias, first, out, groups, group) };
            return;
        }
        with_widest_vectors(
            #[inline(always)]
            || ghost_rows(sq_norm, a, delta, inputs, outputs, has_bias, first, out, groups, group),
        )
    };
    let sq_norms = &mut sq_norms[..rows * groups];
    if rows * (inputs + outputs) >= PARALLEL_MIN_ELEMS {
        let rows_per_task = rows.div_ceil(4 * rayon::current_num_threads());
        sq_norms
            .par_chunks_mut(rows_per_task * groups)
            .enumerate()
            .for_each(|(k, out)| rows_from(k * rows_per_task, out));
    } else {
        rows_from(0, sq_norms);
    }
}

/// The ghost norms of rows `first..` into column `group` of `out` (`[rows, groups]`), with `sq` for
/// `‖v‖²`. Always inlined, so that it takes the vector width of its caller.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ghost_rows(
    sq: impl Fn(&[f32]) -> f32,
    a: &[f32],
    delta: &[f32],
    inputs: usize,
    outputs: usize,
    has_bias: bool,
    first: usize,
    out: &mut [f32],
    groups: usize,
    group: usize,
) {
    for (k, row) in out.chunks_mut(groups).enumerate() {
        let i = first + k;
        let a2 = sq(&a[i * inputs..(i + 1) * inputs]);
        let d2 = sq(&delta[i * outputs..(i + 1) * outputs]);
        row[group] = a2 * d2 + if has_bias { d2 } else { 0.0 };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! `‖v‖²` with AVX-512 intrinsics: the compiler's vectorisation of [`super::sq_norm`] ends each
    //! short row in a chain of scalar adds; here the tail is one masked load and the sixteen lanes
    //! are added by one reduction.

    use std::arch::x86_64::*;

    /// Rows up to this long are summed in scalar code: cheaper than a vector reduction (a layer of
    /// one or two outputs has δ rows this short).
    const SCALAR_MAX_LEN: usize = 4;

    /// `‖v‖²` in two sixteen-lane accumulators; the last `len % 16` values by a masked load (lanes
    /// past the end are neither read nor counted).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn sq_norm_avx512(v: &[f32]) -> f32 {
        if v.len() <= SCALAR_MAX_LEN {
            return v.iter().map(|&x| x * x).sum();
        }
        let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut pairs = v.chunks_exact(32);
        for pair in &mut pairs {
            // SAFETY: each load reads 16 values inside `pair`, which holds 32.
            let (x, y) = unsafe { (_mm512_loadu_ps(pair.as_ptr()), _mm512_loadu_ps(pair.as_ptr().add(16))) };
            even = _mm512_add_ps(even, _mm512_mul_ps(x, x));
            odd = _mm512_add_ps(odd, _mm512_mul_ps(y, y));
        }
        let mut rest = pairs.remainder();
        if rest.len() >= 16 {
            // SAFETY: `rest` holds at least 16 values.
            let x = unsafe { _mm512_loadu_ps(rest.as_ptr()) };
            even = _mm512_add_ps(even, _mm512_mul_ps(x, x));
            rest = &rest[16..];
        }
        if !rest.is_empty() {
            let mask = ((1u32 << rest.len()) - 1) as __mmask16;
            // SAFETY: the mask enables the first `rest.len()` lanes only, all inside `rest`; masked-off
            // lanes are not accessed.
            let x = unsafe { _mm512_maskz_loadu_ps(mask, rest.as_ptr()) };
            odd = _mm512_add_ps(odd, _mm512_mul_ps(x, x));
        }
        _mm512_reduce_add_ps(_mm512_add_ps(even, odd))
    }

    /// [`super::ghost_rows`] with [`sq_norm_avx512`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) fn ghost_rows_avx512(
        a: &[f32],
        delta: &[f32],
        inputs: usize,
        outputs: usize,
        has_bias: bool,
        first: usize,
        out: &mut [f32],
        groups: usize,
        group: usize,
    ) {
        super::ghost_rows(
            |v| sq_norm_avx512(v),
            a,
            delta,
            inputs,
            outputs,
            has_bias,
            first,
            out,
            groups,
            group,
        );
    }
}

/// `dst_r = c_i·src_r` for each row r of example i = r / positions, with c_i the example's factor for
/// `group`; a row whose factor is exactly 0 becomes exactly 0 (never multiplied: 0·NaN would be NaN).
#[allow(clippy::too_many_arguments)]
pub fn scale_rows_into(
    src: &[f32],
    dst: &mut [f32],
    rows: usize,
    positions: usize,
    cols: usize,
    factors: &[f32],
    groups: usize,
    group: usize,
) {
    let dst = &mut dst[..rows * cols];
    for (r, d) in dst.chunks_exact_mut(cols.max(1)).enumerate() {
        let c = factors[(r / positions) * groups + group];
        let s = &src[r * cols..(r + 1) * cols];
        if c == 0.0 {
            d.fill(0.0);
        } else {
            d.iter_mut().zip(s).for_each(|(dv, &sv)| *dv = c * sv);
        }
    }
}

/// Copies `src` to `dst` with the rows of examples (`positions` rows each) whose factor for `group` is
/// exactly 0 zeroed.
#[allow(clippy::too_many_arguments)]
pub fn mask_rows_into(
    src: &[f32],
    dst: &mut [f32],
    rows: usize,
    positions: usize,
    cols: usize,
    factors: &[f32],
    groups: usize,
    group: usize,
) {
    let dst = &mut dst[..rows * cols];
    for (r, d) in dst.chunks_exact_mut(cols.max(1)).enumerate() {
        if factors[(r / positions) * groups + group] == 0.0 {
            d.fill(0.0);
        } else {
            d.copy_from_slice(&src[r * cols..(r + 1) * cols]);
        }
    }
}

/// Whether any of `examples` examples' factor for `group` is exactly 0.
pub fn any_zero_factor(factors: &[f32], examples: usize, groups: usize, group: usize) -> bool {
    (0..examples).any(|i| factors[i * groups + group] == 0.0)
}

/// The private accumulation of a linear layer by book-keeping, from the `a` and δ kept by the backward
/// pass: g_W += (c⊙Δ)ᵀ·A as ONE GEMM, g_b += Σ_i c_i δ_i. A layer applied at `positions` positions of
/// each example (a position-wise layer over a sequence; 1 for a vector) has `positions` consecutive
/// rows per example, all scaled by its factor. `scratch_delta` (`rows·out`) receives c⊙Δ;
/// `scratch_a` (`rows·in`) receives A with the rows of zero-factor examples zeroed, and is only
/// written when such an example exists, so a non-finite input of an excluded example never leaks.
#[allow(clippy::too_many_arguments)]
pub fn linear_clipped_grad_add(
    a: &[f32],
    delta: &[f32],
    rows: usize,
    positions: usize,
    inputs: usize,
    outputs: usize,
    factors: &[f32],
    groups: usize,
    group: usize,
    scratch_a: &mut [f32],
    scratch_delta: &mut [f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) {
    assert!(positions > 0 && rows.is_multiple_of(positions), "{rows} rows of {positions} positions");
    let examples = rows / positions;
    assert!(factors.len() >= examples * groups && group < groups);
    scale_rows_into(delta, scratch_delta, rows, positions, outputs, factors, groups, group);
    let a = if any_zero_factor(factors, examples, groups, group) {
        mask_rows_into(a, scratch_a, rows, positions, inputs, factors, groups, group);
        &scratch_a[..rows * inputs]
    } else {
        &a[..rows * inputs]
    };
    linear_grad_add(a, scratch_delta, rows, inputs, outputs, grad_weight, grad_bias);
}

/// A value uniform on [−bound, bound) from 32 random bits (24 of them used: an f32 mantissa).
#[inline]
pub fn uniform_from_bits(bits: u32, bound: f32) -> f32 {
    let unit = (bits >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
    (2.0 * unit - 1.0) * bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }

    /// Per-example gradients formed explicitly in f64: G_i = δ_i a_iᵀ.
    fn per_example_grads(a: &[f32], d: &[f32], rows: usize, n_in: usize, n_out: usize) -> Vec<Vec<f64>> {
        (0..rows)
            .map(|i| {
                let mut g = vec![0.0f64; n_out * n_in + n_out];
                for o in 0..n_out {
                    for j in 0..n_in {
                        g[o * n_in + j] = d[i * n_out + o] as f64 * a[i * n_in + j] as f64;
                    }
                    g[n_out * n_in + o] = d[i * n_out + o] as f64;
                }
                g
            })
            .collect()
    }

    #[test]
    fn forward_and_input_grad_match_f64() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (rows, n_in, n_out) = (5, 7, 3);
        let (a, w, b) =
            (random(&mut rng, rows * n_in), random(&mut rng, n_out * n_in), random(&mut rng, n_out));
        let mut y = vec![0.0f32; rows * n_out];
        linear_forward(
            &a,
            &w,
            Some(&b),
            rows,
            n_in,
            n_out,
            Activation::Tanh,
            &mut y,
            crate::gemm_bf16::Precision::F32,
        );
        let want: Vec<f64> = (0..rows * n_out)
            .map(|k| {
                let (i, o) = (k / n_out, k % n_out);
                let z: f64 = (0..n_in).map(|j| a[i * n_in + j] as f64 * w[o * n_in + j] as f64).sum::<f64>();
                (z + b[o] as f64).tanh()
            })
            .collect();
        assert_close(&y, &want, "forward");
        let d = random(&mut rng, rows * n_out);
        let mut ga = vec![f32::NAN; rows * n_in];
        linear_input_grad(&d, &w, rows, n_in, n_out, &mut ga, crate::gemm_bf16::Precision::F32);
        let want: Vec<f64> = (0..rows * n_in)
            .map(|k| {
                let (i, j) = (k / n_in, k % n_in);
                (0..n_out).map(|o| d[i * n_out + o] as f64 * w[o * n_in + j] as f64).sum()
            })
            .collect();
        assert_close(&ga, &want, "input grad");
    }

    #[test]
    fn ghost_norms_and_clipped_sum_match_explicit_per_example_gradients() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        // The second shape is large enough for the threaded norm path.
        for &(rows, n_in, n_out) in &[(4usize, 6usize, 3usize), (300, 100, 20)] {
            let (a, d) = (random(&mut rng, rows * n_in), random(&mut rng, rows * n_out));
            let explicit = per_example_grads(&a, &d, rows, n_in, n_out);
            let (groups, group) = (2, 1);
            let mut sq = vec![-1.0f32; rows * groups];
            linear_ghost_sq_norms(&a, &d, rows, n_in, n_out, true, &mut sq, groups, group);
            let want: Vec<f64> = explicit.iter().map(|g| g.iter().map(|v| v * v).sum()).collect();
            let got: Vec<f32> = (0..rows).map(|i| sq[i * groups + group]).collect();
            assert_close(&got, &want, "ghost norms");
            assert!((0..rows).all(|i| sq[i * groups] == -1.0), "another group's column was written");

            let factors: Vec<f32> =
                (0..rows * groups).map(|k| if k % 3 == 0 { 0.0 } else { 0.5 + k as f32 * 0.01 }).collect();
            let g0 = random(&mut rng, n_out * n_in + n_out);
            let mut gw = g0[..n_out * n_in].to_vec();
            let mut gb = g0[n_out * n_in..].to_vec();
            let (mut sa, mut sd) = (vec![f32::NAN; rows * n_in], vec![f32::NAN; rows * n_out]);
            linear_clipped_grad_add(
                &a,
                &d,
                rows,
                1,
                n_in,
                n_out,
                &factors,
                groups,
                group,
                &mut sa,
                &mut sd,
                &mut gw,
                Some(&mut gb),
            );
            let mut want: Vec<f64> = g0.iter().map(|&v| v as f64).collect();
            for (i, g) in explicit.iter().enumerate() {
                let c = factors[i * groups + group] as f64;
                want.iter_mut().zip(g).for_each(|(w, v)| *w += c * v);
            }
            assert_close(&gw, &want[..n_out * n_in], "clipped weight sum");
            assert_close(&gb, &want[n_out * n_in..], "clipped bias sum");
        }
    }

    #[test]
    fn squared_norms_match_f64_at_every_tail_length() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Each length is read from a longer slice whose next values are NaN: a kernel that read past
        // its slice would return NaN.
        for len in 0..=70 {
            let mut buf = random(&mut rng, len);
            buf.extend([f32::NAN; 16]);
            let v = &buf[..len];
            let want: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
            let portable = with_widest_vectors(
                #[inline(always)]
                || sq_norm(v),
            );
            let baseline = sq_norm(v);
            for (what, got) in [("widest", portable), ("baseline", baseline)] {
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * (1.0 + want),
                    "{what}, length {len}: {got} vs {want}"
                );
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                let got = unsafe { x86::sq_norm_avx512(v) };
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * (1.0 + want),
                    "avx512, length {len}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn zero_factor_rows_never_leak_non_finite_values() {
        let (rows, n_in, n_out) = (3, 2, 2);
        let mut a = vec![1.0f32; rows * n_in];
        let mut d = vec![0.5f32; rows * n_out];
        a[n_in] = f32::NAN; // example 1
        d[n_out + 1] = f32::INFINITY;
        let factors = [1.0f32, 0.0, 2.0];
        let (mut gw, mut gb) = (vec![0.0f32; n_out * n_in], vec![0.0f32; n_out]);
        let (mut sa, mut sd) = (vec![0.0; rows * n_in], vec![0.0; rows * n_out]);
        linear_clipped_grad_add(
            &a,
            &d,
            rows,
            1,
            n_in,
            n_out,
            &factors,
            1,
            0,
            &mut sa,
            &mut sd,
            &mut gw,
            Some(&mut gb),
        );
        assert!(gw.iter().all(|&v| v == 1.5), "{gw:?}");
        assert!(gb.iter().all(|&v| v == 1.5), "{gb:?}");
    }

    #[test]
    fn non_private_sum_and_small_helpers() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let d = [1.0f32, -1.0];
        let (mut gw, mut gb) = ([1.0f32; 2], [0.0f32; 1]);
        linear_grad_add(&a, &d, 2, 2, 1, &mut gw, Some(&mut gb));
        assert_eq!(gw, [1.0 + 1.0 - 3.0, 1.0 + 2.0 - 4.0]);
        assert_eq!(gb, [0.0]);
        let mut n = [0.0f32; 2];
        row_sq_norms(&a, 2, 2, &mut n);
        assert_eq!(n, [5.0, 25.0]);
        let mut c = [0.0f32; 2];
        column_sums_add(&a, 2, 2, &mut c);
        assert_eq!(c, [4.0, 6.0]);
        assert!(any_zero_factor(&[1.0, 0.0, 1.0, 1.0], 2, 2, 1));
        assert!(!any_zero_factor(&[1.0, 0.0, 1.0, 1.0], 2, 2, 0));
        for bits in [0u32, u32::MAX, 0x8000_0000] {
            let v = uniform_from_bits(bits, 0.5);
            assert!((-0.5..0.5).contains(&v));
        }
        assert_eq!(uniform_from_bits(0, 0.5), -0.5);
    }
}
