// The convolution and pooling launches of a device program (dp_runtime::device::DeviceOps): im2col and
// its adjoint col2im (over every input channel, whatever the groups), im2col with the batch folded into
// the columns and the examples of a matrix laid side by side (a conv's plain weight gradient as one
// product), a convolution's per-channel bias
// and activation, per-example bias gradients (row sums), the squared norms and weighted sum of kept
// per-example gradients, max, average and global average pooling with their backwards. Shapes arrive
// as arguments (one compiled module serves every model); the products are cuBLAS's. All layouts are
// NCHW, as dp-kernels' conv.rs and pool.rs, whose values these kernels reproduce:
// - every backward is a gather, one thread per input value summing what reads it in the order the
//   host reference (dp_runtime::device::host) adds it (no atomics; the result is overwritten);
// - max pooling keeps each window's first maximum in row-major order (strict >), or its first NaN, and
//   its index within the example's input (c·in_h·in_w + h·in_w + w) as the bits of a u32 in a float.
// - the reductions (row sums, norms, global average pooling) are warp or block trees, equal to the
//   CPU's sequential sums up to rounding.
// Every buffer that can be an arena span is a dp_values (common.cuh: f32 or bf16, docs/GPU.md "bf16
// storage"), read with dp_get and written once per launch with dp_set of its final f32 value, as the
// host reference rounds what a primitive wrote: the patches, activations, outputs and their
// gradients, the kept gradients (f32 kept scratch, or an embedding's bf16 output gradient) and the
// kept sum's destination. What only ever lives outside the arena stays float *: the bias (Params), the
// norms (SqNorms) and the factors (Factors); and max pooling's argmax, u32 bits, is always f32.
// Each output's value of the element-wise kernels, and each lane's or thread's share of a reduction,
// is a function outside the kernels, which the host's C compiler also compiles (tests/host_harness.c),
// so that their index arithmetic is checked against the CPU without a GPU.
#include "common.cuh"
#include "activation.cuh"
#include "reduce.cuh"

// dp-cuda/src/program/conv_ops.rs's ConvGeometry, field for field (passed by value).
typedef struct {
    dp_u64 in_c, in_h, in_w, kh, kw, stride, padding, dilation, out_h, out_w;
} dp_conv_geometry;

// dp-cuda/src/program/conv_ops.rs's PoolGeometry, field for field (passed by value).
typedef struct {
    dp_u64 channels, in_h, in_w, kernel, stride, padding, out_h, out_w;
} dp_pool_geometry;

// Patch entry e of the batch: cols[i][k][p] = x[i][c][oh·stride − padding + r·dilation][ow·stride −
// padding + s·dilation] with k = (c·kh + r)·kw + s and p = oh·out_w + ow; 0 in the padding.
DP_DEVICE float dp_im2col_value(dp_values x, dp_conv_geometry g, dp_u64 e) {
    dp_u64 positions = g.out_h * g.out_w, taps = g.kh * g.kw, patch_len = g.in_c * taps;
    dp_u64 plane = g.in_h * g.in_w, input_len = g.in_c * plane;
    dp_u64 p = e % positions, row = e / positions;
    dp_u64 k = row % patch_len, i = row / patch_len;
    dp_u64 c = k / taps, r = (k / g.kw) % g.kh, s = k % g.kw;
    dp_u64 oh = p / g.out_w, ow = p % g.out_w;
    // Unsigned: a tap in the top or left padding wraps around past in_h (in_w), as one past the end.
    dp_u64 h = oh * g.stride + r * g.dilation - g.padding;
    dp_u64 w = ow * g.stride + s * g.dilation - g.padding;
    return (h < g.in_h && w < g.in_w) ? dp_get(x, i * input_len + c * plane + h * g.in_w + w) : 0.0f;
}

// Where element e of n examples' rows × cols matrices laid side by side (one rows × (n·cols) matrix:
// dp_fold_examples, dp_im2col_folded) lies in the examples' own layout, n × rows × cols.
DP_DEVICE dp_u64 dp_unfolded_index(dp_u64 e, dp_u64 n, dp_u64 rows, dp_u64 cols) {
    dp_u64 r = e / (n * cols), i = (e / cols) % n, c = e % cols;
    return (i * rows + r) * cols + c;
}

// The clip factor of example i (column group of n × groups factors), or 1 without factors.
DP_DEVICE float dp_factor_of(const float *factors, int has_factors, dp_u64 groups, dp_u64 group, dp_u64 i) {
    return has_factors ? factors[i * groups + group] : 1.0f;
}

// v, rounded to bf16 (and back) when round is set: what a product in bf16 reads.
DP_DEVICE float dp_rounded(float v, int round) { return round ? dp_bf16_float(dp_bf16_bits(v)) : v; }

// Entry e of the batch's patches with the batch folded into the columns: im2col's entry at the
// unfolded index (rows in_c·kh·kw, columns the positions); 0 for an example whose factor is exactly 0
// (its input not read); rounded to bf16 when round is set (a clipped sum in bf16: the values the norms'
// products in bf16 read).
DP_DEVICE float dp_im2col_folded_value(dp_values x, dp_conv_geometry g, dp_u64 n, const float *factors,
                                       int has_factors, int round, dp_u64 groups, dp_u64 group, dp_u64 e) {
    dp_u64 positions = g.out_h * g.out_w, rows = g.in_c * g.kh * g.kw;
    if (dp_factor_of(factors, has_factors, groups, group, (e / positions) % n) == 0.0f) return 0.0f;
    return dp_rounded(dp_im2col_value(x, g, dp_unfolded_index(e, n, rows, positions)), round);
}

// Value e of n examples' rows × cols matrices side by side, rounded to bf16 when round is set, then
// times the example's factor (0 for a factor of exactly 0, its value not read).
DP_DEVICE float dp_fold_value(dp_values src, dp_u64 n, dp_u64 rows, dp_u64 cols, const float *factors,
                              int has_factors, int round, dp_u64 groups, dp_u64 group, dp_u64 e) {
    float c = dp_factor_of(factors, has_factors, groups, group, (e / cols) % n);
    if (c == 0.0f) return 0.0f;
    float v = dp_rounded(dp_get(src, dp_unfolded_index(e, n, rows, cols)), round);
    return has_factors ? c * v : v;
}

// The output index o (< out) whose tap at offset `tap` (r·dilation) reads padded coordinate t
// (h + padding): o·stride + tap = t; out when there is none.
DP_DEVICE dp_u64 dp_tap_output(dp_u64 t, dp_u64 tap, dp_u64 stride, dp_u64 out) {
    if (t < tap || (t - tap) % stride != 0) return out;
    dp_u64 o = (t - tap) / stride;
    return o < out ? o : out;
}

// Input value e of the batch's gradient: the sum of the patch entries that read it (im2col's adjoint),
// taps in (r, s) order as the CPU adds them.
DP_DEVICE float dp_col2im_value(dp_values cols, dp_conv_geometry g, dp_u64 e) {
    dp_u64 positions = g.out_h * g.out_w, taps = g.kh * g.kw, patches_len = g.in_c * taps * positions;
    dp_u64 plane = g.in_h * g.in_w, input_len = g.in_c * plane;
    dp_u64 w = e % g.in_w, h = (e / g.in_w) % g.in_h, c = (e / plane) % g.in_c, i = e / input_len;
    dp_values patches = dp_advance(cols, i * patches_len + c * taps * positions);
    float sum = 0.0f;
    for (dp_u64 r = 0; r < g.kh; r++) {
        dp_u64 oh = dp_tap_output(h + g.padding, r * g.dilation, g.stride, g.out_h);
        if (oh == g.out_h) continue;
        for (dp_u64 s = 0; s < g.kw; s++) {
            dp_u64 ow = dp_tap_output(w + g.padding, s * g.dilation, g.stride, g.out_w);
            if (ow == g.out_w) continue;
            sum += dp_get(patches, (r * g.kw + s) * positions + oh * g.out_w + ow);
        }
    }
    return sum;
}

// Value e of a convolution's output after its channel's bias and activation: act(y[e] + bias[c]) with
// c its channel (y is n × channels × positions); has_bias 0: act(y[e] + 0), bias not read (the host
// reference adds 0 too, which turns −0 into +0).
DP_DEVICE float dp_channel_bias_activation_value(dp_values y, const float *bias, int has_bias, dp_u64 channels,
                                                 dp_u64 positions, int act, dp_u64 e) {
    float b = has_bias ? bias[(e / positions) % channels] : 0.0f;
    return dp_activate(act, dp_get(y, e) + b);
}

// Lane `lane`'s share (of a warp's 32) of the sum of row r of src (rows of `cols` values): its values
// at columns lane, lane + 32, ... added in order; the warp adds the shares (dp_warp_sum).
DP_DEVICE float dp_row_lane_sum(dp_values src, dp_u64 cols, dp_u64 r, dp_u64 lane) {
    float sum = 0.0f;
    for (dp_u64 c = lane; c < cols; c += 32) sum += dp_get(src, r * cols + c);
    return sum;
}

// Column j of a kept gradients' weighted sum: dst_j + sum over examples of c_i · src[i, j], examples in
// order; an example whose factor is exactly 0 is skipped (its row never read); has_factors 0: c_i = 1.
DP_DEVICE float dp_kept_weighted_column(dp_values src, dp_u64 n, dp_u64 len, const float *factors,
                                        int has_factors, dp_u64 groups, dp_u64 group, float dst_j, dp_u64 j) {
    float acc = dst_j;
    for (dp_u64 i = 0; i < n; i++) {
        float c = has_factors ? factors[i * groups + group] : 1.0f;
        if (c == 0.0f) continue;
        float v = dp_get(src, i * len + j);
        acc += has_factors ? c * v : v;
    }
    return acc;
}

// The input rows (or columns) [*lo, *hi) of the window at output index o, clipped to the input of
// `len` (dp-kernels' pool.rs `window`).
DP_DEVICE void dp_pool_window(dp_u64 o, dp_u64 stride, dp_u64 padding, dp_u64 kernel, dp_u64 len, dp_u64 *lo,
                              dp_u64 *hi) {
    long long start = (long long)(o * stride) - (long long)padding;
    long long end = start + (long long)kernel < (long long)len ? start + (long long)kernel : (long long)len;
    *lo = start > 0 ? (dp_u64)start : 0;
    *hi = end > 0 ? (dp_u64)end : 0;
}

// The output indices [*lo, *hi) whose windows cover input coordinate x: o·stride ≤ x + padding <
// o·stride + kernel, o < out.
DP_DEVICE void dp_pool_covering(dp_u64 x, dp_u64 stride, dp_u64 padding, dp_u64 kernel, dp_u64 out, dp_u64 *lo,
                                dp_u64 *hi) {
    dp_u64 t = x + padding;
    *lo = t < kernel ? 0 : (t - kernel) / stride + 1;
    dp_u64 last = t / stride + 1;
    *hi = last < out ? last : out;
}

// Output e of a max pool: the window's first maximum in row-major order (strict >, from -inf), its
// first NaN if it has one, into y[e]; argmax[e] (always f32) its index within the example's input, as
// u32 bits.
DP_DEVICE void dp_max_pool_output(dp_values x, dp_pool_geometry g, dp_u64 e, dp_values y, float *argmax) {
    dp_u64 plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    dp_u64 ow = e % g.out_w, oh = (e / g.out_w) % g.out_h, u = e / out_plane, c = u % g.channels;
    dp_values xp = dp_advance(x, u * plane);
    dp_u64 h0, h1, w0, w1;
    dp_pool_window(oh, g.stride, g.padding, g.kernel, g.in_h, &h0, &h1);
    dp_pool_window(ow, g.stride, g.padding, g.kernel, g.in_w, &w0, &w1);
    float best = dp_bits_float(0xff800000u);  // -inf
    dp_u64 at = h0 * g.in_w + w0, first_nan = ~0ull;
    for (dp_u64 h = h0; h < h1; h++) {
        for (dp_u64 w = w0; w < w1; w++) {
            dp_u64 k = h * g.in_w + w;
            float v = dp_get(xp, k);
            if (v > best) {
                best = v;
                at = k;
            }
            if (isnan(v) && first_nan == ~0ull) first_nan = k;
        }
    }
    if (first_nan != ~0ull) {
        best = dp_get(xp, first_nan);
        at = first_nan;
    }
    dp_set(y, e, best);
    argmax[e] = dp_bits_float((dp_u32)(c * plane + at));
}

// Input value e of a max pool's gradient: the sum of dy over the windows covering it whose argmax is
// this value, in output order.
DP_DEVICE float dp_max_pool_backward_value(dp_values dy, const float *argmax, dp_pool_geometry g, dp_u64 e) {
    dp_u64 plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    dp_u64 w = e % g.in_w, h = (e / g.in_w) % g.in_h, u = e / plane, c = u % g.channels;
    dp_u32 index = (dp_u32)(c * plane + h * g.in_w + w);
    dp_values dyp = dp_advance(dy, u * out_plane);
    const float *amp = argmax + u * out_plane;
    dp_u64 oh0, oh1, ow0, ow1;
    dp_pool_covering(h, g.stride, g.padding, g.kernel, g.out_h, &oh0, &oh1);
    dp_pool_covering(w, g.stride, g.padding, g.kernel, g.out_w, &ow0, &ow1);
    float sum = 0.0f;
    for (dp_u64 oh = oh0; oh < oh1; oh++) {
        for (dp_u64 ow = ow0; ow < ow1; ow++) {
            dp_u64 q = oh * g.out_w + ow;
            if (dp_float_bits(amp[q]) == index) sum += dp_get(dyp, q);
        }
    }
    return sum;
}

// Output e of an average pool: the window's sum (row-major) times 1/kernel² (padding counts as zeros).
DP_DEVICE float dp_avg_pool_value(dp_values x, dp_pool_geometry g, dp_u64 e) {
    dp_u64 plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    float scale = 1.0f / (float)(g.kernel * g.kernel);
    dp_u64 ow = e % g.out_w, oh = (e / g.out_w) % g.out_h, u = e / out_plane;
    dp_values xp = dp_advance(x, u * plane);
    dp_u64 h0, h1, w0, w1;
    dp_pool_window(oh, g.stride, g.padding, g.kernel, g.in_h, &h0, &h1);
    dp_pool_window(ow, g.stride, g.padding, g.kernel, g.in_w, &w0, &w1);
    float sum = 0.0f;
    for (dp_u64 h = h0; h < h1; h++)
        for (dp_u64 w = w0; w < w1; w++) sum += dp_get(xp, h * g.in_w + w);
    return sum * scale;
}

// Input value e of an average pool's gradient: the sum of dy · 1/kernel² over the windows covering
// it, in output order.
DP_DEVICE float dp_avg_pool_backward_value(dp_values dy, dp_pool_geometry g, dp_u64 e) {
    dp_u64 plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    float scale = 1.0f / (float)(g.kernel * g.kernel);
    dp_u64 w = e % g.in_w, h = (e / g.in_w) % g.in_h, u = e / plane;
    dp_values dyp = dp_advance(dy, u * out_plane);
    dp_u64 oh0, oh1, ow0, ow1;
    dp_pool_covering(h, g.stride, g.padding, g.kernel, g.out_h, &oh0, &oh1);
    dp_pool_covering(w, g.stride, g.padding, g.kernel, g.out_w, &ow0, &ow1);
    float sum = 0.0f;
    for (dp_u64 oh = oh0; oh < oh1; oh++)
        for (dp_u64 ow = ow0; ow < ow1; ow++) sum += dp_get(dyp, oh * g.out_w + ow) * scale;
    return sum;
}

// Input value e of a global average pool's gradient: dy[u] / plane for its plane u, divided as the host
// reference divides (not times 1/plane, which rounds differently for most planes).
DP_DEVICE float dp_global_avg_pool_backward_value(dp_values dy, dp_u64 plane, dp_u64 e) {
    return dp_get(dy, e / plane) / (float)plane;
}

// The threads of a dp_kept_sq_norms block (conv_ops.rs's KEPT_NORM_THREADS). A kept gradient is an
// example's whole weight gradient (a CNN's: 10^4 to 10^5 values) read once, and a batch is about as
// many blocks as the GPU has multiprocessors: 1024 threads (32 warps) each keep enough loads in flight
// to stream it, where 256 left each multiprocessor mostly waiting.
#define DP_KEPT_NORM_THREADS 1024

#ifdef __CUDACC__

// One thread per patch entry.
extern "C" __global__ void dp_im2col(dp_values x, dp_conv_geometry g, dp_u64 n, dp_values cols) {
    DP_GRID_STRIDE(e, n * g.in_c * g.kh * g.kw * g.out_h * g.out_w) { dp_set(cols, e, dp_im2col_value(x, g, e)); }
}

// One thread per folded patch entry; cols overwritten.
extern "C" __global__ void dp_im2col_folded(dp_values x, dp_conv_geometry g, dp_u64 n, const float *factors,
                                            int has_factors, int round, dp_u64 groups, dp_u64 group,
                                            dp_values cols) {
    DP_GRID_STRIDE(e, n * g.in_c * g.kh * g.kw * g.out_h * g.out_w) {
        dp_set(cols, e, dp_im2col_folded_value(x, g, n, factors, has_factors, round, groups, group, e));
    }
}

// One thread per value of the folded matrix; dst overwritten.
extern "C" __global__ void dp_fold_examples(dp_values src, dp_u64 n, dp_u64 rows, dp_u64 cols, const float *factors,
                                            int has_factors, int round, dp_u64 groups, dp_u64 group,
                                            dp_values dst) {
    DP_GRID_STRIDE(e, n * rows * cols) {
        dp_set(dst, e, dp_fold_value(src, n, rows, cols, factors, has_factors, round, groups, group, e));
    }
}

// One thread per input value; dx overwritten.
extern "C" __global__ void dp_col2im(dp_values cols, dp_conv_geometry g, dp_u64 n, dp_values dx) {
    DP_GRID_STRIDE(e, n * g.in_c * g.in_h * g.in_w) { dp_set(dx, e, dp_col2im_value(cols, g, e)); }
}

// y[i, c, p] = act(y[i, c, p] + bias[c]) over n × channels × positions; has_bias 0: act(y), bias not read.
extern "C" __global__ void dp_channel_bias_activation(dp_values y, const float *bias, int has_bias, dp_u64 n,
                                                      dp_u64 channels, dp_u64 positions, int act) {
    DP_GRID_STRIDE(e, n * channels * positions) {
        dp_set(y, e, dp_channel_bias_activation_value(y, bias, has_bias, channels, positions, act, e));
    }
}

// dst[r] = sum over c of src[r, c], overwritten: one warp per row (blockDim.x a multiple of 32).
extern "C" __global__ void dp_row_sums(dp_values src, dp_u64 rows, dp_u64 cols, dp_values dst) {
    dp_u64 lane = threadIdx.x & 31u, warp = ((dp_u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    dp_u64 warps = ((dp_u64)gridDim.x * blockDim.x) >> 5;
    for (dp_u64 r = warp; r < rows; r += warps) {
        float sum = dp_warp_sum(dp_row_lane_sum(src, cols, r, lane));
        if (lane == 0) dp_set(dst, r, sum);
    }
}

// One block per example: sq_norms[i * groups + group] = |weight_i|^2 + |bias_i|^2 (bias_len 0: no bias,
// not read), overwritten. Launch bounds: the compiler keeps the kernel within the registers 1024
// threads of a block may use, so the launch cannot fail for want of them.
extern "C" __global__ void __launch_bounds__(DP_KEPT_NORM_THREADS)
    dp_kept_sq_norms(dp_values weight, dp_u64 weight_len, dp_values bias, dp_u64 bias_len, dp_u64 n, float *sq_norms,
                     dp_u64 groups, dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        float w2 = dp_block_sum(dp_square_share(weight, weight_len, i, threadIdx.x, blockDim.x));
        float b2 = dp_block_sum(dp_square_share(bias, bias_len, i, threadIdx.x, blockDim.x));
        if (threadIdx.x == 0) sq_norms[i * groups + group] = bias_len ? w2 + b2 : w2;
    }
}

// One block per example: sq_norms[i * groups + group] = a_i · b_i + |bias_i|^2 (bias_len 0: no bias, not
// read), overwritten: a conv's ghost norm from its two Gram matrices.
extern "C" __global__ void __launch_bounds__(DP_KEPT_NORM_THREADS)
    dp_gram_sq_norms(dp_values a, dp_values b, dp_u64 len, dp_values bias, dp_u64 bias_len, dp_u64 n,
                     float *sq_norms, dp_u64 groups, dp_u64 group) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        float w2 = dp_block_sum(dp_dot_share(a, b, len, i, threadIdx.x, blockDim.x));
        float b2 = dp_block_sum(dp_square_share(bias, bias_len, i, threadIdx.x, blockDim.x));
        // Rounding can leave a nearly cancelling sum below 0, which would read as invalid; NaN stays.
        float sq = bias_len ? w2 + b2 : w2;
        if (threadIdx.x == 0) sq_norms[i * groups + group] = sq < 0.0f ? 0.0f : sq;
    }
}

// dst[j] += sum over examples of c_i · src[i, j] (dp_kept_weighted_column), one thread per column.
extern "C" __global__ void dp_kept_weighted_sum(dp_values src, dp_u64 n, dp_u64 len, const float *factors,
                                                int has_factors, dp_u64 groups, dp_u64 group, dp_values dst) {
    DP_GRID_STRIDE(j, len) {
        float sum = dp_kept_weighted_column(src, n, len, factors, has_factors, groups, group, dp_get(dst, j), j);
        dp_set(dst, j, sum);
    }
}

// One thread per output (dp_max_pool_output).
extern "C" __global__ void dp_max_pool_forward(dp_values x, dp_pool_geometry g, dp_u64 n, dp_values y,
                                               float *argmax) {
    DP_GRID_STRIDE(e, n * g.channels * g.out_h * g.out_w) { dp_max_pool_output(x, g, e, y, argmax); }
}

// One thread per input value; dx overwritten.
extern "C" __global__ void dp_max_pool_backward(dp_values dy, const float *argmax, dp_pool_geometry g, dp_u64 n,
                                                dp_values dx) {
    DP_GRID_STRIDE(e, n * g.channels * g.in_h * g.in_w) {
        dp_set(dx, e, dp_max_pool_backward_value(dy, argmax, g, e));
    }
}

// One thread per output.
extern "C" __global__ void dp_avg_pool_forward(dp_values x, dp_pool_geometry g, dp_u64 n, dp_values y) {
    DP_GRID_STRIDE(e, n * g.channels * g.out_h * g.out_w) { dp_set(y, e, dp_avg_pool_value(x, g, e)); }
}

// One thread per input value; dx overwritten.
extern "C" __global__ void dp_avg_pool_backward(dp_values dy, dp_pool_geometry g, dp_u64 n, dp_values dx) {
    DP_GRID_STRIDE(e, n * g.channels * g.in_h * g.in_w) { dp_set(dx, e, dp_avg_pool_backward_value(dy, g, e)); }
}

// y[u] = mean of plane u of x (u = i·channels + c): one warp per plane, the sum divided by plane (as the
// host reference divides).
extern "C" __global__ void dp_global_avg_pool_forward(dp_values x, dp_u64 planes, dp_u64 plane, dp_values y) {
    dp_u64 lane = threadIdx.x & 31u, warp = ((dp_u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    dp_u64 warps = ((dp_u64)gridDim.x * blockDim.x) >> 5;
    for (dp_u64 u = warp; u < planes; u += warps) {
        float sum = dp_warp_sum(dp_row_lane_sum(x, plane, u, lane));
        if (lane == 0) dp_set(y, u, sum / (float)plane);
    }
}

// dx[u, k] = dy[u] / plane, overwritten (dp_global_avg_pool_backward_value).
extern "C" __global__ void dp_global_avg_pool_backward(dp_values dy, dp_u64 planes, dp_u64 plane, dp_values dx) {
    DP_GRID_STRIDE(e, planes * plane) { dp_set(dx, e, dp_global_avg_pool_backward_value(dy, plane, e)); }
}
#endif
