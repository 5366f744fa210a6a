//! The cuBLAS products dp-cuda calls (`cublasSgemm_v2`, `cublasSgemmStridedBatched`, `cublasGemmEx`,
//! `cublasGemmStridedBatchedEx`), column-major as cuBLAS defines them, queued on the handle's stream.
//! Arguments cuBLAS refuses are refused (leading dimensions, types), and every operand's reach, at
//! its leading dimension and batch stride, must lie in one live device allocation. bf16 operands
//! are read as their f32 values and accumulated in f32 (the type combinations cuBLAS supports among
//! these only, and C's batch members never overlapping); aliasing between C and A or B is not
//! checked; `CUBLAS_COMPUTE_32F_FAST_16BF` on f32
//! operands rounds them to bf16 first (to nearest even), as the host reference assumes the tensor
//! cores do.

#![allow(non_snake_case, clippy::missing_safety_doc, clippy::too_many_arguments)]

use std::ffi::{c_int, c_longlong, c_uint, c_void};
use std::sync::{Arc, Mutex};

use gemm_common::Parallelism;
use half::bf16;

use crate::state::{self, Handles};
use crate::stream::Op;

type Status = u32;
const SUCCESS: Status = 0;
const INVALID_VALUE: Status = 7;
const EXECUTION_FAILED: Status = 13;
const NOT_SUPPORTED: Status = 15;

const CUDA_R_32F: c_uint = 0;
const CUDA_R_16BF: c_uint = 14;
const COMPUTE_32F: c_uint = 68;
const COMPUTE_32F_PEDANTIC: c_uint = 69;
const COMPUTE_32F_FAST_16BF: c_uint = 75;

struct BlasHandle {
    stream: Mutex<usize>,
}

static HANDLES: Handles<BlasHandle> = Handles::new();

fn refuse(status: Status, why: impl std::fmt::Display) -> Status {
    state::say(&format!("cuBLAS refused ({status}): {why}"));
    status
}

#[no_mangle]
pub unsafe extern "C" fn cublasCreate_v2(handle: *mut *mut c_void) -> Status {
    *handle = HANDLES.insert(Arc::new(BlasHandle { stream: Mutex::new(0) })) as *mut c_void;
    SUCCESS
}

#[no_mangle]
pub extern "C" fn cublasDestroy_v2(handle: *mut c_void) -> Status {
    HANDLES.remove(handle as usize).map_or(INVALID_VALUE, |_| SUCCESS)
}

#[no_mangle]
pub extern "C" fn cublasSetStream_v2(handle: *mut c_void, stream: *mut c_void) -> Status {
    match HANDLES.get(handle as usize) {
        Some(h) => {
            *h.stream.lock().unwrap() = stream as usize;
            SUCCESS
        }
        None => INVALID_VALUE,
    }
}

/// The default and pedantic math modes (with or without disallowing reduced-precision reductions);
/// TF32 and the others would change the arithmetic, which is not emulated: the device fails.
#[no_mangle]
pub extern "C" fn cublasSetMathMode(handle: *mut c_void, mode: c_uint) -> Status {
    if HANDLES.get(handle as usize).is_none() {
        return INVALID_VALUE;
    }
    match mode & !16 {
        0 | 2 => SUCCESS,
        other => {
            state::fail(format!("cuBLAS math mode {other} is allowed by cuBLAS but not emulated"));
            NOT_SUPPORTED
        }
    }
}

#[no_mangle]
pub extern "C" fn cublasSetWorkspace_v2(
    handle: *mut c_void,
    _workspace: *mut c_void,
    _bytes: usize,
) -> Status {
    HANDLES.get(handle as usize).map_or(INVALID_VALUE, |_| SUCCESS)
}

/// How values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    F32,
    Bf16,
}

impl Type {
    fn of(t: c_uint) -> Option<Type> {
        match t {
            CUDA_R_32F => Some(Type::F32),
            CUDA_R_16BF => Some(Type::Bf16),
            _ => None,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Type::F32 => 4,
            Type::Bf16 => 2,
        }
    }
}

/// A column-major operand: `rows × cols` as stored, columns `ld` apart, batch members `stride` apart.
#[derive(Clone, Copy, Debug)]
struct Operand {
    at: usize,
    ty: Type,
    rows: usize,
    cols: usize,
    ld: usize,
    stride: usize,
}

impl Operand {
    /// The values one batch member reaches.
    fn reach(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.cols - 1) * self.ld + self.rows
        }
    }

    fn check(&self, name: &str, batch: usize) -> Result<(), String> {
        if self.reach() == 0 || batch == 0 {
            return Ok(());
        }
        let values = (batch - 1) * self.stride + self.reach();
        let bytes = values * self.ty.bytes();
        let memory = state::memory();
        if memory.is_device(self.at, bytes) {
            Ok(())
        } else {
            Err(format!("{name} reaches past its allocation: {}", memory.describe(self.at, bytes)))
        }
    }

    /// The first value two batch members both write, if any (members may interleave: a head's
    /// columns inside wider rows).
    fn first_overlap(&self, batch: usize) -> Option<usize> {
        if batch < 2 || self.reach() == 0 {
            return None;
        }
        let mut written = vec![0u64; ((batch - 1) * self.stride + self.reach()).div_ceil(64)];
        for e in 0..batch {
            for j in 0..self.cols {
                for i in 0..self.rows {
                    let at = e * self.stride + i + j * self.ld;
                    let (word, bit) = (at / 64, 1u64 << (at % 64));
                    if written[word] & bit != 0 {
                        return Some(at);
                    }
                    written[word] |= bit;
                }
            }
        }
        None
    }

    /// Batch member `e`'s values as f32, column-major with its own `ld`: the device memory itself
    /// when it holds f32 that are not to be rounded, else a converted copy kept in `copy`.
    unsafe fn as_f32(&self, e: usize, round: bool, copy: &mut Vec<f32>) -> *const f32 {
        if self.ty == Type::F32 && !round {
            return (self.at as *const f32).add(e * self.stride);
        }
        *copy = self.read(e, round);
        copy.as_ptr()
    }

    /// Batch member `e` as f32, column-major with its own `ld`, each value rounded to bf16 first
    /// when `round`.
    unsafe fn read(&self, e: usize, round: bool) -> Vec<f32> {
        let mut out = vec![0f32; self.ld * self.cols.max(1)];
        let base = e * self.stride;
        for j in 0..self.cols {
            for i in 0..self.rows {
                let index = base + i + j * self.ld;
                let v = match self.ty {
                    Type::F32 => *(self.at as *const f32).add(index),
                    Type::Bf16 => bf16::from_bits(*(self.at as *const u16).add(index)).to_f32(),
                };
                out[i + j * self.ld] = if round { bf16::from_f32(v).to_f32() } else { v };
            }
        }
        out
    }
}

/// One product call, checked, as work for the handle's stream.
struct Product {
    trans: (bool, bool),
    dims: (usize, usize, usize),
    alpha: f32,
    beta: f32,
    a: Operand,
    b: Operand,
    c: Operand,
    batch: usize,
    round: bool,
}

impl Product {
    unsafe fn run(&self) {
        let (m, n, k) = self.dims;
        let (ta, tb) = self.trans;
        let ldc = self.c.ld;
        let gemm = gemm_f32::gemm::f32::get_gemm_fn();
        let (mut a_copy, mut b_copy, mut c_copy) = (Vec::new(), Vec::new(), Vec::new());
        for e in 0..self.batch {
            let a = self.a.as_f32(e, self.round, &mut a_copy);
            let b = self.b.as_f32(e, self.round, &mut b_copy);
            // An f32 C is computed in place; a bf16 one in f32 and rounded once when written back.
            let c = match self.c.ty {
                Type::F32 => (self.c.at as *mut f32).add(e * self.c.stride),
                Type::Bf16 => {
                    c_copy =
                        if self.beta != 0.0 { self.c.read(e, false) } else { vec![0f32; ldc * n.max(1)] };
                    c_copy.as_mut_ptr()
                }
            };
            if m > 0 && n > 0 {
                if k == 0 {
                    for j in 0..n {
                        for i in 0..m {
                            let cell = c.add(i + j * ldc);
                            *cell = if self.beta == 0.0 { 0.0 } else { self.beta * *cell };
                        }
                    }
                } else {
                    let (a_rs, a_cs) = if ta { (self.a.ld as isize, 1) } else { (1, self.a.ld as isize) };
                    let (b_rs, b_cs) = if tb { (self.b.ld as isize, 1) } else { (1, self.b.ld as isize) };
                    // The gemm crate scales the destination by its first scalar and the product by
                    // its second; it does not read the destination when told not to (beta 0).
                    gemm(
                        m,
                        n,
                        k,
                        c,
                        ldc as isize,
                        1,
                        self.beta != 0.0,
                        a,
                        a_cs,
                        a_rs,
                        b,
                        b_cs,
                        b_rs,
                        self.beta,
                        self.alpha,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
            if self.c.ty == Type::Bf16 {
                let base = e * self.c.stride;
                for j in 0..n {
                    for i in 0..m {
                        let v = c_copy[i + j * ldc];
                        *(self.c.at as *mut u16).add(base + i + j * ldc) = bf16::from_f32(v).to_bits();
                    }
                }
            }
        }
    }
}

/// Checks a call's arguments as cuBLAS does and queues it on the handle's stream.
unsafe fn queue(
    handle: *mut c_void,
    (transa, transb): (c_uint, c_uint),
    (m, n, k): (c_int, c_int, c_int),
    (alpha, beta): (f32, f32),
    (a, a_type, lda, stride_a): (usize, c_uint, c_int, c_longlong),
    (b, b_type, ldb, stride_b): (usize, c_uint, c_int, c_longlong),
    (c, c_type, ldc, stride_c): (usize, c_uint, c_int, c_longlong),
    batch: c_int,
    round: bool,
) -> Status {
    let Some(h) = HANDLES.get(handle as usize) else {
        return refuse(INVALID_VALUE, "an unknown handle");
    };
    let trans = |t: c_uint| match t {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    };
    let (Some(ta), Some(tb)) = (trans(transa), trans(transb)) else {
        return refuse(NOT_SUPPORTED, format!("operations {transa}, {transb}"));
    };
    if m < 0 || n < 0 || k < 0 || batch < 0 || stride_a < 0 || stride_b < 0 || stride_c < 0 {
        return refuse(INVALID_VALUE, format!("negative sizes m {m} n {n} k {k} batch {batch}"));
    }
    let [m, n, k, lda, ldb, ldc] = [m, n, k, lda, ldb, ldc].map(|v| v.max(0) as usize);
    if lda < (if ta { k } else { m }).max(1) || ldb < (if tb { n } else { k }).max(1) || ldc < m.max(1) {
        return refuse(
            INVALID_VALUE,
            format!("leading dimensions {lda}, {ldb}, {ldc} for m {m} n {n} k {k}"),
        );
    }
    let (Some(a_ty), Some(b_ty), Some(c_ty)) = (Type::of(a_type), Type::of(b_type), Type::of(c_type)) else {
        return refuse(NOT_SUPPORTED, format!("data types {a_type}, {b_type}, {c_type}"));
    };
    // The combinations cuBLAS supports among those emulated: f32 throughout (FAST_16BF rounding the
    // operands), or bf16 operands with a bf16 or f32 output under COMPUTE_32F.
    let supported = matches!(
        (round, a_ty, b_ty, c_ty),
        (_, Type::F32, Type::F32, Type::F32) | (false, Type::Bf16, Type::Bf16, Type::Bf16 | Type::F32)
    );
    if !supported {
        return refuse(NOT_SUPPORTED, format!("types {a_ty:?}, {b_ty:?}, {c_ty:?} (rounding {round})"));
    }
    let (a_rows, a_cols) = if ta { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
    let product = Product {
        trans: (ta, tb),
        dims: (m, n, k),
        alpha,
        beta,
        a: Operand { at: a, ty: a_ty, rows: a_rows, cols: a_cols, ld: lda, stride: stride_a as usize },
        b: Operand { at: b, ty: b_ty, rows: b_rows, cols: b_cols, ld: ldb, stride: stride_b as usize },
        c: Operand { at: c, ty: c_ty, rows: m, cols: n, ld: ldc, stride: stride_c as usize },
        batch: batch as usize,
        round,
    };
    for (name, operand) in [("A", &product.a), ("B", &product.b), ("C", &product.c)] {
        if let Err(why) = operand.check(name, product.batch) {
            return refuse(INVALID_VALUE, why);
        }
    }
    if let Some(at) = product.c.first_overlap(product.batch) {
        return refuse(
            INVALID_VALUE,
            format!("C's batch members overlap at value {at} ({m}×{n}, ldc {ldc}, batch stride {stride_c})"),
        );
    }
    let stream = *h.stream.lock().unwrap();
    let work = Op::Work(Arc::new(move || {
        // SAFETY: the operands were checked against live allocations when queued.
        unsafe { product.run() };
        Ok(())
    }));
    match crate::api::submit_blas(stream, work) {
        0 => SUCCESS,
        _ => EXECUTION_FAILED,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cublasSgemm_v2(
    handle: *mut c_void,
    transa: c_uint,
    transb: c_uint,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: c_int,
) -> Status {
    queue(
        handle,
        (transa, transb),
        (m, n, k),
        (*alpha, *beta),
        (a as usize, CUDA_R_32F, lda, 0),
        (b as usize, CUDA_R_32F, ldb, 0),
        (c as usize, CUDA_R_32F, ldc, 0),
        1,
        false,
    )
}

#[no_mangle]
pub unsafe extern "C" fn cublasSgemmStridedBatched(
    handle: *mut c_void,
    transa: c_uint,
    transb: c_uint,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    stride_a: c_longlong,
    b: *const f32,
    ldb: c_int,
    stride_b: c_longlong,
    beta: *const f32,
    c: *mut f32,
    ldc: c_int,
    stride_c: c_longlong,
    batch: c_int,
) -> Status {
    queue(
        handle,
        (transa, transb),
        (m, n, k),
        (*alpha, *beta),
        (a as usize, CUDA_R_32F, lda, stride_a),
        (b as usize, CUDA_R_32F, ldb, stride_b),
        (c as usize, CUDA_R_32F, ldc, stride_c),
        batch,
        false,
    )
}

/// Whether a compute type rounds f32 operands to bf16, or `None` when it is not emulated.
fn rounds(compute: c_uint) -> Option<bool> {
    match compute {
        COMPUTE_32F | COMPUTE_32F_PEDANTIC => Some(false),
        COMPUTE_32F_FAST_16BF => Some(true),
        _ => None,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cublasGemmEx(
    handle: *mut c_void,
    transa: c_uint,
    transb: c_uint,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_uint,
    lda: c_int,
    b: *const c_void,
    b_type: c_uint,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_uint,
    ldc: c_int,
    compute: c_uint,
    _algo: c_int,
) -> Status {
    let Some(round) = rounds(compute) else {
        return refuse(NOT_SUPPORTED, format!("compute type {compute}"));
    };
    queue(
        handle,
        (transa, transb),
        (m, n, k),
        (*(alpha as *const f32), *(beta as *const f32)),
        (a as usize, a_type, lda, 0),
        (b as usize, b_type, ldb, 0),
        (c as usize, c_type, ldc, 0),
        1,
        round,
    )
}

#[no_mangle]
pub unsafe extern "C" fn cublasGemmStridedBatchedEx(
    handle: *mut c_void,
    transa: c_uint,
    transb: c_uint,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_uint,
    lda: c_int,
    stride_a: c_longlong,
    b: *const c_void,
    b_type: c_uint,
    ldb: c_int,
    stride_b: c_longlong,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_uint,
    ldc: c_int,
    stride_c: c_longlong,
    batch: c_int,
    compute: c_uint,
    _algo: c_int,
) -> Status {
    let Some(round) = rounds(compute) else {
        return refuse(NOT_SUPPORTED, format!("compute type {compute}"));
    };
    queue(
        handle,
        (transa, transb),
        (m, n, k),
        (*(alpha as *const f32), *(beta as *const f32)),
        (a as usize, a_type, lda, stride_a),
        (b as usize, b_type, ldb, stride_b),
        (c as usize, c_type, ldc, stride_c),
        batch,
        round,
    )
}
