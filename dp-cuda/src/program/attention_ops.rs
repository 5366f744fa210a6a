//! The bodies of [`GpuOps`]' attention primitives (`DeviceOps::gemm_batched_rows`,
//! `attention_softmax`, `attention_softmax_backward` and `fill`): products over matrices stored inside
//! wider rows through cuBLAS's strided batched GEMM with those row lengths as leading dimensions, the
//! rest through `kernels/attention.cu` (one warp per row of the softmax). Each checks its spans against the shapes
//! (and, through [`RegionMemory::ptr`](super::RegionMemory::ptr), against their regions) before it
//! queues anything.

use cudarc::driver::PushKernelArg;
use dp_runtime::device::{BatchedGemm, DeviceError, Gemm, LeadingDims, Span};

use super::{backend, conv_ops, elementwise, int, k, ColumnMajor, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

pub(super) fn gemm_batched_rows(ops: &GpuOps<'_>, bg: BatchedGemm, ld: LeadingDims) -> Outcome {
    ld.check(&bg)?;
    let g = bg.gemm;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    conv_ops::strided_batched(ops, &bg, &in_rows(&g, ld)?)
}

/// Row-major operands stored with row length `ld` are, to cuBLAS, column-major with leading
/// dimension `ld` (at least 1, as cuBLAS requires).
fn in_rows(g: &Gemm, ld: LeadingDims) -> std::result::Result<ColumnMajor, DeviceError> {
    let mut cm = ColumnMajor::of(g)?;
    (cm.lda, cm.ldb, cm.ldc) = (int(ld.a.max(1))?, int(ld.b.max(1))?, int(ld.c.max(1))?);
    Ok(cm)
}

pub(super) fn softmax(
    ops: &GpuOps<'_>,
    scores: Span,
    (blocks, steps): (usize, usize),
    scale: f32,
    causal: bool,
) -> Outcome {
    let rows = blocks * steps;
    ops.check("attention_softmax", &[(scores, rows * steps)])?;
    if rows == 0 {
        return Ok(());
    }
    let (s, rows64, steps64, causal) =
        (ops.memory.ptr(scores)?, rows as u64, steps as u64, i32::from(causal));
    // A warp per row.
    launch!(ops, k::ATTENTION_SOFTMAX, "dp_attention_softmax", elementwise(rows * 32);
        &s, &rows64, &steps64, &scale, &causal)
}

pub(super) fn softmax_backward(
    ops: &GpuOps<'_>,
    probs: Span,
    grad: Span,
    (blocks, steps): (usize, usize),
    scale: f32,
) -> Outcome {
    let rows = blocks * steps;
    ops.check("attention_softmax_backward", &[(probs, rows * steps), (grad, rows * steps)])?;
    if rows == 0 {
        return Ok(());
    }
    let (p, g, rows64, steps64) = (ops.memory.ptr(probs)?, ops.memory.ptr(grad)?, rows as u64, steps as u64);
    launch!(ops, k::ATTENTION_SOFTMAX_BACKWARD, "dp_attention_softmax_backward", elementwise(rows * 32);
        &p, &g, &rows64, &steps64, &scale)
}

pub(super) fn fill(ops: &GpuOps<'_>, dst: Span, len: usize, value: f32) -> Outcome {
    ops.check("fill", &[(dst, len)])?;
    if len == 0 {
        return Ok(());
    }
    let (d, len64) = (ops.memory.ptr(dst)?, len as u64);
    launch!(ops, k::FILL, "dp_fill", elementwise(len); &d, &len64, &value)
}

#[cfg(test)]
mod tests {
    use cudarc::cublas::sys::cublasOperation_t;
    use dp_runtime::device::host::HostDevice;
    use dp_runtime::device::{DeviceOps, Operands, Region};

    use super::*;

    /// `cublasSgemmStridedBatched` as its documentation defines it, column-major, refusing the leading
    /// dimensions it refuses: `C_b = alpha·op(A_b)·op(B_b) + beta·C_b` (beta 0: C not read).
    #[allow(clippy::too_many_arguments)]
    fn cublas_strided_batched(
        (op_a, op_b): (cublasOperation_t, cublasOperation_t),
        [m, n, k]: [i32; 3],
        (alpha, beta): (f32, f32),
        (a, lda, stride_a): (&[f32], i32, usize),
        (b, ldb, stride_b): (&[f32], i32, usize),
        (c, ldc, stride_c): (&mut [f32], i32, usize),
        batch: usize,
    ) {
        let (ta, tb) = (op_a == cublasOperation_t::CUBLAS_OP_T, op_b == cublasOperation_t::CUBLAS_OP_T);
        let [m, n, k, lda, ldb, ldc] = [m, n, k, lda, ldb, ldc].map(|v| usize::try_from(v).unwrap());
        assert!(lda >= (if ta { k } else { m }).max(1), "cuBLAS refuses lda {lda}");
        assert!(ldb >= (if tb { n } else { k }).max(1), "cuBLAS refuses ldb {ldb}");
        assert!(ldc >= m.max(1), "cuBLAS refuses ldc {ldc}");
        for e in 0..batch {
            let (a, b, c0) = (&a[e * stride_a..], &b[e * stride_b..], e * stride_c);
            for j in 0..n {
                for i in 0..m {
                    let mut sum = 0.0f64;
                    for p in 0..k {
                        let av = if ta { a[p + i * lda] } else { a[i + p * lda] };
                        let bv = if tb { b[j + p * ldb] } else { b[p + j * ldb] };
                        sum += f64::from(av) * f64::from(bv);
                    }
                    let cell = &mut c[c0 + i + j * ldc];
                    *cell = alpha * sum as f32 + if beta == 0.0 { 0.0 } else { beta * *cell };
                }
            }
        }
    }

    /// The cuBLAS call `gemm_batched_rows` makes from [`in_rows`] (B first, as `strided_batched`
    /// passes it) computes what `HostDevice` computes, for every transpose combination, operands
    /// inside wider rows, a batch of two and both overwrite and accumulate, the values around the
    /// matrices untouched.
    #[test]
    fn products_in_rows_map_to_cublas_as_the_host_reference_computes_them() {
        let (m, n, k, batch) = (3, 4, 5, 2);
        for (a_transposed, b_transposed, accumulate) in (0..8).map(|c| (c & 1 == 1, c & 2 == 2, c & 4 == 4)) {
            let (a_cols, a_rows) = if a_transposed { (m, k) } else { (k, m) };
            let (b_cols, b_rows) = if b_transposed { (k, n) } else { (n, k) };
            let ld = LeadingDims { a: a_cols + 2, b: b_cols + 3, c: n + 1 };
            let (stride_a, stride_b, stride_c) = (a_rows * ld.a + 1, b_rows * ld.b, m * ld.c + 2);
            let values = |len: usize, seed: usize| -> Vec<f32> {
                (0..len).map(|i| ((i * 7 + seed * 3) % 11) as f32 - 5.0).collect()
            };
            let (a, b, c) =
                (values(stride_a * batch, 1), values(stride_b * batch, 2), values(stride_c * batch, 3));
            let g = Gemm {
                m,
                n,
                k,
                a: Span::new(Region::Params, 0, a.len()),
                a_transposed,
                b: Span::new(Region::Inputs, 0, b.len()),
                b_transposed,
                c: Span::new(Region::Arena, 0, c.len()),
                accumulate,
                operands: Operands::F32,
            };
            let bg = BatchedGemm { gemm: g, batch, stride_a, stride_b, stride_c };
            let mut host = HostDevice::new();
            host.set(Region::Params, a.clone());
            host.set(Region::Inputs, b.clone());
            host.set(Region::Arena, c.clone());
            host.gemm_batched_rows(bg, ld).unwrap();

            let cm = in_rows(&g, ld).unwrap();
            let mut device = c.clone();
            cublas_strided_batched(
                (cm.op_b, cm.op_a),
                cm.dims,
                (cm.alpha, cm.beta),
                (&b, cm.ldb, stride_b),
                (&a, cm.lda, stride_a),
                (&mut device, cm.ldc, stride_c),
                batch,
            );
            assert_eq!(
                device,
                host.get(Region::Arena)[..c.len()],
                "a transposed {a_transposed}, b transposed {b_transposed}, accumulate {accumulate}"
            );
        }
    }
}
