// The launch helpers and reductions the kernel files of device programs share (dense.cu, conv.cu,
// norm.cu); device code only but for a thread's share of a squared norm, which the host harness runs.
#ifndef DP_REDUCE_CUH
#define DP_REDUCE_CUH

#include "common.cuh"

// Thread t's share (of a block's `threads`) of the squared norm of row i of `width` values: the
// squares at j = t, t + threads, ... added in order (one thread: the row's sum in order); the block
// adds the shares (dp_block_sum). Four values are loaded before their squares are added, in the same
// order: the loads are in flight together, which a reduction that reads each value once is bound by.
DP_DEVICE float dp_square_share(dp_values v, dp_u64 width, dp_u64 i, dp_u64 t, dp_u64 threads) {
    dp_values row = dp_advance(v, i * width);
    float sum = 0.0f;
    dp_u64 j = t;
    for (; j + 3 * threads < width; j += 4 * threads) {
        float x0 = dp_get(row, j), x1 = dp_get(row, j + threads);
        float x2 = dp_get(row, j + 2 * threads), x3 = dp_get(row, j + 3 * threads);
        sum += x0 * x0;
        sum += x1 * x1;
        sum += x2 * x2;
        sum += x3 * x3;
    }
    for (; j < width; j += threads) {
        float x = dp_get(row, j);
        sum += x * x;
    }
    return sum;
}

// A thread's share of example i's dot product of its rows of a and b (width values each): the same
// strided order as dp_square_share, four products in flight.
DP_DEVICE float dp_dot_share(dp_values a, dp_values b, dp_u64 width, dp_u64 i, dp_u64 t, dp_u64 threads) {
    dp_values ra = dp_advance(a, i * width), rb = dp_advance(b, i * width);
    float sum = 0.0f;
    dp_u64 j = t;
    for (; j + 3 * threads < width; j += 4 * threads) {
        float a0 = dp_get(ra, j), a1 = dp_get(ra, j + threads), a2 = dp_get(ra, j + 2 * threads),
              a3 = dp_get(ra, j + 3 * threads);
        float b0 = dp_get(rb, j), b1 = dp_get(rb, j + threads), b2 = dp_get(rb, j + 2 * threads),
              b3 = dp_get(rb, j + 3 * threads);
        sum += a0 * b0;
        sum += a1 * b1;
        sum += a2 * b2;
        sum += a3 * b3;
    }
    for (; j < width; j += threads) sum += dp_get(ra, j) * dp_get(rb, j);
    return sum;
}

#ifdef __CUDACC__
#define DP_GRID_STRIDE(i, len) \
    for (dp_u64 i = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x; i < (len); i += (dp_u64)gridDim.x * blockDim.x)

// A warp's sum of `v`, in lane 0 (every lane of the warp must call it).
__device__ __forceinline__ float dp_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// A block's sum of `v` (blockDim.x a multiple of 32, at most 1024), in every thread.
__device__ float dp_block_sum(float v) {
    __shared__ float partial[32];
    v = dp_warp_sum(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = (int)threadIdx.x < warps ? partial[threadIdx.x] : 0.0f;
    if (warp == 0) v = dp_warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    return partial[0];
}

// A warp's sum of `v` in double, in lane 0 (every lane of the warp must call it).
__device__ __forceinline__ double dp_warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// A block's sum of `v` in double (blockDim.x a multiple of 32, at most 1024), in every thread.
__device__ double dp_block_sum_f64(double v) {
    __shared__ double partial[32];
    v = dp_warp_sum_f64(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = (int)threadIdx.x < warps ? partial[threadIdx.x] : 0.0;
    if (warp == 0) v = dp_warp_sum_f64(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    return partial[0];
}
#endif

#endif
