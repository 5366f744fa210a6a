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

use crate::gemm::{sgemm, sgemm_serial, Op};

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
    match precision {
        Precision::F32 => sgemm(op_a, op_b, m, n, k, alpha, a, b, beta, c),
        Precision::Bf16 => bf16_gemm(true, op_a, op_b, (m, n, k), alpha, a, b, beta, c),
    }
}

/// [`gemm_in`] on the calling thread only, for products inside a loop that is already parallel.
#[allow(clippy::too_many_arguments)]
pub fn gemm_in_serial(
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
    match precision {
        Precision::F32 => sgemm_serial(op_a, op_b, m, n, k, alpha, a, b, beta, c),
        Precision::Bf16 => bf16_gemm(false, op_a, op_b, (m, n, k), alpha, a, b, beta, c),
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
    assert!(a.len() >= m * k, "bf16 gemm: a has {} values, needs {}", a.len(), m * k);
    assert!(b.len() >= k * n, "bf16 gemm: b has {} values, needs {}", b.len(), k * n);
    assert!(c.len() >= m * n, "bf16 gemm: c has {} values, needs {}", c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let parallel = may_thread && m * n * k >= PARALLEL_MIN_MACS;
    #[cfg(target_arch = "x86_64")]
    if k > 0 && has_bf16_dot_products() {
        // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked just above); the asserts bound the
        // operands.
        unsafe { avx512::gemm(parallel, op_a, op_b, (m, n, k), alpha, a, b, beta, c) };
        return;
    }
    let a: Vec<f32> = a[..m * k].iter().map(|&x| round_to_bf16(x)).collect();
    let b: Vec<f32> = b[..k * n].iter().map(|&x| round_to_bf16(x)).collect();
    let product = if parallel { sgemm } else { sgemm_serial };
    product(op_a, op_b, m, n, k, alpha, &a, &b, beta, c);
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Op;
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    /// Rows of `c` per micro-tile: 12 rows × 2 vectors = 24 accumulators, with the two vectors of `b`
    /// and a broadcast, 27 of the 32 vector registers.
    const MR: usize = 12;
    /// Columns of `c` per micro-tile: two vectors of 16.
    const NR: usize = 32;
    /// Micro-tiles of rows per parallel task.
    const TILES_PER_TASK: usize = 4;

    /// An operand packed as bf16 pairs: the pair of `k` values `(2p, 2p+1)` of row `i` at
    /// `i·row + p·pair`.
    struct PackedA {
        pairs: Vec<u32>,
        row: usize,
        pair: usize,
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `a`, `b` and `c` must hold `m·k`, `k·n` and `m·n`
    /// values; `k > 0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        parallel: bool,
        op_a: Op,
        op_b: Op,
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        let kp = k.div_ceil(2);
        let a = match op_a {
            // m×k as stored: each row's pairs are consecutive values.
            Op::N => PackedA { pairs: pack_rows(a, m, k), row: kp, pair: 1 },
            // k×m as stored: a pair is two stored rows, column by column.
            Op::T => PackedA { pairs: pack_row_pairs(a, k, m, m), row: 1, pair: m },
        };
        // b as [kp][n_padded]: the pairs of each k pair for every column, padded with zeros to whole
        // micro-tiles so that the kernel loads whole vectors.
        let n_padded = n.div_ceil(NR) * NR;
        let b = match op_b {
            Op::N => pack_row_pairs(b, k, n, n_padded),
            Op::T => transpose_pairs(&pack_rows(b, n, k), n, kp, n_padded),
        };
        let tiles = m.div_ceil(MR);
        let run = |first_tile: usize, c_rows: &mut [f32]| {
            let rows = c_rows.len() / n;
            for t in 0..rows.div_ceil(MR) {
                let (i0, r) = (t * MR, (rows - t * MR).min(MR));
                let c_tile = &mut c_rows[i0 * n..(i0 + r) * n];
                // SAFETY: as for `gemm`; the tile's rows and the packed operands are in bounds.
                unsafe {
                    row_tile(&a, (first_tile * MR + i0, r), &b, (n, n_padded, kp), alpha, beta, c_tile)
                };
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
        a: &PackedA,
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
            let out = Out { c: c.as_mut_ptr().add(j0), c_row: n, cols: (n - j0).min(NR), alpha, beta };
            match r {
                12 => tile.run::<12>(out),
                11 => tile.run::<11>(out),
                10 => tile.run::<10>(out),
                9 => tile.run::<9>(out),
                8 => tile.run::<8>(out),
                7 => tile.run::<7>(out),
                6 => tile.run::<6>(out),
                5 => tile.run::<5>(out),
                4 => tile.run::<4>(out),
                3 => tile.run::<3>(out),
                2 => tile.run::<2>(out),
                1 => tile.run::<1>(out),
                _ => unreachable!("a micro-tile has 1 to {MR} rows"),
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
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        #[inline]
        unsafe fn run<const R: usize>(&self, out: Out) {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for p in 0..self.kp {
                let b_pairs = self.b.add(p * self.b_pair);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b_pairs as *const _));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b_pairs.add(16) as *const _));
                for (row, acc) in acc.iter_mut().enumerate() {
                    let pair = *self.a.add(row * self.a_row + p * self.a_pair);
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], a, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], a, b1);
                }
            }
            let masks = [lane_mask(out.cols), lane_mask(out.cols.saturating_sub(16))];
            let (alpha, beta) = (_mm512_set1_ps(out.alpha), _mm512_set1_ps(out.beta));
            for (row, acc) in acc.iter().enumerate() {
                for half in 0..2 {
                    if masks[half] == 0 {
                        continue;
                    }
                    let c = out.c.add(row * out.c_row + 16 * half);
                    let scaled = _mm512_mul_ps(acc[half], alpha);
                    let value = if out.beta == 0.0 {
                        scaled
                    } else {
                        _mm512_fmadd_ps(_mm512_maskz_loadu_ps(masks[half], c), beta, scaled)
                    };
                    _mm512_mask_storeu_ps(c, masks[half], value);
                }
            }
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

    /// A row-major `rows×cols` matrix as bf16 pairs along its rows: `[rows][cols/2]`, an odd last
    /// value paired with zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_rows(x: &[f32], rows: usize, cols: usize) -> Vec<u32> {
        let pairs = cols.div_ceil(2);
        let mut out = vec![0u32; rows * pairs];
        for (row, packed) in x[..rows * cols].chunks_exact(cols).zip(out.chunks_exact_mut(pairs)) {
            let mut j = 0;
            while j + 32 <= cols {
                let lo = _mm512_loadu_ps(row.as_ptr().add(j));
                let hi = _mm512_loadu_ps(row.as_ptr().add(j + 16));
                let bf = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_storeu_si512(packed.as_mut_ptr().add(j / 2) as *mut _, std::mem::transmute(bf));
                j += 32;
            }
            while j < cols {
                let second = if j + 1 < cols { super::bf16_bits(row[j + 1]) } else { 0 };
                packed[j / 2] = super::bf16_bits(row[j]) as u32 | (second as u32) << 16;
                j += 2;
            }
        }
        out
    }

    /// A row-major `rows×cols` matrix as bf16 pairs across its rows: `[rows/2][width]`, word `j` of
    /// pair `p` holding rows `2p` (low half) and `2p + 1` of column `j`; an odd last row is paired with
    /// zero, the columns from `cols` to `width` are zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_row_pairs(x: &[f32], rows: usize, cols: usize, width: usize) -> Vec<u32> {
        let pairs = rows.div_ceil(2);
        let mut out = vec![0u32; pairs * width];
        // Word j takes bf16 j (the even row's) and bf16 16 + j (the odd row's).
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
            18, 2, 17, 1, 16, 0,
        );
        for p in 0..pairs {
            let even = x.as_ptr().add(2 * p * cols);
            let odd = (2 * p + 1 < rows).then(|| x.as_ptr().add((2 * p + 1) * cols));
            let packed = out.as_mut_ptr().add(p * width);
            for j in (0..cols).step_by(16) {
                let mask = lane_mask(cols - j);
                let lo = _mm512_maskz_loadu_ps(mask, even.add(j));
                let hi = match odd {
                    Some(odd) => _mm512_maskz_loadu_ps(mask, odd.add(j)),
                    None => _mm512_setzero_ps(),
                };
                let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let words = _mm512_permutexvar_epi16(interleave, bf);
                _mm512_mask_storeu_epi32(packed.add(j) as *mut _, mask, words);
            }
        }
        out
    }

    /// `[n][kp]` pairs as `[kp][width]` (columns from `n` to `width` zero).
    fn transpose_pairs(pairs: &[u32], n: usize, kp: usize, width: usize) -> Vec<u32> {
        let mut out = vec![0u32; kp * width];
        for (j, column) in pairs.chunks_exact(kp).take(n).enumerate() {
            for (p, &word) in column.iter().enumerate() {
                out[p * width + j] = word;
            }
        }
        out
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
