//! Dense f32 matrix products, row-major, on top of the `gemm` crate's f32 kernels (`gemm-f32`:
//! AVX2/AVX-512 micro-kernels chosen at run time; AVX-512 through its `x86-v4` feature).

use gemm_common::Parallelism;

/// Products smaller than this many multiply-adds run on the calling thread: below it, waking the
/// thread pool costs more than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Use the matrix as stored.
    N,
    /// Use its transpose.
    T,
}

/// `c = beta·c + alpha·op(a)·op(b)` with `c` an `m×n` row-major matrix, `op(a)` `m×k` and `op(b)`
/// `k×n`. `a` is stored row-major as `m×k` (`Op::N`) or `k×m` (`Op::T`); `b` as `k×n` or `n×k`.
/// With `beta == 0.0` the old contents of `c` are never read (NaN in `c` does not propagate).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    op_a: Op,
    op_b: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    let parallel = m * n * k >= PARALLEL_MIN_MACS;
    sgemm_with(parallel, op_a, op_b, m, n, k, alpha, a, b, beta, c);
}

/// A matrix product with [`sgemm`]'s signature: [`sgemm`] itself or [`sgemm_serial`].
pub type Product = fn(Op, Op, usize, usize, usize, f32, &[f32], &[f32], f32, &mut [f32]);

/// The product for one of several independent products that run in parallel with each other
/// ([`sgemm_serial`]), or for one that runs alone ([`sgemm`], threaded when large enough).
pub fn product_for(runs_in_parallel: bool) -> Product {
    if runs_in_parallel {
        sgemm_serial
    } else {
        sgemm
    }
}

/// [`sgemm`] on the calling thread only, for products inside a loop that is already parallel (one
/// product per example): nesting the GEMM's own threads there only adds hand-offs.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_serial(
    op_a: Op,
    op_b: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    sgemm_with(false, op_a, op_b, m, n, k, alpha, a, b, beta, c);
}

/// A row-major matrix operand inside a larger buffer: its rows start `stride` values apart (a head's
/// columns of a `[T, 3d]` projection, say), used as stored (`Op::N`) or transposed (`Op::T`).
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub op: Op,
}

/// `c = beta·c + alpha·op(a)·op(b)` on the calling thread, every operand with its own row stride:
/// `op(a)` is `m×k`, `op(b)` `k×n`, `c` `m×n` with rows `c_stride` apart (only its `m×n` entries are
/// touched). For products inside a loop that is already parallel (attention heads per example).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided_serial(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Strided<'_>,
    b: Strided<'_>,
    beta: f32,
    c: &mut [f32],
    c_stride: usize,
) {
    /// The values a `rows×cols` matrix with rows `stride` apart reaches (0 for an empty one).
    fn reach(rows: usize, cols: usize, stride: usize) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * stride + cols
        }
    }
    /// (rows, cols) as stored, and the (row, column) strides of the operand as used.
    fn layout(x: &Strided<'_>, rows_used: usize, cols_used: usize) -> ((usize, usize), (isize, isize)) {
        match x.op {
            Op::N => ((rows_used, cols_used), (x.stride as isize, 1)),
            Op::T => ((cols_used, rows_used), (1, x.stride as isize)),
        }
    }
    let ((ar, ac), (a_rs, a_cs)) = layout(&a, m, k);
    let ((br, bc), (b_rs, b_cs)) = layout(&b, k, n);
    assert!(ac <= a.stride || ar <= 1, "sgemm_strided: a's rows overlap");
    assert!(bc <= b.stride || br <= 1, "sgemm_strided: b's rows overlap");
    assert!(n <= c_stride || m <= 1, "sgemm_strided: c's rows overlap");
    assert!(a.data.len() >= reach(ar, ac, a.stride), "sgemm_strided: a has {} values", a.data.len());
    assert!(b.data.len() >= reach(br, bc, b.stride), "sgemm_strided: b has {} values", b.data.len());
    assert!(c.len() >= reach(m, n, c_stride), "sgemm_strided: c has {} values", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in 0..m {
            scale(&mut c[row * c_stride..], n, beta);
        }
        return;
    }
    // SAFETY: the asserts above bound every index the strides reach: the largest offset of each
    // operand is (rows − 1)·row stride + (cols − 1), inside its slice, and c's rows do not overlap.
    unsafe {
        call_gemm(
            (m, n, k),
            (c.as_mut_ptr(), c_stride as isize),
            (a.data.as_ptr(), a_rs, a_cs),
            (b.data.as_ptr(), b_rs, b_cs),
            (alpha, beta),
            Parallelism::None,
        );
    }
}

/// `c = beta·c + alpha·a·b` through the `gemm` crate's f32 kernels, every operand a pointer with
/// its (row, column) strides (`c`'s column stride 1).
///
/// # Safety
/// Every index the strides reach for an `m×k` `a`, a `k×n` `b` and an `m×n` `c` must be inside the
/// operand's allocation, and `c`'s entries must not overlap each other or `a` and `b`.
unsafe fn call_gemm(
    (m, n, k): (usize, usize, usize),
    (c, c_rs): (*mut f32, isize),
    (a, a_rs, a_cs): (*const f32, isize, isize),
    (b, b_rs, b_cs): (*const f32, isize, isize),
    (alpha, beta): (f32, f32),
    parallelism: Parallelism,
) {
    // The kernels take column strides first and scale the destination by their `alpha`, the product
    // by their `beta`. They prefer a column-major destination, so a row-major `c` is computed as
    // `cᵀ = bᵀ·aᵀ` (as the crate's own front end does; no stride here is negative).
    let gemm = gemm_f32::gemm::f32::get_gemm_fn();
    let ((m, n), (dst_cs, dst_rs), (lhs, lhs_cs, lhs_rs), (rhs, rhs_cs, rhs_rs)) = if 1 < c_rs.abs() {
        ((n, m), (c_rs, 1), (b, b_rs, b_cs), (a, a_rs, a_cs))
    } else {
        ((m, n), (1, c_rs), (a, a_cs, a_rs), (b, b_cs, b_rs))
    };
    // SAFETY: the caller's contract; the transposed call reaches the same entries.
    unsafe {
        gemm(
            m,
            n,
            k,
            c,
            dst_cs,
            dst_rs,
            beta != 0.0,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    parallel: bool,
    op_a: Op,
    op_b: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    assert!(a.len() >= m * k, "sgemm: a has {} values, needs {}", a.len(), m * k);
    assert!(b.len() >= k * n, "sgemm: b has {} values, needs {}", b.len(), k * n);
    assert!(c.len() >= m * n, "sgemm: c has {} values, needs {}", c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale(c, m * n, beta);
        return;
    }
    // (row stride, column stride) of each operand as used.
    let (a_rs, a_cs) = match op_a {
        Op::N => (k as isize, 1),
        Op::T => (1, m as isize),
    };
    let (b_rs, b_cs) = match op_b {
        Op::N => (n as isize, 1),
        Op::T => (1, k as isize),
    };
    let parallelism = if parallel { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: the asserts above bound every index the strides reach: a row-major m×k (or k×m)
    // matrix with these strides addresses exactly a[0..m*k], likewise b and c.
    unsafe {
        call_gemm(
            (m, n, k),
            (c.as_mut_ptr(), n as isize),
            (a.as_ptr(), a_rs, a_cs),
            (b.as_ptr(), b_rs, b_cs),
            (alpha, beta),
            parallelism,
        );
    }
}

fn scale(c: &mut [f32], len: usize, beta: f32) {
    for v in &mut c[..len] {
        *v = if beta == 0.0 { 0.0 } else { *v * beta };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(op_a: Op, op_b: Op, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = match op_a {
                        Op::N => a[i * k + p],
                        Op::T => a[p * m + i],
                    };
                    let bv = match op_b {
                        Op::N => b[p * n + j],
                        Op::T => b[j * k + p],
                    };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_for_every_transpose_and_accumulates() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (64, 33, 17), (130, 70, 90)] {
            for op_a in [Op::N, Op::T] {
                for op_b in [Op::N, Op::T] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let want = naive(op_a, op_b, m, n, k, &a, &b);
                    for serial in [false, true] {
                        let mut c = c0.clone();
                        let product = product_for(serial);
                        product(op_a, op_b, m, n, k, 0.5, &a, &b, 2.0, &mut c);
                        for i in 0..m * n {
                            let w = 2.0 * c0[i] as f64 + 0.5 * want[i];
                            assert!(
                                (c[i] as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                                "{m}x{n}x{k} {op_a:?}{op_b:?} serial {serial}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strided_products_match_naive_on_column_blocks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let (m, n, k, extra) = (5, 4, 3, 2);
        for op_a in [Op::N, Op::T] {
            for op_b in [Op::N, Op::T] {
                let (ar, ac) = if op_a == Op::N { (m, k) } else { (k, m) };
                let (br, bc) = if op_b == Op::N { (k, n) } else { (n, k) };
                let (sa, sb, sc) = (ac + extra, bc + extra + 1, n + extra);
                let a: Vec<f32> = (0..ar * sa).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..br * sb).map(|_| rng.random_range(-1.0..1.0)).collect();
                let dense_a: Vec<f32> = (0..ar).flat_map(|r| a[r * sa..r * sa + ac].to_vec()).collect();
                let dense_b: Vec<f32> = (0..br).flat_map(|r| b[r * sb..r * sb + bc].to_vec()).collect();
                let want = naive(op_a, op_b, m, n, k, &dense_a, &dense_b);
                let mut c = vec![7.0f32; m * sc];
                let (a, b) =
                    (Strided { data: &a, stride: sa, op: op_a }, Strided { data: &b, stride: sb, op: op_b });
                sgemm_strided_serial(m, n, k, 0.5, a, b, 0.0, &mut c, sc);
                for i in 0..m {
                    for j in 0..sc {
                        let got = c[i * sc + j] as f64;
                        let w = if j < n { 0.5 * want[i * n + j] } else { 7.0 };
                        assert!((got - w).abs() < 1e-5, "{op_a:?}{op_b:?} ({i}, {j}): {got} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_garbage_in_output() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32, 4.0];
        let mut c = [f32::NAN];
        sgemm(Op::N, Op::N, 1, 1, 2, 1.0, &a, &b, 0.0, &mut c);
        assert_eq!(c[0], 11.0);
    }
}
