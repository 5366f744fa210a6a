//! Standard normal samples from a ChaCha20 stream.
//!
//! Two exact-in-distribution methods over f64 uniforms with 53 random bits:
//!
//! - the **ziggurat** (Marsaglia & Tsang 2000, 256 layers, R = 3.654152885361009, V = 4.92867323399e-3,
//!   with the layer and the uniform from disjoint bits as Doornik 2005, "An Improved Ziggurat Method to
//!   Generate Normal Random Samples", recommends), used by [`GaussianNoise::standard_normal`] and
//!   [`GaussianNoise::fill`]: one 64-bit draw gives the layer (8 bits) and a uniform in [−1, 1) (53
//!   other bits); 98.5% of draws (the mean of x_{i+1}/x_i) are accepted by one comparison; the rest take the exact wedge test (one `exp`) or Marsaglia's exact
//!   tail beyond R (unbounded);
//! - **Box–Muller** ([`GaussianNoise::pair`]): U₁ on (0, 1], U₂ on [0, 1), R = √(−2 ln U₁) and
//!   Θ = 2πU₂ give R cos Θ and R sin Θ; magnitudes beyond √(2·53·ln 2) ≈ 8.57 (probability below 10⁻¹⁶)
//!   are not produced.
//!
//! [`GaussianNoise::fill`] draws a whole vector (one normal per parameter per step) in bulk: it takes a
//! fresh 256-bit key from the stream, and chunk j of [`FILL_CHUNK`] coordinates reads its own ChaCha20
//! keystreams under that key (see [`fill_chunk`]), sixteen blocks at a time
//! ([`ChaCha20Blocks`]): stream 2j gives every coordinate its first
//! word, and stream 2j + 1 the further words of the ~1.5% that need more, each segment of
//! [`RETRY_SEGMENT`] coordinates from its own range of blocks. Each coordinate therefore depends only
//! on the key and its index: not on the vector's length, nor on how many threads filled the chunks;
//! and the segments' rare coordinates can be redone independently (on the GPU, in parallel).

use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use std::sync::OnceLock;

use rand::RngCore;

use super::chacha::{ChaCha20Blocks, WORDS_PER_CALL};
use crate::rng::{uniform_f64, uniform_open_closed};

/// Coordinates per chunk of [`GaussianNoise::fill`]: each chunk has its own keystreams, so chunks are
/// filled in parallel with results that do not depend on the number of threads. 2^14 normals take
/// about 50 µs on one core: enough to pay for a hand-off to another thread.
pub const FILL_CHUNK: usize = 1 << 14;

/// Fills `out` with the N(0, 1) values [`GaussianNoise::fill`] draws once it has taken `key` from
/// its stream: chunks of [`FILL_CHUNK`] coordinates filled by [`fill_chunk`], in parallel when there
/// are several. A device step draws these from the key the trainer hands it; a step whose clipped
/// sum was formed in physical chunks draws them here, on the host, from the same key.
pub fn fill_under_key(key: &[u8; 32], out: &mut [f64]) {
    if out.len() <= FILL_CHUNK {
        fill_chunk(key, 0, out);
    } else {
        out.par_chunks_mut(FILL_CHUNK).enumerate().for_each(|(j, chunk)| fill_chunk(key, j as u64, chunk));
    }
}

/// Coordinates per retry segment of a chunk: the coordinates of segment s (coordinates
/// s·RETRY_SEGMENT.. of the chunk) that need more than their first word read them from a keystream of
/// their own (see [`fill_chunk`]), so that a second implementation can redo the segments' rare
/// coordinates in parallel (on the device, one warp per segment). 16 segments per chunk; about 15 of
/// a segment's coordinates need more words.
pub const RETRY_SEGMENT: usize = 1 << 10;

/// Number of ziggurat layers.
const LAYERS: usize = 256;
/// Start of the tail (right edge of the base layer).
const TAIL_START: f64 = 3.654152885361009;
/// Area of each layer.
const LAYER_AREA: f64 = 4.92867323399e-3;

/// Layer edges x_i (x_0 is the base strip's pseudo-edge V/f(R), x_256 = 0), ratios x_{i+1}/x_i and
/// the density f(x_i) = exp(−x_i²/2) at each edge (for the wedge test).
struct Ziggurat {
    edge: [f64; LAYERS + 1],
    ratio: [f64; LAYERS],
    density: [f64; LAYERS + 1],
    /// (x_{i+1}/x_i, x_i) side by side, for the vector paths: one 16-byte load per word fetches both
    /// values of its layer (gathers, slow on many x86 cores, are avoided).
    ratio_edge: RatioEdge,
}

/// Layer i's ratio and edge at `[i][0]` and `[i][1]`, aligned so that no pair straddles a cache line.
#[repr(C, align(64))]
struct RatioEdge([[f64; 2]; LAYERS]);

fn ziggurat() -> &'static Ziggurat {
    static TABLES: OnceLock<Ziggurat> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut edge = [0.0; LAYERS + 1];
        let mut f = (-0.5 * TAIL_START * TAIL_START).exp();
        edge[0] = LAYER_AREA / f;
        edge[1] = TAIL_START;
        for i in 2..LAYERS {
            edge[i] = (-2.0 * (LAYER_AREA / edge[i - 1] + f).ln()).sqrt();
            f = (-0.5 * edge[i] * edge[i]).exp();
        }
        edge[LAYERS] = 0.0;
        let mut ratio = [0.0; LAYERS];
        for i in 0..LAYERS {
            ratio[i] = edge[i + 1] / edge[i];
        }
        let density = edge.map(|x| (-0.5 * x * x).exp());
        let ratio_edge = RatioEdge(std::array::from_fn(|i| [ratio[i], edge[i]]));
        Ziggurat { edge, ratio, density, ratio_edge }
    })
}

/// The ziggurat's tables, for a second implementation of [`fill_chunk`] (the device noise of the
/// `cuda` feature) that must give the same values: layer edges x_0..x_256, ratios x_{i+1}/x_i and
/// densities exp(−x_i²/2), computed once here so both use the same bits.
#[derive(Debug, Clone, Copy)]
pub struct ZigguratTables {
    /// x_0 (the base strip's pseudo-edge) to x_256 = 0.
    pub edge: &'static [f64; LAYERS + 1],
    /// x_{i+1} / x_i.
    pub ratio: &'static [f64; LAYERS],
    /// exp(−x_i² / 2).
    pub density: &'static [f64; LAYERS + 1],
}

/// The tables [`fill_chunk`] uses.
pub fn ziggurat_tables() -> ZigguratTables {
    let tables = ziggurat();
    ZigguratTables { edge: &tables.edge, ratio: &tables.ratio, density: &tables.density }
}

/// A stream of independent N(0, 1) values over a ChaCha20 generator.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha20Rng,
    tables: &'static Ziggurat,
}

impl std::fmt::Debug for Ziggurat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ziggurat")
    }
}

impl GaussianNoise {
    /// A noise stream that owns `rng` (the run's noise stream).
    pub fn new(rng: ChaCha20Rng) -> Self {
        GaussianNoise { rng, tables: ziggurat() }
    }

    /// The next N(0, 1) value (ziggurat), drawing its 64-bit words from the stream one by one.
    ///
    /// Kept out of line: inlined into the per-coordinate iterator of the optimizer pass, it made that
    /// iterator too large to inline, and every optimizer loop (even without noise) paid a call per
    /// coordinate. Bulk draws go through [`fill`](Self::fill).
    #[inline(never)]
    pub fn standard_normal(&mut self) -> f64 {
        let bits = self.rng.next_u64();
        let rng = &mut self.rng;
        self.tables.sample(bits, &mut || rng.next_u64())
    }

    /// Two independent N(0, 1) values.
    #[inline]
    pub fn pair(&mut self) -> (f64, f64) {
        let radius = (-2.0 * uniform_open_closed(&mut self.rng).ln()).sqrt();
        let angle = std::f64::consts::TAU * uniform_f64(&mut self.rng);
        let (sin, cos) = angle.sin_cos();
        (radius * cos, radius * sin)
    }

    /// Fills `out` with independent N(0, 1) values (ziggurat), in bulk: one fresh 256-bit key from the
    /// stream, then chunks of [`FILL_CHUNK`] coordinates filled by [`fill_chunk`] under that key, on
    /// the threads of the current rayon pool when there are several chunks. The values depend only on
    /// the stream's state and the coordinate index.
    pub fn fill(&mut self, out: &mut [f64]) {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        fill_under_key(&key, out);
    }

    /// Fills `out` with N(0, 1) values by Box–Muller (the reference method).
    pub fn fill_box_muller(&mut self, out: &mut [f64]) {
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let (a, b) = self.pair();
            pair[0] = a;
            pair[1] = b;
        }
        if let [last] = pairs.into_remainder() {
            *last = self.pair().0;
        }
    }

    /// The underlying generator (the discrete sampler of secure mode draws from the same stream).
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }
}

impl Ziggurat {
    /// One N(0, 1) value: `bits` is the first 64-bit word, `more` gives any further words (the wedge
    /// test's uniform, the tail's, the next attempt's). The common case reads nothing more.
    #[inline(always)]
    fn sample(&self, bits: u64, more: &mut impl FnMut() -> u64) -> f64 {
        let layer = bits as u8 as usize;
        // 53 bits disjoint from the layer bits: u uniform on [−1, 1).
        let u = 2.0 * unit(bits) - 1.0;
        if u.abs() < self.ratio[layer] {
            return u * self.edge[layer];
        }
        self.sample_slowly(bits, more)
    }

    /// The rest of the ziggurat after a first word outside its inner rectangles: the base strip's
    /// tail, the wedge test, and further attempts.
    #[cold]
    #[inline(never)]
    fn sample_slowly(&self, mut bits: u64, more: &mut impl FnMut() -> u64) -> f64 {
        loop {
            let layer = bits as u8 as usize;
            let u = 2.0 * unit(bits) - 1.0;
            if u.abs() < self.ratio[layer] {
                return u * self.edge[layer];
            }
            if layer == 0 {
                // Marsaglia's (1964) exact tail beyond R, with uniforms on (0, 1].
                loop {
                    let x = unit_open_closed(more()).ln() / TAIL_START;
                    let y = unit_open_closed(more()).ln();
                    if -2.0 * y >= x * x {
                        return if u < 0.0 { x - TAIL_START } else { TAIL_START - x };
                    }
                }
            }
            // The wedge: a uniform height in the layer's strip [f(x_i), f(x_{i+1})] under f(x).
            let x = u * self.edge[layer];
            let (below, above) = (self.density[layer], self.density[layer + 1]);
            if above + unit(more()) * (below - above) < (-0.5 * x * x).exp() {
                return x;
            }
            bits = more();
        }
    }
}

/// The top 53 bits of `word` as a uniform on [0, 1) (as [`uniform_f64`]).
#[inline(always)]
fn unit(word: u64) -> f64 {
    (word >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The top 53 bits of `word` as a uniform on (0, 1] (as [`uniform_open_closed`]).
#[inline(always)]
fn unit_open_closed(word: u64) -> f64 {
    ((word >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fills chunk `chunk` of a [`GaussianNoise::fill`] under `key` (`out` at most [`FILL_CHUNK`] long):
///
/// - coordinate i's first 64-bit word is word i of ChaCha20 stream 2·chunk from block 0, in the
///   interleaved order of [`ChaCha20Blocks::next_words`] (word i is word (i mod 128) / 16 of block
///   16·⌊i / 128⌋ + i mod 16);
/// - the coordinates are split into segments of [`RETRY_SEGMENT`] (the last one of a short chunk may
///   be shorter); the rare coordinates of segment s (coordinates s·RETRY_SEGMENT..) that need more
///   words than their first read them, in coordinate order within the segment, from ChaCha20 stream
///   2·chunk + 1 starting at block s·2^32, in the same interleaved order (word k of the segment's
///   retry stream is word k of `ChaCha20Blocks::new(key, 2·chunk + 1, s << 32)`).
///
/// The first-word stream and the retry streams are disjoint from every other chunk's, and the
/// segments' retry streams from each other's (a segment would have to read 2^35 words to reach the
/// next one's).
pub fn fill_chunk(key: &[u8; 32], chunk: u64, out: &mut [f64]) {
    fill_chunk_with(key, chunk, out, FastPath::detect());
}

/// How the ziggurat's common case runs: the values are the same on every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastPath {
    /// One word at a time.
    Scalar,
    /// Four words at a time (AVX2).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Eight words at a time (AVX-512F).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl FastPath {
    /// The widest path this CPU runs.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return FastPath::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return FastPath::Avx2;
            }
        }
        FastPath::Scalar
    }

    /// The vector form of the common case on `words` into `out`: the mask of the words it rejected,
    /// or `None` on the scalar path.
    #[inline(always)]
    fn inner_rectangles(
        self,
        tables: &Ziggurat,
        words: &[u64; WORDS_PER_CALL],
        out: &mut [f64; WORDS_PER_CALL],
    ) -> Option<u128> {
        match self {
            FastPath::Scalar => None,
            // SAFETY: `detect` (or a test that checked the feature) chose this path.
            #[cfg(target_arch = "x86_64")]
            FastPath::Avx2 => Some(unsafe { x86::inner_rectangles_avx2(tables, words, out) }),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            FastPath::Avx512 => Some(unsafe { x86::inner_rectangles_avx512(tables, words, out) }),
        }
    }
}

/// [`fill_chunk`] on a given [`FastPath`].
fn fill_chunk_with(key: &[u8; 32], chunk: u64, out: &mut [f64], path: FastPath) {
    let tables = ziggurat();
    let mut first = ChaCha20Blocks::new(key, 2 * chunk, 0);
    let mut retries = RetryWords::new(key, 2 * chunk + 1);
    let mut words = [0u64; WORDS_PER_CALL];
    for (p, piece) in out.chunks_mut(WORDS_PER_CALL).enumerate() {
        if p.is_multiple_of(PIECES_PER_SEGMENT) {
            retries.start_segment((p / PIECES_PER_SEGMENT) as u64);
        }
        first.next_words(&mut words);
        if let Ok(piece) = <&mut [f64; WORDS_PER_CALL]>::try_from(&mut *piece) {
            if let Some(mut rejected) = path.inner_rectangles(tables, &words, piece) {
                // The rare coordinates outside the inner rectangles, in coordinate order.
                while rejected != 0 {
                    let i = rejected.trailing_zeros() as usize;
                    rejected &= rejected - 1;
                    piece[i] = tables.sample_slowly(words[i], &mut || retries.next());
                }
                continue;
            }
        }
        for (value, &bits) in piece.iter_mut().zip(&words) {
            *value = tables.sample(bits, &mut || retries.next());
        }
    }
}

/// Pieces of [`WORDS_PER_CALL`] coordinates per retry segment (a piece never straddles two).
const PIECES_PER_SEGMENT: usize = RETRY_SEGMENT / WORDS_PER_CALL;
const _: () =
    assert!(RETRY_SEGMENT.is_multiple_of(WORDS_PER_CALL) && FILL_CHUNK.is_multiple_of(RETRY_SEGMENT));

/// The retry words of a chunk's current segment: stream 2·chunk + 1 from block s·2^32 for segment
/// s, computed (sixteen blocks at a time) only once the segment reads a word.
struct RetryWords<'k> {
    key: &'k [u8; 32],
    stream: u64,
    words: BufferedWords,
}

impl<'k> RetryWords<'k> {
    fn new(key: &'k [u8; 32], stream: u64) -> Self {
        RetryWords { key, stream, words: BufferedWords::new(ChaCha20Blocks::new(key, stream, 0)) }
    }

    /// Restarts the stream at segment `segment`'s first word; no block is computed until it is read.
    fn start_segment(&mut self, segment: u64) {
        self.words.blocks = ChaCha20Blocks::new(self.key, self.stream, segment << 32);
        self.words.next = WORDS_PER_CALL;
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.words.next()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Ziggurat, WORDS_PER_CALL};
    use std::arch::x86_64::*;

    /// The ziggurat's common case for 128 words, eight at a time: writes u·x_layer for every word and
    /// returns a bit mask of the words outside their layer's inner rectangle (their value must be
    /// replaced by [`Ziggurat::sample_slowly`]). Bit for bit the arithmetic of [`Ziggurat::sample`]:
    /// with m the low 52 of the 53 bits and t the top one, u = 2·(bits / 2^53) − 1 = 1.m − (2 − t),
    /// an exact subtraction, like the scalar form's exact scaling and subtraction.
    #[target_feature(enable = "avx512f")]
    pub(super) fn inner_rectangles_avx512(
        tables: &Ziggurat,
        words: &[u64; WORDS_PER_CALL],
        out: &mut [f64; WORDS_PER_CALL],
    ) -> u128 {
        let pairs = &tables.ratio_edge.0;
        let mantissa_mask = _mm512_set1_epi64(0x000f_ffff_ffff_ffff);
        let one = _mm512_set1_epi64(0x3ff0_0000_0000_0000);
        let top_bit = _mm512_set1_epi64(i64::MIN);
        let (one_f, two_f) = (_mm512_set1_pd(1.0), _mm512_set1_pd(2.0));
        let mut rejected = 0u128;
        for (group, (bits, values)) in words.chunks_exact(8).zip(out.chunks_exact_mut(8)).enumerate() {
            // SAFETY: `bits` and `values` hold 8 elements each (unaligned access); each pair is 16-byte
            // aligned (the table is 64-byte aligned, a pair 16 bytes) for the aligned loads.
            unsafe {
                let w = _mm512_loadu_si512(bits.as_ptr().cast());
                let mantissa = _mm512_and_si512(_mm512_srli_epi64::<11>(w), mantissa_mask);
                let one_m = _mm512_castsi512_pd(_mm512_or_si512(mantissa, one));
                let top = _mm512_test_epi64_mask(w, top_bit);
                let u = _mm512_sub_pd(one_m, _mm512_mask_blend_pd(top, two_f, one_f));
                // Pairs of words 0, 2, 4, 6 in `even`, of 1, 3, 5, 7 in `odd`: [r e r e ...] each, so
                // the low halves interleave into the eight ratios and the high halves into the edges.
                let pair = |k: usize| _mm_castpd_ps(_mm_load_pd(pairs[bits[k] as u8 as usize].as_ptr()));
                let four = |k: usize| {
                    let v = _mm512_castps128_ps512(pair(k));
                    let v = _mm512_insertf32x4::<1>(v, pair(k + 2));
                    let v = _mm512_insertf32x4::<2>(v, pair(k + 4));
                    _mm512_castps_pd(_mm512_insertf32x4::<3>(v, pair(k + 6)))
                };
                let (even, odd) = (four(0), four(1));
                let ratio = _mm512_unpacklo_pd(even, odd);
                let edge = _mm512_unpackhi_pd(even, odd);
                let inside = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(u), ratio);
                _mm512_storeu_pd(values.as_mut_ptr(), _mm512_mul_pd(u, edge));
                rejected |= u128::from(!inside) << (8 * group);
            }
        }
        rejected
    }

    /// [`inner_rectangles_avx512`] four words at a time with AVX2 (the same arithmetic; the top bit
    /// chooses 1 or 2 through `blendv`, which reads each lane's sign bit, i.e. bit 63 of the word).
    #[target_feature(enable = "avx2")]
    pub(super) fn inner_rectangles_avx2(
        tables: &Ziggurat,
        words: &[u64; WORDS_PER_CALL],
        out: &mut [f64; WORDS_PER_CALL],
    ) -> u128 {
        let pairs = &tables.ratio_edge.0;
        let mantissa_mask = _mm256_set1_epi64x(0x000f_ffff_ffff_ffff);
        let one = _mm256_set1_epi64x(0x3ff0_0000_0000_0000);
        let magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
        let (one_f, two_f) = (_mm256_set1_pd(1.0), _mm256_set1_pd(2.0));
        let mut rejected = 0u128;
        for (group, (bits, values)) in words.chunks_exact(4).zip(out.chunks_exact_mut(4)).enumerate() {
            // SAFETY: `bits` and `values` hold 4 elements each (unaligned access); each pair is 16-byte
            // aligned (the table is 64-byte aligned, a pair 16 bytes) for the aligned loads.
            unsafe {
                let w = _mm256_loadu_si256(bits.as_ptr().cast());
                let mantissa = _mm256_and_si256(_mm256_srli_epi64::<11>(w), mantissa_mask);
                let one_m = _mm256_castsi256_pd(_mm256_or_si256(mantissa, one));
                let u = _mm256_sub_pd(one_m, _mm256_blendv_pd(two_f, one_f, _mm256_castsi256_pd(w)));
                // Pairs of words 0 and 2 in `even`, of 1 and 3 in `odd` (as the AVX-512 path).
                let pair = |k: usize| _mm_load_pd(pairs[bits[k] as u8 as usize].as_ptr());
                let even = _mm256_insertf128_pd::<1>(_mm256_castpd128_pd256(pair(0)), pair(2));
                let odd = _mm256_insertf128_pd::<1>(_mm256_castpd128_pd256(pair(1)), pair(3));
                let ratio = _mm256_unpacklo_pd(even, odd);
                let edge = _mm256_unpackhi_pd(even, odd);
                let inside = _mm256_cmp_pd::<_CMP_LT_OQ>(_mm256_and_pd(u, magnitude), ratio);
                _mm256_storeu_pd(values.as_mut_ptr(), _mm256_mul_pd(u, edge));
                let outside = !_mm256_movemask_pd(inside) & 0xf;
                rejected |= (outside as u128) << (4 * group);
            }
        }
        rejected
    }
}

/// A keystream read one 64-bit word at a time (16 blocks computed when the buffer runs out).
struct BufferedWords {
    blocks: ChaCha20Blocks,
    words: [u64; WORDS_PER_CALL],
    next: usize,
}

impl BufferedWords {
    fn new(blocks: ChaCha20Blocks) -> Self {
        BufferedWords { blocks, words: [0; WORDS_PER_CALL], next: WORDS_PER_CALL }
    }

    fn next(&mut self) -> u64 {
        if self.next == WORDS_PER_CALL {
            self.blocks.next_words(&mut self.words);
            self.next = 0;
        }
        self.next += 1;
        self.words[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The normals a chunked device step draws on the host from a step's key are those `fill` draws
    /// after taking that key from its stream, across several chunks; another key gives others.
    #[test]
    fn fill_under_key_draws_what_fill_draws_after_taking_the_key() {
        let len = 2 * FILL_CHUNK + 77;
        let stream = ChaCha20Rng::seed_from_u64(5);
        let mut key = [0u8; 32];
        stream.clone().fill_bytes(&mut key);
        let mut filled = vec![0.0; len];
        GaussianNoise::new(stream).fill(&mut filled);
        let mut under_key = vec![0.0; len];
        fill_under_key(&key, &mut under_key);
        assert_eq!(filled, under_key);
        key[31] ^= 1;
        fill_under_key(&key, &mut under_key);
        assert!(filled.iter().zip(&under_key).all(|(a, b)| a != b));
    }

    /// The vector paths this CPU runs.
    fn vector_paths() -> Vec<FastPath> {
        let mut paths = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                paths.push(FastPath::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                paths.push(FastPath::Avx512);
            }
        }
        paths
    }

    #[test]
    fn vector_and_scalar_chunks_are_identical() {
        let key: [u8; 32] = std::array::from_fn(|i| (3 * i + 1) as u8);
        // Full pieces and a partial last one; about 1.5% of coordinates take the slow path.
        let n = 40 * WORDS_PER_CALL + 17;
        let mut scalar = vec![0.0; n];
        fill_chunk_with(&key, 5, &mut scalar, FastPath::Scalar);
        for path in vector_paths() {
            let mut vector = vec![0.0; n];
            fill_chunk_with(&key, 5, &mut vector, path);
            assert_eq!(scalar, vector, "{path:?}");
        }
    }

    /// Word `index` of ChaCha20 stream `stream` from block `first_block`, in the interleaved order of
    /// [`ChaCha20Blocks::next_words`], straight from `rand_chacha`.
    fn reference_word(key: &[u8; 32], stream: u64, first_block: u64, index: usize) -> u64 {
        use rand::SeedableRng;
        let mut rng = ChaCha20Rng::from_seed(*key);
        rng.set_stream(stream);
        let block = first_block + (index / WORDS_PER_CALL * 16 + index % 16) as u64;
        let word = (index % WORDS_PER_CALL / 16) as u128;
        rng.set_word_pos(u128::from(block) * 16 + 2 * word);
        rng.next_u64()
    }

    #[test]
    fn fill_chunk_follows_its_definition_word_for_word() {
        let tables = ziggurat();
        let key: [u8; 32] = std::array::from_fn(|i| (7 * i + 2) as u8);
        // A full chunk, and a short one whose last segment is short.
        for (chunk, len) in [(0u64, FILL_CHUNK), (6, 3 * RETRY_SEGMENT + 129)] {
            let mut out = vec![0.0; len];
            fill_chunk(&key, chunk, &mut out);
            for (s, segment) in out.chunks(RETRY_SEGMENT).enumerate() {
                // Segment s's retry words: stream 2·chunk + 1 from block s·2^32, in coordinate order.
                let mut read = 0;
                let mut more = || {
                    read += 1;
                    reference_word(&key, 2 * chunk + 1, (s as u64) << 32, read - 1)
                };
                for (j, value) in segment.iter().enumerate() {
                    let i = s * RETRY_SEGMENT + j;
                    let expected = tables.sample(reference_word(&key, 2 * chunk, 0, i), &mut more);
                    assert_eq!(value.to_bits(), expected.to_bits(), "chunk {chunk} coordinate {i}");
                }
                // About 15 coordinates of a full segment need more words.
                assert!(read > 0 || segment.len() < RETRY_SEGMENT, "chunk {chunk} segment {s} read none");
            }
        }
    }

    #[test]
    fn vector_inner_rectangles_agree_with_the_scalar_test_on_edge_words() {
        let tables = ziggurat();
        let mut words = [0u64; WORDS_PER_CALL];
        let edges = [0, u64::MAX, 1 << 63, (1 << 63) - 1, 0xff, !0xff, 1 << 11, (1 << 63) | 0x7ff, 1, 0xfe];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for (i, w) in words.iter_mut().enumerate() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *w = if i < edges.len() { edges[i] } else { state ^ (state >> 29) };
        }
        for path in vector_paths() {
            let mut values = [0.0; WORDS_PER_CALL];
            let rejected = path.inner_rectangles(tables, &words, &mut values).expect("a vector path");
            for (i, &bits) in words.iter().enumerate() {
                let layer = bits as u8 as usize;
                let u = 2.0 * unit(bits) - 1.0;
                let inside = u.abs() < tables.ratio[layer];
                assert_eq!(rejected >> i & 1 == 0, inside, "{path:?} word {bits:#x}");
                if inside {
                    let expected = (u * tables.edge[layer]).to_bits();
                    assert_eq!(values[i].to_bits(), expected, "{path:?} word {bits:#x}");
                }
            }
        }
    }

    #[test]
    fn the_layers_close_the_ziggurat() {
        let z = ziggurat();
        let f = |x: f64| (-0.5 * x * x).exp();
        // The base strip: the rectangle under f(R) plus the tail beyond R (Simpson's rule to R + 12).
        let steps = 20_000;
        let h = 12.0 / steps as f64;
        let tail: f64 = (0..=steps)
            .map(|k| {
                let weight = if k == 0 || k == steps {
                    1.0
                } else if k % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                weight * f(TAIL_START + k as f64 * h)
            })
            .sum::<f64>()
            * h
            / 3.0;
        assert!((TAIL_START * f(TAIL_START) + tail - LAYER_AREA).abs() < 1e-13, "base strip area");
        // The top layer, from x_255 to the mode, has the same area V and ends at f(0) = 1.
        let top = LAYER_AREA / z.edge[LAYERS - 1] + z.density[LAYERS - 1];
        assert!((top - 1.0).abs() < 1e-9, "top layer reaches {top}");
        assert!(z.edge.windows(2).all(|w| w[0] > w[1]) && z.edge[LAYERS] == 0.0);
    }

    #[test]
    fn the_wedge_and_tail_paths_are_taken_and_stay_in_their_layers() {
        let tables = ziggurat();
        let mut words = BufferedWords::new(ChaCha20Blocks::new(&[5; 32], 0, 0));
        let (mut slow, mut beyond_tail) = (0, 0);
        for _ in 0..200_000 {
            let bits = words.next();
            let layer = bits as u8 as usize;
            let u = 2.0 * unit(bits) - 1.0;
            if u.abs() >= tables.ratio[layer] {
                slow += 1;
                let x = tables.sample_slowly(bits, &mut || words.next());
                assert!(x.is_finite());
                beyond_tail += (x.abs() > TAIL_START) as usize;
            }
        }
        // 1 − mean(x_{i+1}/x_i) ≈ 1.49% of first words (2,984 expected); a few of them beyond R.
        assert!((2_700..3_280).contains(&slow), "{slow} slow samples");
        assert!(beyond_tail > 0);
    }
}
