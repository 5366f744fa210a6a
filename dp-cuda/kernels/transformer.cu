// A transformer's launches around its products (dp_runtime::device::DeviceOps): an activation's
// backward from its input (GELU, SiLU, exact GELU), a strided copy of rows (a sequence's first
// position forward, its gradient into position 0 backward) and the permutation of images into patches
// and back, and a scaled add (a LoRA layer's sum). Grid-stride, one thread per value; each value's arithmetic or index is a function outside
// the kernels, which the host's C compiler also compiles (tests/host_harness.c).
#include "common.cuh"
#include "activation.cuh"
#include "reduce.cuh"

// Value e of an example's patches (`[patches][C·P·P]`) for value `e` of its image `[C][H][W]`: patch
// (y/P)·(W/P) + x/P, within it (c·P + y mod P)·P + x mod P (dp-kernels' patches.rs).
DP_DEVICE dp_u64 dp_patch_index(dp_u64 channels, dp_u64 height, dp_u64 width, dp_u64 p, dp_u64 e) {
    dp_u64 x = e % width, y = (e / width) % height, c = e / (width * height);
    dp_u64 patch = (y / p) * (width / p) + x / p;
    return patch * (channels * p * p) + (c * p + y % p) * p + x % p;
}

// Where value i of `rows × cols` lies in a span whose rows start `stride` apart.
DP_DEVICE dp_u64 dp_strided_at(dp_u64 stride, dp_u64 cols, dp_u64 i) { return i / cols * stride + i % cols; }

// dst + scale·src, as the CPU's LoRA sum rounds it (no contraction: NVRTC runs with fmad=false).
DP_DEVICE float dp_add_scaled_value(float dst, float src, float scale) { return dst + scale * src; }

#ifdef __CUDACC__
extern "C" __global__ void dp_activation_backward_from_input(float *grad, const float *x, dp_u64 len, int act) {
    DP_GRID_STRIDE(i, len) { grad[i] *= dp_derivative_from_input(act, x[i]); }
}

extern "C" __global__ void dp_copy_strided(const float *src, dp_u64 src_stride, float *dst, dp_u64 dst_stride,
                                           dp_u64 rows, dp_u64 cols) {
    DP_GRID_STRIDE(i, rows * cols) {
        dst[dp_strided_at(dst_stride, cols, i)] = src[dp_strided_at(src_stride, cols, i)];
    }
}

// Forward (to_patches = 1): to[patch(e)] = from[e]; backward: to[e] = from[patch(e)], e over every
// image value of every example. A permutation: no two threads write one value.
extern "C" __global__ void dp_patches(const float *from, float *to, dp_u64 n, dp_u64 channels, dp_u64 height,
                                      dp_u64 width, dp_u64 p, int to_patches) {
    dp_u64 len = channels * height * width;
    DP_GRID_STRIDE(i, n * len) {
        dp_u64 example = i / len * len, patch = example + dp_patch_index(channels, height, width, p, i % len);
        if (to_patches) {
            to[patch] = from[i];
        } else {
            to[i] = from[patch];
        }
    }
}

extern "C" __global__ void dp_add_scaled_into(float *dst, const float *src, dp_u64 len, float scale) {
    DP_GRID_STRIDE(i, len) { dst[i] = dp_add_scaled_value(dst[i], src[i], scale); }
}
#endif
