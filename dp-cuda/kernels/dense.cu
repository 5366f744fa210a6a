// The element-wise and reduction launches of a device program (dp_runtime::device::DeviceOps): bias and
// activation after a product, activation backward from the output, the losses with their gradients,
// the ghost norms of a linear layer at one position, the rows of a clipped sum, column sums. Dimensions
// arrive as arguments (one compiled module serves every model); the products are cuBLAS's.
//
// Activation codes: kernels/activation.cuh (dp_activate), shared with conv.cu; the grid-stride loop
// and block sum: kernels/reduce.cuh.
#include "common.cuh"
#include "activation.cuh"
#include "reduce.cuh"

#ifdef __CUDACC__

// y[r, c] = act(y[r, c] + bias[c]); has_bias 0: bias is not read.
extern "C" __global__ void dp_bias_activation(float *y, const float *bias, int has_bias, dp_u64 rows, dp_u64 cols,
                                              int act) {
    DP_GRID_STRIDE(i, rows * cols) {
        float v = y[i] + (has_bias ? bias[i % cols] : 0.0f);
        y[i] = dp_activate(act, v);
    }
}

extern "C" __global__ void dp_activation(const float *x, float *y, dp_u64 len, int act) {
    DP_GRID_STRIDE(i, len) { y[i] = dp_activate(act, x[i]); }
}

extern "C" __global__ void dp_activation_backward(float *grad, const float *y, dp_u64 len, int act) {
    DP_GRID_STRIDE(i, len) { grad[i] *= dp_derivative_from_output(act, y[i]); }
}

// One thread per example: losses[i] = logsumexp(z_i) - z_i[y_i], grad = softmax(z_i) - onehot(y_i). A
// label that is not a class index (the runtime validates labels when it loads them) gives a NaN loss
// and gradient, so it cannot pass unnoticed: its norm is NaN, its factor 0.
extern "C" __global__ void dp_softmax_cross_entropy(const float *logits, const float *labels, dp_u64 rows,
                                                    dp_u64 classes, float *losses, float *grad) {
    DP_GRID_STRIDE(i, rows) {
        const float *z = logits + i * classes;
        float *g = grad + i * classes;
        float label = labels[i];
        int valid = label >= 0.0f && label == floorf(label) && label < (float)classes;
        float m = dp_bits_float(0xff800000u);  // -inf
        for (dp_u64 j = 0; j < classes; j++) m = fmaxf(m, z[j]);
        float sum = 0.0f;
        for (dp_u64 j = 0; j < classes; j++) {
            float e = expf(z[j] - m);
            g[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (dp_u64 j = 0; j < classes; j++) g[j] = valid ? g[j] * inv : dp_bits_float(0x7fc00000u);
        if (valid) {
            dp_u64 y = (dp_u64)label;
            g[y] -= 1.0f;
            losses[i] = logf(sum) + m - z[y];
        } else {
            losses[i] = dp_bits_float(0x7fc00000u);
        }
    }
}

extern "C" __global__ void dp_binary_cross_entropy(const float *logits, const float *labels, dp_u64 rows,
                                                   float *losses, float *grad) {
    DP_GRID_STRIDE(i, rows) {
        float z = logits[i], y = labels[i];
        losses[i] = fmaxf(z, 0.0f) - z * y + log1pf(expf(-fabsf(z)));
        grad[i] = dp_sigmoid(z) - y;
    }
}

extern "C" __global__ void dp_mean_squared_error(const float *predictions, const float *labels, dp_u64 rows,
                                                 dp_u64 outputs, float *losses, float *grad) {
    DP_GRID_STRIDE(i, rows) {
        float sum = 0.0f;
        for (dp_u64 j = 0; j < outputs; j++) {
            float d = predictions[i * outputs + j] - labels[i * outputs + j];
            grad[i * outputs + j] = d;
            sum += d * d;
        }
        losses[i] = 0.5f * sum;
    }
}

// One block per example: sq_norms[i * groups + group] = |a_i|^2 |delta_i|^2 (+ |delta_i|^2 with a bias).
extern "C" __global__ void dp_linear_ghost_norms(const float *a, const float *delta, dp_u64 rows, dp_u64 inputs,
                                                 dp_u64 outputs, int has_bias, float *sq_norms, dp_u64 groups,
                                                 dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < rows; i += gridDim.x) {
        float a2 = 0.0f, d2 = 0.0f;
        for (dp_u64 j = threadIdx.x; j < inputs; j += blockDim.x) a2 += a[i * inputs + j] * a[i * inputs + j];
        for (dp_u64 j = threadIdx.x; j < outputs; j += blockDim.x) d2 += delta[i * outputs + j] * delta[i * outputs + j];
        a2 = dp_block_sum(a2);
        d2 = dp_block_sum(d2);
        if (threadIdx.x == 0) sq_norms[i * groups + group] = a2 * d2 + (has_bias ? d2 : 0.0f);
    }
}

// dst row r from src row r: exact zeros where the example's factor is 0 (its values never read),
// else the row times the factor (by_factor) or the row itself.
extern "C" __global__ void dp_scale_rows(const float *src, float *dst, dp_u64 rows, dp_u64 positions, dp_u64 cols,
                                         const float *factors, dp_u64 groups, dp_u64 group, int by_factor) {
    DP_GRID_STRIDE(i, rows * cols) {
        dp_u64 example = (i / cols) / positions;
        float c = factors[example * groups + group];
        dst[i] = c == 0.0f ? 0.0f : (by_factor ? c * src[i] : src[i]);
    }
}

// dst[c] += sum over rows of src[r, c]: one thread per column, rows summed in order.
extern "C" __global__ void dp_column_sums_add(const float *src, dp_u64 rows, dp_u64 cols, float *dst) {
    DP_GRID_STRIDE(c, cols) {
        float sum = 0.0f;
        for (dp_u64 r = 0; r < rows; r++) sum += src[r * cols + c];
        dst[c] += sum;
    }
}

extern "C" __global__ void dp_add_into(float *dst, const float *src, dp_u64 len) {
    DP_GRID_STRIDE(i, len) { dst[i] += src[i]; }
}

// An embedding averaged over the sequence, one block per example, a thread per column: an id outside
// the vocabulary (the loaders refuse them) makes the example's output NaN instead of a read outside
// the table.
extern "C" __global__ void dp_embedding_mean_forward(const unsigned int *ids, const float *table, dp_u64 n,
                                                     dp_u64 steps, dp_u64 vocab, dp_u64 dim, float *out) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        for (dp_u64 j = threadIdx.x; j < dim; j += blockDim.x) {
            float acc = 0.0f;
            int outside = 0;
            for (dp_u64 t = 0; t < steps; t++) {
                dp_u64 v = ids[i * steps + t];
                if (v >= vocab) {
                    outside = 1;
                    break;
                }
                acc += table[v * dim + j];
            }
            out[i * dim + j] = outside ? dp_bits_float(0x7fc00000u) : acc / (float)steps;
        }
    }
}

// One block per example: sq_norms[i * groups + group] = |g_i / T|^2 * sum_v count_v^2, the second
// factor counted as the ordered pairs of positions holding the same token (each thread its positions
// against all T, the ids read through the cache).
extern "C" __global__ void dp_embedding_mean_norms(const unsigned int *ids, const float *delta, dp_u64 n,
                                                   dp_u64 steps, dp_u64 dim, float *sq_norms, dp_u64 groups,
                                                   dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        const unsigned int *example = ids + i * steps;
        float pairs = 0.0f, row = 0.0f;
        for (dp_u64 t = threadIdx.x; t < steps; t += blockDim.x) {
            unsigned int v = example[t], same = 0;
            for (dp_u64 u = 0; u < steps; u++) same += example[u] == v;
            pairs += (float)same;
        }
        for (dp_u64 j = threadIdx.x; j < dim; j += blockDim.x) {
            float g = delta[i * dim + j] / (float)steps;
            row += g * g;
        }
        pairs = dp_block_sum(pairs);
        row = dp_block_sum(row);
        if (threadIdx.x == 0) sq_norms[i * groups + group] = pairs * row;
    }
}

// grad[ids[i, t]] += c_i * g_i / T, one thread per (example, position, column), added atomically; an
// example whose factor is 0 and ids outside the vocabulary are skipped. has_factors 0: c_i = 1.
extern "C" __global__ void dp_embedding_mean_scatter(const unsigned int *ids, const float *delta, dp_u64 n,
                                                     dp_u64 steps, dp_u64 vocab, dp_u64 dim, const float *factors,
                                                     int has_factors, dp_u64 groups, dp_u64 group, float *grad) {
    DP_GRID_STRIDE(k, n * steps * dim) {
        dp_u64 j = k % dim, position = k / dim, i = position / steps;
        float c = has_factors ? factors[i * groups + group] : 1.0f;
        dp_u64 v = ids[position];
        if (c == 0.0f || v >= vocab) continue;
        atomicAdd(grad + v * dim + j, c * (delta[i * dim + j] / (float)steps));
    }
}

// *count += the number of non-finite values (an update that overflowed).
extern "C" __global__ void dp_count_non_finite(const float *values, dp_u64 len, unsigned int *count) {
    unsigned int mine = 0;
    DP_GRID_STRIDE(i, len) { mine += !isfinite(values[i]); }
    for (int o = 16; o > 0; o >>= 1) mine += __shfl_down_sync(0xffffffffu, mine, o);
    if ((threadIdx.x & 31u) == 0 && mine) atomicAdd(count, mine);
}
#endif
