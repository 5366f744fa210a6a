//! Matrix products with bf16 operands and f32 accumulation, on the AVX512-BF16 dot-product
//! instruction (`vdpbf16ps`: each f32 lane adds the products of one pair of bf16 values).
//!
//! The operands arrive in f32 and are rounded to bf16 (round to nearest even, as the instruction
//! set's own conversion does) while they are packed: a pair of consecutive `k` values of a row of
//! `op(a)` makes one 32-bit word, and so does a pair of rows of `op(b)` for each column. The product
//! of two bf16 values is exact in f32, so the only rounding besides the operands' is the f32
//! accumulation. A CPU without AVX512-BF16 gets the same operands rounded the same way, multiplied by
//! the f32 GEMM: the same numbers up to the order of the additions, slower.
//!
//! There is no bf16 product in the `gemm` crate (its `f16` kernels convert to f32 and multiply there),
//! so this module has its own micro-kernel; it is small because the products it serves (a conv's or an
//! LSTM's, with one operand a layer's weights) need no cache blocking over `k` beyond what fits the L2.

use crate::gemm::{sgemm, sgemm_serial, Op, Product};

/// The precision of the products of a step's forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Every product in f32.
    #[default]
    F32,
    /// The forward's and the backward's products with operands rounded to bf16, accumulated in f32.
    Bf16,
}

impl Precision {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision a name (`f32`, `bf16`) names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

/// Whether this CPU multiplies bf16 pairs in hardware (otherwise [`bf16_gemm`] rounds the operands
/// and multiplies them in f32).
pub fn has_bf16_dot_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = beta·c + alpha·op(a)·op(b)` in the given precision, with [`sgemm`]'s layout and contract;
/// threaded when large enough, as [`sgemm`] is.
#[allow(clippy::too_many_arguments)]
pub fn gemm_in(
    precision: Precision,
    op_a: Op,
    op_b: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    product_in(precision, false)(op_a, op_b, m, n, k, alpha, a, b, beta, c);
}

/// The product for one of several independent products that run in parallel with each other, or for
/// one that runs alone (threaded when large enough), in `precision`: `gemm::product_for`'s choice.
pub fn product_in(precision: Precision, runs_in_parallel: bool) -> Product {
    match (precision, runs_in_parallel) {
        (Precision::F32, true) => sgemm_serial,
        (Precision::F32, false) => sgemm,
        (Precision::Bf16, true) => |op_a, op_b, m, n, k, alpha, a, b, beta, c| {
            bf16_gemm(false, op_a, op_b, (m, n, k), alpha, a, b, beta, c)
        },
        (Precision::Bf16, false) => |op_a, op_b, m, n, k, alpha, a, b, beta, c| {
            bf16_gemm(true, op_a, op_b, (m, n, k), alpha, a, b, beta, c)
        },
    }
}

/// Products smaller than this many multiply-adds run on the calling thread (as in `gemm`).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// The bf16 product: the AVX512-BF16 kernel where the CPU has it, else the operands rounded to bf16
/// and multiplied in f32.
#[allow(clippy::too_many_arguments)]
pub fn bf16_gemm(
    may_thread: bool,
    op_a: Op,
    op_b: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    let a = PackedA::pack_into(take_scratch(LEFT), op_a, (m, k), a);
    let b = PackedB::pack_into(take_scratch(RIGHT), op_b, (k, n), b);
    multiply(may_thread, &a, &b, alpha, beta, c);
    a.return_scratch();
    b.return_scratch();
}

thread_local! {
    /// Each thread's packing buffers, reused from product to product: [`LEFT`], [`RIGHT`] and
    /// [`RIGHT_ROWS`] (a product takes them and gives them back; one that finds them taken, inside
    /// another's parallel loop, packs into its own).
    static SCRATCH: std::cell::RefCell<[Vec<u32>; 3]> =
        const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// The scratch buffer of a packed left operand.
const LEFT: usize = 0;
/// The scratch buffer of a packed right operand.
const RIGHT: usize = 1;
/// The scratch buffer of a right operand stored `n×k`, packed along its rows before its transposition.
const RIGHT_ROWS: usize = 2;

/// This thread's scratch buffer `slot`, taken (empty if another product holds it).
fn take_scratch(slot: usize) -> Vec<u32> {
    SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot]))
}

/// Gives `words` back as this thread's scratch buffer `slot`.
fn give_back_scratch(slot: usize, words: Vec<u32>) {
    SCRATCH.with(|s| s.borrow_mut()[slot] = words);
}

/// The right operand of bf16 products, packed once: for an operand used by many products (an
/// LSTM's recurrent weight, at every step).
#[derive(Debug)]
pub struct PackedB {
    k: usize,
    n: usize,
    form: PackedForm,
}

#[derive(Debug)]
enum PackedForm {
    /// For the AVX512-BF16 kernel: `[k/2][n_padded]` words, each the bf16 pair of rows `(2p, 2p + 1)`
    /// of one column (the even row in the low half), columns from `n` to `n_padded` zero.
    Pairs { words: Vec<u32>, n_padded: usize },
    /// For a CPU without it: the operand rounded to bf16, as stored (`op`).
    Rounded { values: Vec<f32>, op: Op },
}

impl PackedB {
    /// `op(b)` (`k×n`; `b` stored `k×n` for `Op::N`, `n×k` for `Op::T`) packed for [`bf16_gemm_packed`].
    pub fn new(op_b: Op, (k, n): (usize, usize), b: &[f32]) -> Self {
        Self::pack_into(Vec::new(), op_b, (k, n), b)
    }

    fn pack_into(words: Vec<u32>, op_b: Op, (k, n): (usize, usize), b: &[f32]) -> Self {
        assert!(b.len() >= k * n, "bf16 gemm: b has {} values, needs {}", b.len(), k * n);
        #[cfg(target_arch = "x86_64")]
        if k > 0 && has_bf16_dot_products() {
            // SAFETY: the CPU has AVX-512F, AVX-512BW and AVX512-BF16 (checked just above); `b`
            // holds `k·n` values (asserted).
            let (words, n_padded) = unsafe { avx512::pack_b(words, op_b, (k, n), b) };
            return PackedB { k, n, form: PackedForm::Pairs { words, n_padded } };
        }
        let values = b[..k * n].iter().map(|&x| round_to_bf16(x)).collect();
        PackedB { k, n, form: PackedForm::Rounded { values, op: op_b } }
    }

    fn return_scratch(self) {
        if let PackedForm::Pairs { words, .. } = self.form {
            give_back_scratch(RIGHT, words);
        }
    }
}

/// The left operand of bf16 products, packed once: for a layer's weight multiplied by every example's
/// operand in turn (a conv's forward and input gradient, one product per example).
#[derive(Debug)]
pub struct PackedA {
    m: usize,
    k: usize,
    form: PackedAForm,
}

#[derive(Debug)]
enum PackedAForm {
    /// For the AVX512-BF16 kernel: the pair `p` of row `i` at `i·row + p·pair`.
    Pairs { words: Vec<u32>, row: usize, pair: usize },
    /// For a CPU without it: the operand rounded to bf16, as stored (`op`).
    Rounded { values: Vec<f32>, op: Op },
}

impl PackedA {
    /// `op(a)` (`m×k`; `a` stored `m×k` for `Op::N`, `k×m` for `Op::T`) packed for
    /// [`bf16_gemm_packed_a`].
    pub fn new(op_a: Op, (m, k): (usize, usize), a: &[f32]) -> Self {
        Self::pack_into(Vec::new(), op_a, (m, k), a)
    }

    fn pack_into(words: Vec<u32>, op_a: Op, (m, k): (usize, usize), a: &[f32]) -> Self {
        assert!(a.len() >= m * k, "bf16 gemm: a has {} values, needs {}", a.len(), m * k);
        #[cfg(target_arch = "x86_64")]
        if k > 0 && has_bf16_dot_products() {
            // SAFETY: the CPU has AVX-512F, -BW and AVX512-BF16 (checked just above); `a` holds
            // `m·k` values (asserted).
            let (words, row, pair) = unsafe { avx512::pack_a(words, op_a, (m, k), a) };
            return PackedA { m, k, form: PackedAForm::Pairs { words, row, pair } };
        }
        let values = a[..m * k].iter().map(|&x| round_to_bf16(x)).collect();
        PackedA { m, k, form: PackedAForm::Rounded { values, op: op_a } }
    }

    fn return_scratch(self) {
        if let PackedAForm::Pairs { words, .. } = self.form {
            give_back_scratch(LEFT, words);
        }
    }
}

/// `c = beta·c + alpha·op(a)·b` with `b` packed ([`PackedB`], `k×n`) and `op(a)` `m×k`: [`bf16_gemm`]
/// without packing `b`.
#[allow(clippy::too_many_arguments)]
pub fn bf16_gemm_packed(
    may_thread: bool,
    op_a: Op,
    m: usize,
    alpha: f32,
    a: &[f32],
    b: &PackedB,
    beta: f32,
    c: &mut [f32],
) {
    let a = PackedA::pack_into(take_scratch(LEFT), op_a, (m, b.k), a);
    multiply(may_thread, &a, b, alpha, beta, c);
    a.return_scratch();
}

/// `c = beta·c + alpha·a·op(b)` with `a` packed ([`PackedA`], `m×k`) and `op(b)` `k×n`: [`bf16_gemm`]
/// without packing `a`.
#[allow(clippy::too_many_arguments)]
pub fn bf16_gemm_packed_a(
    may_thread: bool,
    a: &PackedA,
    op_b: Op,
    n: usize,
    alpha: f32,
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    let b = PackedB::pack_into(take_scratch(RIGHT), op_b, (a.k, n), b);
    multiply(may_thread, a, &b, alpha, beta, c);
    b.return_scratch();
}

/// `c = beta·c + alpha·a·b`, both operands packed (`m×k` and `k×n`), threaded when `may_thread`
/// and large enough.
fn multiply(may_thread: bool, a: &PackedA, b: &PackedB, alpha: f32, beta: f32, c: &mut [f32]) {
    let (m, n, k) = (a.m, b.n, a.k);
    debug_assert_eq!(a.k, b.k, "bf16 gemm: the operands' inner dimensions");
    assert!(c.len() >= m * n, "bf16 gemm: c has {} values, needs {}", c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let parallel = may_thread && m * n * k >= PARALLEL_MIN_MACS;
    match (&a.form, &b.form) {
        #[cfg(target_arch = "x86_64")]
        (PackedAForm::Pairs { words, row, pair }, PackedForm::Pairs { words: b_words, n_padded }) => {
            // SAFETY: `Pairs` exists only where the CPU has AVX-512F, -BW and AVX512-BF16
            // (`pack_into`); `a` and `b` are packed `m×k` and `k×n` with `k > 0`, the assert bounds `c`.
            unsafe {
                avx512::gemm_packed(
                    parallel,
                    (words, *row, *pair),
                    (m, n, k),
                    alpha,
                    (b_words, *n_padded),
                    beta,
                    c,
                )
            };
        }
        (PackedAForm::Rounded { values: a, op: op_a }, PackedForm::Rounded { values: b, op: op_b }) => {
            let product = if parallel { sgemm } else { sgemm_serial };
            product(*op_a, *op_b, m, n, k, alpha, a, b, beta, c);
        }
        _ => unreachable!("both operands of a product are packed on one CPU, with one inner dimension"),
    }
}

/// A left operand shared by many products on the calling thread (a layer's weight, one product per
/// example), in a precision: as stored in f32, or packed once in bf16.
#[derive(Debug)]
pub enum SharedLeft<'a> {
    F32 { a: &'a [f32], op: Op, m: usize, k: usize },
    Bf16(PackedA),
}

impl<'a> SharedLeft<'a> {
    /// `op(a)` (`m×k`) for products in `precision`.
    pub fn new(precision: Precision, op: Op, (m, k): (usize, usize), a: &'a [f32]) -> Self {
        match precision {
            Precision::F32 => SharedLeft::F32 { a, op, m, k },
            Precision::Bf16 => SharedLeft::Bf16(PackedA::new(op, (m, k), a)),
        }
    }

    /// `c = beta·c + alpha·op(a)·op(b)` on the calling thread, `op(b)` `k×n`.
    pub fn product_serial(&self, op_b: Op, n: usize, alpha: f32, b: &[f32], beta: f32, c: &mut [f32]) {
        self.product(false, op_b, n, alpha, b, beta, c);
    }

    /// `c = beta·c + alpha·op(a)·op(b)`, threaded when `may_thread` and large enough.
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        may_thread: bool,
        op_b: Op,
        n: usize,
        alpha: f32,
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        match (self, may_thread) {
            (SharedLeft::F32 { a, op, m, k }, false) => {
                sgemm_serial(*op, op_b, *m, n, *k, alpha, a, b, beta, c)
            }
            (SharedLeft::F32 { a, op, m, k }, true) => sgemm(*op, op_b, *m, n, *k, alpha, a, b, beta, c),
            (SharedLeft::Bf16(packed), _) => {
                bf16_gemm_packed_a(may_thread, packed, op_b, n, alpha, b, beta, c)
            }
        }
    }
}

/// A right operand shared by many products on the calling thread (an LSTM's recurrent weight, at
/// every step), in a precision: as stored in f32, or packed once in bf16.
#[derive(Debug)]
pub enum SharedRight<'a> {
    F32 { b: &'a [f32], op: Op, k: usize, n: usize },
    Bf16(PackedB),
}

impl<'a> SharedRight<'a> {
    /// `op(b)` (`k×n`) for products in `precision`.
    pub fn new(precision: Precision, op: Op, (k, n): (usize, usize), b: &'a [f32]) -> Self {
        match precision {
            Precision::F32 => SharedRight::F32 { b, op, k, n },
            Precision::Bf16 => SharedRight::Bf16(PackedB::new(op, (k, n), b)),
        }
    }

    /// `c = beta·c + alpha·op(a)·op(b)` on the calling thread, `op(a)` `m×k`.
    #[allow(clippy::too_many_arguments)]
    pub fn product_serial(&self, op_a: Op, m: usize, alpha: f32, a: &[f32], beta: f32, c: &mut [f32]) {
        match self {
            SharedRight::F32 { b, op, k, n } => sgemm_serial(op_a, *op, m, *n, *k, alpha, a, b, beta, c),
            SharedRight::Bf16(packed) => bf16_gemm_packed(false, op_a, m, alpha, a, packed, beta, c),
        }
    }
}

/// The bf16 bits of `x`, as the AVX512-BF16 conversions form them: round to nearest even, a subnormal
/// flushed to a zero of its sign, a NaN kept a (quiet) NaN.
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// `x` rounded to the nearest bf16 value, as an f32.
pub fn round_to_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// Every value of `x` rounded to bf16 in place, as the products of [`Precision::Bf16`] round their
/// operands ([`round_to_bf16`], the same bits): for a pass that must read exactly the operands a bf16
/// product reads.
pub fn round_to_bf16_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot_products() {
        // SAFETY: the CPU has AVX-512F, -BW and AVX512-BF16 (checked just above).
        unsafe { avx512::round_in_place(x) };
        return;
    }
    for v in x {
        *v = round_to_bf16(*v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Op;
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    /// Rows of `c` per micro-tile: 12 rows × 2 vectors = 24 accumulators, with the two vectors of `b`
    /// and a broadcast, 27 of the 32 vector registers.
    const MR: usize = 12;
    /// Columns of `c` per micro-tile: two vectors of 16 (one for a last block of at most 16).
    const NR: usize = 32;
    /// Micro-tiles of rows per parallel task.
    const TILES_PER_TASK: usize = 4;

    /// The left operand packed as bf16 pairs: the pair of `k` values `(2p, 2p+1)` of row `i` at
    /// `i·row + p·pair`.
    struct PackedA<'a> {
        pairs: &'a [u32],
        row: usize,
        pair: usize,
    }

    /// `b` (`op_b`, `k×n`) as `[k/2][n_padded]` pairs, into `words` (reused); returns them and
    /// `n_padded`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX512-BF16; `b` must hold `k·n` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_b(
        mut words: Vec<u32>,
        op_b: Op,
        (k, n): (usize, usize),
        b: &[f32],
    ) -> (Vec<u32>, usize) {
        // Padded with zeros to whole micro-tiles, so that the kernel loads whole vectors.
        let n_padded = n.div_ceil(NR) * NR;
        let kp = k.div_ceil(2);
        match op_b {
            Op::N => pack_row_pairs(b, k, n, n_padded, &mut words),
            Op::T => {
                // Packed along its stored rows first.
                let mut rows = super::take_scratch(super::RIGHT_ROWS);
                pack_rows(b, n, k, &mut rows);
                transpose_pairs(&rows, n, kp, n_padded, &mut words);
                super::give_back_scratch(super::RIGHT_ROWS, rows);
            }
        }
        (words, n_padded)
    }

    /// `op(a)` (`m×k`; `a` stored `m×k` for `Op::N`, `k×m` for `Op::T`) as bf16 pairs into `words`
    /// (reused); returns them with the strides of a row and of a pair.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX512-BF16; `a` must hold `m·k` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_a(
        mut words: Vec<u32>,
        op_a: Op,
        (m, k): (usize, usize),
        a: &[f32],
    ) -> (Vec<u32>, usize, usize) {
        match op_a {
            // m×k as stored: each row's pairs are consecutive values.
            Op::N => {
                pack_rows(a, m, k, &mut words);
                (words, k.div_ceil(2), 1)
            }
            // k×m as stored: a pair is two stored rows, column by column.
            Op::T => {
                pack_row_pairs(a, k, m, m, &mut words);
                (words, 1, m)
            }
        }
    }

    /// `c = beta·c + alpha·a·b` with `a` packed by [`pack_a`] (its words and strides) and `b` by
    /// [`pack_b`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX512-BF16; `a` and `b` must be `m×k` and `k×n`
    /// packed, `c` must hold `m·n` values; `k > 0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm_packed(
        parallel: bool,
        (pairs, row, pair): (&[u32], usize, usize),
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        (b, n_padded): (&[u32], usize),
        beta: f32,
        c: &mut [f32],
    ) {
        let kp = k.div_ceil(2);
        let a = PackedA { pairs, row, pair };
        let tiles = m.div_ceil(MR);
        let run = |first_tile: usize, c_rows: &mut [f32]| {
            let rows = c_rows.len() / n;
            for t in 0..rows.div_ceil(MR) {
                let (i0, r) = (t * MR, (rows - t * MR).min(MR));
                let c_tile = &mut c_rows[i0 * n..(i0 + r) * n];
                // SAFETY: as for `gemm_packed`; the tile's rows and the packed operands are in bounds.
                unsafe { row_tile(&a, (first_tile * MR + i0, r), b, (n, n_padded, kp), alpha, beta, c_tile) };
            }
        };
        let c = &mut c[..m * n];
        if parallel && tiles > TILES_PER_TASK {
            c.par_chunks_mut(MR * TILES_PER_TASK * n)
                .enumerate()
                .for_each(|(task, rows)| run(task * TILES_PER_TASK, rows));
        } else {
            run(0, c);
        }
    }

    /// The micro-tiles of `r ≤ MR` rows of `c` starting at row `i0`, across all columns.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn row_tile(
        a: &PackedA<'_>,
        (i0, r): (usize, usize),
        b: &[u32],
        (n, n_padded, kp): (usize, usize, usize),
        alpha: f32,
        beta: f32,
        c: &mut [f32],
    ) {
        let a_rows = a.pairs.as_ptr().add(i0 * a.row);
        for j0 in (0..n_padded).step_by(NR) {
            let tile =
                Tile { a: a_rows, a_row: a.row, a_pair: a.pair, b: b.as_ptr().add(j0), b_pair: n_padded, kp };
            let cols = (n - j0).min(NR);
            let out = Out { c: c.as_mut_ptr().add(j0), c_row: n, cols, alpha, beta };
            // A last block of at most 16 columns takes one vector: the other would multiply zeros.
            if cols <= 16 {
                tile.rows::<1>(r, out)
            } else {
                tile.rows::<2>(r, out)
            }
        }
    }

    /// One micro-tile's operands: rows of packed `a` and a column block of packed `b`.
    struct Tile {
        a: *const u32,
        a_row: usize,
        a_pair: usize,
        b: *const u32,
        b_pair: usize,
        kp: usize,
    }

    /// Where a micro-tile's result goes: `cols ≤ NR` columns of `c`, rows `c_row` apart.
    struct Out {
        c: *mut f32,
        c_row: usize,
        cols: usize,
        alpha: f32,
        beta: f32,
    }

    impl Tile {
        /// The micro-tile of `r` rows and `V` vectors of columns.
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        unsafe fn rows<const V: usize>(&self, r: usize, out: Out) {
            match r {
                12 => self.run::<12, V>(out),
                11 => self.run::<11, V>(out),
                10 => self.run::<10, V>(out),
                9 => self.run::<9, V>(out),
                8 => self.run::<8, V>(out),
                7 => self.run::<7, V>(out),
                6 => self.run::<6, V>(out),
                5 => self.run::<5, V>(out),
                4 => self.run::<4, V>(out),
                3 => self.run::<3, V>(out),
                2 => self.run::<2, V>(out),
                1 => self.run::<1, V>(out),
                _ => unreachable!("a micro-tile has 1 to {MR} rows"),
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        #[inline]
        unsafe fn run<const R: usize, const V: usize>(&self, out: Out) {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for p in 0..self.kp {
                let b_pairs = self.b.add(p * self.b_pair);
                let mut b = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); V];
                for (v, b) in b.iter_mut().enumerate() {
                    *b = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        b_pairs.add(16 * v) as *const _
                    ));
                }
                for (row, acc) in acc.iter_mut().enumerate() {
                    let pair = *self.a.add(row * self.a_row + p * self.a_pair);
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                    for v in 0..V {
                        acc[v] = _mm512_dpbf16_ps(acc[v], a, b[v]);
                    }
                }
            }
            let (alpha, beta) = (_mm512_set1_ps(out.alpha), _mm512_set1_ps(out.beta));
            for (row, acc) in acc.iter().enumerate() {
                for (v, &acc) in acc.iter().enumerate() {
                    let mask = lane_mask(out.cols.saturating_sub(16 * v));
                    if mask == 0 {
                        continue;
                    }
                    let c = out.c.add(row * out.c_row + 16 * v);
                    let scaled = _mm512_mul_ps(acc, alpha);
                    let value = if out.beta == 0.0 {
                        scaled
                    } else {
                        _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, c), beta, scaled)
                    };
                    _mm512_mask_storeu_ps(c, mask, value);
                }
            }
        }
    }

    /// [`super::round_to_bf16_in_place`] with the instruction set's conversion.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_in_place(x: &mut [f32]) {
        for chunk in x.chunks_mut(16) {
            let mask = lane_mask(chunk.len());
            let values = _mm512_maskz_loadu_ps(mask, chunk.as_ptr());
            let bf16: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(values));
            let widened = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bf16));
            _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, _mm512_castsi512_ps(widened));
        }
    }

    /// The first `lanes` (at most 16) lanes of a vector.
    fn lane_mask(lanes: usize) -> __mmask16 {
        if lanes >= 16 {
            0xffff
        } else {
            ((1u32 << lanes) - 1) as __mmask16
        }
    }

    /// `out` holding exactly `len` words, every one of which the caller overwrites: it only grows
    /// (zeroed then), so a reused buffer is not cleared again.
    fn words(out: &mut Vec<u32>, len: usize) -> &mut [u32] {
        if out.len() < len {
            out.resize(len, 0);
        }
        &mut out[..len]
    }

    /// A row-major `rows×cols` matrix as bf16 pairs along its rows: `[rows][cols/2]`, an odd last
    /// value paired with zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_rows(x: &[f32], rows: usize, cols: usize, out: &mut Vec<u32>) {
        let pairs = cols.div_ceil(2);
        let out = words(out, rows * pairs);
        for (row, packed) in x[..rows * cols].chunks_exact(cols).zip(out.chunks_exact_mut(pairs)) {
            let mut j = 0;
            while j + 32 <= cols {
                let lo = _mm512_loadu_ps(row.as_ptr().add(j));
                let hi = _mm512_loadu_ps(row.as_ptr().add(j + 16));
                let bf = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_storeu_si512(
                    packed.as_mut_ptr().add(j / 2) as *mut _,
                    std::mem::transmute::<__m512bh, __m512i>(bf),
                );
                j += 32;
            }
            while j < cols {
                let second = if j + 1 < cols { super::bf16_bits(row[j + 1]) } else { 0 };
                packed[j / 2] = super::bf16_bits(row[j]) as u32 | (second as u32) << 16;
                j += 2;
            }
        }
    }

    /// A row-major `rows×cols` matrix as bf16 pairs across its rows: `[rows/2][width]`, word `j` of
    /// pair `p` holding rows `2p` (low half) and `2p + 1` of column `j`; an odd last row is paired with
    /// zero, the columns from `cols` to `width` are zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_row_pairs(x: &[f32], rows: usize, cols: usize, width: usize, out: &mut Vec<u32>) {
        let pairs = rows.div_ceil(2);
        let out = words(out, pairs * width);
        // Word j takes bf16 j (the even row's) and bf16 16 + j (the odd row's).
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
            18, 2, 17, 1, 16, 0,
        );
        for (p, packed) in out.chunks_exact_mut(width).enumerate() {
            let even = x.as_ptr().add(2 * p * cols);
            let odd = (2 * p + 1 < rows).then(|| x.as_ptr().add((2 * p + 1) * cols));
            for j in (0..cols).step_by(16) {
                let mask = lane_mask(cols - j);
                let lo = _mm512_maskz_loadu_ps(mask, even.add(j));
                let hi = match odd {
                    Some(odd) => _mm512_maskz_loadu_ps(mask, odd.add(j)),
                    None => _mm512_setzero_ps(),
                };
                let bf = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                let words = _mm512_permutexvar_epi16(interleave, bf);
                _mm512_mask_storeu_epi32(packed.as_mut_ptr().add(j) as *mut _, mask, words);
            }
            packed[cols..].fill(0);
        }
    }

    /// `[n][kp]` pairs as `[kp][width]` (columns from `n` to `width` zero).
    fn transpose_pairs(pairs: &[u32], n: usize, kp: usize, width: usize, out: &mut Vec<u32>) {
        let out = words(out, kp * width);
        for (p, row) in out.chunks_exact_mut(width).enumerate() {
            for (j, word) in row[..n].iter_mut().enumerate() {
                *word = pairs[j * kp + p];
            }
            row[n..].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The product of the bf16-rounded operands in f64.
    fn reference(
        op_a: Op,
        op_b: Op,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
    ) -> Vec<(f64, f64)> {
        let mut c = vec![(0.0, 0.0); m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut magnitude) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let av = match op_a {
                        Op::N => a[i * k + p],
                        Op::T => a[p * m + i],
                    };
                    let bv = match op_b {
                        Op::N => b[p * n + j],
                        Op::T => b[j * k + p],
                    };
                    let product = round_to_bf16(av) as f64 * round_to_bf16(bv) as f64;
                    s += product;
                    magnitude += product.abs();
                }
                c[i * n + j] = (s, magnitude);
            }
        }
        c
    }

    #[test]
    fn rounds_to_nearest_even_and_keeps_nan_and_flushes_subnormals() {
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: even is 1. 1 + 3·2⁻⁸ rounds up to 1 + 2⁻⁶.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(round_to_bf16(-1.5), -1.5);
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_to_bf16(-1e-40).to_bits(), (-0.0f32).to_bits());
        assert_eq!(Precision::from_name("bf16"), Some(Precision::Bf16));
        assert_eq!(Precision::from_name(Precision::F32.name()), Some(Precision::F32));
        assert_eq!(Precision::from_name("fp16"), None);
    }

    #[test]
    fn matches_the_product_of_the_rounded_operands_for_every_transpose_and_shape() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        // Shapes with every remainder: rows not a multiple of the 12-row tile, columns below, at and
        // above a vector, odd k, and one large enough to run in parallel.
        let shapes =
            [(1, 1, 1), (3, 5, 7), (12, 32, 2), (13, 33, 9), (25, 17, 64), (50, 70, 31), (130, 64, 288)];
        for &(m, n, k) in &shapes {
            for op_a in [Op::N, Op::T] {
                for op_b in [Op::N, Op::T] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let want = reference(op_a, op_b, (m, n, k), &a, &b);
                    for (beta, may_thread) in [(0.0, false), (2.0, false), (2.0, true)] {
                        let mut c = if beta == 0.0 { vec![f32::NAN; m * n] } else { c0.clone() };
                        bf16_gemm(may_thread, op_a, op_b, (m, n, k), 0.5, &a, &b, beta, &mut c);
                        for i in 0..m * n {
                            let (s, magnitude) = want[i];
                            let w = beta as f64 * c0[i] as f64 + 0.5 * s;
                            // Only the f32 accumulation differs: a few ulps of the sum of magnitudes.
                            let tolerance = 1e-6 * (1.0 + magnitude + (beta as f64 * c0[i] as f64).abs());
                            assert!(
                                (c[i] as f64 - w).abs() <= tolerance,
                                "{m}x{n}x{k} {op_a:?}{op_b:?} beta {beta}: c[{i}] = {} vs {w}",
                                c[i]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_packed_operand_gives_the_bits_of_packing_it_each_time_and_buffers_are_reused_safely() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        // Large shapes first, then small ones: the reused packing buffers are longer than needed.
        let shapes = [(130, 64, 288), (40, 400, 100), (7, 33, 9), (3, 5, 1)];
        for &(m, n, k) in &shapes {
            for op_b in [Op::N, Op::T] {
                let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let packed = PackedB::new(op_b, (k, n), &b);
                for (op_a, rows) in [(Op::N, m), (Op::T, m + 5)] {
                    let a: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let (mut once, mut each) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
                    bf16_gemm_packed(false, op_a, rows, 1.0, &a, &packed, 0.0, &mut once);
                    bf16_gemm(false, op_a, op_b, (rows, n, k), 1.0, &a, &b, 0.0, &mut each);
                    assert_eq!(
                        once.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        each.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{rows}x{n}x{k} {op_a:?}{op_b:?}"
                    );
                    let want = reference(op_a, op_b, (rows, n, k), &a, &b);
                    for (i, (&got, &(s, magnitude))) in once.iter().zip(&want).enumerate() {
                        assert!((got as f64 - s).abs() <= 1e-6 * (1.0 + magnitude), "{rows}x{n}x{k}: c[{i}]");
                    }
                }
            }
        }
    }

    #[test]
    fn a_packed_left_operand_gives_the_bits_of_packing_it_each_time() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
        for &(m, n, k) in &[(64, 256, 576), (16, 16, 729), (7, 33, 9), (3, 5, 1)] {
            for op_a in [Op::N, Op::T] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let packed = PackedA::new(op_a, (m, k), &a);
                for (op_b, cols) in [(Op::N, n), (Op::T, n + 3)] {
                    let b: Vec<f32> = (0..k * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let c0: Vec<f32> = (0..m * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let (mut once, mut each) = (c0.clone(), c0.clone());
                    bf16_gemm_packed_a(false, &packed, op_b, cols, 0.5, &b, 1.0, &mut once);
                    bf16_gemm(false, op_a, op_b, (m, cols, k), 0.5, &a, &b, 1.0, &mut each);
                    assert_eq!(
                        once.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        each.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{m}x{cols}x{k} {op_a:?}{op_b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_in_place_gives_the_scalar_rounding_bits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        let mut values: Vec<f32> = (0..1000).map(|_| f32::from_bits(rng.random::<u32>())).collect();
        // Ties both ways, subnormals, infinities, a NaN with a payload, and a length that is not a
        // multiple of the vector.
        values.extend([
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -1.0 - 2f32.powi(-8),
            1e-40,
            -1e-40,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::from_bits(0x7f80_0001),
            0.0,
            -0.0,
            7.0,
        ]);
        let mut rounded = values.clone();
        round_to_bf16_in_place(&mut rounded);
        for (v, r) in values.iter().zip(&rounded) {
            assert_eq!(r.to_bits(), round_to_bf16(*v).to_bits(), "{v:e} ({:#x})", v.to_bits());
        }
    }

    #[test]
    fn a_nan_operand_reaches_exactly_its_row_of_the_product() {
        let (m, n, k) = (14, 20, 6);
        let mut a = vec![0.5f32; m * k];
        a[3 * k + 2] = f32::NAN;
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        bf16_gemm(false, Op::N, Op::N, (m, n, k), 1.0, &a, &b, 0.0, &mut c);
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i * n + j].is_nan(), i == 3, "({i}, {j})");
            }
        }
    }

    #[test]
    fn the_f32_precision_is_the_f32_product() {
        let (m, n, k) = (9, 7, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut want, mut got) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        sgemm(Op::N, Op::T, m, n, k, 1.5, &a, &b, 0.0, &mut want);
        gemm_in(Precision::F32, Op::N, Op::T, (m, n, k), 1.5, &a, &b, 0.0, &mut got);
        assert_eq!(want, got);
    }
}
