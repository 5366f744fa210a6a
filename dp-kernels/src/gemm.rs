//! Dense f32 matrix products, row-major, on top of the `gemm` crate (AVX2/AVX-512 micro-kernels chosen
//! at run time; AVX-512 through its `x86-v4` feature).

use gemm::Parallelism;

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
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
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
    fn beta_zero_ignores_garbage_in_output() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32, 4.0];
        let mut c = [f32::NAN];
        sgemm(Op::N, Op::N, 1, 1, 2, 1.0, &a, &b, 0.0, &mut c);
        assert_eq!(c[0], 11.0);
    }
}
