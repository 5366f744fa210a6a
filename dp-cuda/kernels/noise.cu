// Gaussian noise on the device, value for value the CPU's chunked draw
// (dp-runtime/src/noise/gaussian.rs, `fill_chunk`): coordinate i of chunk j (CHUNK coordinates each)
// takes its first 64-bit word from ChaCha20 stream 2j under the step's key, at the position the CPU's
// interleaved 16-block calls give it (call i / 128, block lane i % 16, word (i % 128) / 16), and runs
// the ziggurat's common case. The ~1.5% of coordinates outside their layer's inner rectangle are
// redone, in coordinate order, from stream 2j + 1: a second pass per chunk, serial in its use of that
// stream. Pass 1 keeps the first word of each such coordinate, so pass 2 recomputes no block of
// stream 2j; on the device a block of threads finds the coordinates to redo, a tile at a time, and
// one thread redoes them in order.
//
// The same file compiles as plain C on the host (tests/host_harness.c), so the arithmetic is tested
// against the CPU without a GPU; only the two __global__ wrappers are device-only.

#include "common.cuh"

#define DP_NOISE_CHUNK 16384u
#define DP_WORDS_PER_CALL 128u
#define DP_LANES 16u
#define DP_LAYERS 256u
#define DP_TAIL_START 3.654152885361009

DP_DEVICE dp_u32 dp_rotl(dp_u32 x, int n) { return (x << n) | (x >> (32 - n)); }

#define DP_QR(a, b, c, d)                  \
    x[a] += x[b]; x[d] = dp_rotl(x[d] ^ x[a], 16); \
    x[c] += x[d]; x[b] = dp_rotl(x[b] ^ x[c], 12); \
    x[a] += x[b]; x[d] = dp_rotl(x[d] ^ x[a], 8);  \
    x[c] += x[d]; x[b] = dp_rotl(x[b] ^ x[c], 7);

// One ChaCha20 block (64-bit counter, 64-bit stream: rand_chacha's layout) as 8 little-endian words.
DP_DEVICE void dp_chacha20_block(const dp_u32 key[8], dp_u64 stream, dp_u64 counter, dp_u64 out[8]) {
    dp_u32 input[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
                        (dp_u32)counter, (dp_u32)(counter >> 32), (dp_u32)stream, (dp_u32)(stream >> 32)};
    dp_u32 x[16];
    for (int i = 0; i < 16; ++i) x[i] = input[i];
    for (int round = 0; round < 10; ++round) {
        DP_QR(0, 4, 8, 12) DP_QR(1, 5, 9, 13) DP_QR(2, 6, 10, 14) DP_QR(3, 7, 11, 15)
        DP_QR(0, 5, 10, 15) DP_QR(1, 6, 11, 12) DP_QR(2, 7, 8, 13) DP_QR(3, 4, 9, 14)
    }
    for (int k = 0; k < 8; ++k) {
        dp_u64 low = (dp_u32)(x[2 * k] + input[2 * k]);
        dp_u64 high = (dp_u32)(x[2 * k + 1] + input[2 * k + 1]);
        out[k] = low | (high << 32);
    }
}

// The top 53 bits as a uniform on [0, 1), and on (0, 1].
DP_DEVICE double dp_unit(dp_u64 w) { return (double)(w >> 11) * (1.0 / 9007199254740992.0); }
DP_DEVICE double dp_unit_open_closed(dp_u64 w) { return (double)((w >> 11) + 1) * (1.0 / 9007199254740992.0); }

// Word `index` of a stream read in the CPU's interleaved order: call index / 128, lane index % 16,
// word (index % 128) / 16. The first `prefix_len` words may come from `prefix`, computed ahead (by a
// block of threads on the device); past them the block is recomputed whenever the needed one changes.
typedef struct {
    const dp_u32 *key;
    dp_u64 stream;
    dp_u64 index;
    dp_u64 cached_block;
    int has_block;
    dp_u64 words[8];
    const dp_u64 *prefix;
    dp_u64 prefix_len;
} dp_word_stream;

// Words of the retry stream computed ahead of the serial pass: DP_PREFIX_CALLS calls of 16 blocks,
// 1,024 words, more than a chunk's retries usually read (about 1.2 words for each of ~245).
#ifndef DP_PREFIX_CALLS  // the host tests also build with a shorter prefix, to run past its end
#define DP_PREFIX_CALLS 8u
#endif
#define DP_PREFIX_BLOCKS (DP_PREFIX_CALLS * DP_LANES)
#define DP_PREFIX_WORDS (DP_PREFIX_CALLS * DP_WORDS_PER_CALL)

// Block `block` (< DP_PREFIX_BLOCKS) of `stream`, its 8 words stored at their word indices.
DP_DEVICE void dp_fill_prefix_block(const dp_u32 key[8], dp_u64 stream, dp_u64 block, dp_u64 *prefix) {
    dp_u64 words[8];
    dp_chacha20_block(key, stream, block, words);
    dp_u64 call = block / DP_LANES, lane = block % DP_LANES;
    for (dp_u64 k = 0; k < 8; ++k) prefix[call * DP_WORDS_PER_CALL + k * DP_LANES + lane] = words[k];
}

DP_DEVICE dp_u64 dp_next_word(dp_word_stream *s) {
    dp_u64 i = s->index++;
    if (i < s->prefix_len) return s->prefix[i];
    dp_u64 within = i % DP_WORDS_PER_CALL;
    dp_u64 block = (i / DP_WORDS_PER_CALL) * DP_LANES + within % DP_LANES;
    if (!s->has_block || s->cached_block != block) {
        dp_chacha20_block(s->key, s->stream, block, s->words);
        s->cached_block = block;
        s->has_block = 1;
    }
    return s->words[within / DP_LANES];
}

// The ziggurat after a first word outside its inner rectangle: Marsaglia's exact tail beyond R for
// layer 0, the wedge test otherwise, then further attempts, every word from `more`.
DP_DEVICE double dp_ziggurat_slow(dp_u64 bits, dp_word_stream *more, const double *edge,
                                  const double *ratio, const double *density) {
    for (;;) {
        dp_u32 layer = (dp_u32)(bits & 0xffu);
        double u = 2.0 * dp_unit(bits) - 1.0;
        if (fabs(u) < ratio[layer]) return u * edge[layer];
        if (layer == 0) {
            for (;;) {
                double x = log(dp_unit_open_closed(dp_next_word(more))) / DP_TAIL_START;
                double y = log(dp_unit_open_closed(dp_next_word(more)));
                if (-2.0 * y >= x * x) return u < 0.0 ? x - DP_TAIL_START : DP_TAIL_START - x;
            }
        }
        double x = u * edge[layer];
        double below = density[layer], above = density[layer + 1];
        if (above + dp_unit(dp_next_word(more)) * (below - above) < exp(-0.5 * x * x)) return x;
        bits = dp_next_word(more);
    }
}

// Pass 1 for one ChaCha20 block of a chunk's first stream: `block` (0, 1, ...) gives the 8
// coordinates whose first words it holds. Coordinates inside their inner rectangle get their value;
// the others get NaN, which pass 2 replaces, and their first word in `first_words`. `len` is the
// chunk's length (the last chunk is short).
DP_DEVICE void dp_noise_first_block(const dp_u32 key[8], dp_u64 chunk, dp_u64 block, dp_u64 len,
                                    const double *edge, const double *ratio, double *out,
                                    dp_u64 *first_words) {
    dp_u64 words[8];
    dp_chacha20_block(key, 2 * chunk, block, words);
    dp_u64 call = block / DP_LANES, lane = block % DP_LANES;
    for (dp_u64 k = 0; k < 8; ++k) {
        dp_u64 i = call * DP_WORDS_PER_CALL + k * DP_LANES + lane;
        if (i >= len) continue;
        dp_u64 bits = words[k];
        dp_u32 layer = (dp_u32)(bits & 0xffu);
        double u = 2.0 * dp_unit(bits) - 1.0;
        if (fabs(u) < ratio[layer]) {
            out[i] = u * edge[layer];
        } else {
            out[i] = 0.0 / 0.0;
            first_words[i] = bits;
        }
    }
}

// Pass 2 for one chunk, serially: the NaN coordinates, in order, from their first words and stream
// 2·chunk + 1 (the host harness's path; the kernel below takes the same steps), the stream's first
// DP_PREFIX_WORDS words computed ahead into `prefix`, blocks in reverse order.
DP_DEVICE void dp_noise_retry_chunk(const dp_u32 key[8], dp_u64 chunk, dp_u64 len, const double *edge,
                                    const double *ratio, const double *density, const dp_u64 *first_words,
                                    dp_u64 *prefix, double *out) {
    for (dp_u64 b = DP_PREFIX_BLOCKS; b-- > 0;) dp_fill_prefix_block(key, 2 * chunk + 1, b, prefix);
    dp_word_stream more = {key, 2 * chunk + 1, 0, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}, prefix, DP_PREFIX_WORDS};
    for (dp_u64 i = 0; i < len; ++i) {
        if (out[i] == out[i]) continue;
        out[i] = dp_ziggurat_slow(first_words[i], &more, edge, ratio, density);
    }
}

#ifdef __CUDACC__
// One thread per ChaCha20 block of every chunk: blocks_per_chunk = ceil(CHUNK / 8) for full chunks.
extern "C" __global__ void dp_noise_first(const dp_u32 *key, dp_u64 len, const double *edge,
                                          const double *ratio, double *out, dp_u64 *first_words) {
    dp_u64 global = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    dp_u64 blocks_per_chunk = DP_NOISE_CHUNK / 8;
    dp_u64 chunk = global / blocks_per_chunk, block = global % blocks_per_chunk;
    dp_u64 start = chunk * DP_NOISE_CHUNK;
    if (start >= len) return;
    dp_u64 chunk_len = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
    dp_noise_first_block(key, chunk, block, chunk_len, edge, ratio, out + start, first_words + start);
}

#define DP_RETRY_THREADS 256u

// One block of DP_RETRY_THREADS per chunk. First the threads compute the retry stream's first
// DP_PREFIX_WORDS words into shared memory, a ChaCha20 block each. Then, tile by tile, they flag their
// coordinate if pass 1 left it NaN and write the flagged indices, in order, into a shared list (a
// ballot per warp and the warps' counts summed before it); thread 0 redoes them in that order, holding
// stream 2·chunk + 1 across tiles, so the stream is read in coordinate order as on the CPU.
extern "C" __global__ void dp_noise_retry(const dp_u32 *key, dp_u64 len, const double *edge,
                                          const double *ratio, const double *density,
                                          const dp_u64 *first_words, double *out) {
    __shared__ unsigned int list[DP_RETRY_THREADS];
    __shared__ unsigned int warp_start[DP_RETRY_THREADS / 32 + 1];
    __shared__ dp_u64 prefix[DP_PREFIX_WORDS];
    dp_u64 chunk = blockIdx.x;
    dp_u64 start = chunk * DP_NOISE_CHUNK;
    if (start >= len) return;
    dp_u64 chunk_len = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
    double *values = out + start;
    const dp_u64 *words = first_words + start;
    for (dp_u64 b = threadIdx.x; b < DP_PREFIX_BLOCKS; b += DP_RETRY_THREADS)
        dp_fill_prefix_block(key, 2 * chunk + 1, b, prefix);
    __syncthreads();
    dp_word_stream more = {key, 2 * chunk + 1, 0, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}, prefix, DP_PREFIX_WORDS};
    unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    for (dp_u64 tile = 0; tile < chunk_len; tile += DP_RETRY_THREADS) {
        dp_u64 i = tile + threadIdx.x;
        int redo = i < chunk_len && values[i] != values[i];
        unsigned int ballot = __ballot_sync(0xffffffffu, redo);
        if (lane == 0) warp_start[warp + 1] = __popc(ballot);
        __syncthreads();
        if (threadIdx.x == 0) {
            warp_start[0] = 0;
            for (unsigned int w = 1; w <= DP_RETRY_THREADS / 32; ++w) warp_start[w] += warp_start[w - 1];
        }
        __syncthreads();
        if (redo) list[warp_start[warp] + __popc(ballot & ((1u << lane) - 1u))] = (unsigned int)(i - tile);
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned int count = warp_start[DP_RETRY_THREADS / 32];
            for (unsigned int k = 0; k < count; ++k) {
                dp_u64 j = tile + list[k];
                values[j] = dp_ziggurat_slow(words[j], &more, edge, ratio, density);
            }
        }
        __syncthreads();
    }
}
#endif
