// Gaussian noise on the device, value for value the CPU's chunked draw
// (dp-runtime/src/noise/gaussian.rs, `fill_chunk`): coordinate i of chunk j (CHUNK coordinates each)
// takes its first 64-bit word from ChaCha20 stream 2j under the step's key, at the position the CPU's
// interleaved 16-block calls give it (call i / 128, block lane i % 16, word (i % 128) / 16), and runs
// the ziggurat's common case. The ~1.5% of coordinates outside their layer's inner rectangle are
// redone from stream 2j + 1, segment by segment: the chunk's coordinates fall into segments of
// SEGMENT (1,024; the last segment of a short last chunk may be shorter), and segment s reads its
// retry words, in coordinate order within the segment, from stream 2j + 1 starting at block s·2^32,
// in the same interleaved order. Pass 1 keeps the first word of each coordinate to redo, so pass 2
// recomputes no block of stream 2j; on the device one warp handles a segment: its lanes find the
// coordinates to redo and compute the first words of the segment's retry stream ahead, and its
// first lane redoes them in order. The segments are independent of each other.
//
// The same file compiles as plain C on the host (tests/host_harness.c), so the arithmetic is tested
// against the CPU without a GPU; only the two __global__ wrappers are device-only.

#include "common.cuh"

#define DP_NOISE_CHUNK 16384u
#define DP_NOISE_SEGMENT 1024u
#define DP_SEGMENTS_PER_CHUNK (DP_NOISE_CHUNK / DP_NOISE_SEGMENT)
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

// Word `index` of a stream read in the CPU's interleaved order from block `first_block`: call
// index / 128, lane index % 16, word (index % 128) / 16. The first `prefix_len` words may come from
// `prefix`, computed ahead (by a warp's lanes on the device); past them the block is recomputed
// whenever the needed one changes.
typedef struct {
    const dp_u32 *key;
    dp_u64 stream;
    dp_u64 first_block;
    dp_u64 index;
    dp_u64 cached_block;
    int has_block;
    dp_u64 words[8];
    const dp_u64 *prefix;
    dp_u64 prefix_len;
} dp_word_stream;

// Words of a segment's retry stream computed ahead of its serial pass: one call of 16 blocks, 128
// words, far more than a segment's retries usually read (about 1.2 words for each of ~15). The host
// tests also build with a shorter prefix (any length from 1 word), so that the stream runs past it.
#ifndef DP_PREFIX_WORDS
#define DP_PREFIX_WORDS 128u
#endif
// The blocks that hold the prefix's words (whole calls of 16; a block may hold none of them).
#define DP_PREFIX_BLOCKS ((DP_PREFIX_WORDS + DP_WORDS_PER_CALL - 1) / DP_WORDS_PER_CALL * DP_LANES)

// Block `first_block + block` (block < DP_PREFIX_BLOCKS) of `stream`: those of its 8 words whose index
// in the stream read from `first_block` is below DP_PREFIX_WORDS, stored at that index.
DP_DEVICE void dp_fill_prefix_block(const dp_u32 key[8], dp_u64 stream, dp_u64 first_block, dp_u64 block,
                                    dp_u64 *prefix) {
    dp_u64 call = block / DP_LANES, lane = block % DP_LANES;
    if (call * DP_WORDS_PER_CALL + lane >= DP_PREFIX_WORDS) return;
    dp_u64 words[8];
    dp_chacha20_block(key, stream, first_block + block, words);
    for (dp_u64 k = 0; k < 8; ++k) {
        dp_u64 index = call * DP_WORDS_PER_CALL + k * DP_LANES + lane;
        if (index < DP_PREFIX_WORDS) prefix[index] = words[k];
    }
}

// Hooks the host tests define to count the paths they must exercise; nothing elsewhere.
#ifndef DP_TEST_PAST_PREFIX
#define DP_TEST_PAST_PREFIX() ((void)0)
#endif
#ifndef DP_TEST_SCAN
#define DP_TEST_SCAN() ((void)0)
#endif

DP_DEVICE dp_u64 dp_next_word(dp_word_stream *s) {
    dp_u64 i = s->index++;
    if (i < s->prefix_len) return s->prefix[i];
    DP_TEST_PAST_PREFIX();
    dp_u64 within = i % DP_WORDS_PER_CALL;
    dp_u64 block = s->first_block + (i / DP_WORDS_PER_CALL) * DP_LANES + within % DP_LANES;
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

// The first coordinates to redo a segment lists (their indices and first words) before its serial
// pass; past them the pass scans the segment for NaN itself. 64 is far more than the ~15 a segment
// usually has; the host tests also build with a shorter list, so that the scan runs.
#ifndef DP_RETRY_LIST
#define DP_RETRY_LIST 64u
#endif

// Pass 2 for one segment (segment `segment` of chunk `chunk`, `len` coordinates, `first_words` and
// `out` its own): the NaN coordinates, in order, from their first words and the segment's retry
// stream (stream 2·chunk + 1 from block segment·2^32), whose first DP_PREFIX_WORDS words are in
// `prefix`. `count` is the number of NaN coordinates; the first min(count, DP_RETRY_LIST) of them, in
// order, are listed in `list_index` and `list_word`; any after the last listed one are found by a scan.
DP_DEVICE void dp_noise_retry_segment(const dp_u32 key[8], dp_u64 chunk, dp_u64 segment, dp_u64 len,
                                      const double *edge, const double *ratio, const double *density,
                                      const dp_u64 *first_words, const dp_u64 *prefix,
                                      const dp_u32 *list_index, const dp_u64 *list_word, dp_u64 count,
                                      double *out) {
    dp_word_stream more = {key, 2 * chunk + 1, segment << 32, 0, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0},
                           prefix, DP_PREFIX_WORDS};
    dp_u64 listed = count < DP_RETRY_LIST ? count : DP_RETRY_LIST;
    for (dp_u64 k = 0; k < listed; ++k)
        out[list_index[k]] = dp_ziggurat_slow(list_word[k], &more, edge, ratio, density);
    if (count == listed) return;
    DP_TEST_SCAN();
    for (dp_u64 i = listed == 0 ? 0 : list_index[listed - 1] + 1; i < len; ++i) {
        if (out[i] == out[i]) continue;
        out[i] = dp_ziggurat_slow(first_words[i], &more, edge, ratio, density);
    }
}

// Pass 2 for one chunk, serially (the host harness's path; the kernel below takes the same steps for
// each segment): segment by segment, the retry stream's prefix (blocks in reverse order), the list of
// the coordinates to redo, then dp_noise_retry_segment.
DP_DEVICE void dp_noise_retry_chunk(const dp_u32 key[8], dp_u64 chunk, dp_u64 len, const double *edge,
                                    const double *ratio, const double *density, const dp_u64 *first_words,
                                    double *out) {
    dp_u64 prefix[DP_PREFIX_WORDS];
    dp_u32 list_index[DP_RETRY_LIST];
    dp_u64 list_word[DP_RETRY_LIST];
    for (dp_u64 s = 0; s * DP_NOISE_SEGMENT < len; ++s) {
        dp_u64 start = s * DP_NOISE_SEGMENT;
        dp_u64 n = len - start < DP_NOISE_SEGMENT ? len - start : DP_NOISE_SEGMENT;
        for (dp_u64 b = DP_PREFIX_BLOCKS; b-- > 0;) dp_fill_prefix_block(key, 2 * chunk + 1, s << 32, b, prefix);
        dp_u64 count = 0;
        for (dp_u64 i = 0; i < n; ++i) {
            if (out[start + i] == out[start + i]) continue;
            if (count < DP_RETRY_LIST) {
                list_index[count] = (dp_u32)i;
                list_word[count] = first_words[start + i];
            }
            ++count;
        }
        dp_noise_retry_segment(key, chunk, s, n, edge, ratio, density, first_words + start, prefix, list_index,
                               list_word, count, out + start);
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
#define DP_RETRY_WARPS (DP_RETRY_THREADS / 32u)
#define DP_SEGMENT_TILES (DP_NOISE_SEGMENT / 32u)

// One warp per segment, DP_RETRY_WARPS segments per block of DP_RETRY_THREADS: segment g of the whole
// vector (coordinates g·SEGMENT..) is segment g % SEGMENTS_PER_CHUNK of chunk g / SEGMENTS_PER_CHUNK.
// Lane l reads coordinates l, l + 32, ... of the segment (tile t = coordinate / 32) and notes which
// pass 1 left NaN; a ballot per tile ranks them in coordinate order, and the first DP_RETRY_LIST are
// listed, with their first words, in the warp's shared memory. The lanes then compute the first
// DP_PREFIX_WORDS words of the segment's retry stream (a ChaCha20 block each) into shared memory, and
// lane 0 redoes the segment's coordinates in order (dp_noise_retry_segment), as the CPU does.
extern "C" __global__ void dp_noise_retry(const dp_u32 *key, dp_u64 len, const double *edge,
                                          const double *ratio, const double *density,
                                          const dp_u64 *first_words, double *out) {
    __shared__ dp_u64 prefix[DP_RETRY_WARPS][DP_PREFIX_WORDS];
    __shared__ dp_u64 list_word[DP_RETRY_WARPS][DP_RETRY_LIST];
    __shared__ dp_u32 list_index[DP_RETRY_WARPS][DP_RETRY_LIST];
    unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    dp_u64 segment = (dp_u64)blockIdx.x * DP_RETRY_WARPS + warp;
    dp_u64 start = segment * DP_NOISE_SEGMENT;
    if (start >= len) return;  // the whole warp: no other warp waits for it
    dp_u64 n = len - start < DP_NOISE_SEGMENT ? len - start : DP_NOISE_SEGMENT;
    dp_u64 chunk = segment / DP_SEGMENTS_PER_CHUNK, within = segment % DP_SEGMENTS_PER_CHUNK;
    double *values = out + start;
    const dp_u64 *words = first_words + start;
    // Bit t: this lane's coordinate of tile t is to be redone (the loads are independent).
    unsigned int flags = 0;
#pragma unroll
    for (unsigned int t = 0; t < DP_SEGMENT_TILES; ++t) {
        dp_u64 i = t * 32u + lane;
        if (i < n && values[i] != values[i]) flags |= 1u << t;
    }
    unsigned int count = 0;
    for (unsigned int t = 0; t < DP_SEGMENT_TILES; ++t) {
        unsigned int redo = (flags >> t) & 1u;
        unsigned int ballot = __ballot_sync(0xffffffffu, redo);
        unsigned int rank = count + __popc(ballot & ((1u << lane) - 1u));
        if (redo && rank < DP_RETRY_LIST) {
            list_index[warp][rank] = t * 32u + lane;
            list_word[warp][rank] = words[t * 32u + lane];
        }
        count += __popc(ballot);
    }
    if (count == 0) return;  // uniform across the warp
    for (dp_u64 b = lane; b < DP_PREFIX_BLOCKS; b += 32u)
        dp_fill_prefix_block(key, 2 * chunk + 1, within << 32, b, prefix[warp]);
    __syncwarp();
    if (lane == 0)
        dp_noise_retry_segment(key, chunk, within, n, edge, ratio, density, words, prefix[warp],
                               list_index[warp], list_word[warp], count, values);
}
#endif
