//! The ChaCha20 keystream sixteen blocks at a time, for bulk noise.
//!
//! This is the ChaCha20 of Bernstein (20 rounds, 256-bit key, 64-bit block counter, 64-bit stream
//! number: the layout of `rand_chacha::ChaCha20Rng`), computed for 16 consecutive blocks at once with
//! each state word of the 16 blocks in one row of 16 lanes. Every operation then applies to whole rows,
//! which the compiler maps onto AVX-512 registers (one register per word, rotations in one instruction)
//! or pairs of AVX2 registers; the functions are compiled once per instruction set and chosen at run
//! time. The output is the keystream itself, word for word: the tests compare it with `rand_chacha`
//! at arbitrary keys, streams and block positions, and with the test vector of RFC 8439.

/// Blocks computed per call.
const LANES: usize = 16;
/// 64-bit words of keystream per call (16 blocks of 64 bytes).
pub const WORDS_PER_CALL: usize = LANES * 8;

/// "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// One 64-bit-counter ChaCha20 keystream: a key, a stream number and the next block's position.
#[derive(Clone)]
pub struct ChaCha20Blocks {
    key: [u32; 8],
    stream: u64,
    block: u64,
}

impl std::fmt::Debug for ChaCha20Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("ChaCha20Blocks").field("stream", &self.stream).field("block", &self.block).finish()
    }
}

impl ChaCha20Blocks {
    /// The keystream of `key` (32 bytes, read as little-endian words) on stream `stream`, from block
    /// `block` on (the block counter wraps modulo 2^64, as in `rand_chacha`).
    pub fn new(key: &[u8; 32], stream: u64, block: u64) -> Self {
        let mut words = [0u32; 8];
        for (w, bytes) in words.iter_mut().zip(key.chunks_exact(4)) {
            *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        ChaCha20Blocks { key: words, stream, block }
    }

    /// The position of the next block.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Writes the next 16 blocks of keystream into `out`, each 8 bytes as one little-endian `u64`
    /// (the words `ChaCha20Rng::next_u64` returns), interleaved: word k (of 8) of the call's block
    /// `lane` (of 16) at `out[k * 16 + lane]`. Advances by 16 blocks.
    pub fn next_words(&mut self, out: &mut [u64; WORDS_PER_CALL]) {
        let state = State::new(&self.key, self.stream);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                unsafe { x86::blocks_avx512(&state, self.block, out) };
            } else if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { x86::blocks_avx2(&state, self.block, out) };
            } else {
                blocks_portable(&state, self.block, out);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        blocks_portable(&state, self.block, out);
        self.block = self.block.wrapping_add(LANES as u64);
    }
}

/// The 16 input words of a block, but for the counter (words 12 and 13).
struct State([u32; 16]);

impl State {
    fn new(key: &[u32; 8], stream: u64) -> Self {
        let mut words = [0u32; 16];
        words[..4].copy_from_slice(&SIGMA);
        words[4..12].copy_from_slice(key);
        words[14] = stream as u32;
        words[15] = (stream >> 32) as u32;
        State(words)
    }
}

/// One block, word by word: the reference every vector version must match.
fn blocks_portable(state: &State, block: u64, out: &mut [u64; WORDS_PER_CALL]) {
    fn quarter_round(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    }
    for lane in 0..LANES {
        let counter = block.wrapping_add(lane as u64);
        let mut input = state.0;
        input[12] = counter as u32;
        input[13] = (counter >> 32) as u32;
        let mut x = input;
        for _ in 0..10 {
            quarter_round(&mut x, 0, 4, 8, 12);
            quarter_round(&mut x, 1, 5, 9, 13);
            quarter_round(&mut x, 2, 6, 10, 14);
            quarter_round(&mut x, 3, 7, 11, 15);
            quarter_round(&mut x, 0, 5, 10, 15);
            quarter_round(&mut x, 1, 6, 11, 12);
            quarter_round(&mut x, 2, 7, 8, 13);
            quarter_round(&mut x, 3, 4, 9, 14);
        }
        for k in 0..8 {
            let low = x[2 * k].wrapping_add(input[2 * k]);
            let high = x[2 * k + 1].wrapping_add(input[2 * k + 1]);
            out[k * LANES + lane] = u64::from(low) | (u64::from(high) << 32);
        }
    }
}

/// The vector versions: one register per state word, one block per lane.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{State, LANES, WORDS_PER_CALL};
    use std::arch::x86_64::*;

    /// The double rounds over 16 rows of any lane type, given its add, xor and rotate.
    macro_rules! double_rounds {
        ($x:ident, $add:ident, $xor:ident, $rotate:ident) => {
            for _ in 0..10 {
                quarter!($x, 0, 4, 8, 12, $add, $xor, $rotate);
                quarter!($x, 1, 5, 9, 13, $add, $xor, $rotate);
                quarter!($x, 2, 6, 10, 14, $add, $xor, $rotate);
                quarter!($x, 3, 7, 11, 15, $add, $xor, $rotate);
                quarter!($x, 0, 5, 10, 15, $add, $xor, $rotate);
                quarter!($x, 1, 6, 11, 12, $add, $xor, $rotate);
                quarter!($x, 2, 7, 8, 13, $add, $xor, $rotate);
                quarter!($x, 3, 4, 9, 14, $add, $xor, $rotate);
            }
        };
    }

    macro_rules! quarter {
        ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal, $add:ident, $xor:ident, $rotate:ident) => {
            $x[$a] = $add($x[$a], $x[$b]);
            $x[$d] = $rotate::<16>($xor($x[$d], $x[$a]));
            $x[$c] = $add($x[$c], $x[$d]);
            $x[$b] = $rotate::<12>($xor($x[$b], $x[$c]));
            $x[$a] = $add($x[$a], $x[$b]);
            $x[$d] = $rotate::<8>($xor($x[$d], $x[$a]));
            $x[$c] = $add($x[$c], $x[$d]);
            $x[$b] = $rotate::<7>($xor($x[$b], $x[$c]));
        };
    }

    /// 16 blocks in 16 AVX-512 registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn blocks_avx512(state: &State, block: u64, out: &mut [u64; WORDS_PER_CALL]) {
        #[inline(always)]
        fn add(a: __m512i, b: __m512i) -> __m512i {
            // SAFETY: only inlined into `blocks_avx512`, which requires AVX-512F.
            unsafe { _mm512_add_epi32(a, b) }
        }
        #[inline(always)]
        fn xor(a: __m512i, b: __m512i) -> __m512i {
            // SAFETY: as for `add`.
            unsafe { _mm512_xor_si512(a, b) }
        }
        #[inline(always)]
        fn rotate<const BY: i32>(a: __m512i) -> __m512i {
            // SAFETY: as for `add`.
            unsafe { _mm512_rol_epi32::<BY>(a) }
        }
        let splat = |w: u32| _mm512_set1_epi32(w as i32);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let base_low = splat(block as u32);
        let counter_low = _mm512_add_epi32(base_low, lanes);
        // Lanes whose low word wrapped carry into the high word.
        let wrapped = _mm512_cmplt_epu32_mask(counter_low, base_low);
        let base_high = splat((block >> 32) as u32);
        let counter_high = _mm512_mask_add_epi32(base_high, wrapped, base_high, splat(1));
        let w = &state.0;
        let input = [
            splat(w[0]),
            splat(w[1]),
            splat(w[2]),
            splat(w[3]),
            splat(w[4]),
            splat(w[5]),
            splat(w[6]),
            splat(w[7]),
            splat(w[8]),
            splat(w[9]),
            splat(w[10]),
            splat(w[11]),
            counter_low,
            counter_high,
            splat(w[14]),
            splat(w[15]),
        ];
        let mut x = input;
        double_rounds!(x, add, xor, rotate);
        // Interleave the low and high words of each 64-bit output word, lanes 0-7 then 8-15.
        let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for (k, words) in out.chunks_exact_mut(LANES).enumerate() {
            let low = add(x[2 * k], input[2 * k]);
            let high = add(x[2 * k + 1], input[2 * k + 1]);
            let (a, b) =
                (_mm512_permutex2var_epi32(low, first, high), _mm512_permutex2var_epi32(low, second, high));
            // SAFETY: `words` holds 16 u64 = two 64-byte stores; unaligned stores.
            unsafe {
                _mm512_storeu_si512(words.as_mut_ptr().cast(), a);
                _mm512_storeu_si512(words.as_mut_ptr().add(8).cast(), b);
            }
        }
    }

    /// 16 blocks as two runs of 8 blocks in 16 AVX2 registers.
    #[target_feature(enable = "avx2")]
    pub(super) fn blocks_avx2(state: &State, block: u64, out: &mut [u64; WORDS_PER_CALL]) {
        for half in 0..2 {
            eight_blocks_avx2(state, block.wrapping_add(8 * half as u64), out, 8 * half);
        }
    }

    #[target_feature(enable = "avx2")]
    fn eight_blocks_avx2(state: &State, block: u64, out: &mut [u64; WORDS_PER_CALL], first_lane: usize) {
        #[inline(always)]
        fn add(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: only inlined into `eight_blocks_avx2`, which requires AVX2.
            unsafe { _mm256_add_epi32(a, b) }
        }
        #[inline(always)]
        fn xor(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: as for `add`.
            unsafe { _mm256_xor_si256(a, b) }
        }
        #[inline(always)]
        fn rotate<const BY: i32>(a: __m256i) -> __m256i {
            // SAFETY: as for `add`.
            unsafe {
                match BY {
                    // Whole-byte rotations are one byte shuffle.
                    16 => _mm256_shuffle_epi8(
                        a,
                        _mm256_setr_epi8(
                            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10,
                            11, 8, 9, 14, 15, 12, 13,
                        ),
                    ),
                    8 => _mm256_shuffle_epi8(
                        a,
                        _mm256_setr_epi8(
                            3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6, 11,
                            8, 9, 10, 15, 12, 13, 14,
                        ),
                    ),
                    _ => _mm256_or_si256(
                        _mm256_sll_epi32(a, _mm_cvtsi32_si128(BY)),
                        _mm256_srl_epi32(a, _mm_cvtsi32_si128(32 - BY)),
                    ),
                }
            }
        }
        let splat = |w: u32| _mm256_set1_epi32(w as i32);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let base_low = splat(block as u32);
        let counter_low = _mm256_add_epi32(base_low, lanes);
        // Unsigned counter_low < base_low (a wrap): compare with the sign bits flipped; -1 where true.
        let sign = splat(0x8000_0000);
        let wrapped =
            _mm256_cmpgt_epi32(_mm256_xor_si256(base_low, sign), _mm256_xor_si256(counter_low, sign));
        let counter_high = _mm256_sub_epi32(splat((block >> 32) as u32), wrapped);
        let w = &state.0;
        let input = [
            splat(w[0]),
            splat(w[1]),
            splat(w[2]),
            splat(w[3]),
            splat(w[4]),
            splat(w[5]),
            splat(w[6]),
            splat(w[7]),
            splat(w[8]),
            splat(w[9]),
            splat(w[10]),
            splat(w[11]),
            counter_low,
            counter_high,
            splat(w[14]),
            splat(w[15]),
        ];
        let mut x = input;
        double_rounds!(x, add, xor, rotate);
        for (k, words) in out.chunks_exact_mut(LANES).enumerate() {
            let low = add(x[2 * k], input[2 * k]);
            let high = add(x[2 * k + 1], input[2 * k + 1]);
            // unpack gives lanes (0, 1 | 4, 5) and (2, 3 | 6, 7); the 128-bit halves are then regrouped.
            let (a, b) = (_mm256_unpacklo_epi32(low, high), _mm256_unpackhi_epi32(low, high));
            let (first, second) =
                (_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b));
            let words = &mut words[first_lane..first_lane + 8];
            // SAFETY: `words` holds 8 u64 = two 32-byte stores; unaligned stores.
            unsafe {
                _mm256_storeu_si256(words.as_mut_ptr().cast(), first);
                _mm256_storeu_si256(words.as_mut_ptr().add(4).cast(), second);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn rfc_8439_block_function_test_vector() {
        // RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block counter 1. In the
        // 64-bit layout the counter word pair is (1, 0x09000000) and the stream (0x4a000000, 0).
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut keystream = ChaCha20Blocks::new(&key, 0x4a00_0000, 0x0900_0000_0000_0001);
        let mut out = [0u64; WORDS_PER_CALL];
        keystream.next_words(&mut out);
        let expected: [u32; 16] = [
            0xe4e7f110, 0x15593bd1, 0x1fdd0f50, 0xc47120a3, 0xc7f4d1c7, 0x0368c033, 0x9aaa2204, 0x4e6cd4c3,
            0x466482d2, 0x09aa9f07, 0x05d7c214, 0xa2028bd9, 0xd19c12b5, 0xb94e16de, 0xe883d0cb, 0x4e3c50a2,
        ];
        for k in 0..8 {
            assert_eq!(
                out[k * LANES],
                u64::from(expected[2 * k]) | (u64::from(expected[2 * k + 1]) << 32),
                "word {k}"
            );
        }
        assert_eq!(keystream.block(), 0x0900_0000_0000_0011);
    }

    #[test]
    fn equals_rand_chacha_at_any_key_stream_and_position() {
        let mut keys = ChaCha20Rng::seed_from_u64(77);
        for (stream, block) in [(0u64, 0u64), (1, 5), (u64::MAX, 1 << 40), (12345, u64::MAX - 7), (3, 2048)] {
            let mut key = [0u8; 32];
            keys.fill_bytes(&mut key);
            let mut reference = ChaCha20Rng::from_seed(key);
            reference.set_stream(stream);
            reference.set_word_pos(u128::from(block) * 16);
            let mut ours = ChaCha20Blocks::new(&key, stream, block);
            let mut out = [0u64; WORDS_PER_CALL];
            for call in 0..3 {
                ours.next_words(&mut out);
                for lane in 0..LANES {
                    for k in 0..8 {
                        let expected = reference.next_u64();
                        assert_eq!(
                            out[k * LANES + lane],
                            expected,
                            "stream {stream} block {block} call {call}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_words() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        for (stream, block) in [(9u64, 99u64), (1, u64::MAX - 3), (u64::MAX, (1 << 32) - 5)] {
            let keystream = ChaCha20Blocks::new(&key, stream, block);
            let state = State::new(&keystream.key, stream);
            let mut portable = [0u64; WORDS_PER_CALL];
            blocks_portable(&state, block, &mut portable);
            let mut dispatched = [0u64; WORDS_PER_CALL];
            keystream.clone().next_words(&mut dispatched);
            assert_eq!(portable, dispatched);
            #[cfg(target_arch = "x86_64")]
            {
                let mut vector = [0u64; WORDS_PER_CALL];
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is present (checked).
                    unsafe { x86::blocks_avx2(&state, block, &mut vector) };
                    assert_eq!(portable, vector, "AVX2");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: AVX-512F is present (checked).
                    unsafe { x86::blocks_avx512(&state, block, &mut vector) };
                    assert_eq!(portable, vector, "AVX-512");
                }
            }
        }
    }
}
