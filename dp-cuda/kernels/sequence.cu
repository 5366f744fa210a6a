// The sequence launches of a device program (dp_runtime::device::DeviceOps): an embedding over a
// sequence (gather, token-grouped norms, scatter-add) and sums and broadcasts over the time axis (a
// sequence mean and its backward, per-example bias gradients). Layouts are example-major, `n × steps ×
// width`, as dp-kernels' embedding.rs and sequence.rs.
// - The norms group an example's positions by token without sorting: each (position, column) of the
//   example checks whether an earlier position holds its id (then it counts nothing) and otherwise sums
//   the column over every position holding it, so each token's rows add up before they are squared;
//   one block per example, its squares summed in double by a block tree (no atomics: deterministic).
// - The scatter-add adds atomically, as the mean embedding's (the order of the adds varies between
//   runs, within rounding); an example whose factor is 0 is skipped, its rows never read.
// Each output's value is a function outside the kernels, which the host's C compiler also compiles
// (tests/host_harness.c), so that the arithmetic is checked against the host reference without a GPU.
// bf16 storage (docs/GPU.md): the buffers that may be arena spans (the gathered rows, the output
// gradient δ, and both sides of a sum or broadcast over time, which callers pass in either type) are
// dp_values, read with dp_get and each output value written once with dp_set of its final f32 value;
// the ids (Tokens), the table (a parameter), the squared norms, the factors and the table's gradient
// (added atomically) are outside the arena, f32 (ids u32).
#include "common.cuh"
#include "reduce.cuh"

// Value e of the gather (n × steps × dim): its position's row of the table, NaN for an id outside the
// vocabulary (the loaders refuse them) rather than a read outside the table.
DP_DEVICE float dp_embedding_gather_value(const unsigned int *ids, const float *table, dp_u64 vocab, dp_u64 dim,
                                          dp_u64 e) {
    dp_u64 v = ids[e / dim];
    return v < vocab ? table[v * dim + e % dim] : dp_bits_float(0x7fc00000u);
}

// Example i's term of its squared norm at position t and column j: the square of the column's sum over
// every position holding t's id when t is that id's first position in the example, else 0 (each token
// counted once, its rows summed in position order).
DP_DEVICE float dp_embedding_token_square(const unsigned int *ids, dp_values delta, dp_u64 steps, dp_u64 dim,
                                          dp_u64 i, dp_u64 t, dp_u64 j) {
    const unsigned int *example = ids + i * steps;
    unsigned int v = example[t];
    for (dp_u64 u = 0; u < t; u++) {
        if (example[u] == v) return 0.0f;
    }
    float sum = 0.0f;
    for (dp_u64 u = t; u < steps; u++) {
        if (example[u] == v) sum += dp_get(delta, (i * steps + u) * dim + j);
    }
    return sum * sum;
}

// Position-column k (< n·steps·dim) of the scatter-add: whether it adds anything and, if so, where
// (*at, in the table gradient) and what (*value, c_i·δ). An example whose factor is exactly 0 and ids
// outside the vocabulary add nothing; has_factors 0: c_i = 1.
DP_DEVICE int dp_embedding_scatter_term(const unsigned int *ids, dp_values delta, dp_u64 steps, dp_u64 vocab,
                                        dp_u64 dim, const float *factors, int has_factors, dp_u64 groups,
                                        dp_u64 group, dp_u64 k, dp_u64 *at, float *value) {
    dp_u64 position = k / dim, i = position / steps;
    float c = has_factors ? factors[i * groups + group] : 1.0f;
    dp_u64 v = ids[position];
    if (c == 0.0f || v >= vocab) return 0;
    *at = v * dim + k % dim;
    *value = c * dp_get(delta, k);
    return 1;
}

// Value e (< n·cols) of a sum over time: scale · Σ_t src[i, t, c], summed in double.
DP_DEVICE float dp_sequence_sum_value(dp_values src, dp_u64 steps, dp_u64 cols, float scale, dp_u64 e) {
    dp_u64 i = e / cols, c = e % cols;
    double sum = 0.0;
    for (dp_u64 t = 0; t < steps; t++) sum += (double)dp_get(src, (i * steps + t) * cols + c);
    return scale * (float)sum;
}

// Value e (< n·steps·cols) of a broadcast over time: scale · src[i, c].
DP_DEVICE float dp_sequence_broadcast_value(dp_values src, dp_u64 steps, dp_u64 cols, float scale, dp_u64 e) {
    dp_u64 c = e % cols, i = e / (steps * cols);
    return scale * dp_get(src, i * cols + c);
}

#ifdef __CUDACC__
extern "C" __global__ void dp_embedding_forward(const unsigned int *ids, const float *table, dp_u64 n,
                                                dp_u64 steps, dp_u64 vocab, dp_u64 dim, dp_values out) {
    DP_GRID_STRIDE(e, n * steps * dim) { dp_set(out, e, dp_embedding_gather_value(ids, table, vocab, dim, e)); }
}

// One block per example: sq_norms[i * groups + group] = Σ_v |Σ_{t: ids[i, t] = v} δ_{i,t}|².
extern "C" __global__ void dp_embedding_norms(const unsigned int *ids, dp_values delta, dp_u64 n, dp_u64 steps,
                                              dp_u64 dim, float *sq_norms, dp_u64 groups, dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        double acc = 0.0;
        for (dp_u64 k = threadIdx.x; k < steps * dim; k += blockDim.x) {
            acc += (double)dp_embedding_token_square(ids, delta, steps, dim, i, k / dim, k % dim);
        }
        acc = dp_block_sum_f64(acc);
        if (threadIdx.x == 0) sq_norms[i * groups + group] = (float)acc;
    }
}

extern "C" __global__ void dp_embedding_scatter(const unsigned int *ids, dp_values delta, dp_u64 n,
                                                dp_u64 steps, dp_u64 vocab, dp_u64 dim, const float *factors,
                                                int has_factors, dp_u64 groups, dp_u64 group, float *grad) {
    DP_GRID_STRIDE(k, n * steps * dim) {
        dp_u64 at;
        float value;
        if (dp_embedding_scatter_term(ids, delta, steps, vocab, dim, factors, has_factors, groups, group, k, &at,
                                      &value))
            atomicAdd(grad + at, value);
    }
}

extern "C" __global__ void dp_sequence_sums(dp_values src, dp_u64 n, dp_u64 steps, dp_u64 cols, float scale,
                                            dp_values dst) {
    DP_GRID_STRIDE(e, n * cols) { dp_set(dst, e, dp_sequence_sum_value(src, steps, cols, scale, e)); }
}

extern "C" __global__ void dp_sequence_broadcast(dp_values src, dp_u64 n, dp_u64 steps, dp_u64 cols,
                                                 float scale, dp_values dst) {
    DP_GRID_STRIDE(e, n * steps * cols) { dp_set(dst, e, dp_sequence_broadcast_value(src, steps, cols, scale, e)); }
}
#endif
