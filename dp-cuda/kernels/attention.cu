// The attention launches of a device program (dp_runtime::device::DeviceOps): the scaled, masked row
// softmax between the products of the core and its backward, and a fill (the row of ones whose product
// with δ sums a bias's gradient over the positions). The products themselves are cuBLAS's.
// - A score matrix is `steps × steps` per example and head, `blocks` of them one after another; row r
//   of the whole span is row r % steps of its matrix, which under the causal mask sees columns 0..=that.
// - One thread per row: a row is a few hundred values at most, read three times (max, exponentials,
//   normalisation), summed in order as dp-kernels' attention.rs sums it. expf is CUDA's (within 2 ulp),
//   not the CPU's vectorised exp: the device program matches the CPU to rounding, not bit for bit.
// Each row's values are a function outside the kernels, which the host's C compiler also compiles
// (tests/host_harness.c), so that the arithmetic is checked against the host reference without a GPU.
#include "common.cuh"
#include "reduce.cuh"

// Row r (< blocks·steps) of the softmax, in place: softmax(scale · x) over its visible columns, shifted
// by their maximum (fmaxf ignores NaN, as the CPU's f32::max), the masked columns exactly 0.
DP_DEVICE void dp_attention_softmax_row(float *scores, dp_u64 steps, float scale, int causal, dp_u64 r) {
    float *row = scores + r * steps;
    dp_u64 visible = causal ? r % steps + 1 : steps;
    float max = dp_bits_float(0xff800000u);
    for (dp_u64 c = 0; c < visible; c++) max = fmaxf(max, scale * row[c]);
    float sum = 0.0f;
    for (dp_u64 c = 0; c < visible; c++) {
        float e = expf(scale * row[c] - max);
        row[c] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (dp_u64 c = 0; c < visible; c++) row[c] *= inv;
    for (dp_u64 c = visible; c < steps; c++) row[c] = 0.0f;
}

// Row r of its backward, in place: grad holds dP on entry and scale · P ⊙ (dP − rowsum(P ⊙ dP)) on
// exit, over every column (a masked column has P = 0).
DP_DEVICE void dp_attention_softmax_backward_row(const float *probs, float *grad, dp_u64 steps, float scale,
                                                 dp_u64 r) {
    const float *p = probs + r * steps;
    float *g = grad + r * steps;
    float dot = 0.0f;
    for (dp_u64 c = 0; c < steps; c++) dot += p[c] * g[c];
    for (dp_u64 c = 0; c < steps; c++) g[c] = scale * (p[c] * (g[c] - dot));
}

#ifdef __CUDACC__
extern "C" __global__ void dp_attention_softmax(float *scores, dp_u64 rows, dp_u64 steps, float scale,
                                                int causal) {
    DP_GRID_STRIDE(r, rows) { dp_attention_softmax_row(scores, steps, scale, causal, r); }
}

extern "C" __global__ void dp_attention_softmax_backward(const float *probs, float *grad, dp_u64 rows,
                                                         dp_u64 steps, float scale) {
    DP_GRID_STRIDE(r, rows) { dp_attention_softmax_backward_row(probs, grad, steps, scale, r); }
}

extern "C" __global__ void dp_fill(float *dst, dp_u64 len, float value) {
    DP_GRID_STRIDE(e, len) { dst[e] = value; }
}
#endif
