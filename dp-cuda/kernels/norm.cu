// The group norm launches of a device program (dp_runtime::device::DeviceOps::group_norm_forward and
// group_norm_backward), the values of dp-kernels' norm_layers.rs. Layout [n][channels][plane]; a unit
// u = i·groups + g is group g of example i: its channels / groups consecutive channels, len values in
// a row. One block per unit (the blocks stride over the rest):
// - forward: the mean (Σx / len) and the sum of squared deviations from it, each accumulated in double
//   by every thread and summed over the block in double, as the CPU's f64 sums (in another order); the
//   mean and rstd = 1/√(var + 1e-5) kept as f32, then y = (x − μ)·rstd·w_c + b_c in f32;
// - backward: one warp per channel of the unit (a warp strides over the unit's channels) sums
//   Σ dy and Σ dy·x̂ (the example's affine gradients of that channel, overwritten) and Σ dx̂, Σ dx̂·x̂
//   (dx̂ = dy·w_c) in double; the block sums the last two over the unit's channels, whose means m1, m2
//   (f32) give dx = rstd·(dx̂ − m1 − x̂·m2), overwritten.
// No clamping: a NaN reaches every value computed from it (an input's: its unit's statistics, outputs
// and gradients), as on the CPU. Every value's arithmetic and index is a function outside the kernels,
// which the host's C compiler also compiles (tests/host_harness.c) to compare with the CPU without a
// GPU.
// bf16 storage (docs/GPU.md): every buffer that may be an arena span (x, y, dy, dx, the statistics and
// the affine gradients) is dp_values, read with dp_get and written once per launch with dp_set of its
// final f32 value, as the host reference rounds what a primitive writes; the affine weight and bias
// (parameters) are f32. The compiler stores the values (x, y, dy, dx) in the precision and the
// statistics and affine gradients in f32; all arithmetic is f32 (the sums double) either way.
#include "common.cuh"
#include "reduce.cuh"

// dp-cuda/src/program/norm_ops.rs's NormDims, field for field (passed by value).
typedef struct {
    dp_u64 channels, plane, groups;
} dp_group_norm_dims;

// Values of one unit (channels / groups · plane).
DP_DEVICE dp_u64 dp_group_norm_len(dp_group_norm_dims d) { return d.channels / d.groups * d.plane; }

// The channel of value k of unit u.
DP_DEVICE dp_u64 dp_group_norm_channel(dp_group_norm_dims d, dp_u64 u, dp_u64 k) {
    return (u % d.groups) * (d.channels / d.groups) + k / d.plane;
}

// rstd of a unit of len values whose squared deviations from the mean sum to `squares`: as the CPU,
// 1/√(var + ε) in double with ε the f32 1e-5, rounded to f32.
DP_DEVICE float dp_group_norm_rstd(double squares, dp_u64 len) {
    double var = squares / (double)len;
    return (float)(1.0 / sqrt(var + (double)1e-5f));
}

// Output value k of unit u: (x − μ)·rstd·w_c + b_c, in that order, in f32.
DP_DEVICE float dp_group_norm_output(dp_values x, const float *weight, const float *bias, dp_group_norm_dims d,
                                     dp_u64 u, dp_u64 k, float mu, float rs) {
    dp_u64 c = dp_group_norm_channel(d, u, k);
    return (dp_get(x, u * dp_group_norm_len(d) + k) - mu) * rs * weight[c] + bias[c];
}

// One channel's sums of the backward, in double (the CPU's ChannelSums).
typedef struct {
    double dy, dy_xhat, dxhat, dxhat_xhat;
} dp_group_norm_sums;

// Adds value p of channel cl (within its group) of unit u to `s`: x̂ = (x − μ)·rstd and dx̂ = dy·w_c
// in f32, their products with x̂ in double.
DP_DEVICE void dp_group_norm_add(dp_group_norm_sums *s, dp_values x, dp_values dy, const float *weight,
                                 dp_group_norm_dims d, dp_u64 u, dp_u64 cl, dp_u64 p, float mu, float rs) {
    dp_u64 k = u * dp_group_norm_len(d) + cl * d.plane + p;
    float xv = dp_get(x, k), dyv = dp_get(dy, k);
    float xh = (xv - mu) * rs, dxh = dyv * weight[dp_group_norm_channel(d, u, cl * d.plane)];
    s->dy += (double)dyv;
    s->dy_xhat += (double)dyv * (double)xh;
    s->dxhat += (double)dxh;
    s->dxhat_xhat += (double)dxh * (double)xh;
}

// Stores channel cl (within its group) of unit u's affine gradients: affine[i][c] = Σ dy·x̂ and
// affine[i][channels + c] = Σ dy, as f32.
DP_DEVICE void dp_group_norm_store_affine(dp_values affine, dp_group_norm_dims d, dp_u64 u, dp_u64 cl,
                                          dp_group_norm_sums s) {
    dp_u64 i = u / d.groups, c = dp_group_norm_channel(d, u, cl * d.plane);
    dp_set(affine, i * 2 * d.channels + c, (float)s.dy_xhat);
    dp_set(affine, i * 2 * d.channels + d.channels + c, (float)s.dy);
}

// Value k of unit u's input gradient: rstd·(dy·w_c − m1 − x̂·m2), in that order, in f32.
DP_DEVICE float dp_group_norm_dx(dp_values x, dp_values dy, const float *weight, dp_group_norm_dims d,
                                 dp_u64 u, dp_u64 k, float mu, float rs, float m1, float m2) {
    dp_u64 e = u * dp_group_norm_len(d) + k;
    float xh = (dp_get(x, e) - mu) * rs;
    return rs * (dp_get(dy, e) * weight[dp_group_norm_channel(d, u, k)] - m1 - xh * m2);
}

#ifdef __CUDACC__

// One block per unit (blockDim.x a multiple of 32); y, mean and rstd overwritten.
extern "C" __global__ void dp_group_norm_forward(dp_values x, dp_group_norm_dims d, dp_u64 n, const float *weight,
                                                 const float *bias, dp_values y, dp_values mean, dp_values rstd) {
    dp_u64 len = dp_group_norm_len(d);
    for (dp_u64 u = blockIdx.x; u < n * d.groups; u += gridDim.x) {
        dp_values xs = dp_advance(x, u * len);
        double sum = 0.0;
        for (dp_u64 k = threadIdx.x; k < len; k += blockDim.x) sum += (double)dp_get(xs, k);
        double m = dp_block_sum_f64(sum) / (double)len;
        double squares = 0.0;
        for (dp_u64 k = threadIdx.x; k < len; k += blockDim.x) {
            double v = (double)dp_get(xs, k) - m;
            squares += v * v;
        }
        squares = dp_block_sum_f64(squares);
        float mu = (float)m, rs = dp_group_norm_rstd(squares, len);
        if (threadIdx.x == 0) {
            dp_set(mean, u, mu);
            dp_set(rstd, u, rs);
        }
        for (dp_u64 k = threadIdx.x; k < len; k += blockDim.x)
            dp_set(y, u * len + k, dp_group_norm_output(x, weight, bias, d, u, k, mu, rs));
    }
}

// One block per unit (blockDim.x a multiple of 32), one warp per channel of it; dx and the unit's
// channels of affine (n × 2·channels) overwritten.
extern "C" __global__ void dp_group_norm_backward(dp_values x, dp_values dy, const float *weight, dp_values mean,
                                                  dp_values rstd, dp_group_norm_dims d, dp_u64 n, dp_values dx,
                                                  dp_values affine) {
    dp_u64 len = dp_group_norm_len(d), per_group = d.channels / d.groups;
    dp_u64 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (dp_u64 u = blockIdx.x; u < n * d.groups; u += gridDim.x) {
        float mu = dp_get(mean, u), rs = dp_get(rstd, u);
        // Lane 0's share of the unit's Σ dx̂ and Σ dx̂·x̂: its warp's channels.
        double dxhat = 0.0, dxhat_xhat = 0.0;
        for (dp_u64 cl = warp; cl < per_group; cl += warps) {
            dp_group_norm_sums s = {0.0, 0.0, 0.0, 0.0};
            for (dp_u64 p = lane; p < d.plane; p += 32) dp_group_norm_add(&s, x, dy, weight, d, u, cl, p, mu, rs);
            s.dy = dp_warp_sum_f64(s.dy);
            s.dy_xhat = dp_warp_sum_f64(s.dy_xhat);
            s.dxhat = dp_warp_sum_f64(s.dxhat);
            s.dxhat_xhat = dp_warp_sum_f64(s.dxhat_xhat);
            if (lane == 0) {
                dp_group_norm_store_affine(affine, d, u, cl, s);
                dxhat += s.dxhat;
                dxhat_xhat += s.dxhat_xhat;
            }
        }
        float m1 = (float)(dp_block_sum_f64(dxhat) / (double)len);
        float m2 = (float)(dp_block_sum_f64(dxhat_xhat) / (double)len);
        for (dp_u64 k = threadIdx.x; k < len; k += blockDim.x)
            dp_set(dx, u * len + k, dp_group_norm_dx(x, dy, weight, d, u, k, mu, rs, m1, m2));
    }
}
#endif
