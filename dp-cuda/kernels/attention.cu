// The attention launches of a device program (dp_runtime::device::DeviceOps): the scaled, masked row
// softmax between the products of the core and its backward, and a fill (the row of ones whose product
// with δ sums a bias's gradient over the positions). The products themselves are cuBLAS's.
// - A score matrix is `steps × steps` per example and head, `blocks` of them one after another; row r
//   of the whole span is row r % steps of its matrix, which under the causal mask sees columns 0..=that.
// - One warp per row: lane l reads and writes columns l, l + 32, ..., so a warp's loads of a row are
//   coalesced (one thread per row read 32 rows at once, 32 sectors per load). Each lane's partial max
//   and sum are combined across the warp by a butterfly of shuffles (dp_warp_all_*), after which every
//   lane holds the row's. The sums are therefore in another order than dp-kernels' attention.rs, and
//   expf is CUDA's (within 2 ulp), not the CPU's vectorised exp: the device program matches the CPU to
//   rounding, not bit for bit.
// - The scores, probabilities, their gradients and the fill's target are arena buffers, `dp_values`
//   (common.cuh): f32, or bf16 when the program stores them in bf16 (docs/GPU.md, "bf16 storage"),
//   computed in f32 either way.
//   As the host reference rounds once per call, each value is written once, with its final value: the
//   softmax does not keep its exponentials in the row (they would be rounded before normalising) but
//   computes each again where it normalises it, the same expf of the same value, bit for bit.
// Each lane's part is a function outside the kernels, which the host's C compiler also compiles
// (tests/host_harness.c combines 32 lanes' partials in the butterfly's order), so that the arithmetic
// is checked against the host reference without a GPU.
#include "common.cuh"
#include "reduce.cuh"

// Lanes of a warp, each taking every 32nd column of a row.
#define DP_ROW_LANES 32

// Lane `lane`'s part of a softmax row's maximum: over its visible columns of scale · x (fmaxf ignores
// NaN, as the CPU's f32::max); -inf when it has none.
DP_DEVICE float dp_softmax_lane_max(dp_values row, dp_u64 visible, float scale, unsigned lane) {
    float max = dp_bits_float(0xff800000u);
    for (dp_u64 c = lane; c < visible; c += DP_ROW_LANES) max = fmaxf(max, scale * dp_get(row, c));
    return max;
}

// exp(scale · x − max) of a row's value x, for the sum and again for the normalised value.
DP_DEVICE float dp_softmax_exp(dp_values row, dp_u64 c, float scale, float max) {
    return expf(scale * dp_get(row, c) - max);
}

// Lane `lane`'s part of the sum of its visible columns' exp(scale · x − max); writes nothing.
DP_DEVICE float dp_softmax_lane_exp_sum(dp_values row, dp_u64 visible, float scale, float max,
                                        unsigned lane) {
    float sum = 0.0f;
    for (dp_u64 c = lane; c < visible; c += DP_ROW_LANES) sum += dp_softmax_exp(row, c, scale, max);
    return sum;
}

// Lane `lane`'s columns replaced by exp(scale · x − max) · inv (`inv` = 1 / the row's sum), its masked
// ones exactly 0: each written once.
DP_DEVICE void dp_softmax_lane_normalise(dp_values row, dp_u64 visible, dp_u64 steps, float scale, float max,
                                         float inv, unsigned lane) {
    for (dp_u64 c = lane; c < steps; c += DP_ROW_LANES) {
        dp_set(row, c, c < visible ? dp_softmax_exp(row, c, scale, max) * inv : 0.0f);
    }
}

// Lane `lane`'s part of a backward row's rowsum(P ⊙ dP).
DP_DEVICE float dp_softmax_backward_lane_dot(dp_values p, dp_values g, dp_u64 steps, unsigned lane) {
    float dot = 0.0f;
    for (dp_u64 c = lane; c < steps; c += DP_ROW_LANES) dot += dp_get(p, c) * dp_get(g, c);
    return dot;
}

// Lane `lane`'s columns of the backward, in place: dP becomes scale · P ⊙ (dP − dot), over every
// column (a masked column has P = 0).
DP_DEVICE void dp_softmax_backward_lane(dp_values p, dp_values g, dp_u64 steps, float scale, float dot,
                                        unsigned lane) {
    for (dp_u64 c = lane; c < steps; c += DP_ROW_LANES) {
        dp_set(g, c, scale * (dp_get(p, c) * (dp_get(g, c) - dot)));
    }
}

// Value e of a fill.
DP_DEVICE void dp_fill_at(dp_values dst, dp_u64 e, float value) { dp_set(dst, e, value); }

#ifdef __CUDACC__
// Every lane's max, and sum, of `v` over the warp: at each of the five steps a lane combines its value
// with that of the lane whose index differs in one bit (host_harness.c repeats this order).
__device__ __forceinline__ float dp_warp_all_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float dp_warp_all_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v = v + __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Warp w of the grid takes rows w, w + warps, ...: the loop is the same for the warp's 32 lanes, so
// every lane reaches every shuffle (blockDim.x a multiple of 32).
#define DP_WARP_STRIDE(r, rows)                                                                  \
    for (dp_u64 r = ((dp_u64)blockIdx.x * blockDim.x + threadIdx.x) / DP_ROW_LANES; r < (rows);     \
         r += (dp_u64)gridDim.x * blockDim.x / DP_ROW_LANES)

extern "C" __global__ void dp_attention_softmax(dp_values scores, dp_u64 rows, dp_u64 steps, float scale,
                                                int causal) {
    unsigned lane = threadIdx.x % DP_ROW_LANES;
    DP_WARP_STRIDE(r, rows) {
        dp_values row = dp_advance(scores, r * steps);
        dp_u64 visible = causal ? r % steps + 1 : steps;
        float max = dp_warp_all_max(dp_softmax_lane_max(row, visible, scale, lane));
        float sum = dp_warp_all_sum(dp_softmax_lane_exp_sum(row, visible, scale, max, lane));
        dp_softmax_lane_normalise(row, visible, steps, scale, max, 1.0f / sum, lane);
    }
}

extern "C" __global__ void dp_attention_softmax_backward(dp_values probs, dp_values grad, dp_u64 rows,
                                                         dp_u64 steps, float scale) {
    unsigned lane = threadIdx.x % DP_ROW_LANES;
    DP_WARP_STRIDE(r, rows) {
        dp_values p = dp_advance(probs, r * steps), g = dp_advance(grad, r * steps);
        float dot = dp_warp_all_sum(dp_softmax_backward_lane_dot(p, g, steps, lane));
        dp_softmax_backward_lane(p, g, steps, scale, dot, lane);
    }
}

extern "C" __global__ void dp_fill(dp_values dst, dp_u64 len, float value) {
    DP_GRID_STRIDE(e, len) { dp_fill_at(dst, e, value); }
}
#endif
