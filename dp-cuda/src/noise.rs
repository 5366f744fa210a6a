//! Gaussian noise on the device: the kernels of `kernels/noise.cu` and the geometry of their launches.
//!
//! The device draw is value for value the CPU's [`fill_chunk`](dp_runtime::noise::gaussian::fill_chunk)
//! under the same 256-bit key: chunks of [`CHUNK`] coordinates, each with its own two ChaCha20
//! streams, the second one read from a separate range of blocks by each segment of [`SEGMENT`]
//! coordinates, so every coordinate is a function of the key and its index only. On the device it
//! runs in two passes: `dp_noise_first`, one thread per ChaCha20 block (8 coordinates), the
//! ziggurat's common case, with NaN left where a coordinate falls outside its inner rectangle (about
//! 1.5%) and its first word kept; then `dp_noise_retry`, one warp per segment ([`SEGMENTS_PER_BLOCK`]
//! per block), whose lanes find those coordinates (a ballot per 32) and compute the first words of
//! the segment's retry stream ahead, into shared memory, and whose first lane redoes them in order
//! from that stream, as the CPU does. The key comes from the host's CSPRNG each step; the tables are
//! the CPU's ([`ziggurat_tables`](dp_runtime::noise::gaussian::ziggurat_tables)), copied to the device.

use dp_runtime::noise::gaussian::{FILL_CHUNK, RETRY_SEGMENT};

/// The CUDA C source of the noise kernels.
pub const SOURCE: &str = include_str!("../kernels/noise.cu");

/// Coordinates per chunk: the CPU's, so that both draw the same values.
pub const CHUNK: usize = FILL_CHUNK;

/// Coordinates per retry segment: the CPU's, so that both draw the same values.
pub const SEGMENT: usize = RETRY_SEGMENT;

/// ChaCha20 blocks (8 coordinates each) per chunk: the threads of pass 1 per chunk.
pub const BLOCKS_PER_CHUNK: usize = CHUNK / 8;

/// Threads per block of both passes (`DP_RETRY_THREADS` in the kernel).
pub const THREADS: u32 = 256;

/// Segments per block of pass 2: one warp of 32 threads each.
pub const SEGMENTS_PER_BLOCK: usize = THREADS as usize / 32;

/// Grid and block sizes of one kernel launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchShape {
    /// Blocks in the grid.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
}

/// The two launches that draw `len` coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseLaunch {
    /// Pass 1: one thread per ChaCha20 block of every chunk.
    pub first: LaunchShape,
    /// Pass 2: one warp per segment, [`SEGMENTS_PER_BLOCK`] per block.
    pub retry: LaunchShape,
}

impl NoiseLaunch {
    /// The launches for a vector of `len` coordinates (`len` > 0).
    pub fn for_len(len: usize) -> Self {
        let chunks = len.div_ceil(CHUNK);
        let first_threads = chunks * BLOCKS_PER_CHUNK;
        let segments = len.div_ceil(SEGMENT);
        NoiseLaunch {
            first: LaunchShape { grid: blocks(first_threads), block: THREADS },
            retry: LaunchShape {
                grid: u32::try_from(segments.div_ceil(SEGMENTS_PER_BLOCK))
                    .expect("a noise vector of fewer than 2^45 coordinates"),
                block: THREADS,
            },
        }
    }
}

fn blocks(threads: usize) -> u32 {
    u32::try_from(threads.div_ceil(THREADS as usize)).expect("a noise vector of fewer than 2^40 coordinates")
}

/// The step key as the kernels read it: eight little-endian 32-bit words.
pub fn key_words(key: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_coordinate_has_a_first_pass_thread_and_every_segment_a_retry_warp() {
        for len in [1, 7, SEGMENT, SEGMENT + 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3, 1_250_000] {
            let launch = NoiseLaunch::for_len(len);
            let chunks = len.div_ceil(CHUNK);
            let first = launch.first.grid as usize * launch.first.block as usize;
            // The kernel's warp w of block b is segment b·SEGMENTS_PER_BLOCK + w: every segment has a
            // warp, and no block is all idle warps.
            let warps = launch.retry.grid as usize * launch.retry.block as usize / 32;
            let segments = len.div_ceil(SEGMENT);
            assert_eq!(launch.retry.block, THREADS);
            assert!(warps >= segments && warps < segments + SEGMENTS_PER_BLOCK, "{len}: {warps} warps");
            assert!(
                first >= chunks * BLOCKS_PER_CHUNK && first < chunks * BLOCKS_PER_CHUNK + THREADS as usize
            );
            // The kernel's index arithmetic: thread t covers chunk t / BLOCKS_PER_CHUNK, so the last
            // coordinate's chunk is reached.
            assert_eq!((chunks * BLOCKS_PER_CHUNK - 1) / BLOCKS_PER_CHUNK, chunks - 1);
        }
    }

    #[test]
    fn key_words_are_little_endian() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&[1, 2, 3, 4]);
        key[28..].copy_from_slice(&[0xff, 0, 0, 0x80]);
        let words = key_words(&key);
        assert_eq!(words[0], 0x0403_0201);
        assert_eq!(words[7], 0x8000_00ff);
    }

    #[test]
    fn the_kernel_source_states_the_cpus_chunk_and_segment_and_the_retry_block() {
        assert!(SOURCE.contains(&format!("#define DP_NOISE_CHUNK {CHUNK}u")));
        assert!(SOURCE.contains(&format!("#define DP_NOISE_SEGMENT {SEGMENT}u")));
        assert!(SOURCE.contains(&format!("#define DP_RETRY_THREADS {THREADS}u")));
        assert!(SOURCE.contains("#define DP_RETRY_WARPS (DP_RETRY_THREADS / 32u)"));
        assert!(CHUNK.is_multiple_of(SEGMENT), "a chunk is whole segments");
    }
}
