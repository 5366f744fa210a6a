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
 *     out its patches (its input gradient), f32, each value as conv.cu's kernels compute it. Buffers:
 *     the input, the output.
 *   im2colfolded IN_C IN_H IN_W KH KW STRIDE PADDING DILATION N HAS_FACTORS ROUND GROUPS GROUP: in
 *     the input, then N*GROUPS factors (f32); out its patches with the batch folded into the columns,
 *     an example of factor 0 zero with factors, the others rounded to bf16 with ROUND. Buffers: the
 *     input, the output.
 *   fold N ROWS COLS HAS_FACTORS ROUND GROUPS GROUP: in src (N*ROWS*COLS), then N*GROUPS factors
 *     (f32); out the examples' matrices side by side, rounded to bf16 with ROUND and times their
 *     factors with factors (conv.cu's dp_fold_examples). Buffers: src, dst.
 *   gramnorms N LEN BIAS_LEN GROUPS GROUP: in a, b (N*LEN each), bias (N*BIAS_LEN), sq_norms
 *     (N*GROUPS, f32); out sq_norms, each example's 1024 thread shares combined in dp_block_sum's
 *     order (conv.cu's dp_gram_sq_norms). Buffers: a, b, bias.
 *   maxpool|avgpool|maxpoolback|avgpoolback CHANNELS IN_H IN_W KERNEL STRIDE PADDING N: in x (dy, and
 *     for maxpoolback the argmax bits); out y and, for maxpool, the argmax bits (dx), f32. Buffers: x
 *     (dy), y (dx); the argmax is always f32.
 *   keptsum N LEN HAS_FACTORS GROUPS GROUP: in src (N*LEN), factors (N*GROUPS), dst (LEN); out dst.
 *     Buffers: src, dst; the factors are f32.
 *   chanbias N CHANNELS POSITIONS HAS_BIAS ACT: in y (N*CHANNELS*POSITIONS), bias (CHANNELS, f32); out
 *     y after conv.cu's channel bias and activation. Buffer: y.
 *   rowsums ROWS COLS: in src (ROWS*COLS); out each row's sum, a warp's 32 lane shares combined in
 *     dp_warp_sum's order (conv.cu's row sums). Buffers: src, the sums.
 *   keptnorms N WEIGHT_LEN BIAS_LEN GROUPS GROUP: in weight (N*WEIGHT_LEN), bias (N*BIAS_LEN), sq_norms
 *     (N*GROUPS, f32); out sq_norms, each example's 1024 thread shares combined in dp_block_sum's order.
 *     Buffers: weight, bias.
 *   globalpool|globalpoolback PLANES PLANE: in x (PLANES*PLANE; dy, PLANES); out the planes' means as
 *     the row sums combine them (dx). Buffers: x (dy), y (dx).
 *   groupnorm CHANNELS PLANE GROUPS N: in x (N*CHANNELS*PLANE), weight, bias (CHANNELS each), dy (as
 *     x); out y, mean, rstd (N*GROUPS each), dx, affine (N*2*CHANNELS), f32: norm.cu's functions of
 *     each value, the block's and warps' sums in double one after another, the backward from the
 *     forward's statistics as stored. Buffers (DP_HARNESS_BF16 bits 0-6): x, dy, y, mean, rstd, dx,
 *     affine.
 *   embgather N STEPS VOCAB DIM: in ids (N*STEPS u32), table (VOCAB*DIM); out the rows, f32. Buffer:
 *     the rows.
 *   embnorms N STEPS DIM: in ids, delta (N*STEPS*DIM); out each example's squared norm (its terms
 *     summed in double in the kernel's order of one thread), f32. Buffer: delta.
 *   embscatter N STEPS VOCAB DIM HAS_FACTORS GROUPS GROUP: in ids, delta, factors (N*GROUPS), grad
 *     (VOCAB*DIM); out grad, its terms added one after another in position-column order. Buffer: delta.
 *   seqsums|seqbroadcast N STEPS COLS SCALE: in src (N*STEPS*COLS, or N*COLS to broadcast); out dst.
 *     Buffers: src, dst.
 *   lstmforward N STEPS H T: in gates (N*STEPS*4H), cells, hprev, out (N*STEPS*H each), hidden (N*H),
 *     recurrent (N*4H), bias (4H); out gates, cells, hprev, out, hidden after step T. Buffers: gates,
 *     cells, hprev, out, hidden, recurrent.
 *   lstmforwardseq N STEPS H ROUND: lstm.cu's fused forward recurrence (every step, example after
 *     example): in as lstmforward, then the bias (4H) and W_hh (4H*H, f32); out as lstmforward.
 *     ROUND 1: the recurrent products round their operands to bf16. Buffers as lstmforward.
 *   lstmbackwardseq N STEPS H ROUND: the fused backward through time: in as lstmbackward, then W_hh;
 *     out as lstmbackward. Buffers as lstmbackward.
 *   lstmbackward N STEPS H T: in gates, cells, dout, recurrent (N*H), cell_grad (N*H), step_delta
 *     (N*4H), delta (N*STEPS*4H); out cell_grad, step_delta, delta after step T. Buffers: all seven, in
 *     that order.
 *   actinput LEN ACT: in grad, x (LEN each); out grad times the derivative at x (transformer.cu).
 *   copystrided ROWS COLS SRC_STRIDE DST_STRIDE SRC_LEN DST_LEN: in src, dst; out dst.
 *   patches CHANNELS HEIGHT WIDTH SIZE N TO_PATCHES: in from (N*C*H*W); out to (the second buffer).
 *   attnsoftmax BLOCKS STEPS SCALE CAUSAL: in scores (BLOCKS*STEPS*STEPS); out the probabilities
 *     (per row the kernel's 32 lanes, their partials combined in its shuffles' order).
 *   attnsoftmaxback BLOCKS STEPS SCALE: in probs, grad (BLOCKS*STEPS*STEPS each); out grad (as above).
 *   addscaled LEN SCALE: in dst, src (LEN each); out dst.
 *   fill LEN VALUE: in dst (LEN); out dst filled with VALUE (attention.cu's dp_fill).
 *   views VIEWS LEN RANGES GROUPS PER_LAYER CLIP_NORM: in the gradient sum over VIEWS views (LEN f32),
 *     the ranges' offsets, lengths and groups (RANGES u64 each), the clipped sum (LEN f32); out the
 *     average (LEN f32), the squared norms and factors (GROUPS f32 each), the invalid count (u32) and
 *     the clipped sum after the example (LEN f32): views.cu's functions with one sequential sum per
 *     range, clip.cu's factors.
 *   store LEN: in LEN f32; out them as a buffer stores them (bf16 with DP_HARNESS_BF16=1: rounded by
 *     common.cuh's dp_bf16_bits, widened back).
 *   dense WHAT ...: dense.cu's per-value functions, one value (or row, or example) after another; f32
 *     in and out, the buffers (harness_buffer, DP_HARNESS_BF16's bits in the order listed) those a
 *     kernel takes as dp_values, every other array f32 (a float * of the kernel):
 *     biasact ROWS COLS HAS_BIAS ACT: in y (ROWS*COLS), bias (COLS, only with HAS_BIAS: else the
 *       function gets NULL); out y after the bias and activation. Buffer: y.
 *     act LEN ACT: in x; out y = act(x). Buffers: x, y.
 *     actback LEN ACT: in grad, y (LEN each); out grad times the derivative from y. Buffers: grad, y.
 *     softmaxce ROWS CLASSES | bce ROWS | mse ROWS OUTPUTS: in the outputs (ROWS*CLASSES, ROWS,
 *       ROWS*OUTPUTS), the labels (ROWS, ROWS, ROWS*OUTPUTS); out the losses (ROWS), the gradient (as
 *       the outputs). Buffers: outputs, gradient.
 *     ghostnorms ROWS INPUTS OUTPUTS HAS_BIAS THREADS: in a (ROWS*INPUTS), delta (ROWS*OUTPUTS); out
 *       each row's squared ghost norm, the THREADS threads' shares added in thread order. Buffers: a,
 *       delta.
 *     scalerows ROWS POSITIONS COLS GROUPS GROUP BY_FACTOR: in src (ROWS*COLS), factors
 *       (ROWS/POSITIONS*GROUPS); out dst. Buffers: src, dst.
 *     colsums ROWS COLS: in src (ROWS*COLS), dst (COLS, the gradient); out dst. Buffer: src.
 *     addinto LEN: in dst, src (LEN each); out dst. Buffers: dst, src.
 *     embmean N STEPS VOCAB DIM: in ids (N*STEPS u32), table (VOCAB*DIM); out the means (N*DIM).
 *       Buffer: the means.
 *     embmeannorms N STEPS DIM: in ids, delta (N*DIM); out each example's squared norm, its pairs
 *       summed in f32 and its squares in double in the order of one thread. Buffer: delta.
 *     embmeanscatter N STEPS VOCAB DIM HAS_FACTORS GROUPS GROUP: in ids, delta (N*DIM), factors
 *       (N*GROUPS, only with HAS_FACTORS: else NULL), grad (VOCAB*DIM); out grad, its terms added one
 *       after another in example-position-column order. Buffer: delta.
 *     nonfinite LEN: in values (LEN); out how many are infinite or NaN (u32). Buffer: values.
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
#include "../kernels/dense.cu"

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
    int folded = strcmp(op, "im2colfolded") == 0, forward = folded || strcmp(op, "im2col") == 0;
    dp_u64 in_len = forward ? inputs : patches, out_len = forward ? patches : inputs;
    harness_buffer in = buffer_in(in_len), out = buffer_new(out_len);
    int has_factors = folded ? (int)arg(argv, 9) : 0, round = folded ? (int)arg(argv, 10) : 0;
    dp_u64 groups = folded ? arg(argv, 11) : 1, group = folded ? arg(argv, 12) : 0;
    float *factors = folded ? read_stdin(n * groups * 4) : NULL;
    dp_values x = buffer_values(in);
    for (dp_u64 e = 0; e < out_len; ++e)
        dp_set(buffer_values(out), e,
               folded    ? dp_im2col_folded_value(x, g, n, factors, has_factors, round, groups, group, e)
               : forward ? dp_im2col_value(x, g, e)
                         : dp_col2im_value(x, g, e));
    buffer_out(out);
    return 0;
}

static int fold(char **argv) {
    dp_u64 n = arg(argv, 0), rows = arg(argv, 1), cols = arg(argv, 2), len = n * rows * cols;
    int has_factors = (int)arg(argv, 3), round = (int)arg(argv, 4);
    dp_u64 groups = arg(argv, 5), group = arg(argv, 6);
    harness_buffer src = buffer_in(len), dst = buffer_new(len);
    float *factors = read_stdin(n * groups * 4);
    for (dp_u64 e = 0; e < len; ++e)
        dp_set(buffer_values(dst), e,
               dp_fold_value(buffer_values(src), n, rows, cols, factors, has_factors, round, groups, group, e));
    buffer_out(dst);
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
        harness_buffer x = buffer_in(inputs), y = buffer_new(outputs);
        float *argmax = malloc(outputs * 4 + 4);
        for (dp_u64 e = 0; e < outputs; ++e) {
            if (max)
                dp_max_pool_output(buffer_values(x), g, e, buffer_values(y), argmax);
            else
                dp_set(buffer_values(y), e, dp_avg_pool_value(buffer_values(x), g, e));
        }
        buffer_out(y);
        if (max) fwrite(argmax, 4, outputs, stdout);
        return 0;
    }
    int max = op[0] == 'm';
    harness_buffer dy = buffer_in(outputs);
    float *argmax = max ? read_stdin(outputs * 4) : NULL;
    harness_buffer dx = buffer_new(inputs);
    for (dp_u64 e = 0; e < inputs; ++e)
        dp_set(buffer_values(dx), e,
               max ? dp_max_pool_backward_value(buffer_values(dy), argmax, g, e)
                   : dp_avg_pool_backward_value(buffer_values(dy), g, e));
    buffer_out(dx);
    return 0;
}

static int kept_sum(char **argv) {
    dp_u64 n = arg(argv, 0), len = arg(argv, 1), groups = arg(argv, 3), group = arg(argv, 4);
    int has = atoi(argv[2]);
    harness_buffer src = buffer_in(n * len);
    float *factors = read_stdin(n * groups * 4);
    harness_buffer dst = buffer_in(len);
    dp_values s = buffer_values(src), d = buffer_values(dst);
    for (dp_u64 j = 0; j < len; ++j)
        dp_set(d, j, dp_kept_weighted_column(s, n, len, factors, has, groups, group, dp_get(d, j), j));
    buffer_out(dst);
    return 0;
}

static int channel_bias(char **argv) {
    dp_u64 n = arg(argv, 0), channels = arg(argv, 1), positions = arg(argv, 2), len = n * channels * positions;
    int has_bias = atoi(argv[3]), act = atoi(argv[4]);
    harness_buffer y = buffer_in(len);
    float *bias = read_stdin(channels * 4);
    for (dp_u64 e = 0; e < len; ++e)
        dp_set(buffer_values(y), e,
               dp_channel_bias_activation_value(buffer_values(y), bias, has_bias, channels, positions, act, e));
    buffer_out(y);
    return 0;
}

/* Lane 0's value after dp_warp_sum: five __shfl_down_sync steps, each lane adding the value `o` lanes
 * above it (a lane past the warp's end reading its own, which lane 0's sum never uses). */
static float conv_warp_sum(const float lanes[32]) {
    float v[32];
    memcpy(v, lanes, sizeof v);
    for (int o = 16; o > 0; o >>= 1) {
        float next[32];
        for (int l = 0; l < 32; ++l) next[l] = v[l] + (l + o < 32 ? v[l + o] : v[l]);
        memcpy(v, next, sizeof next);
    }
    return v[0];
}

/* dp_block_sum over `threads` (a multiple of 32) threads' values: each warp's sum, then warp 0's sum of
 * those (lanes past the warps' count holding 0). */
static float conv_block_sum(const float *values, unsigned threads) {
    float partial[32] = {0};
    for (unsigned w = 0; w < threads / 32; ++w) partial[w] = conv_warp_sum(values + 32 * w);
    return conv_warp_sum(partial);
}

/* The threads of a dp_kept_sq_norms block (conv.cu's DP_KEPT_NORM_THREADS). */
#define CONV_BLOCK_THREADS ((unsigned)DP_KEPT_NORM_THREADS)

static int conv_reductions(const char *op, char **argv) {
    float lanes[CONV_BLOCK_THREADS];
    if (strcmp(op, "keptnorms") == 0) {
        dp_u64 n = arg(argv, 0), weight_len = arg(argv, 1), bias_len = arg(argv, 2), groups = arg(argv, 3);
        dp_u64 group = arg(argv, 4);
        harness_buffer weight = buffer_in(n * weight_len), bias = buffer_in(n * bias_len);
        float *sq_norms = read_stdin(n * groups * 4);
        for (dp_u64 i = 0; i < n; ++i) {
            for (unsigned t = 0; t < CONV_BLOCK_THREADS; ++t)
                lanes[t] = dp_square_share(buffer_values(weight), weight_len, i, t, CONV_BLOCK_THREADS);
            float w2 = conv_block_sum(lanes, CONV_BLOCK_THREADS);
            for (unsigned t = 0; t < CONV_BLOCK_THREADS; ++t)
                lanes[t] = dp_square_share(buffer_values(bias), bias_len, i, t, CONV_BLOCK_THREADS);
            float b2 = conv_block_sum(lanes, CONV_BLOCK_THREADS);
            sq_norms[i * groups + group] = bias_len ? w2 + b2 : w2;
        }
        fwrite(sq_norms, 4, n * groups, stdout);
        return 0;
    }
    if (strcmp(op, "gramnorms") == 0) {
        dp_u64 n = arg(argv, 0), len = arg(argv, 1), bias_len = arg(argv, 2), groups = arg(argv, 3);
        dp_u64 group = arg(argv, 4);
        harness_buffer a = buffer_in(n * len), b = buffer_in(n * len), bias = buffer_in(n * bias_len);
        float *sq_norms = read_stdin(n * groups * 4);
        for (dp_u64 i = 0; i < n; ++i) {
            for (unsigned t = 0; t < CONV_BLOCK_THREADS; ++t)
                lanes[t] = dp_dot_share(buffer_values(a), buffer_values(b), len, i, t, CONV_BLOCK_THREADS);
            float w2 = conv_block_sum(lanes, CONV_BLOCK_THREADS);
            for (unsigned t = 0; t < CONV_BLOCK_THREADS; ++t)
                lanes[t] = dp_square_share(buffer_values(bias), bias_len, i, t, CONV_BLOCK_THREADS);
            float b2 = conv_block_sum(lanes, CONV_BLOCK_THREADS);
            float sq = bias_len ? w2 + b2 : w2;
            sq_norms[i * groups + group] = sq < 0.0f ? 0.0f : sq;
        }
        fwrite(sq_norms, 4, n * groups, stdout);
        return 0;
    }
    if (strcmp(op, "globalpoolback") == 0) {
        dp_u64 planes = arg(argv, 0), plane = arg(argv, 1);
        harness_buffer dy = buffer_in(planes), dx = buffer_new(planes * plane);
        for (dp_u64 e = 0; e < planes * plane; ++e)
            dp_set(buffer_values(dx), e, dp_global_avg_pool_backward_value(buffer_values(dy), plane, e));
        buffer_out(dx);
        return 0;
    }
    /* rowsums and globalpool: a warp per row (plane), dp_row_lane_sum's 32 shares. */
    dp_u64 rows = arg(argv, 0), cols = arg(argv, 1);
    harness_buffer src = buffer_in(rows * cols), dst = buffer_new(rows);
    for (dp_u64 r = 0; r < rows; ++r) {
        for (unsigned l = 0; l < 32; ++l) lanes[l] = dp_row_lane_sum(buffer_values(src), cols, r, l);
        float sum = conv_warp_sum(lanes);
        dp_set(buffer_values(dst), r, strcmp(op, "globalpool") == 0 ? sum / (float)cols : sum);
    }
    buffer_out(dst);
    return 0;
}

static int group_norm(char **argv) {
    dp_group_norm_dims d = {arg(argv, 0), arg(argv, 1), arg(argv, 2)};
    dp_u64 n = arg(argv, 3), len = dp_group_norm_len(d), units = n * d.groups, values = n * d.channels * d.plane;
    dp_u64 per_group = d.channels / d.groups;
    harness_buffer xb = buffer_in(values);
    float *weight = read_stdin(d.channels * 4), *bias = read_stdin(d.channels * 4);
    harness_buffer dyb = buffer_in(values);
    harness_buffer yb = buffer_new(values), meanb = buffer_new(units), rstdb = buffer_new(units);
    harness_buffer dxb = buffer_new(values), affineb = buffer_new(n * 2 * d.channels);
    dp_values x = buffer_values(xb), dy = buffer_values(dyb), y = buffer_values(yb), mean = buffer_values(meanb);
    dp_values rstd = buffer_values(rstdb), dx = buffer_values(dxb), affine = buffer_values(affineb);
    for (dp_u64 u = 0; u < units; ++u) {
        dp_values xs = dp_advance(x, u * len);
        double sum = 0.0, squares = 0.0;
        for (dp_u64 k = 0; k < len; ++k) sum += (double)dp_get(xs, k);
        double m = sum / (double)len;
        for (dp_u64 k = 0; k < len; ++k) squares += ((double)dp_get(xs, k) - m) * ((double)dp_get(xs, k) - m);
        float mu = (float)m, rs = dp_group_norm_rstd(squares, len);
        dp_set(mean, u, mu);
        dp_set(rstd, u, rs);
        for (dp_u64 k = 0; k < len; ++k) dp_set(y, u * len + k, dp_group_norm_output(x, weight, bias, d, u, k, mu, rs));
        /* The forward's kernel computes y from its statistics in f32, the backward's reads them as stored. */
        mu = dp_get(mean, u);
        rs = dp_get(rstd, u);
        double dxhat = 0.0, dxhat_xhat = 0.0;
        for (dp_u64 cl = 0; cl < per_group; ++cl) {
            dp_group_norm_sums s = {0.0, 0.0, 0.0, 0.0};
            for (dp_u64 p = 0; p < d.plane; ++p) dp_group_norm_add(&s, x, dy, weight, d, u, cl, p, mu, rs);
            dp_group_norm_store_affine(affine, d, u, cl, s);
            dxhat += s.dxhat;
            dxhat_xhat += s.dxhat_xhat;
        }
        float m1 = (float)(dxhat / (double)len), m2 = (float)(dxhat_xhat / (double)len);
        for (dp_u64 k = 0; k < len; ++k)
            dp_set(dx, u * len + k, dp_group_norm_dx(x, dy, weight, d, u, k, mu, rs, m1, m2));
    }
    buffer_out(yb);
    buffer_out(meanb);
    buffer_out(rstdb);
    buffer_out(dxb);
    buffer_out(affineb);
    return 0;
}

static int embedding(const char *op, char **argv) {
    dp_u64 n = arg(argv, 0), steps = arg(argv, 1);
    unsigned int *ids = read_stdin(n * steps * 4);
    if (strcmp(op, "embgather") == 0) {
        dp_u64 vocab = arg(argv, 2), dim = arg(argv, 3), len = n * steps * dim;
        float *table = read_stdin(vocab * dim * 4);
        harness_buffer out = buffer_new(len);
        for (dp_u64 e = 0; e < len; ++e)
            dp_set(buffer_values(out), e, dp_embedding_gather_value(ids, table, vocab, dim, e));
        buffer_out(out);
        return 0;
    }
    if (strcmp(op, "embnorms") == 0) {
        dp_u64 dim = arg(argv, 2);
        harness_buffer delta = buffer_in(n * steps * dim);
        float *norms = malloc(n * 4 + 4);
        for (dp_u64 i = 0; i < n; ++i) {
            double acc = 0.0;
            for (dp_u64 k = 0; k < steps * dim; ++k)
                acc += (double)dp_embedding_token_square(ids, buffer_values(delta), steps, dim, i, k / dim, k % dim);
            norms[i] = (float)acc;
        }
        fwrite(norms, 4, n, stdout);
        return 0;
    }
    dp_u64 vocab = arg(argv, 2), dim = arg(argv, 3), groups = arg(argv, 5), group = arg(argv, 6);
    int has = atoi(argv[4]);
    dp_values delta = buffer_values(buffer_in(n * steps * dim));
    float *factors = read_stdin(n * groups * 4);
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
    harness_buffer srcb = buffer_in(in_len), dstb = buffer_new(out_len);
    dp_values src = buffer_values(srcb), dst = buffer_values(dstb);
    for (dp_u64 e = 0; e < out_len; ++e)
        dp_set(dst, e,
               sums ? dp_sequence_sum_value(src, steps, cols, scale, e)
                    : dp_sequence_broadcast_value(src, steps, cols, scale, e));
    buffer_out(dstb);
    return 0;
}

/* An LSTM forward's buffers, read from stdin in this order (the bias last, f32), and written out
 * without the recurrent product and the bias. Read one after another: an initialiser list would not
 * fix the order. */
typedef struct {
    harness_buffer gates, cells, hprev, out, hidden, recurrent;
    float *bias;
} lstm_forward_buffers;

static lstm_forward_buffers lstm_forward_in(dp_u64 n, dp_u64 steps, dp_u64 h) {
    lstm_forward_buffers b;
    dp_u64 seq = n * steps * h, units = n * h;
    b.gates = buffer_in(4 * seq);
    b.cells = buffer_in(seq);
    b.hprev = buffer_in(seq);
    b.out = buffer_in(seq);
    b.hidden = buffer_in(units);
    b.recurrent = buffer_in(4 * units);
    b.bias = read_stdin(4 * h * 4);
    return b;
}

static void lstm_forward_out(lstm_forward_buffers b) {
    buffer_out(b.gates);
    buffer_out(b.cells);
    buffer_out(b.hprev);
    buffer_out(b.out);
    buffer_out(b.hidden);
}

/* An LSTM backward's buffers, read in this order, and its outputs: cell_grad, step_delta, delta. */
typedef struct {
    harness_buffer gates, cells, dout, recurrent, cell_grad, step_delta, delta;
} lstm_backward_buffers;

static lstm_backward_buffers lstm_backward_in(dp_u64 n, dp_u64 steps, dp_u64 h) {
    lstm_backward_buffers b;
    dp_u64 seq = n * steps * h, units = n * h;
    b.gates = buffer_in(4 * seq);
    b.cells = buffer_in(seq);
    b.dout = buffer_in(seq);
    b.recurrent = buffer_in(units);
    b.cell_grad = buffer_in(units);
    b.step_delta = buffer_in(4 * units);
    b.delta = buffer_in(4 * seq);
    return b;
}

static void lstm_backward_out(lstm_backward_buffers b) {
    buffer_out(b.cell_grad);
    buffer_out(b.step_delta);
    buffer_out(b.delta);
}

/* One time step t of every example, a thread per unit as the step kernels. */
static int lstm_step(const char *op, char **argv) {
    dp_u64 n = arg(argv, 0), steps = arg(argv, 1), h = arg(argv, 2), t = arg(argv, 3);
    if (strcmp(op, "lstmforward") == 0) {
        lstm_forward_buffers b = lstm_forward_in(n, steps, h);
        for (dp_u64 e = 0; e < n * h; ++e)
            dp_lstm_forward_unit(buffer_values(b.gates), buffer_values(b.cells), buffer_values(b.hprev),
                                 buffer_values(b.out), buffer_values(b.hidden), buffer_values(b.recurrent), b.bias,
                                 steps, h, t, e);
        lstm_forward_out(b);
        return 0;
    }
    lstm_backward_buffers b = lstm_backward_in(n, steps, h);
    for (dp_u64 e = 0; e < n * h; ++e)
        dp_lstm_backward_unit(buffer_values(b.gates), buffer_values(b.cells), buffer_values(b.dout),
                              buffer_values(b.recurrent), buffer_values(b.cell_grad), buffer_values(b.step_delta),
                              buffer_values(b.delta), steps, h, t, e);
    lstm_backward_out(b);
    return 0;
}

/* The fused recurrences, one example after another (a block each on the GPU), each time step's two
 * phases in the kernels' order through lstm.cu's own phase functions, run by one thread; W_hh (4H*H,
 * f32) follows the step's buffers on stdin. */
static int lstm_sequence(const char *op, char **argv) {
    dp_u64 n = arg(argv, 0), steps = arg(argv, 1), h = arg(argv, 2);
    int round = atoi(argv[3]);
    if (strcmp(op, "lstmforwardseq") == 0) {
        lstm_forward_buffers b = lstm_forward_in(n, steps, h);
        float *w_hh = read_stdin(4 * h * h * 4);
        for (dp_u64 i = 0; i < n; ++i) {
            for (dp_u64 t = 0; t < steps; ++t) {
                if (t > 0)
                    dp_lstm_forward_products(buffer_values(b.hidden), buffer_values(b.recurrent), w_hh, round, h, i,
                                             0, 1);
                dp_lstm_forward_units(buffer_values(b.gates), buffer_values(b.cells), buffer_values(b.hprev),
                                      buffer_values(b.out), buffer_values(b.hidden), buffer_values(b.recurrent), b.bias,
                                      steps, h, t, i, 0, 1);
            }
        }
        lstm_forward_out(b);
        return 0;
    }
    lstm_backward_buffers b = lstm_backward_in(n, steps, h);
    float *w_hh = read_stdin(4 * h * h * 4);
    for (dp_u64 i = 0; i < n; ++i) {
        for (dp_u64 t = steps; t-- > 0;) {
            if (t + 1 < steps)
                dp_lstm_backward_products(buffer_values(b.step_delta), buffer_values(b.recurrent), w_hh, round, h, i,
                                          0, 1);
            dp_lstm_backward_units(buffer_values(b.gates), buffer_values(b.cells), buffer_values(b.dout),
                                   buffer_values(b.recurrent), buffer_values(b.cell_grad), buffer_values(b.step_delta),
                                   buffer_values(b.delta), steps, h, t, i, 0, 1);
        }
    }
    lstm_backward_out(b);
    return 0;
}

static int transformer(const char *op, char **argv) {
    if (strcmp(op, "actinput") == 0) {
        dp_u64 len = arg(argv, 0);
        int act = atoi(argv[1]);
        harness_buffer grad = buffer_in(len), x = buffer_in(len);
        for (dp_u64 e = 0; e < len; ++e)
            dp_activation_backward_from_input_at(buffer_values(grad), buffer_values(x), act, e);
        buffer_out(grad);
        return 0;
    }
    if (strcmp(op, "copystrided") == 0) {
        dp_u64 rows = arg(argv, 0), cols = arg(argv, 1), ss = arg(argv, 2), ds = arg(argv, 3);
        dp_u64 src_len = arg(argv, 4), dst_len = arg(argv, 5);
        harness_buffer src = buffer_in(src_len), dst = buffer_in(dst_len);
        for (dp_u64 i = 0; i < rows * cols; ++i)
            dp_copy_strided_at(buffer_values(src), ss, buffer_values(dst), ds, cols, i);
        buffer_out(dst);
        return 0;
    }
    if (strcmp(op, "addscaled") == 0) {
        dp_u64 len = arg(argv, 0);
        float scale = strtof(argv[1], NULL);
        harness_buffer dst = buffer_in(len), src = buffer_in(len);
        for (dp_u64 e = 0; e < len; ++e) dp_add_scaled_at(buffer_values(dst), buffer_values(src), scale, e);
        buffer_out(dst);
        return 0;
    }
    if (strcmp(op, "fill") == 0) {
        dp_u64 len = arg(argv, 0);
        float value = strtof(argv[1], NULL);
        harness_buffer dst = buffer_in(len);
        for (dp_u64 e = 0; e < len; ++e) dp_fill_at(buffer_values(dst), e, value);
        buffer_out(dst);
        return 0;
    }
    dp_u64 c = arg(argv, 0), h = arg(argv, 1), w = arg(argv, 2), p = arg(argv, 3), n = arg(argv, 4);
    int to_patches = atoi(argv[5]);
    dp_u64 len = c * h * w;
    harness_buffer from = buffer_in(n * len), to = buffer_new(n * len);
    for (dp_u64 i = 0; i < n * len; ++i)
        dp_patches_at(buffer_values(from), buffer_values(to), c, h, w, p, to_patches, i);
    buffer_out(to);
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
        harness_buffer scores = buffer_in(len);
        for (dp_u64 r = 0; r < rows; ++r) {
            dp_values row = dp_advance(buffer_values(scores), r * steps);
            dp_u64 visible = causal ? r % steps + 1 : steps;
            for (unsigned l = 0; l < DP_ROW_LANES; ++l) part[l] = dp_softmax_lane_max(row, visible, scale, l);
            float max = warp_all(part, 1);
            for (unsigned l = 0; l < DP_ROW_LANES; ++l)
                part[l] = dp_softmax_lane_exp_sum(row, visible, scale, max, l);
            float inv = 1.0f / warp_all(part, 0);
            for (unsigned l = 0; l < DP_ROW_LANES; ++l)
                dp_softmax_lane_normalise(row, visible, steps, scale, max, inv, l);
        }
        buffer_out(scores);
        return 0;
    }
    harness_buffer probs = buffer_in(len), grad = buffer_in(len);
    for (dp_u64 r = 0; r < rows; ++r) {
        dp_values p = dp_advance(buffer_values(probs), r * steps), g = dp_advance(buffer_values(grad), r * steps);
        for (unsigned l = 0; l < DP_ROW_LANES; ++l) part[l] = dp_softmax_backward_lane_dot(p, g, steps, l);
        float dot = warp_all(part, 0);
        for (unsigned l = 0; l < DP_ROW_LANES; ++l) dp_softmax_backward_lane(p, g, steps, scale, dot, l);
    }
    buffer_out(grad);
    return 0;
}

/* Whether the dense operation argv[0] is `name`, given at least `args` arguments. */
static int dense_is(int argc, char **argv, const char *name, int args) {
    return strcmp(argv[0], name) == 0 && argc - 1 >= args;
}

/* dense WHAT ...: dense.cu's per-value functions (the comment at the top). */
static int dense(int argc, char **argv) {
    char **a = argv + 1;
    if (dense_is(argc, argv, "biasact", 4)) {
        dp_u64 rows = arg(a, 0), cols = arg(a, 1);
        int has_bias = atoi(a[2]), act = atoi(a[3]);
        harness_buffer y = buffer_in(rows * cols);
        const float *bias = has_bias ? read_stdin(cols * 4) : NULL;
        dp_values v = buffer_values(y);
        for (dp_u64 i = 0; i < rows * cols; ++i)
            dp_set(v, i, dp_bias_activation_value(v, bias, has_bias, cols, act, i));
        buffer_out(y);
        return 0;
    }
    if (dense_is(argc, argv, "act", 2)) {
        dp_u64 len = arg(a, 0);
        int act = atoi(a[1]);
        harness_buffer x = buffer_in(len), y = buffer_new(len);
        for (dp_u64 i = 0; i < len; ++i) dp_set(buffer_values(y), i, dp_activation_value(buffer_values(x), act, i));
        buffer_out(y);
        return 0;
    }
    if (dense_is(argc, argv, "actback", 2)) {
        dp_u64 len = arg(a, 0);
        int act = atoi(a[1]);
        harness_buffer grad = buffer_in(len), y = buffer_in(len);
        dp_values g = buffer_values(grad);
        for (dp_u64 i = 0; i < len; ++i) dp_set(g, i, dp_activation_backward_value(g, buffer_values(y), act, i));
        buffer_out(grad);
        return 0;
    }
    int softmax = dense_is(argc, argv, "softmaxce", 2), bce = dense_is(argc, argv, "bce", 1);
    if (softmax || bce || dense_is(argc, argv, "mse", 2)) {
        dp_u64 rows = arg(a, 0), width = bce ? 1 : arg(a, 1);
        harness_buffer outputs = buffer_in(rows * width);
        float *labels = read_stdin((softmax || bce ? rows : rows * width) * 4), *losses = malloc(rows * 4 + 4);
        harness_buffer grad = buffer_new(rows * width);
        dp_values z = buffer_values(outputs), g = buffer_values(grad);
        for (dp_u64 i = 0; i < rows; ++i) {
            if (softmax) dp_softmax_cross_entropy_row(z, labels, width, losses, g, i);
            else if (bce) dp_binary_cross_entropy_row(z, labels, losses, g, i);
            else dp_mean_squared_error_row(z, labels, width, losses, g, i);
        }
        fwrite(losses, 4, rows, stdout);
        buffer_out(grad);
        return 0;
    }
    if (dense_is(argc, argv, "ghostnorms", 5)) {
        dp_u64 rows = arg(a, 0), inputs = arg(a, 1), outputs = arg(a, 2), threads = arg(a, 4);
        int has_bias = atoi(a[3]);
        harness_buffer act = buffer_in(rows * inputs), delta = buffer_in(rows * outputs);
        float *norms = malloc(rows * 4 + 4);
        for (dp_u64 i = 0; i < rows; ++i) {
            float a2 = 0.0f, d2 = 0.0f;
            for (dp_u64 t = 0; t < threads; ++t) {
                a2 += dp_square_share(buffer_values(act), inputs, i, t, threads);
                d2 += dp_square_share(buffer_values(delta), outputs, i, t, threads);
            }
            norms[i] = dp_linear_ghost_norm(a2, d2, has_bias);
        }
        fwrite(norms, 4, rows, stdout);
        return 0;
    }
    if (dense_is(argc, argv, "scalerows", 6)) {
        dp_u64 rows = arg(a, 0), positions = arg(a, 1), cols = arg(a, 2), groups = arg(a, 3), group = arg(a, 4);
        int by_factor = atoi(a[5]);
        harness_buffer src = buffer_in(rows * cols);
        float *factors = read_stdin(rows / positions * groups * 4);
        harness_buffer dst = buffer_new(rows * cols);
        for (dp_u64 i = 0; i < rows * cols; ++i)
            dp_set(buffer_values(dst), i,
                   dp_scale_rows_value(buffer_values(src), positions, cols, factors, groups, group, by_factor, i));
        buffer_out(dst);
        return 0;
    }
    if (dense_is(argc, argv, "colsums", 2)) {
        dp_u64 rows = arg(a, 0), cols = arg(a, 1);
        harness_buffer src = buffer_in(rows * cols);
        float *dst = read_stdin(cols * 4);
        for (dp_u64 c = 0; c < cols; ++c) dst[c] += (float)dp_column_sum(buffer_values(src), rows, cols, c);
        fwrite(dst, 4, cols, stdout);
        return 0;
    }
    if (dense_is(argc, argv, "addinto", 1)) {
        dp_u64 len = arg(a, 0);
        harness_buffer dst = buffer_in(len), src = buffer_in(len);
        dp_values d = buffer_values(dst);
        for (dp_u64 i = 0; i < len; ++i) dp_set(d, i, dp_add_into_value(d, buffer_values(src), i));
        buffer_out(dst);
        return 0;
    }
    if (dense_is(argc, argv, "embmean", 4)) {
        dp_u64 n = arg(a, 0), steps = arg(a, 1), vocab = arg(a, 2), dim = arg(a, 3);
        unsigned int *ids = read_stdin(n * steps * 4);
        float *table = read_stdin(vocab * dim * 4);
        harness_buffer out = buffer_new(n * dim);
        for (dp_u64 i = 0; i < n; ++i)
            for (dp_u64 j = 0; j < dim; ++j)
                dp_set(buffer_values(out), i * dim + j, dp_embedding_mean_value(ids, table, steps, vocab, dim, i, j));
        buffer_out(out);
        return 0;
    }
    if (dense_is(argc, argv, "embmeannorms", 3)) {
        dp_u64 n = arg(a, 0), steps = arg(a, 1), dim = arg(a, 2);
        unsigned int *ids = read_stdin(n * steps * 4);
        harness_buffer delta = buffer_in(n * dim);
        float *norms = malloc(n * 4 + 4);
        for (dp_u64 i = 0; i < n; ++i) {
            float pairs = 0.0f;
            double row = 0.0;
            for (dp_u64 t = 0; t < steps; ++t) pairs += dp_embedding_mean_same_ids(ids, steps, i, t);
            for (dp_u64 j = 0; j < dim; ++j) row += dp_embedding_mean_square(buffer_values(delta), steps, dim, i, j);
            norms[i] = (float)((double)pairs * row);
        }
        fwrite(norms, 4, n, stdout);
        return 0;
    }
    if (dense_is(argc, argv, "embmeanscatter", 7)) {
        dp_u64 n = arg(a, 0), steps = arg(a, 1), vocab = arg(a, 2), dim = arg(a, 3), groups = arg(a, 5);
        dp_u64 group = arg(a, 6);
        int has_factors = atoi(a[4]);
        unsigned int *ids = read_stdin(n * steps * 4);
        harness_buffer delta = buffer_in(n * dim);
        const float *factors = has_factors ? read_stdin(n * groups * 4) : NULL;
        float *grad = read_stdin(vocab * dim * 4);
        for (dp_u64 k = 0; k < n * steps * dim; ++k) {
            dp_u64 at;
            float value;
            if (dp_embedding_mean_scatter_term(ids, buffer_values(delta), steps, vocab, dim, factors, has_factors,
                                               groups, group, k, &at, &value))
                grad[at] += value;
        }
        fwrite(grad, 4, vocab * dim, stdout);
        return 0;
    }
    if (dense_is(argc, argv, "nonfinite", 1)) {
        dp_u64 len = arg(a, 0);
        harness_buffer values = buffer_in(len);
        unsigned int count = 0;
        for (dp_u64 i = 0; i < len; ++i) count += dp_non_finite_value(buffer_values(values), i);
        fwrite(&count, 4, 1, stdout);
        return 0;
    }
    fprintf(stderr, "dense: unknown operation or too few arguments\n");
    return 2;
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
    if (argc >= 15 && strcmp(argv[1], "im2colfolded") == 0) return conv(argv[1], argv + 2);
    if (argc >= 9 && strcmp(argv[1], "fold") == 0) return fold(argv + 2);
    if (argc >= 7 && strcmp(argv[1], "gramnorms") == 0) return conv_reductions(argv[1], argv + 2);
    if (argc >= 4 && (strcmp(argv[1], "globalpool") == 0 || strcmp(argv[1], "globalpoolback") == 0))
        return conv_reductions(argv[1], argv + 2);
    if (argc >= 9 && strstr(argv[1], "pool") != NULL) return pool(argv[1], argv + 2);
    if (argc >= 7 && strcmp(argv[1], "keptsum") == 0) return kept_sum(argv + 2);
    if (argc >= 7 && strcmp(argv[1], "chanbias") == 0) return channel_bias(argv + 2);
    if (argc >= 7 && strcmp(argv[1], "keptnorms") == 0) return conv_reductions(argv[1], argv + 2);
    if (argc >= 4 && strcmp(argv[1], "rowsums") == 0) return conv_reductions(argv[1], argv + 2);
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
    if (argc >= 6 && (strcmp(argv[1], "lstmforwardseq") == 0 || strcmp(argv[1], "lstmbackwardseq") == 0))
        return lstm_sequence(argv[1], argv + 2);
    if (argc >= 6 && (strcmp(argv[1], "lstmforward") == 0 || strcmp(argv[1], "lstmbackward") == 0))
        return lstm_step(argv[1], argv + 2);
    if (argc >= 6 && strcmp(argv[1], "attnsoftmax") == 0) return attention_softmax(argv[1], argv + 2);
    if (argc >= 5 && strcmp(argv[1], "attnsoftmaxback") == 0) return attention_softmax(argv[1], argv + 2);
    if (argc >= 4 && strcmp(argv[1], "actinput") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 8 && strcmp(argv[1], "copystrided") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 8 && strcmp(argv[1], "patches") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 4 && strcmp(argv[1], "addscaled") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 4 && strcmp(argv[1], "fill") == 0) return transformer(argv[1], argv + 2);
    if (argc >= 8 && strcmp(argv[1], "views") == 0) return views_example(argv + 2);
    if (argc >= 3 && strcmp(argv[1], "store") == 0) return store(argv + 2);
    if (argc >= 3 && strcmp(argv[1], "dense") == 0) return dense(argc - 2, argv + 2);
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
