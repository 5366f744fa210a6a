// The element-wise and reduction launches of a device program (dp_runtime::device::DeviceOps): bias and
// activation after a product, activation backward from the output, the losses with their gradients,
// the ghost norms of a linear layer at one position, the rows of a clipped sum, column sums, and an
// embedding averaged over a sequence. Dimensions arrive as arguments (one compiled module serves every
// model); the products are cuBLAS's.
// Every buffer that can be an arena span is a dp_values (common.cuh: f32 or bf16, docs/GPU.md "bf16
// storage"), read with dp_get and written once per launch with dp_set of its final f32 value, as the
// host reference rounds what a primitive wrote: activations and their gradients, the losses' outputs
// and output gradients, the ghost norms' inputs, the clipped sum's rows and scratch, the column sums'
// source, the embedding mean's output and output gradient, and the span whose non-finite values are
// counted. What only ever lives outside the arena stays float *: biases and tables (Params), labels
// (Labels), losses (Losses), norms (SqNorms), factors (Factors) and the gradient (Grad), which the
// embedding mean's scatter adds to atomically.
// Each output's value of the element-wise kernels, each loss's row, and each thread's share of a
// reduction is a function outside the kernels, which the host's C compiler also compiles
// (tests/host_harness.c), so that the arithmetic is checked against the host reference without a GPU.
//
// Activation codes: kernels/activation.cuh (dp_activate), shared with conv.cu; the grid-stride loop
// and block sums: kernels/reduce.cuh.
#include "common.cuh"
#include "activation.cuh"
#include "reduce.cuh"

// Value i of y (rows × cols) after the bias and activation: act(y[i] + bias[c]) with c its column;
// has_bias 0: act(y[i] + 0), bias not read.
DP_DEVICE float dp_bias_activation_value(dp_values y, const float *bias, int has_bias, dp_u64 cols, int act,
                                         dp_u64 i) {
    return dp_activate(act, dp_get(y, i) + (has_bias ? bias[i % cols] : 0.0f));
}

DP_DEVICE float dp_activation_value(dp_values x, int act, dp_u64 i) { return dp_activate(act, dp_get(x, i)); }

// Value i of the gradient through the activation: grad[i] · act'(x) read from the output y[i].
DP_DEVICE float dp_activation_backward_value(dp_values grad, dp_values y, int act, dp_u64 i) {
    return dp_get(grad, i) * dp_derivative_from_output(act, dp_get(y, i));
}

// Row i of the softmax cross-entropy: losses[i] = logsumexp(z_i) - z_i[y_i], grad = softmax(z_i) -
// onehot(y_i), each gradient value stored once (its exponential computed again rather than read back
// from a gradient that may be bf16). A label that is not a class index (the runtime validates labels
// when it loads them) gives a NaN loss and gradient, so it cannot pass unnoticed: its norm is NaN, its
// factor 0.
DP_DEVICE void dp_softmax_cross_entropy_row(dp_values logits, const float *labels, dp_u64 classes, float *losses,
                                            dp_values grad, dp_u64 i) {
    dp_values z = dp_advance(logits, i * classes), g = dp_advance(grad, i * classes);
    float label = labels[i], nan = dp_bits_float(0x7fc00000u);
    int valid = label >= 0.0f && label == floorf(label) && label < (float)classes;
    dp_u64 y = valid ? (dp_u64)label : classes;
    float m = dp_bits_float(0xff800000u);  // -inf
    for (dp_u64 j = 0; j < classes; j++) m = fmaxf(m, dp_get(z, j));
    float sum = 0.0f;
    for (dp_u64 j = 0; j < classes; j++) sum += expf(dp_get(z, j) - m);
    float inv = 1.0f / sum;
    for (dp_u64 j = 0; j < classes; j++) {
        float p = expf(dp_get(z, j) - m) * inv;
        dp_set(g, j, !valid ? nan : (j == y ? p - 1.0f : p));
    }
    losses[i] = valid ? logf(sum) + m - dp_get(z, y) : nan;
}

// Row i of the binary cross-entropy with one logit: losses[i] = max(z, 0) - z·y + ln(1 + e^(-|z|)),
// grad = sigmoid(z) - y.
DP_DEVICE void dp_binary_cross_entropy_row(dp_values logits, const float *labels, float *losses, dp_values grad,
                                           dp_u64 i) {
    float z = dp_get(logits, i), y = labels[i];
    losses[i] = fmaxf(z, 0.0f) - z * y + log1pf(expf(-fabsf(z)));
    dp_set(grad, i, dp_sigmoid(z) - y);
}

// Row i of the squared error: grad = prediction - label, losses[i] = ½ Σ_j grad_j² (of the f32
// differences, before a bf16 gradient rounds them).
DP_DEVICE void dp_mean_squared_error_row(dp_values predictions, const float *labels, dp_u64 outputs,
                                         float *losses, dp_values grad, dp_u64 i) {
    float sum = 0.0f;
    for (dp_u64 j = 0; j < outputs; j++) {
        dp_u64 k = i * outputs + j;
        float d = dp_get(predictions, k) - labels[k];
        dp_set(grad, k, d);
        sum += d * d;
    }
    losses[i] = 0.5f * sum;
}

// An example's squared ghost norm from |a_i|² and |delta_i|²: |a_i|² |delta_i|² (+ |delta_i|² with a bias).
DP_DEVICE float dp_linear_ghost_norm(float a2, float d2, int has_bias) { return a2 * d2 + (has_bias ? d2 : 0.0f); }

// Value i of a clipped sum's row (rows × cols, `positions` rows per example): exact zero where the
// example's factor is 0 (src never read), else src[i] times the factor (by_factor) or src[i] itself.
DP_DEVICE float dp_scale_rows_value(dp_values src, dp_u64 positions, dp_u64 cols, const float *factors,
                                    dp_u64 groups, dp_u64 group, int by_factor, dp_u64 i) {
    dp_u64 example = (i / cols) / positions;
    float c = factors[example * groups + group];
    return c == 0.0f ? 0.0f : (by_factor ? c * dp_get(src, i) : dp_get(src, i));
}

// Column c's sum over the rows of src (rows × cols), in order and in double, as the host reference adds
// it; the kernel adds it (rounded to f32) to the gradient.
DP_DEVICE double dp_column_sum(dp_values src, dp_u64 rows, dp_u64 cols, dp_u64 c) {
    double sum = 0.0;
    for (dp_u64 r = 0; r < rows; r++) sum += (double)dp_get(src, r * cols + c);
    return sum;
}

DP_DEVICE float dp_add_into_value(dp_values dst, dp_values src, dp_u64 i) { return dp_get(dst, i) + dp_get(src, i); }

// Column j of example i of an embedding averaged over the sequence: the rows of its `steps` ids added in
// order, then divided by steps; an id outside the vocabulary (the loaders refuse them) makes it NaN
// instead of a read outside the table.
DP_DEVICE float dp_embedding_mean_value(const unsigned int *ids, const float *table, dp_u64 steps, dp_u64 vocab,
                                        dp_u64 dim, dp_u64 i, dp_u64 j) {
    float acc = 0.0f;
    for (dp_u64 t = 0; t < steps; t++) {
        dp_u64 v = ids[i * steps + t];
        if (v >= vocab) return dp_bits_float(0x7fc00000u);
        acc += table[v * dim + j];
    }
    return acc / (float)steps;
}

// How many positions of example i hold the id at its position t (summed over t: the ordered pairs of
// positions holding the same token, Σ_v count_v²).
DP_DEVICE float dp_embedding_mean_same_ids(const unsigned int *ids, dp_u64 steps, dp_u64 i, dp_u64 t) {
    const unsigned int *example = ids + i * steps;
    unsigned int v = example[t], same = 0;
    for (dp_u64 u = 0; u < steps; u++) same += example[u] == v;
    return (float)same;
}

// (delta[i, j] / steps)² in double: example i's term of |g_i / T|² at column j (summed in double, as the
// host reference sums it).
DP_DEVICE double dp_embedding_mean_square(dp_values delta, dp_u64 steps, dp_u64 dim, dp_u64 i, dp_u64 j) {
    double g = (double)(dp_get(delta, i * dim + j) / (float)steps);
    return g * g;
}

// Example-position-column k (< n·steps·dim) of the scatter-add: whether it adds anything and, if so,
// where (*at, in the table gradient) and what (*value, c_i·(δ_i / T)). An example whose factor is
// exactly 0 and ids outside the vocabulary add nothing; has_factors 0: c_i = 1.
DP_DEVICE int dp_embedding_mean_scatter_term(const unsigned int *ids, dp_values delta, dp_u64 steps, dp_u64 vocab,
                                             dp_u64 dim, const float *factors, int has_factors, dp_u64 groups,
                                             dp_u64 group, dp_u64 k, dp_u64 *at, float *value) {
    dp_u64 j = k % dim, position = k / dim, i = position / steps;
    float c = has_factors ? factors[i * groups + group] : 1.0f;
    dp_u64 v = ids[position];
    if (c == 0.0f || v >= vocab) return 0;
    *at = v * dim + j;
    *value = c * (dp_get(delta, i * dim + j) / (float)steps);
    return 1;
}

// 1 where value i is infinite or NaN (bf16 keeps both), else 0.
DP_DEVICE unsigned int dp_non_finite_value(dp_values values, dp_u64 i) { return !isfinite(dp_get(values, i)); }

#ifdef __CUDACC__

// y[r, c] = act(y[r, c] + bias[c]); has_bias 0: bias is not read.
extern "C" __global__ void dp_bias_activation(dp_values y, const float *bias, int has_bias, dp_u64 rows,
                                              dp_u64 cols, int act) {
    DP_GRID_STRIDE(i, rows * cols) { dp_set(y, i, dp_bias_activation_value(y, bias, has_bias, cols, act, i)); }
}

extern "C" __global__ void dp_activation(dp_values x, dp_values y, dp_u64 len, int act) {
    DP_GRID_STRIDE(i, len) { dp_set(y, i, dp_activation_value(x, act, i)); }
}

extern "C" __global__ void dp_activation_backward(dp_values grad, dp_values y, dp_u64 len, int act) {
    DP_GRID_STRIDE(i, len) { dp_set(grad, i, dp_activation_backward_value(grad, y, act, i)); }
}

// One thread per example.
extern "C" __global__ void dp_softmax_cross_entropy(dp_values logits, const float *labels, dp_u64 rows,
                                                    dp_u64 classes, float *losses, dp_values grad) {
    DP_GRID_STRIDE(i, rows) { dp_softmax_cross_entropy_row(logits, labels, classes, losses, grad, i); }
}

extern "C" __global__ void dp_binary_cross_entropy(dp_values logits, const float *labels, dp_u64 rows,
                                                   float *losses, dp_values grad) {
    DP_GRID_STRIDE(i, rows) { dp_binary_cross_entropy_row(logits, labels, losses, grad, i); }
}

extern "C" __global__ void dp_mean_squared_error(dp_values predictions, const float *labels, dp_u64 rows,
                                                 dp_u64 outputs, float *losses, dp_values grad) {
    DP_GRID_STRIDE(i, rows) { dp_mean_squared_error_row(predictions, labels, outputs, losses, grad, i); }
}

// One block per example: sq_norms[i * groups + group] = |a_i|^2 |delta_i|^2 (+ |delta_i|^2 with a bias).
extern "C" __global__ void dp_linear_ghost_norms(dp_values a, dp_values delta, dp_u64 rows, dp_u64 inputs,
                                                 dp_u64 outputs, int has_bias, float *sq_norms, dp_u64 groups,
                                                 dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < rows; i += gridDim.x) {
        float a2 = dp_block_sum(dp_square_share(a, inputs, i, threadIdx.x, blockDim.x));
        float d2 = dp_block_sum(dp_square_share(delta, outputs, i, threadIdx.x, blockDim.x));
        if (threadIdx.x == 0) sq_norms[i * groups + group] = dp_linear_ghost_norm(a2, d2, has_bias);
    }
}

// dst row r from src row r (dp_scale_rows_value).
extern "C" __global__ void dp_scale_rows(dp_values src, dp_values dst, dp_u64 rows, dp_u64 positions, dp_u64 cols,
                                         const float *factors, dp_u64 groups, dp_u64 group, int by_factor) {
    DP_GRID_STRIDE(i, rows * cols) {
        dp_set(dst, i, dp_scale_rows_value(src, positions, cols, factors, groups, group, by_factor, i));
    }
}

// dst[c] += sum over rows of src[r, c]: one thread per column, rows summed in order (dst is the
// gradient, f32).
extern "C" __global__ void dp_column_sums_add(dp_values src, dp_u64 rows, dp_u64 cols, float *dst) {
    DP_GRID_STRIDE(c, cols) { dst[c] += (float)dp_column_sum(src, rows, cols, c); }
}

extern "C" __global__ void dp_add_into(dp_values dst, dp_values src, dp_u64 len) {
    DP_GRID_STRIDE(i, len) { dp_set(dst, i, dp_add_into_value(dst, src, i)); }
}

// One block per example, a thread per column.
extern "C" __global__ void dp_embedding_mean_forward(const unsigned int *ids, const float *table, dp_u64 n,
                                                     dp_u64 steps, dp_u64 vocab, dp_u64 dim, dp_values out) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        for (dp_u64 j = threadIdx.x; j < dim; j += blockDim.x) {
            dp_set(out, i * dim + j, dp_embedding_mean_value(ids, table, steps, vocab, dim, i, j));
        }
    }
}

// One block per example: sq_norms[i * groups + group] = |g_i / T|^2 * sum_v count_v^2, the second
// factor counted as the ordered pairs of positions holding the same token (each thread its positions
// against all T), the first summed in double.
extern "C" __global__ void dp_embedding_mean_norms(const unsigned int *ids, dp_values delta, dp_u64 n,
                                                   dp_u64 steps, dp_u64 dim, float *sq_norms, dp_u64 groups,
                                                   dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        float pairs = 0.0f;
        double row = 0.0;
        for (dp_u64 t = threadIdx.x; t < steps; t += blockDim.x) pairs += dp_embedding_mean_same_ids(ids, steps, i, t);
        for (dp_u64 j = threadIdx.x; j < dim; j += blockDim.x) row += dp_embedding_mean_square(delta, steps, dim, i, j);
        pairs = dp_block_sum(pairs);
        row = dp_block_sum_f64(row);
        if (threadIdx.x == 0) sq_norms[i * groups + group] = (float)((double)pairs * row);
    }
}

// grad[ids[i, t]] += c_i * g_i / T, one thread per (example, position, column), added atomically
// (dp_embedding_mean_scatter_term).
extern "C" __global__ void dp_embedding_mean_scatter(const unsigned int *ids, dp_values delta, dp_u64 n,
                                                     dp_u64 steps, dp_u64 vocab, dp_u64 dim, const float *factors,
                                                     int has_factors, dp_u64 groups, dp_u64 group, float *grad) {
    DP_GRID_STRIDE(k, n * steps * dim) {
        dp_u64 at;
        float value;
        if (dp_embedding_mean_scatter_term(ids, delta, steps, vocab, dim, factors, has_factors, groups, group, k,
                                           &at, &value))
            atomicAdd(grad + at, value);
    }
}

// *count += the number of non-finite values (an update that overflowed).
extern "C" __global__ void dp_count_non_finite(dp_values values, dp_u64 len, unsigned int *count) {
    unsigned int mine = 0;
    DP_GRID_STRIDE(i, len) { mine += dp_non_finite_value(values, i); }
    for (int o = 16; o > 0; o >>= 1) mine += __shfl_down_sync(0xffffffffu, mine, o);
    if ((threadIdx.x & 31u) == 0 && mine) atomicAdd(count, mine);
}
#endif
