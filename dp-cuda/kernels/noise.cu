// Gaussian noise on the device, value for value the CPU's chunked draw
// (dp-runtime/src/noise/gaussian.rs, `fill_chunk`): coordinate i of chunk j (CHUNK coordinates each)
// takes its first 64-bit word from ChaCha20 stream 2j under the step's key, at the position the CPU's
// interleaved 16-block calls give it (call i / 128, block lane i % 16, word (i % 128) / 16), and runs
// the ziggurat's common case. The ~1.5% of coordinates outside their layer's inner rectangle are
// redone, in coordinate order, from stream 2j + 1: a second, serial pass per chunk.
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
// word (index % 128) / 16; the block is recomputed whenever the needed one changes.
typedef struct {
    const dp_u32 *key;
    dp_u64 stream;
    dp_u64 index;
    dp_u64 cached_block;
    int has_block;
    dp_u64 words[8];
} dp_word_stream;

DP_DEVICE dp_u64 dp_next_word(dp_word_stream *s) {
    dp_u64 i = s->index++;
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
// the others get NaN, which pass 2 replaces. `len` is the chunk's length (the last chunk is short).
DP_DEVICE void dp_noise_first_block(const dp_u32 key[8], dp_u64 chunk, dp_u64 block, dp_u64 len,
                                    const double *edge, const double *ratio, double *out) {
    dp_u64 words[8];
    dp_chacha20_block(key, 2 * chunk, block, words);
    dp_u64 call = block / DP_LANES, lane = block % DP_LANES;
    for (dp_u64 k = 0; k < 8; ++k) {
        dp_u64 i = call * DP_WORDS_PER_CALL + k * DP_LANES + lane;
        if (i >= len) continue;
        dp_u64 bits = words[k];
        dp_u32 layer = (dp_u32)(bits & 0xffu);
        double u = 2.0 * dp_unit(bits) - 1.0;
        out[i] = fabs(u) < ratio[layer] ? u * edge[layer] : (0.0 / 0.0);
    }
}

// Pass 2 for one chunk: the NaN coordinates, in order, from stream 2·chunk + 1.
DP_DEVICE void dp_noise_retry_chunk(const dp_u32 key[8], dp_u64 chunk, dp_u64 len, const double *edge,
                                    const double *ratio, const double *density, double *out) {
    dp_word_stream more = {key, 2 * chunk + 1, 0, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
    dp_word_stream first = {key, 2 * chunk, 0, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
    for (dp_u64 i = 0; i < len; ++i) {
        if (out[i] == out[i]) continue;
        first.index = i;
        out[i] = dp_ziggurat_slow(dp_next_word(&first), &more, edge, ratio, density);
    }
}

#ifdef __CUDACC__
// One thread per ChaCha20 block of every chunk: blocks_per_chunk = ceil(CHUNK / 8) for full chunks.
extern "C" __global__ void dp_noise_first(const dp_u32 *key, dp_u64 len, const double *edge,
                                          const double *ratio, double *out) {
    dp_u64 global = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    dp_u64 blocks_per_chunk = DP_NOISE_CHUNK / 8;
    dp_u64 chunk = global / blocks_per_chunk, block = global % blocks_per_chunk;
    dp_u64 start = chunk * DP_NOISE_CHUNK;
    if (start >= len) return;
    dp_u64 chunk_len = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
    dp_noise_first_block(key, chunk, block, chunk_len, edge, ratio, out + start);
}

// One thread per chunk.
extern "C" __global__ void dp_noise_retry(const dp_u32 *key, dp_u64 len, const double *edge,
                                          const double *ratio, const double *density, double *out) {
    dp_u64 chunk = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    dp_u64 start = chunk * DP_NOISE_CHUNK;
    if (start >= len) return;
    dp_u64 chunk_len = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
    dp_noise_retry_chunk(key, chunk, chunk_len, edge, ratio, density, out + start);
}
#endif
