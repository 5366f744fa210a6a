//! The products of a device program on a GPU ([`DeviceOps::gemm`](dp_runtime::device::DeviceOps::gemm),
//! `gemm_batched`, `gemm_batched_rows`) through cuBLAS: row-major operands as the transposed
//! column-major ones cuBLAS reads, so no copy is made.

use cudarc::cublas::{result as blas, sys as blas_sys};
use dp_runtime::device::{BatchedGemm, DeviceError, Gemm, LeadingDims, Operands, Precision};

use super::{int, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

impl GpuOps<'_> {
    /// The reduced-precision compute type of a product that may round its operands in bf16: bf16
    /// tensor-core products accumulated in f32 (`CUBLAS_COMPUTE_32F_FAST_16BF`: cuBLAS converts the
    /// f32 operands itself; its rounding is not specified to be the CPU's round-to-nearest-even bit for
    /// bit, hence the bf16 GPU tests' tolerance). `None`: the f32 product.
    fn reduced_compute(&self, g: &Gemm) -> Option<blas_sys::cublasComputeType_t> {
        match (self.precision, g.operands) {
            (Precision::Bf16, Operands::OfPrecision) => {
                Some(blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF)
            }
            (Precision::F32, _) | (Precision::Bf16, Operands::F32) => None,
        }
    }
}

/// cuBLAS's operation for an operand stored transposed or not.
fn op(transposed: bool) -> blas_sys::cublasOperation_t {
    if transposed {
        blas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        blas_sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// A row-major product `C = op(A)·op(B)` as the column-major one cuBLAS computes, `Cᵀ = op(B)ᵀ·op(A)ᵀ`:
/// B first, each operand's leading dimension the row length it is stored with (at least 1, as cuBLAS
/// requires even when k = 0), no copy made. Both `cublasSgemm` and its strided batch take these.
struct ColumnMajor {
    op_b: blas_sys::cublasOperation_t,
    op_a: blas_sys::cublasOperation_t,
    /// cuBLAS's m, n, k: the row-major n, m, k.
    dims: [i32; 3],
    ldb: i32,
    lda: i32,
    /// C's leading dimension: its row length.
    ldc: i32,
    alpha: f32,
    /// 0 (overwrite) or 1 (accumulate).
    beta: f32,
}

impl ColumnMajor {
    fn of(g: &Gemm) -> std::result::Result<Self, DeviceError> {
        let ldb = if g.b_transposed { g.k } else { g.n }.max(1);
        let lda = if g.a_transposed { g.m } else { g.k }.max(1);
        Ok(ColumnMajor {
            op_b: op(g.b_transposed),
            op_a: op(g.a_transposed),
            dims: [int(g.n)?, int(g.m)?, int(g.k)?],
            ldb: int(ldb)?,
            lda: int(lda)?,
            ldc: int(g.n)?,
            alpha: 1.0,
            beta: if g.accumulate { 1.0 } else { 0.0 },
        })
    }
}

/// One product ([`DeviceOps::gemm`]): `cublasSgemm` in f32 (the path that ran on the H200), or
/// `cublasGemmEx` on the same f32 matrices with bf16 tensor-core compute where
/// [`GpuOps::reduced_compute`] gives one.
pub(super) fn gemm(ops: &GpuOps<'_>, g: Gemm) -> std::result::Result<(), DeviceError> {
    g.check()?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    let (a, b, c) = (ops.memory.ptr(g.a)?, ops.memory.ptr(g.b)?, ops.memory.ptr(g.c)?);
    let cm = ColumnMajor::of(&g)?;
    let [m, n, k] = cm.dims;
    let handle = *ops.gpu.blas.handle();
    let Some(compute) = ops.reduced_compute(&g) else {
        // SAFETY: the addresses lie in their regions with the lengths `check` verified; cuBLAS runs
        // on the GPU's stream, like every other launch.
        return unsafe {
            blas::sgemm(
                handle,
                cm.op_b,
                cm.op_a,
                m,
                n,
                k,
                &cm.alpha,
                b as *const f32,
                cm.ldb,
                a as *const f32,
                cm.lda,
                &cm.beta,
                c as *mut f32,
                cm.ldc,
            )
        }
        .map_err(|e| DeviceError::Backend(format!("cublasSgemm: {e}")));
    };
    let f32_type = blas_sys::cudaDataType::CUDA_R_32F;
    // SAFETY: as above, each operand an f32 matrix as the data types say; alpha and beta are f32, as
    // an f32-accumulating compute type requires.
    unsafe {
        blas::gemm_ex(
            handle,
            cm.op_b,
            cm.op_a,
            m,
            n,
            k,
            (&cm.alpha as *const f32).cast(),
            b as *const std::ffi::c_void,
            f32_type,
            cm.ldb,
            a as *const std::ffi::c_void,
            f32_type,
            cm.lda,
            (&cm.beta as *const f32).cast(),
            c as *mut std::ffi::c_void,
            f32_type,
            cm.ldc,
            compute,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| DeviceError::Backend(format!("cublasGemmEx: {e}")))
}

/// A strided batch of products: one `cublasSgemmStridedBatched` (or its bf16 `Ex` form) with `gemm`'s
/// row-major trick, or, where the batch's outputs overlap (a shared `c`, stride below `m·n`), one
/// product per example in batch order, so that the products accumulate into it one after another
/// instead of racing.
pub(super) fn gemm_batched(ops: &GpuOps<'_>, bg: BatchedGemm) -> Outcome {
    bg.check()?;
    let g = bg.gemm;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    if bg.batch > 1 && bg.stride_c < g.m * g.n {
        for b in 0..bg.batch {
            let product = Gemm {
                a: g.a.sub(b * bg.stride_a, g.m * g.k),
                b: g.b.sub(b * bg.stride_b, g.k * g.n),
                c: g.c.sub(b * bg.stride_c, g.m * g.n),
                ..g
            };
            gemm(ops, product)?;
        }
        return Ok(());
    }
    strided_batched(ops, &bg, &ColumnMajor::of(&g)?)
}

/// One `cublasSgemmStridedBatched` (or its bf16 `Ex` form) of `bg` with the operands' layouts `cm`,
/// the batch already checked against its spans and its outputs not overlapping.
fn strided_batched(ops: &GpuOps<'_>, bg: &BatchedGemm, cm: &ColumnMajor) -> Outcome {
    let g = bg.gemm;
    let (a, b, c) = (ops.memory.ptr(g.a)?, ops.memory.ptr(g.b)?, ops.memory.ptr(g.c)?);
    let [m, n, k] = cm.dims;
    let stride = |s: usize| {
        i64::try_from(s).map_err(|_| DeviceError::Mismatch(format!("a batch stride of {s} values")))
    };
    let handle = *ops.gpu.blas.handle();
    let (stride_a, stride_b, stride_c) = (stride(bg.stride_a)?, stride(bg.stride_b)?, stride(bg.stride_c)?);
    let Some(compute) = ops.reduced_compute(&g) else {
        // SAFETY: the addresses lie in their regions, and `check` verified that each span holds every
        // operand of the batch at its stride; the outputs do not overlap (stride_c ≥ m·n or one
        // product). cuBLAS runs on the GPU's stream, like every other launch.
        return unsafe {
            blas::sgemm_strided_batched(
                handle,
                cm.op_b,
                cm.op_a,
                m,
                n,
                k,
                &cm.alpha,
                b as *const f32,
                cm.ldb,
                stride_b,
                a as *const f32,
                cm.lda,
                stride_a,
                &cm.beta,
                c as *mut f32,
                cm.ldc,
                stride_c,
                int(bg.batch)?,
            )
        }
        .map_err(|e| DeviceError::Backend(format!("cublasSgemmStridedBatched: {e}")));
    };
    let f32_type = blas_sys::cudaDataType::CUDA_R_32F;
    // SAFETY: as above, each operand an f32 matrix as the data types say; alpha and beta are f32, as
    // an f32-accumulating compute type requires.
    unsafe {
        blas::gemm_strided_batched_ex(
            handle,
            cm.op_b,
            cm.op_a,
            m,
            n,
            k,
            (&cm.alpha as *const f32).cast(),
            b as *const std::ffi::c_void,
            f32_type,
            cm.ldb,
            stride_b,
            a as *const std::ffi::c_void,
            f32_type,
            cm.lda,
            stride_a,
            (&cm.beta as *const f32).cast(),
            c as *mut std::ffi::c_void,
            f32_type,
            cm.ldc,
            stride_c,
            int(bg.batch)?,
            compute,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| DeviceError::Backend(format!("cublasGemmStridedBatchedEx: {e}")))
}

pub(super) fn gemm_batched_rows(ops: &GpuOps<'_>, bg: BatchedGemm, ld: LeadingDims) -> Outcome {
    ld.check(&bg)?;
    let g = bg.gemm;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    strided_batched(ops, &bg, &in_rows(&g, ld)?)
}

/// Row-major operands stored with row length `ld` are, to cuBLAS, column-major with leading
/// dimension `ld` (at least 1, as cuBLAS requires).
fn in_rows(g: &Gemm, ld: LeadingDims) -> std::result::Result<ColumnMajor, DeviceError> {
    let mut cm = ColumnMajor::of(g)?;
    (cm.lda, cm.ldb, cm.ldc) = (int(ld.a.max(1))?, int(ld.b.max(1))?, int(ld.c.max(1))?);
    Ok(cm)
}

#[cfg(test)]
mod tests {
    use cudarc::cublas::sys::cublasOperation_t;
    use dp_runtime::device::host::HostDevice;
    use dp_runtime::device::{DeviceOps, Operands, Region, Span};

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
