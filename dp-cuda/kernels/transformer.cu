// A transformer's launches around its products (dp_runtime::device::DeviceOps): an activation's
// backward from its input (GELU, SiLU, exact GELU), a strided copy of rows (a sequence's first
// position forward, its gradient into position 0 backward) and the permutation of images into patches
// and back, and a scaled add (a LoRA layer's sum). Grid-stride, one thread per value; each value's
// step (its index, its arithmetic, its one load and store) is a function outside the kernels, which the
// host's C compiler also compiles (tests/host_harness.c).
// Every buffer is `dp_values` (common.cuh): f32, or bf16 when the program stores it in bf16 (docs/GPU.md,
// "bf16 storage"), each argument of its own type (the batch or an f32 buffer may be copied, permuted or
// added into one stored in bf16); computed in f32, each output value written once.
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

// Value i of an activation's backward from its input: grad ← grad · act'(x).
DP_DEVICE void dp_activation_backward_from_input_at(dp_values grad, dp_values x, int act, dp_u64 i) {
    dp_set(grad, i, dp_get(grad, i) * dp_derivative_from_input(act, dp_get(x, i)));
}

// Value i of a strided copy of `cols`-wide rows.
DP_DEVICE void dp_copy_strided_at(dp_values src, dp_u64 src_stride, dp_values dst, dp_u64 dst_stride,
                                  dp_u64 cols, dp_u64 i) {
    dp_set(dst, dp_strided_at(dst_stride, cols, i), dp_get(src, dp_strided_at(src_stride, cols, i)));
}

// Value i of the images' permutation, i over every image value of every example: forward
// (to_patches = 1) to[patch(i)] = from[i]; backward to[i] = from[patch(i)].
DP_DEVICE void dp_patches_at(dp_values from, dp_values to, dp_u64 channels, dp_u64 height, dp_u64 width,
                             dp_u64 p, int to_patches, dp_u64 i) {
    dp_u64 len = channels * height * width;
    dp_u64 patch = i / len * len + dp_patch_index(channels, height, width, p, i % len);
    if (to_patches) {
        dp_set(to, patch, dp_get(from, i));
    } else {
        dp_set(to, i, dp_get(from, patch));
    }
}

// Value i of dst + scale·src, as the CPU's LoRA sum rounds it (no contraction: NVRTC runs with
// fmad=false).
DP_DEVICE void dp_add_scaled_at(dp_values dst, dp_values src, float scale, dp_u64 i) {
    dp_set(dst, i, dp_get(dst, i) + scale * dp_get(src, i));
}

#ifdef __CUDACC__
extern "C" __global__ void dp_activation_backward_from_input(dp_values grad, dp_values x, dp_u64 len,
                                                             int act) {
    DP_GRID_STRIDE(i, len) { dp_activation_backward_from_input_at(grad, x, act, i); }
}

extern "C" __global__ void dp_copy_strided(dp_values src, dp_u64 src_stride, dp_values dst, dp_u64 dst_stride,
                                           dp_u64 rows, dp_u64 cols) {
    DP_GRID_STRIDE(i, rows * cols) { dp_copy_strided_at(src, src_stride, dst, dst_stride, cols, i); }
}

// A permutation: no two threads write one value.
extern "C" __global__ void dp_patches(dp_values from, dp_values to, dp_u64 n, dp_u64 channels, dp_u64 height,
                                      dp_u64 width, dp_u64 p, int to_patches) {
    DP_GRID_STRIDE(i, n * channels * height * width) {
        dp_patches_at(from, to, channels, height, width, p, to_patches, i);
    }
}

extern "C" __global__ void dp_add_scaled_into(dp_values dst, dp_values src, dp_u64 len, float scale) {
    DP_GRID_STRIDE(i, len) { dp_add_scaled_at(dst, src, scale, i); }
}
#endif
