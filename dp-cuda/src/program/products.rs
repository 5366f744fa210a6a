//! The products of a device program on a GPU ([`DeviceOps::gemm`](dp_runtime::device::DeviceOps::gemm),
//! `gemm_batched`, `gemm_batched_rows`) through cuBLAS: row-major operands as the transposed
//! column-major ones cuBLAS reads, so no copy is made.
//!
//! Each product runs by a [`ProductPlan`] made from its precision, its mark and the types its spans
//! are stored in:
//! - storing every buffer in f32 (f32, or bf16 products only): `cublasSgemm` (the path that ran on
//!   the H200), or in bf16 `cublasGemmEx` on the f32 matrices with `CUBLAS_COMPUTE_32F_FAST_16BF`
//!   (cuBLAS rounds the operands itself, by a rounding it does not specify);
//! - storing in bf16 (docs/GPU.md, "bf16 storage"): cuBLAS wants A and B of one type, so an operand
//!   stored in the other type is converted into its slot of that type first (`kernels/storage.cu`;
//!   rounded as the host reference rounds, or widened exactly). A product in bf16, or one whose
//!   operands are both stored in bf16 (their products are exact in f32), multiplies bf16 operands on
//!   the tensor cores with f32 accumulation into C of its stored type; any other product is an f32
//!   product, through C's f32 slot when C is stored in bf16, converted back after. This is the host
//!   reference's arithmetic: bf16 products read operands rounded to bf16, f32 products the stored
//!   values, and an output stored in bf16 is rounded once.

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::sys::CUdeviceptr;
use dp_runtime::device::{BatchedGemm, DeviceError, Gemm, LeadingDims, Operands, Precision, Span};

use super::conversions::convert;
use super::memory::{Addresses, Operand, ValueType};
use super::{int, GpuOps};

type Outcome = std::result::Result<(), DeviceError>;

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

/// How cuBLAS multiplies a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    /// `cublasSgemm`: f32 operands, f32 products.
    F32,
    /// `cublasGemmEx` on f32 operands with `CUBLAS_COMPUTE_32F_FAST_16BF`: cuBLAS rounds them to bf16.
    RoundedByCublas,
    /// `cublasGemmEx` on bf16 operands with `CUBLAS_COMPUTE_32F`: exact products, f32 accumulation.
    Bf16Operands,
}

/// Where a product writes C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// C's own slot, in the type it is stored in.
    Stored(ValueType),
    /// An f32 product into C's f32 slot, C's stored values widened into it first (so that what the
    /// product does not write, or adds to, is C's) and the slot rounded back into C after.
    ThroughF32,
}

/// How one product runs, from its spans' stored types ([`plan_product`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductPlan {
    pub compute: Compute,
    /// The type A and B are multiplied in (cuBLAS wants one for both).
    pub operands: ValueType,
    /// Whether A (B) is converted into its slot of type `operands` first.
    pub convert_a: bool,
    pub convert_b: bool,
    pub output: Output,
}

/// How `g` runs on a GPU whose regions are at `addresses` in `precision`: its plan, or the error its
/// launch would give (a span outside its region, an operand with no bf16 store to convert into, a
/// conversion over a slot the product uses). A strided batch is planned as its first product, with
/// the spans of the whole batch.
pub fn plan_product(
    addresses: &Addresses,
    precision: Precision,
    g: &Gemm,
) -> std::result::Result<ProductPlan, DeviceError> {
    let types = [addresses.stored_type(g.a)?, addresses.stored_type(g.b)?, addresses.stored_type(g.c)?];
    let bf16_product = match (precision, g.operands) {
        (Precision::Bf16, Operands::OfPrecision) => true,
        (Precision::F32, _) | (Precision::Bf16, Operands::F32) => false,
    };
    let plan = ProductPlan::of(addresses.storing_bf16(), bf16_product, types);
    if addresses.storing_bf16() {
        plan.check_slots(g, addresses)?;
        // The slots the conversions write must exist (a region without a bf16 store cannot be read
        // in bf16).
        for (convert, s, operand) in [(plan.convert_a, g.a, Operand::A), (plan.convert_b, g.b, Operand::B)] {
            if convert {
                addresses.operand_address(s, plan.operands, operand)?;
            }
        }
        if plan.output == Output::ThroughF32 {
            addresses.operand_address(g.c, ValueType::F32, Operand::C)?;
        }
    }
    Ok(plan)
}

impl ProductPlan {
    /// The plan of a product that rounds its operands to bf16 or not (`bf16_product`), whose A, B and
    /// C are stored in `a`, `b` and `c`, while every buffer is stored in f32 or not (`storing_bf16`).
    fn of(storing_bf16: bool, bf16_product: bool, [a, b, c]: [ValueType; 3]) -> Self {
        use ValueType::{Bf16, F32};
        if !storing_bf16 {
            let compute = if bf16_product { Compute::RoundedByCublas } else { Compute::F32 };
            return ProductPlan {
                compute,
                operands: F32,
                convert_a: false,
                convert_b: false,
                output: Output::Stored(F32),
            };
        }
        let operands = if bf16_product || (a == Bf16 && b == Bf16) { Bf16 } else { F32 };
        let (compute, output) = match (operands, c) {
            (Bf16, _) => (Compute::Bf16Operands, Output::Stored(c)),
            (F32, F32) => (Compute::F32, Output::Stored(F32)),
            (F32, Bf16) => (Compute::F32, Output::ThroughF32),
        };
        ProductPlan { compute, operands, convert_a: a != operands, convert_b: b != operands, output }
    }

    /// The values converted to run `g` by this plan: the operands converted, and C widened and
    /// rounded back.
    pub fn converted_values(&self, g: &Gemm) -> usize {
        let through = match self.output {
            Output::ThroughF32 => 2 * g.c.len,
            Output::Stored(_) => 0,
        };
        usize::from(self.convert_a) * g.a.len + usize::from(self.convert_b) * g.b.len + through
    }

    /// The type cuBLAS writes C in.
    fn c_type(&self) -> ValueType {
        match self.output {
            Output::Stored(t) => t,
            Output::ThroughF32 => ValueType::F32,
        }
    }

    /// Refuses a plan that would write over what it reads: a slot an operand is converted into, or
    /// C's slots, overlapping another slot the product reads or writes in the same store (two
    /// operands converted from one span write the same values, and pass). The compiler gives buffers
    /// alive at once their own offsets, so this does not happen in a device program; if it did, the
    /// product would be wrong, so it is an error rather than a risk.
    fn check_slots(&self, g: &Gemm, addresses: &Addresses) -> std::result::Result<(), DeviceError> {
        let stored = |s: Span| addresses.stored_type(s);
        // (span, store, written by this product)
        let mut slots = vec![
            (g.a, if self.convert_a { self.operands } else { stored(g.a)? }, self.convert_a),
            (g.b, if self.convert_b { self.operands } else { stored(g.b)? }, self.convert_b),
            (g.c, self.c_type(), true),
        ];
        if let Output::ThroughF32 = self.output {
            slots.push((g.c, ValueType::Bf16, true));
        }
        // A span stored in bf16 wanted in f32 has a conversion slot of its own operand's: it overlaps
        // nothing else the product uses.
        let mut own = Vec::with_capacity(slots.len());
        for &(s, ty, written) in &slots {
            if !addresses.in_conversion_slot(s, ty)? {
                own.push((s, ty, written));
            }
        }
        let slots = own;
        let overlap = |x: Span, y: Span| {
            x.region == y.region && x.offset < y.offset + y.len && y.offset < x.offset + x.len
        };
        for (i, &(x, tx, x_written)) in slots.iter().enumerate() {
            for (j, &(y, ty, y_written)) in slots.iter().enumerate().skip(i + 1) {
                // A and B one span: the same values in the same slot, converted or not.
                let one_operand = (i, j) == (0, 1) && x == y;
                if (x_written || y_written) && tx == ty && overlap(x, y) && !one_operand {
                    return Err(DeviceError::Mismatch(format!(
                        "a product would write {x:?} or {y:?} over the other in its {tx:?} store"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A batch of products at strides of A, B and C (values), for the strided-batched calls.
#[derive(Debug, Clone, Copy)]
struct Strides {
    a: i64,
    b: i64,
    c: i64,
    count: i32,
}

/// Runs `g` (one product, or `strides` of them) with the operands' layouts `cm`, by its plan.
fn product(ops: &GpuOps<'_>, g: &Gemm, cm: &ColumnMajor, strides: Option<Strides>) -> Outcome {
    let addresses = ops.memory.addresses();
    let plan = plan_product(addresses, ops.precision, g)?;
    // An operand converted is stored in the other type. A weight already rounded in this pass is
    // read as it is (GpuOps::rounding_each_weight_once).
    let must = |s| plan.operands == ValueType::F32 || ops.must_round(s);
    if plan.convert_a && must(g.a) {
        convert(ops, g.a, plan.operands.other(), plan.operands, Operand::A)?;
    }
    if plan.convert_b && must(g.b) {
        convert(ops, g.b, plan.operands.other(), plan.operands, Operand::B)?;
    }
    if plan.output == Output::ThroughF32 {
        convert(ops, g.c, ValueType::Bf16, ValueType::F32, Operand::C)?;
    }
    let a = addresses.operand_address(g.a, plan.operands, Operand::A)?;
    let b = addresses.operand_address(g.b, plan.operands, Operand::B)?;
    let c = addresses.operand_address(g.c, plan.c_type(), Operand::C)?;
    cublas(ops, cm, strides, (a, b, c), &plan)?;
    if plan.output == Output::ThroughF32 {
        convert(ops, g.c, ValueType::F32, ValueType::Bf16, Operand::C)?;
    }
    Ok(())
}

fn cuda_type(t: ValueType) -> blas_sys::cudaDataType {
    match t {
        ValueType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        ValueType::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
    }
}

/// The cuBLAS call of `plan` on the addresses `(a, b, c)`.
fn cublas(
    ops: &GpuOps<'_>,
    cm: &ColumnMajor,
    strides: Option<Strides>,
    (a, b, c): (CUdeviceptr, CUdeviceptr, CUdeviceptr),
    plan: &ProductPlan,
) -> Outcome {
    let [m, n, k] = cm.dims;
    let handle = *ops.gpu.blas.handle();
    let compute = match plan.compute {
        Compute::F32 => None,
        Compute::RoundedByCublas => Some(blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF),
        Compute::Bf16Operands => Some(blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
    };
    let (operand_type, c_type) = (cuda_type(plan.operands), cuda_type(plan.c_type()));
    let algo = blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
    // SAFETY (every call below): the addresses lie in their stores with the lengths `check` verified
    // for every product of the batch at its stride (the outputs do not overlap: stride_c ≥ m·n, or one
    // product), each of the type the data types say (f32 for `sgemm`); alpha and beta are f32, as an
    // f32-accumulating compute type requires. cuBLAS runs on the GPU's stream, like every other launch.
    let outcome = match (compute, strides) {
        (None, None) => unsafe {
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
        .map_err(|e| format!("cublasSgemm: {e}")),
        (None, Some(s)) => unsafe {
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
                s.b,
                a as *const f32,
                cm.lda,
                s.a,
                &cm.beta,
                c as *mut f32,
                cm.ldc,
                s.c,
                s.count,
            )
        }
        .map_err(|e| format!("cublasSgemmStridedBatched: {e}")),
        (Some(compute), None) => unsafe {
            blas::gemm_ex(
                handle,
                cm.op_b,
                cm.op_a,
                m,
                n,
                k,
                (&cm.alpha as *const f32).cast(),
                b as *const std::ffi::c_void,
                operand_type,
                cm.ldb,
                a as *const std::ffi::c_void,
                operand_type,
                cm.lda,
                (&cm.beta as *const f32).cast(),
                c as *mut std::ffi::c_void,
                c_type,
                cm.ldc,
                compute,
                algo,
            )
        }
        .map_err(|e| format!("cublasGemmEx: {e}")),
        (Some(compute), Some(s)) => unsafe {
            blas::gemm_strided_batched_ex(
                handle,
                cm.op_b,
                cm.op_a,
                m,
                n,
                k,
                (&cm.alpha as *const f32).cast(),
                b as *const std::ffi::c_void,
                operand_type,
                cm.ldb,
                s.b,
                a as *const std::ffi::c_void,
                operand_type,
                cm.lda,
                s.a,
                (&cm.beta as *const f32).cast(),
                c as *mut std::ffi::c_void,
                c_type,
                cm.ldc,
                s.c,
                s.count,
                compute,
                algo,
            )
        }
        .map_err(|e| format!("cublasGemmStridedBatchedEx: {e}")),
    };
    outcome.map_err(DeviceError::Backend)
}

/// One product ([`DeviceOps::gemm`](dp_runtime::device::DeviceOps::gemm)), by its [`ProductPlan`].
pub(super) fn gemm(ops: &GpuOps<'_>, g: Gemm) -> Outcome {
    g.check()?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    product(ops, &g, &ColumnMajor::of(&g)?, None)
}

/// A strided batch of products: one strided-batched cuBLAS call by its [`ProductPlan`] with `gemm`'s
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

/// One strided-batched product of `bg` with the operands' layouts `cm`, by its [`ProductPlan`], the
/// batch already checked against its spans and its outputs not overlapping.
fn strided_batched(ops: &GpuOps<'_>, bg: &BatchedGemm, cm: &ColumnMajor) -> Outcome {
    let stride = |s: usize| {
        i64::try_from(s).map_err(|_| DeviceError::Mismatch(format!("a batch stride of {s} values")))
    };
    let strides = Strides {
        a: stride(bg.stride_a)?,
        b: stride(bg.stride_b)?,
        c: stride(bg.stride_c)?,
        count: int(bg.batch)?,
    };
    product(ops, &bg.gemm, cm, Some(strides))
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

    use ValueType::{Bf16, F32};

    /// Storing every buffer in f32, a product is cuBLAS's in f32 or, in bf16, rounded by cuBLAS
    /// (what ran on the H200, unchanged): nothing is converted.
    #[test]
    fn without_bf16_storage_nothing_is_converted() {
        for bf16_product in [false, true] {
            let plan = ProductPlan::of(false, bf16_product, [F32; 3]);
            let compute = if bf16_product { Compute::RoundedByCublas } else { Compute::F32 };
            let expected = ProductPlan {
                compute,
                operands: F32,
                convert_a: false,
                convert_b: false,
                output: Output::Stored(F32),
            };
            assert_eq!(plan, expected);
        }
    }

    /// Storing in bf16, every mix of stored types: a bf16 product multiplies bf16 operands (an f32
    /// operand rounded into its bf16 slot) into C of its stored type; an f32 product multiplies the
    /// stored values, in bf16 only when both are bf16 (exact products), otherwise widening a bf16
    /// operand, and through C's f32 slot when C is bf16 (C widened into it first).
    #[test]
    fn storing_in_bf16_each_product_multiplies_the_values_the_host_reference_multiplies() {
        for a in [F32, Bf16] {
            for b in [F32, Bf16] {
                for c in [F32, Bf16] {
                    let bf16 = ProductPlan::of(true, true, [a, b, c]);
                    assert_eq!(bf16.compute, Compute::Bf16Operands);
                    assert_eq!(bf16.operands, Bf16);
                    assert_eq!((bf16.convert_a, bf16.convert_b), (a == F32, b == F32));
                    assert_eq!(bf16.output, Output::Stored(c));

                    let f32 = ProductPlan::of(true, false, [a, b, c]);
                    if a == Bf16 && b == Bf16 {
                        assert_eq!((f32.compute, f32.operands), (Compute::Bf16Operands, Bf16));
                        assert_eq!((f32.convert_a, f32.convert_b), (false, false));
                        assert_eq!(f32.output, Output::Stored(c));
                    } else {
                        assert_eq!((f32.compute, f32.operands), (Compute::F32, F32));
                        assert_eq!((f32.convert_a, f32.convert_b), (a == Bf16, b == Bf16));
                        let output = match c {
                            F32 => Output::Stored(F32),
                            Bf16 => Output::ThroughF32,
                        };
                        assert_eq!(f32.output, output);
                    }
                }
            }
        }
    }

    /// A conversion into bf16 that would write over the product's output is refused; disjoint spans,
    /// and an operand converted next to C, pass. A span stored in bf16 widened to f32 goes to its
    /// operand's conversion slot, so it crosses no other span, even one at its own offsets.
    #[test]
    fn a_conversion_over_the_output_or_another_operand_is_refused() {
        let mut addresses = Addresses::new(|r| (0x10_0000 * (r as u64 + 1), 1_000));
        addresses.store_bf16(Some([(0x100_0000, 1_000), (0x200_0000, 1_000), (0x300_0000, 1_000)]));
        addresses.set_conversion_slots(Some((0x400_0000, 1_000)));
        let arena = |offset, len| Span::new(Region::Arena, offset, len);
        let product = |a: Span, b: Span, c: Span| Gemm {
            m: 1,
            n: 1,
            k: 1,
            a,
            a_transposed: false,
            b,
            b_transposed: false,
            c,
            accumulate: false,
            operands: Operands::OfPrecision,
        };
        let types = |g: &Gemm| [g.a, g.b, g.c].map(|s| addresses.stored_type(s).unwrap());
        let ok = product(arena(0, 10), arena(10, 10).of_precision(), arena(20, 10).of_precision());
        let plan = ProductPlan::of(true, true, types(&ok));
        assert!(plan.convert_a && !plan.convert_b);
        plan.check_slots(&ok, &addresses).unwrap();

        // A (f32) converted into its bf16 slot, which C (bf16) occupies.
        let over_c = product(arena(0, 10), arena(30, 10).of_precision(), arena(5, 10).of_precision());
        let plan = ProductPlan::of(true, true, types(&over_c));
        assert!(plan.check_slots(&over_c, &addresses).is_err());

        // B (bf16) widened into its conversion slot, not over A (f32, at overlapping offsets).
        let crossed = product(arena(0, 10), arena(5, 10).of_precision(), arena(40, 10).of_precision());
        let plan = ProductPlan::of(true, false, types(&crossed));
        assert!(plan.convert_b && !plan.convert_a);
        plan.check_slots(&crossed, &addresses).unwrap();

        // One span as both operands, converted once each into the same slot: the same values.
        let square = product(arena(0, 10), arena(0, 10), arena(40, 10).of_precision());
        let plan = ProductPlan::of(true, true, types(&square));
        assert!(plan.convert_a && plan.convert_b);
        plan.check_slots(&square, &addresses).unwrap();

        // An f32 product into C stored in bf16 goes through C's conversion slot, not over A.
        let through = product(arena(100, 10), arena(200, 10), arena(105, 10).of_precision());
        let plan = ProductPlan::of(true, false, types(&through));
        assert_eq!(plan.output, Output::ThroughF32);
        plan.check_slots(&through, &addresses).unwrap();
        // A (f32) and B (f32, overlapping A) converted to bf16 over each other's slots: refused.
        let overlapping = product(arena(0, 10), arena(5, 10), arena(40, 10).of_precision());
        let plan = ProductPlan::of(true, true, types(&overlapping));
        assert!(plan.convert_a && plan.convert_b);
        assert!(plan.check_slots(&overlapping, &addresses).is_err());
    }

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
