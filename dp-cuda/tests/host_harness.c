/* Runs the device noise kernels' arithmetic (kernels/noise.cu, compiled as C) on the host: both passes
 * over every chunk, in the order a GPU may run them. Arguments: the tables file (edge[257], ratio[256],
 * density[257] as little-endian f64), the key as 64 hex digits, the length. Writes the values to
 * stdout as little-endian f64. Built and run by tests/noise_host.rs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/noise.cu"

int main(int argc, char **argv) {
    if (argc != 4 || strlen(argv[2]) != 64) {
        fprintf(stderr, "usage: host_harness TABLES KEY_HEX64 LEN\n");
        return 2;
    }
    double edge[DP_LAYERS + 1], ratio[DP_LAYERS], density[DP_LAYERS + 1];
    FILE *tables = fopen(argv[1], "rb");
    if (!tables || fread(edge, 8, DP_LAYERS + 1, tables) != DP_LAYERS + 1 ||
        fread(ratio, 8, DP_LAYERS, tables) != DP_LAYERS ||
        fread(density, 8, DP_LAYERS + 1, tables) != DP_LAYERS + 1) {
        fprintf(stderr, "cannot read the tables from %s\n", argv[1]);
        return 2;
    }
    fclose(tables);
    dp_u32 key[8];
    for (int i = 0; i < 8; ++i) {
        unsigned bytes[4];
        for (int b = 0; b < 4; ++b) sscanf(argv[2] + 8 * i + 2 * b, "%2x", &bytes[b]);
        key[i] = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | ((dp_u32)bytes[3] << 24);
    }
    dp_u64 len = strtoull(argv[3], NULL, 10);
    double *out = malloc(len * sizeof(double));
    dp_u64 chunks = (len + DP_NOISE_CHUNK - 1) / DP_NOISE_CHUNK;
    /* Pass 1 over all chunks, blocks in reverse order (a GPU promises no order), then pass 2. */
    for (dp_u64 c = 0; c < chunks; ++c) {
        dp_u64 start = c * DP_NOISE_CHUNK;
        dp_u64 n = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
        for (dp_u64 b = DP_NOISE_CHUNK / 8; b-- > 0;) dp_noise_first_block(key, c, b, n, edge, ratio, out + start);
    }
    for (dp_u64 c = 0; c < chunks; ++c) {
        dp_u64 start = c * DP_NOISE_CHUNK;
        dp_u64 n = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
        dp_noise_retry_chunk(key, c, n, edge, ratio, density, out + start);
    }
    fwrite(out, sizeof(double), len, stdout);
    free(out);
    return 0;
}
