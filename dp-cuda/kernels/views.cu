// Augmentation multiplicity on the device (dp_runtime::device::DeviceTraining::private_step_with_views):
// after the device program's gradient sum over one example's K views, its average, its squared norm
// per parameter group, and its clipped average added into the step's clipped sum, with the CPU's
// arithmetic (dp-runtime/src/trainer/views.rs): the average is sum · (1/K) in f32; each trained
// parameter's squares are summed in double, rounded to float and added into its group's, parameters in
// order; the factors are dp_clip_factors' (clip.cu, launched between these kernels on one example).
// A parameter is a range (offset, length, group) of the trained gradient.
// The per-value functions also compile as C on the host (tests/host_harness.c), against the Rust
// arithmetic; there the block's sums are one sequential sum per range.
#include "common.cuh"
#include "reduce.cuh"

// Values start, start + stride, ... below end of the gradient sum replaced by their average (times
// `inverse` = 1/K), returning the sum of the averages' squares in double.
DP_DEVICE double dp_views_average_squares_of(float *grad, float inverse, dp_u64 start, dp_u64 end, dp_u64 stride) {
    double squares = 0.0;
    for (dp_u64 k = start; k < end; k += stride) {
        float average = grad[k] * inverse;
        grad[k] = average;
        squares += (double)average * (double)average;
    }
    return squares;
}

// The G squared norms, OVERWRITTEN: range r's `blocks` partial sums added in order (double), rounded
// to float and added into its group's, ranges in order.
DP_DEVICE void dp_views_group_norms_of(const double *partials, dp_u64 blocks, const dp_u64 *range_group,
                                       dp_u64 ranges, dp_u64 groups, float *sq_norms) {
    for (dp_u64 g = 0; g < groups; ++g) sq_norms[g] = 0.0f;
    for (dp_u64 r = 0; r < ranges; ++r) {
        double squares = 0.0;
        for (dp_u64 b = 0; b < blocks; ++b) squares += partials[r * blocks + b];
        sq_norms[range_group[r]] += (float)squares;
    }
}

// One value of the clipped sum after an example: its average times its group's factor ADDED, or the
// sum unchanged when the factor is 0 (a non-finite example: a select, so that NaN · 0 never enters).
DP_DEVICE float dp_views_accumulate_value(float sum, float average, float factor) {
    return factor != 0.0f ? sum + factor * average : sum;
}

#ifdef __CUDACC__
// Block (b, r) of `blocks` per range: range r's values b·blockDim + t, strided by blocks·blockDim,
// averaged in place; the block's sum of their squares (a fixed tree: deterministic) into
// partials[r·blocks + b].
extern "C" __global__ void dp_views_average_squares(float *grad, float inverse, const dp_u64 *range_offset,
                                                    const dp_u64 *range_len, dp_u64 blocks, double *partials) {
    dp_u64 r = blockIdx.y, b = blockIdx.x;
    dp_u64 start = range_offset[r], end = start + range_len[r];
    double squares = dp_views_average_squares_of(grad, inverse, start + b * blockDim.x + threadIdx.x, end,
                                                 blocks * blockDim.x);
    squares = dp_block_sum_f64(squares);
    if (threadIdx.x == 0) partials[r * blocks + b] = squares;
}

// One thread: the example's G squared norms from the partial sums.
extern "C" __global__ void dp_views_group_norms(const double *partials, dp_u64 blocks, const dp_u64 *range_group,
                                                dp_u64 ranges, dp_u64 groups, float *sq_norms) {
    if (blockIdx.x == 0 && threadIdx.x == 0)
        dp_views_group_norms_of(partials, blocks, range_group, ranges, groups, sq_norms);
}

// Range blockIdx.y's values, grid-strided over x: the clipped average added into `sum`.
extern "C" __global__ void dp_views_accumulate(float *sum, const float *average, const float *factors,
                                               const dp_u64 *range_offset, const dp_u64 *range_len,
                                               const dp_u64 *range_group) {
    dp_u64 r = blockIdx.y, offset = range_offset[r];
    float factor = factors[range_group[r]];
    DP_GRID_STRIDE(k, range_len[r]) {
        sum[offset + k] = dp_views_accumulate_value(sum[offset + k], average[offset + k], factor);
    }
}
#endif
