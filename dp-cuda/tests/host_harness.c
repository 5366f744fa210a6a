/* Runs the device kernels' arithmetic (the files in kernels/, compiled as C) on the host, for
 * tests/kernels_on_host.rs. Binary inputs on stdin and outputs on stdout, little-endian.
 *   noise TABLES KEY_HEX64 LEN: both passes over every chunk (pass-1 blocks in reverse order, as a GPU
 *     promises no order); TABLES holds edge[257], ratio[256], density[257] as f64; out: LEN f64; on
 *     stderr `past_prefix W scanned S`: the retry words read past a segment's prefix, and the
 *     segments whose coordinates to redo outnumbered the list (DP_PREFIX_WORDS, DP_RETRY_LIST).
 *   clip PER_LAYER CLIP_NORM GROUPS BATCH: in BATCH*GROUPS f32 squared norms; out: the factors (f32)
 *     and the count of invalid examples (u32).
 *   sgd NOISE_STD INVERSE_BATCH LR MOMENTUM WEIGHT_DECAY FIRST NESTEROV LEN: in params, velocity,
 *     sum (f32 each), z (f64); out: params, velocity.
 *   emafold DECAY LEN: in average, params (LEN each); out the average after the fold.
 *   adam NOISE_STD INVERSE_BATCH LR BETA1 BETA2 EPS WEIGHT_DECAY DECOUPLED CORRECTION1 ROOT_CORRECTION2
 *     LEN: in params, exp_avg, exp_avg_sq, sum (f32 each), z (f64); out: params, exp_avg, exp_avg_sq.
 *   im2col|col2im IN_C IN_H IN_W KH KW STRIDE PADDING DILATION N: in the batch's input (the patches);
 *     out its patches (its input gradient), f32, each value as conv.cu's kernels compute it.
 *   maxpool|avgpool|maxpoolback|avgpoolback CHANNELS IN_H IN_W KERNEL STRIDE PADDING N: in x (dy, and
 *     for maxpoolback the argmax bits); out y and, for maxpool, the argmax bits (dx), f32.
 *   keptsum N LEN HAS_FACTORS GROUPS GROUP: in src (N*LEN), factors (N*GROUPS), dst (LEN); out dst.
 *   groupnorm CHANNELS PLANE GROUPS N: in x (N*CHANNELS*PLANE), weight, bias (CHANNELS each), dy (as
 *     x); out y, mean, rstd (N*GROUPS each), dx, affine (N*2*CHANNELS), f32: norm.cu's functions of
 *     each value, the block's and warps' sums in double one after another, the backward from the
 *     forward's statistics.
 *   embgather N STEPS VOCAB DIM: in ids (N*STEPS u32), table (VOCAB*DIM); out the rows, f32.
 *   embnorms N STEPS DIM: in ids, delta (N*STEPS*DIM); out each example's squared norm (its terms
 *     summed in double in the kernel's order of one thread), f32.
 *   embscatter N STEPS VOCAB DIM HAS_FACTORS GROUPS GROUP: in ids, delta, factors (N*GROUPS), grad
 *     (VOCAB*DIM); out grad, its terms added one after another in position-column order.
 *   seqsums|seqbroadcast N STEPS COLS SCALE: in src (N*STEPS*COLS, or N*COLS to broadcast); out dst.
 *   lstmforward N STEPS H T: in gates (N*STEPS*4H), cells, hprev, out (N*STEPS*H each), hidden (N*H),
 *     recurrent (N*4H), bias (4H); out gates, cells, hprev, out, hidden after step T.
 *   lstmbackward N STEPS H T: in gates, cells, dout, recurrent (N*H), cell_grad (N*H), step_delta
 *     (N*4H), delta (N*STEPS*4H); out cell_grad, step_delta, delta after step T.
 *   actinput LEN ACT: in grad, x (LEN each); out grad times the derivative at x (transformer.cu).
 *   copystrided ROWS COLS SRC_STRIDE DST_STRIDE SRC_LEN DST_LEN: in src, dst; out dst.
 *   patches CHANNELS HEIGHT WIDTH SIZE N TO_PATCHES: in from (N*C*H*W); out to.
 *   attnsoftmax BLOCKS STEPS SCALE CAUSAL: in scores (BLOCKS*STEPS*STEPS); out the probabilities
 *     (per row the kernel's 32 lanes, their partials combined in its shuffles' order).
 *   attnsoftmaxback BLOCKS STEPS SCALE: in probs, grad (BLOCKS*STEPS*STEPS each); out grad (as above).
 *   addscaled LEN SCALE: in dst, src (LEN each); out dst.
 *   views VIEWS LEN RANGES GROUPS PER_LAYER CLIP_NORM: in the gradient sum over VIEWS views (LEN f32),
 *     the ranges' offsets, lengths and groups (RANGES u64 each), the clipped sum (LEN f32); out the
 *     average (LEN f32), the squared norms and factors (GROUPS f32 each), the invalid count (u32) and
 *     the clipped sum after the example (LEN f32): views.cu's functions with one sequential sum per
 *     range, clip.cu's factors.
 *   store LEN: in LEN f32; out them as a buffer stores them (bf16 with DP_HARNESS_BF16=1: rounded by
 *     common.cuh's dp_bf16_bits, widened back).
 * DP_HARNESS_BF16 holds an operation's buffers in bf16 (see harness_buffer below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The noise's rarely taken paths, counted and reported on stderr (the tests check they ran). */
static unsigned long long words_past_prefix, segments_scanned;
#define DP_TEST_PAST_PREFIX() (++words_past_prefix)
#define DP_TEST_SCAN() (++segments_scanned)

#include "../kernels/noise.cu"
#include "../kernels/clip.cu"
#include "../kernels/update.cu"
#include "../kernels/conv.cu"
#include "../kernels/attention.cu"
#include "../kernels/norm.cu"
#include "../kernels/sequence.cu"
#include "../kernels/lstm.cu"
#include "../kernels/transformer.cu"
#include "../kernels/views.cu"

static void *read_stdin(size_t bytes) {
    void *buffer = malloc(bytes ? bytes : 1);
    if (fread(buffer, 1, bytes, stdin) != bytes) {
        fprintf(stderr, "short input\n");
        exit(2);
    }
    return buffer;
}

/* bf16 storage (docs/GPU.md, "bf16 storage"): an operation's buffers that a device program may store
 * in bf16 are harness_buffers. DP_HARNESS_BF16 (a number, 0 when unset) says which are held in bf16:
 * bit k for the k-th buffer the operation makes (with buffer_in or buffer_new, in that order). A bf16
 * buffer holds the bf16 bits of its values (rounded on the way in, dp_bf16_bits, as the GPU's bf16
 * store holds them), and the kernel functions reach it through its tagged address (dp_values), as on
 * the GPU. Its values go out widened to f32. */
typedef struct {
    void *data;
    dp_u64 n;
    int bf16;
} harness_buffer;

static unsigned long harness_bf16_bits(void) {
    const char *mask = getenv("DP_HARNESS_BF16");
    return mask ? strtoul(mask, NULL, 10) : 0;
}

static unsigned harness_buffers_made;

/* The buffer's address as a kernel gets it (bit 0 set for bf16). */
static dp_values buffer_values(harness_buffer b) { return (dp_values)(uintptr_t)b.data | (dp_values)b.bf16; }

/* A buffer of n values, zero, of the type of the next bit of DP_HARNESS_BF16. */
static harness_buffer buffer_new(dp_u64 n) {
    harness_buffer b;
    b.n = n;
    b.bf16 = (int)((harness_bf16_bits() >> harness_buffers_made++) & 1u);
    b.data = calloc(n ? n : 1, b.bf16 ? 2 : 4);
    return b;
}

/* A buffer of n values read from stdin as f32, held in the type of the next bit of DP_HARNESS_BF16. */
static harness_buffer buffer_in(dp_u64 n) {
    harness_buffer b = buffer_new(n);
    float *values = read_stdin(n * 4);
    for (dp_u64 i = 0; i < n; i++) dp_set(buffer_values(b), i, values[i]);
    free(values);
    return b;
}

/* Writes the buffer's values to stdout as f32. */
static void buffer_out(harness_buffer b) {
    for (dp_u64 i = 0; i < b.n; i++) {
        float v = dp_get(buffer_values(b), i);
        fwrite(&v, 4, 1, stdout);
    }
}

/* store LEN: in LEN f32; out the values as a buffer of DP_HARNESS_BF16's type stores them. */
static int store(char **argv) {
    harness_buffer b = buffer_in(strtoull(argv[0], NULL, 10));
    buffer_out(b);
    return 0;
}

static int clip(char **argv) {
    int per_layer = atoi(argv[0]);
    double clip_norm = strtod(argv[1], NULL);
    dp_u64 groups = strtoull(argv[2], NULL, 10), batch = strtoull(argv[3], NULL, 10);
    float *sq = read_stdin(batch * groups * sizeof(float));
    float *factors = malloc(batch * groups * sizeof(float) + 1);
    dp_u32 bad = 0;
    for (dp_u64 i = 0; i < batch; ++i)
        bad += dp_clip_example(per_layer, clip_norm, groups, sq + i * groups, factors + i * groups);
    fwrite(factors, sizeof(float), batch * groups, stdout);
    fwrite(&bad, sizeof bad, 1, stdout);
    return 0;
}

static int sgd(char **argv) {
    double noise_std = strtod(argv[0], NULL), inverse_batch = strtod(argv[1], NULL), lr = strtod(argv[2], NULL);
    double momentum = strtod(argv[3], NULL), weight_decay = strtod(argv[4], NULL);
    int first = atoi(argv[5]), nesterov = atoi(argv[6]);
    dp_u64 len = strtoull(argv[7], NULL, 10);
    float *params = read_stdin(len * 4), *velocity = read_stdin(len * 4), *sum = read_stdin(len * 4);
    double *z = read_stdin(len * 8);
    for (dp_u64 i = 0; i < len; ++i)
        dp_sgd_coordinate(params + i, velocity + i, sum[i], z[i], noise_std, inverse_batch, lr, momentum,
                          weight_decay, first, nesterov);
    fwrite(params, 4, len, stdout);
    fwrite(velocity, 4, len, stdout);
    return 0;
}

static int emafold(char **argv) {
    double decay = strtod(argv[0], NULL);
    dp_u64 len = strtoull(argv[1], NULL, 10);
    float *average = read_stdin(len * 4), *params = read_stdin(len * 4);
    for (dp_u64 i = 0; i < len; ++i) average[i] = dp_ema_fold_value(average[i], params[i], decay);
    fwrite(average, 4, len, stdout);
    return 0;
}

static int adam(char **argv) {
    double noise_std = strtod(argv[0], NULL), inverse_batch = strtod(argv[1], NULL), lr = strtod(argv[2], NULL);
    double beta1 = strtod(argv[3], NULL), beta2 = strtod(argv[4], NULL), eps = strtod(argv[5], NULL);
    double weight_decay = strtod(argv[6], NULL);
    int decoupled = atoi(argv[7]);
    double correction1 = strtod(argv[8], NULL), root_correction2 = strtod(argv[9], NULL);
    dp_u64 len = strtoull(argv[10], NULL, 10);
    float *params = read_stdin(len * 4), *exp_avg = read_stdin(len * 4), *exp_avg_sq = read_stdin(len * 4);
    float *sum = read_stdin(len * 4);
    double *z = read_stdin(len * 8);
    for (dp_u64 i = 0; i < len; ++i)
        dp_adam_coordinate(params + i, exp_avg + i, exp_avg_sq + i, sum[i], z[i], noise_std, inverse_batch, lr,
                           beta1, beta2, eps, weight_decay, decoupled, correction1, root_correction2);
    fwrite(params, 4, len, stdout);
    fwrite(exp_avg, 4, len, stdout);
    fwrite(exp_avg_sq, 4, len, stdout);
    return 0;
}

static dp_u64 arg(char **argv, int i) { return strtoull(argv[i], NULL, 10); }

static int conv(const char *op, char **argv) {
    dp_conv_geometry g = {arg(argv, 0), arg(argv, 1), arg(argv, 2), arg(argv, 3), arg(argv, 4),
                          arg(argv, 5), arg(argv, 6), arg(argv, 7), 0, 0};
    dp_u64 n = arg(argv, 8);
    g.out_h = (g.in_h + 2 * g.padding - g.dilation * (g.kh - 1) - 1) / g.stride + 1;
    g.out_w = (g.in_w + 2 * g.padding - g.dilation * (g.kw - 1) - 1) / g.stride + 1;
    dp_u64 inputs = n * g.in_c * g.in_h * g.in_w, patches = n * g.in_c * g.kh * g.kw * g.out_h * g.out_w;
    int forward = strcmp(op, "im2col") == 0;
    dp_u64 in_len = forward ? inputs : patches, out_len = forward ? patches : inputs;
    float *in = read_stdin(in_len * 4), *out = malloc(out_len * 4 + 4);
    for (dp_u64 e = 0; e < out_len; ++e) out[e] = forward ? dp_im2col_value(in, g, e) : dp_col2im_value(in, g, e);
    fwrite(out, 4, out_len, stdout);
    return 0;
}

static int pool(const char *op, char **argv) {
    dp_pool_geometry g = {arg(argv, 0), arg(argv, 1), arg(argv, 2), arg(argv, 3), arg(argv, 4), arg(argv, 5), 0, 0};
    dp_u64 n = arg(argv, 6);
    g.out_h = (g.in_h + 2 * g.padding - g.kernel) / g.stride + 1;
    g.out_w = (g.in_w + 2 * g.padding - g.kernel) / g.stride + 1;
    dp_u64 inputs = n * g.channels * g.in_h * g.in_w, outputs = n * g.channels * g.out_h * g.out_w;
    if (strcmp(op, "maxpool") == 0 || strcmp(op, "avgpool") == 0) {
        int max = op[0] == 'm';
        float *x = read_stdin(inputs * 4), *y = malloc(outputs * 4 + 4), *argmax = malloc(outputs * 4 + 4);
        for (dp_u64 e = 0; e < outputs; ++e) {
            if (max)
                dp_max_pool_output(x, g, e, y, argmax);
            else
                y[e] = dp_avg_pool_value(x, g, e);
        }
        fwrite(y, 4, outputs, stdout);
        if (max) fwrite(argmax, 4, outputs, stdout);
        return 0;
    }
    int max = op[0] == 'm';
    float *dy = read_stdin(outputs * 4), *argmax = max ? read_stdin(outputs * 4) : NULL;
    float *dx = malloc(inputs * 4 + 4);
    for (dp_u64 e = 0; e < inputs; ++e)
        dx[e] = max ? dp_max_pool_backward_value(dy, argmax, g, e) : dp_avg_pool_backward_value(dy, g, e);
    fwrite(dx, 4, inputs, stdout);
    return 0;
}

static int kept_sum(char **argv) {
    dp_u64 n = arg(argv, 0), len = arg(argv, 1), groups = arg(argv, 3), group = arg(argv, 4);
    int has = atoi(argv[2]);
    float *src = read_stdin(n * len * 4), *factors = read_stdin(n * groups * 4), *dst = read_stdin(len * 4);
    for (dp_u64 j = 0; j < len; ++j)
        dst[j] = dp_kept_weighted_column(src, n, len, factors, has, groups, group, dst[j], j);
    fwrite(dst, 4, len, stdout);
    return 0;
}

static int group_norm(char **argv) {
    dp_group_norm_dims d = {arg(argv, 0), arg(argv, 1), arg(argv, 2)};
    dp_u64 n = arg(argv, 3), len = dp_group_norm_len(d), units = n * d.groups, values = n * d.channels * d.plane;
    dp_u64 per_group = d.channels / d.groups;
    float *x = read_stdin(values * 4), *weight = read_stdin(d.channels * 4), *bias = read_stdin(d.channels * 4);
    float *dy = read_stdin(values * 4);
    float *y = malloc(values * 4 + 4), *mean = malloc(units * 4 + 4), *rstd = malloc(units * 4 + 4);
    float *dx = malloc(values * 4 + 4), *affine = malloc(n * 2 * d.channels * 4 + 4);
    for (dp_u64 u = 0; u < units; ++u) {
        const float *xs = x + u * len;
        double sum = 0.0, squares = 0.0;
        for (dp_u64 k = 0; k < len; ++k) sum += (double)xs[k];
        double m = sum / (double)len;
        for (dp_u64 k = 0; k < len; ++k) squares += ((double)xs[k] - m) * ((double)xs[k] - m);
        mean[u] = (float)m;
        rstd[u] = dp_group_norm_rstd(squares, len);
        for (dp_u64 k = 0; k < len; ++k) y[u * len + k] = dp_group_norm_output(x, weight, bias, d, u, k, mean[u], rstd[u]);
        double dxhat = 0.0, dxhat_xhat = 0.0;
        for (dp_u64 cl = 0; cl < per_group; ++cl) {
            dp_group_norm_sums s = {0.0, 0.0, 0.0, 0.0};
            for (dp_u64 p = 0; p < d.plane; ++p) dp_group_norm_add(&s, x, dy, weight, d, u, cl, p, mean[u], rstd[u]);
            dp_group_norm_store_affine(affine, d, u, cl, s);
            dxhat += s.dxhat;
            dxhat_xhat += s.dxhat_xhat;
        }
        float m1 = (float)(dxhat / (double)len), m2 = (float)(dxhat_xhat / (double)len);
        for (dp_u64 k = 0; k < len; ++k) dx[u * len + k] = dp_group_norm_dx(x, dy, weight, d, u, k, mean[u], rstd[u], m1, m2);
    }
    fwrite(y, 4, values, stdout);
    fwrite(mean, 4, units, stdout);
    fwrite(rstd, 4, units, stdout);
    fwrite(dx, 4, values, stdout);
    fwrite(affine, 4, n * 2 * d.channels, stdout);
    return 0;
}

static int embedding(const char *op, char **argv) {
    dp_u64 n = arg(argv, 0), steps = arg(argv, 1);
    unsigned int *ids = read_stdin(n * steps * 4);
    if (strcmp(op, "embgather") == 0) {
        dp_u64 vocab = arg(argv, 2), dim = arg(argv, 3), len = n * steps * dim;
        float *table = read_stdin(vocab * dim * 4), *out = malloc(len * 4 + 4);
        for (dp_u64 e = 0; e < len; ++e) out[e] = dp_embedding_gather_value(ids, table, vocab, dim, e);
        fwrite(out, 4, len, stdout);
        return 0;
    }
    if (strcmp(op, "embnorms") == 0) {
        dp_u64 dim = arg(argv, 2);
        float *delta = read_stdin(n * steps * dim * 4), *norms = malloc(n * 4 + 4);
        for (dp_u64 i = 0; i < n; ++i) {
            double acc = 0.0;
            for (dp_u64 k = 0; k < steps * dim; ++k)
                acc += (double)dp_embedding_token_square(ids, delta, steps, dim, i, k / dim, k % dim);
            norms[i] = (float)acc;
        }
        fwrite(norms, 4, n, stdout);
        return 0;
    }
    dp_u64 vocab = arg(argv, 2), dim = arg(argv, 3), groups = arg(argv, 5), group = arg(argv, 6);
    int has = atoi(argv[4]);
    float *delta = read_stdin(n * steps * dim * 4), *factors = read_stdin(n * groups * 4);
    float *grad = read_stdin(vocab * dim * 4);
    for (dp_u64 k = 0; k < n * steps * dim; ++k) {
        dp_u64 at;
        float value;
        if (dp_embedding_scatter_term(ids, delta, steps, vocab, dim, factors, has, groups, group, k, &at, &value))
            grad[at] += value;
    }
    fwrite(grad, 4, vocab * dim, stdout);
    return 0;
}

static int over_time(const char *op, char **argv) {
    dp_u64 n = arg(argv, 0), steps = arg(argv, 1), cols = arg(argv, 2);
    float scale = strtof(argv[3], NULL);
    int sums = strcmp(op, "seqsums") == 0;
    dp_u64 in_len = sums ? n * steps * cols : n * cols, out_len = sums ? n * cols : n * steps * cols;
    float *src = read_stdin(in_len * 4), *dst = malloc(out_len * 4 + 4);
    for (dp_u64 e = 0; e < out_len; ++e)
        dst[e] = sums ? dp_sequence_sum_value(src, steps, cols, scale, e)
                      : dp_sequence_broadcast_value(src, steps, cols, scale, e);
    fwrite(dst, 4, out_len, stdout);
    return 0;
}

static int lstm_step(const char *op, char **argv) {
    dp_u64 n = arg(argv, 0), steps = arg(argv, 1), h = arg(argv, 2), t = arg(argv, 3);
    dp_u64 seq = n * steps * h, units = n * h;
    if (strcmp(op, "lstmforward") == 0) {
        float *gates = read_stdin(4 * seq * 4), *cells = read_stdin(seq * 4), *hprev = read_stdin(seq * 4);
        float *out = read_stdin(seq * 4), *hidden = read_stdin(units * 4), *recurrent = read_stdin(4 * units * 4);
        float *bias = read_stdin(4 * h * 4);
        for (dp_u64 e = 0; e < units; ++e)
            dp_lstm_forward_unit(gates, cells, hprev, out, hidden, recurrent, bias, steps, h, t, e);
        fwrite(gates, 4, 4 * seq, stdout);
        fwrite(cells, 4, seq, stdout);
        fwrite(hprev, 4, seq, stdout);
        fwrite(out, 4, seq, stdout);
        fwrite(hidden, 4, units, stdout);
        return 0;
    }
    float *gates = read_stdin(4 * seq * 4), *cells = read_stdin(seq * 4), *dout = read_stdin(seq * 4);
    float *recurrent = read_stdin(units * 4), *cell_grad = read_stdin(units * 4);
    float *step_delta = read_stdin(4 * units * 4), *delta = read_stdin(4 * seq * 4);
    for (dp_u64 e = 0; e < units; ++e)
        dp_lstm_backward_unit(gates, cells, dout, recurrent, cell_grad, step_delta, delta, steps, h, t, e);
    fwrite(cell_grad, 4, units, stdout);
    fwrite(step_delta, 4, 4 * units, stdout);
    fwrite(delta, 4, 4 * seq, stdout);
    return 0;
}

static int transformer(const char *op, char **argv) {
    if (strcmp(op, "actinput") == 0) {
        dp_u64 len = arg(argv, 0);
        int act = atoi(argv[1]);
        float *grad = read_stdin(len * 4), *x = read_stdin(len * 4);
        for (dp_u64 e = 0; e < len; ++e) grad[e] *= dp_derivative_from_input(act, x[e]);
        fwrite(grad, 4, len, stdout);
        return 0;
    }
    if (strcmp(op, "copystrided") == 0) {
        dp_u64 rows = arg(argv, 0), cols = arg(argv, 1), ss = arg(argv, 2), ds = arg(argv, 3);
        dp_u64 src_len = arg(argv, 4), dst_len = arg(argv, 5);
        float *src = read_stdin(src_len * 4), *dst = read_stdin(dst_len * 4);
        for (dp_u64 i = 0; i < rows * cols; ++i) dst[dp_strided_at(ds, cols, i)] = src[dp_strided_at(ss, cols, i)];
        fwrite(dst, 4, dst_len, stdout);
        return 0;
    }
    if (strcmp(op, "addscaled") == 0) {
        dp_u64 len = arg(argv, 0);
        float scale = strtof(argv[1], NULL);
        float *dst = read_stdin(len * 4), *src = read_stdin(len * 4);
        for (dp_u64 e = 0; e < len; ++e) dst[e] = dp_add_scaled_value(dst[e], src[e], scale);
        fwrite(dst, 4, len, stdout);
        return 0;
    }
    dp_u64 c = arg(argv, 0), h = arg(argv, 1), w = arg(argv, 2), p = arg(argv, 3), n = arg(argv, 4);
    int to_patches = atoi(argv[5]);
    dp_u64 len = c * h * w;
    float *from = read_stdin(n * len * 4), *to = malloc(n * len * 4 + 4);
    for (dp_u64 i = 0; i < n * len; ++i) {
        dp_u64 patch = i / len * len + dp_patch_index(c, h, w, p, i % len);
        if (to_patches) to[patch] = from[i];
        else to[i] = from[patch];
    }
    fwrite(to, 4, n * len, stdout);
    return 0;
}

/* A warp's combination of its 32 lanes' values, as attention.cu's dp_warp_all_max and dp_warp_all_sum
 * do it: five steps, at each every lane combining its value with that of the lane whose index differs
 * in bit `o` (own value first); every lane ends with the same value. */
static float warp_all(float v[DP_ROW_LANES], int is_max) {
    for (int o = 16; o > 0; o >>= 1) {
        float next[DP_ROW_LANES];
        for (int l = 0; l < DP_ROW_LANES; ++l) next[l] = is_max ? fmaxf(v[l], v[l ^ o]) : v[l] + v[l ^ o];
        memcpy(v, next, sizeof next);
    }
    return v[0];
}

static int attention_softmax(const char *op, char **argv) {
    dp_u64 blocks = arg(argv, 0), steps = arg(argv, 1), rows = blocks * steps, len = rows * steps;
    float scale = strtof(argv[2], NULL), part[DP_ROW_LANES];
    if (strcmp(op, "attnsoftmax") == 0) {
        int causal = atoi(argv[3]);
        float *scores = read_stdin(len * 4);
        for (dp_u64 r = 0; r < rows; ++r) {
            float *row = scores + r * steps;
            dp_u64 visible = causal ? r % steps + 1 : steps;
            for (unsigned l = 0; l < DP_ROW_LANES; ++l) part[l] = dp_softmax_lane_max(row, visible, scale, l);
            float max = warp_all(part, 1);
            for (unsigned l = 0; l < DP_ROW_LANES; ++l) part[l] = dp_softmax_lane_exp(row, visible, scale, max, l);
            float inv = 1.0f / warp_all(part, 0);
            for (unsigned l = 0; l < DP_ROW_LANES; ++l) dp_softmax_lane_normalise(row, visible, steps, inv, l);
        }
        fwrite(scores, 4, len, stdout);
        return 0;
    }
    float *probs = read_stdin(len * 4), *grad = read_stdin(len * 4);
    for (dp_u64 r = 0; r < rows; ++r) {
        const float *p = probs + r * steps;
        float *g = grad + r * steps;
        for (unsigned l = 0; l < DP_ROW_LANES; ++l) part[l] = dp_softmax_backward_lane_dot(p, g, steps, l);
        float dot = warp_all(part, 0);
        for (unsigned l = 0; l < DP_ROW_LANES; ++l) dp_softmax_backward_lane(p, g, steps, scale, dot, l);
    }
    fwrite(grad, 4, len, stdout);
    return 0;
}

static int noise(int argc, char **argv);

static int views_example(char **argv) {
    dp_u64 views = arg(argv, 0), len = arg(argv, 1), ranges = arg(argv, 2), groups = arg(argv, 3);
    int per_layer = atoi(argv[4]);
    double clip_norm = strtod(argv[5], NULL);
    float *grad = read_stdin(len * 4);
    dp_u64 *offsets = read_stdin(ranges * 8), *lens = read_stdin(ranges * 8), *range_group = read_stdin(ranges * 8);
    float *sum = read_stdin(len * 4);
    double *partials = malloc(ranges * 8 + 8);
    float *sq_norms = malloc(groups * 4 + 4), *factors = malloc(groups * 4 + 4);
    float inverse = 1.0f / (float)views;
    for (dp_u64 r = 0; r < ranges; ++r)
        partials[r] = dp_views_average_squares_of(grad, inverse, offsets[r], offsets[r] + lens[r], 1);
    dp_views_group_norms_of(partials, 1, range_group, ranges, groups, sq_norms);
    dp_u32 bad = (dp_u32)dp_clip_example(per_layer, clip_norm, groups, sq_norms, factors);
    for (dp_u64 r = 0; r < ranges; ++r)
        for (dp_u64 k = offsets[r]; k < offsets[r] + lens[r]; ++k)
            sum[k] = dp_views_accumulate_value(sum[k], grad[k], factors[range_group[r]]);
    fwrite(grad, 4, len, stdout);
    fwrite(sq_norms, 4, groups, stdout);
    fwrite(factors, 4, groups, stdout);
    fwrite(&bad, sizeof bad, 1, stdout);
    fwrite(sum, 4, len, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 11 && (strcmp(argv[1], "im2col") == 0 || strcmp(argv[1], "col2im") == 0))
        return conv(argv[1], argv + 2);
    if (argc >= 9 && strstr(argv[1], "pool") != NULL) return pool(argv[1], argv + 2);
    if (argc >= 7 && strcmp(argv[1], "keptsum") == 0) return kept_sum(argv + 2);
    if (argc >= 6 && strcmp(argv[1], "groupnorm") == 0) return group_norm(argv + 2);
    if (argc >= 6 && strcmp(argv[1], "clip") == 0) return clip(argv + 2);
    if (argc >= 10 && strcmp(argv[1], "sgd") == 0) return sgd(argv + 2);
    if (argc >= 13 && strcmp(argv[1], "adam") == 0) return adam(argv + 2);
    if (argc >= 4 && strcmp(argv[1], "emafold") == 0) return emafold(argv + 2);
    if (argc >= 5 && strcmp(argv[1], "noise") == 0) return noise(argc - 1, argv + 1);
    if (argc >= 5 && strcmp(argv[1], "embnorms") == 0) return embedding(argv[1], argv + 2);
    if (argc >= 6 && strcmp(argv[1], "embgather") == 0) return embedding(argv[1], argv + 2);
    if (argc >= 9 && strcmp(argv[1], "embscatter") == 0) return embedding(argv[1], argv + 2);
    if (argc >= 6 && (strcmp(argv[1], "seqsums") == 0 || strcmp(argv[1], "seqbroadcast") == 0))
        return over_time(argv[1], argv + 2);
    if (argc >= 6 && (strcmp(argv[1], "lstmforward") == 0 || strcmp(argv[1], "lstmbackward") == 0))
        return lstm_step(argv[1], argv + 2);
    if (argc >= 6 && strcmp(argv[1], "attnsoftmax") == 0) return attention_softmax(argv[1], argv + 2);
    if (argc >= 5 && strcmp(argv[1], "attnsoftmaxback") == 0) return attention_softmax(argv[1], argv + 2);
    if (argc >= 4 && strcmp(argv[1], "actinput") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 8 && strcmp(argv[1], "copystrided") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 8 && strcmp(argv[1], "patches") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 4 && strcmp(argv[1], "addscaled") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 8 && strcmp(argv[1], "views") == 0) return views_example(argv + 2);
    if (argc >= 3 && strcmp(argv[1], "store") == 0) return store(argv + 2);
    fprintf(stderr, "usage: see the comment at the top of host_harness.c\n");
    return 2;
}

static int noise(int argc, char **argv) {
    if (argc != 4 || strlen(argv[2]) != 64) {
        fprintf(stderr, "usage: host_harness TABLES KEY_HEX64 LEN\n");
        return 2;
    }
    double edge[DP_LAYERS + 1], ratio[DP_LAYERS], density[DP_LAYERS + 1];
    FILE *tables = fopen(argv[1], "rb");
    if (!tables || fread(edge, 8, DP_LAYERS + 1, tables) != DP_LAYERS + 1 ||
        fread(ratio, 8, DP_LAYERS, tables) != DP_LAYERS ||
        fread(density, 8, DP_LAYERS + 1, tables) != DP_LAYERS + 1) {
        fprintf(stderr, "cannot read the tables from %s\n", argv[1]);
        return 2;
    }
    fclose(tables);
    dp_u32 key[8];
    for (int i = 0; i < 8; ++i) {
        unsigned bytes[4];
        for (int b = 0; b < 4; ++b) sscanf(argv[2] + 8 * i + 2 * b, "%2x", &bytes[b]);
        key[i] = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | ((dp_u32)bytes[3] << 24);
    }
    dp_u64 len = strtoull(argv[3], NULL, 10);
    double *out = malloc(len * sizeof(double));
    dp_u64 *first_words = malloc(len * sizeof(dp_u64));
    dp_u64 chunks = (len + DP_NOISE_CHUNK - 1) / DP_NOISE_CHUNK;
    /* Pass 1 over all chunks, blocks in reverse order (a GPU promises no order), then pass 2. */
    for (dp_u64 c = 0; c < chunks; ++c) {
        dp_u64 start = c * DP_NOISE_CHUNK;
        dp_u64 n = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
        for (dp_u64 b = DP_NOISE_CHUNK / 8; b-- > 0;) dp_noise_first_block(key, c, b, n, edge, ratio, out + start, first_words + start);
    }
    for (dp_u64 c = 0; c < chunks; ++c) {
        dp_u64 start = c * DP_NOISE_CHUNK;
        dp_u64 n = len - start < DP_NOISE_CHUNK ? len - start : DP_NOISE_CHUNK;
        dp_noise_retry_chunk(key, c, n, edge, ratio, density, first_words + start, out + start);
    }
    fwrite(out, sizeof(double), len, stdout);
    fprintf(stderr, "past_prefix %llu scanned %llu\n", words_past_prefix, segments_scanned);
    free(out);
    free(first_words);
    return 0;
}
