// noise.cu's serial path (what its host harness runs), compiled for the host without the CUDA
// execution model: the tests compare dp_noise_first and dp_noise_retry, run by the emulator, with it.
#include "noise.cu"

// The `len` standard normals of noise.cu's draw under `key`: pass 1 block by block, then pass 2
// chunk by chunk (dp_noise_retry_chunk). `first_words` is scratch of `len` words.
extern "C" void dp_emu_selftest_noise_reference(const dp_u32 key[8], dp_u64 len, const double *edge,
                                                const double *ratio, const double *density, double *out,
                                                dp_u64 *first_words) {
    for (dp_u64 chunk = 0; chunk * DP_NOISE_CHUNK < len; ++chunk) {
        dp_u64 start = chunk * DP_NOISE_CHUNK;
        dp_u64 chunk_len = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
        for (dp_u64 block = 0; block < DP_NOISE_CHUNK / 8; ++block)
            dp_noise_first_block(key, chunk, block, chunk_len, edge, ratio, out + start, first_words + start);
        dp_noise_retry_chunk(key, chunk, chunk_len, edge, ratio, density, first_words + start, out + start);
    }
}
