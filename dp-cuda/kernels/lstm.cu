// An LSTM's time steps in a device program: gates i, f, g, o, one bias, zero initial state, the layouts
// of dp-kernels' lstm.rs (example-major: gates n × T × 4h, cells, h_{t−1} and outputs n × T × h).
// - The step kernels (DeviceOps::lstm_forward_step and lstm_backward_step) are one thread per
//   (example, unit) of one time step, reading that unit's four gates and writing only its own values,
//   so a step needs no synchronisation inside it; the products between them (W_hh·h_{t−1},
//   δ_{t+1}·W_hh) are cuBLAS's.
// - The fused kernels (DeviceOps::lstm_forward and lstm_backward) run the whole recurrence, one block
//   per example: at each step the block's threads form the recurrent product, wait, run the step's
//   units with the same per-unit functions, and wait again; the products are theirs, summed in double.
//   hidden, recurrent, step_delta and cell_grad are written once per step there.
// The per-unit functions also compile as C on the host (tests/host_harness.c), against the host
// reference of DeviceOps. expf and tanhf are CUDA's (within 2 ulp), not the CPU's vectorised ones: the
// device's LSTM agrees with the CPU's to rounding, not bit for bit.
// bf16 storage (docs/GPU.md): every buffer but the bias (a parameter, f32) is an arena span, so it is
// dp_values, read with dp_get and each value written once per launch with dp_set of its final f32 value
// (a unit reads its gates before it overwrites them; in the fused kernels, once per time step). The compiler stores the hidden states (out), their
// gradients (dout) and the recurrent product's operand (hidden forward, step_delta backward, which in
// bf16 that product rounds anyway) in the precision, and the gates, cells, saved previous hidden
// states, gate gradients (delta) and the rest of the step's scratch (recurrent, cell_grad) in f32: the
// recurrence stays f32.
#include "common.cuh"
#include "reduce.cuh"

DP_DEVICE float dp_lstm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Unit e (< n·h) of forward step t: pre = gates[i, t] + bias + (t > 0 ? recurrent[i] : 0) per gate;
// the activated gates over gates[i, t], c_t into cells[i, t], h_{t−1} (0 at t = 0) into hprev[i, t], h_t
// into out[i, t] and hidden[i]. At t = 0 neither recurrent nor hidden is read.
DP_DEVICE void dp_lstm_forward_unit(dp_values gates, dp_values cells, dp_values hprev, dp_values out,
                                    dp_values hidden, dp_values recurrent, const float *bias, dp_u64 steps, dp_u64 h,
                                    dp_u64 t, dp_u64 e) {
    dp_u64 i = e / h, j = e % h, g4 = 4 * h;
    int first = t == 0;
    dp_values pre = dp_advance(gates, (i * steps + t) * g4);
    float g[4];
    for (int k = 0; k < 4; k++) {
        float rec = first ? 0.0f : dp_get(recurrent, i * g4 + k * h + j);
        g[k] = dp_get(pre, k * h + j) + bias[k * h + j] + rec;
    }
    float ig = dp_lstm_sigmoid(g[0]), fg = dp_lstm_sigmoid(g[1]), gg = tanhf(g[2]), og = dp_lstm_sigmoid(g[3]);
    float c_prev = first ? 0.0f : dp_get(cells, (i * steps + t - 1) * h + j);
    float c = first ? ig * gg : fg * c_prev + ig * gg;
    float h_new = og * tanhf(c);
    dp_set(hprev, (i * steps + t) * h + j, first ? 0.0f : dp_get(hidden, i * h + j));
    dp_set(pre, j, ig);
    dp_set(pre, h + j, fg);
    dp_set(pre, 2 * h + j, gg);
    dp_set(pre, 3 * h + j, og);
    dp_set(cells, (i * steps + t) * h + j, c);
    dp_set(out, (i * steps + t) * h + j, h_new);
    dp_set(hidden, i * h + j, h_new);
}

// Unit e (< n·h) of backward step t (last = t + 1 == steps): dh = dout[i, t] + recurrent[i] (not at the
// last step), dc = cell_grad[i] (0 at the last step) + dh·o·(1 − tanh²c_t); the gate gradients into
// step_delta[i] and delta[i, t]; dc·f into cell_grad[i]. At the last step neither recurrent nor
// cell_grad is read.
DP_DEVICE void dp_lstm_backward_unit(dp_values gates, dp_values cells, dp_values dout, dp_values recurrent,
                                     dp_values cell_grad, dp_values step_delta, dp_values delta, dp_u64 steps,
                                     dp_u64 h, dp_u64 t, dp_u64 e) {
    dp_u64 i = e / h, j = e % h, g4 = 4 * h;
    int last = t + 1 == steps;
    dp_values gate = dp_advance(gates, (i * steps + t) * g4);
    float ig = dp_get(gate, j), fg = dp_get(gate, h + j);
    float gg = dp_get(gate, 2 * h + j), og = dp_get(gate, 3 * h + j);
    float d_out = dp_get(dout, (i * steps + t) * h + j);
    float dh = last ? d_out : d_out + dp_get(recurrent, i * h + j);
    float tc = tanhf(dp_get(cells, (i * steps + t) * h + j));
    float c_before = t > 0 ? dp_get(cells, (i * steps + t - 1) * h + j) : 0.0f;
    float dc = (last ? 0.0f : dp_get(cell_grad, i * h + j)) + dh * og * (1.0f - tc * tc);
    float d[4];
    d[0] = dc * gg * ig * (1.0f - ig);
    d[1] = dc * c_before * fg * (1.0f - fg);
    d[2] = dc * ig * (1.0f - gg * gg);
    d[3] = dh * tc * og * (1.0f - og);
    for (int k = 0; k < 4; k++) {
        dp_set(step_delta, i * g4 + k * h + j, d[k]);
        dp_set(delta, (i * steps + t) * g4 + k * h + j, d[k]);
    }
    dp_set(cell_grad, i * h + j, dc * fg);
}

// Row r (< 4h) of example i's recurrent product hidden·W_hhᵀ: Σ_k hidden[i, k]·W_hh[r, k] (W_hh row-major
// 4h × h), each product and the sum in double in k order, rounded to f32 once: the host reference's
// product exactly (f32 × f32 is exact in double). round: a bf16 product, both operands rounded to
// bf16 first, as the host reference rounds a product marked OfPrecision.
DP_DEVICE float dp_lstm_recurrent_row(dp_values hidden, const float *w_hh, dp_u64 h, int round, dp_u64 i,
                                      dp_u64 r) {
    double sum = 0.0;
    for (dp_u64 k = 0; k < h; k++) {
        float a = dp_get(hidden, i * h + k), w = w_hh[r * h + k];
        if (round) {
            a = dp_bf16_float(dp_bf16_bits(a));
            w = dp_bf16_float(dp_bf16_bits(w));
        }
        sum += (double)a * (double)w;
    }
    return (float)sum;
}

// Column u (< h) of example i's step_delta·W_hh, the gradient reaching h_t through step t + 1:
// Σ_r step_delta[i, r]·W_hh[r, u] in double in r order, as dp_lstm_recurrent_row.
DP_DEVICE float dp_lstm_through_next_column(dp_values step_delta, const float *w_hh, dp_u64 h, int round,
                                            dp_u64 i, dp_u64 u) {
    double sum = 0.0;
    for (dp_u64 r = 0; r < 4 * h; r++) {
        float d = dp_get(step_delta, i * 4 * h + r), w = w_hh[r * h + u];
        if (round) {
            d = dp_bf16_float(dp_bf16_bits(d));
            w = dp_bf16_float(dp_bf16_bits(w));
        }
        sum += (double)d * (double)w;
    }
    return (float)sum;
}

// The threads of a block of the fused recurrences (lstm_ops.rs's LSTM_BLOCK_THREADS).
#define DP_LSTM_BLOCK_THREADS 512

// A thread's share of the fused forward's time step t for example i (`first` its first row or unit,
// `stride` the block's threads), in two phases with the block waiting between them: the recurrent
// product's rows (not at t = 0), then the step's units. The host harness runs them with one thread.
DP_DEVICE void dp_lstm_forward_products(dp_values hidden, dp_values recurrent, const float *w_hh, int round,
                                        dp_u64 h, dp_u64 i, dp_u64 first, dp_u64 stride) {
    for (dp_u64 r = first; r < 4 * h; r += stride)
        dp_set(recurrent, i * 4 * h + r, dp_lstm_recurrent_row(hidden, w_hh, h, round, i, r));
}

DP_DEVICE void dp_lstm_forward_units(dp_values gates, dp_values cells, dp_values hprev, dp_values out,
                                     dp_values hidden, dp_values recurrent, const float *bias, dp_u64 steps,
                                     dp_u64 h, dp_u64 t, dp_u64 i, dp_u64 first, dp_u64 stride) {
    for (dp_u64 u = first; u < h; u += stride)
        dp_lstm_forward_unit(gates, cells, hprev, out, hidden, recurrent, bias, steps, h, t, i * h + u);
}

// The same for the fused backward's time step t: the gradient through step t + 1 column by column
// (not at the last step), then the step's units.
DP_DEVICE void dp_lstm_backward_products(dp_values step_delta, dp_values recurrent, const float *w_hh, int round,
                                         dp_u64 h, dp_u64 i, dp_u64 first, dp_u64 stride) {
    for (dp_u64 u = first; u < h; u += stride)
        dp_set(recurrent, i * h + u, dp_lstm_through_next_column(step_delta, w_hh, h, round, i, u));
}

DP_DEVICE void dp_lstm_backward_units(dp_values gates, dp_values cells, dp_values dout, dp_values recurrent,
                                      dp_values cell_grad, dp_values step_delta, dp_values delta, dp_u64 steps,
                                      dp_u64 h, dp_u64 t, dp_u64 i, dp_u64 first, dp_u64 stride) {
    for (dp_u64 u = first; u < h; u += stride)
        dp_lstm_backward_unit(gates, cells, dout, recurrent, cell_grad, step_delta, delta, steps, h, t, i * h + u);
}

#ifdef __CUDACC__
// The whole forward recurrence (DeviceOps::lstm_forward), one block per example: at each time step
// the block's threads form the example's recurrent product row by row into `recurrent`, wait for one
// another, run the step's units (dp_lstm_forward_unit), and wait again before the next step reads
// h_t. The values are those of the products and dp_lstm_forward_step launched step by step.
extern "C" __global__ void __launch_bounds__(DP_LSTM_BLOCK_THREADS)
    dp_lstm_forward_fused(dp_values gates, dp_values cells, dp_values hprev, dp_values out, dp_values hidden,
                          dp_values recurrent, const float *bias, const float *w_hh, int round, dp_u64 n,
                          dp_u64 steps, dp_u64 h) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        for (dp_u64 t = 0; t < steps; t++) {
            if (t > 0) {
                dp_lstm_forward_products(hidden, recurrent, w_hh, round, h, i, threadIdx.x, blockDim.x);
                __syncthreads();
            }
            dp_lstm_forward_units(gates, cells, hprev, out, hidden, recurrent, bias, steps, h, t, i, threadIdx.x,
                                  blockDim.x);
            __syncthreads();
        }
    }
}

// The whole backward through time (DeviceOps::lstm_backward), one block per example, from the last
// step: the gradient through step t + 1 column by column into `recurrent` (not at the last step), then
// the step's units (dp_lstm_backward_unit), with the block waiting between them as the forward does.
extern "C" __global__ void __launch_bounds__(DP_LSTM_BLOCK_THREADS)
    dp_lstm_backward_fused(dp_values gates, dp_values cells, dp_values dout, dp_values recurrent,
                           dp_values cell_grad, dp_values step_delta, dp_values delta, const float *w_hh, int round,
                           dp_u64 n, dp_u64 steps, dp_u64 h) {
    for (dp_u64 i = blockIdx.x; i < n; i += gridDim.x) {
        for (dp_u64 t = steps; t-- > 0;) {
            if (t + 1 < steps) {
                dp_lstm_backward_products(step_delta, recurrent, w_hh, round, h, i, threadIdx.x, blockDim.x);
                __syncthreads();
            }
            dp_lstm_backward_units(gates, cells, dout, recurrent, cell_grad, step_delta, delta, steps, h, t, i,
                                   threadIdx.x, blockDim.x);
            __syncthreads();
        }
    }
}

extern "C" __global__ void dp_lstm_forward_step(dp_values gates, dp_values cells, dp_values hprev, dp_values out,
                                                dp_values hidden, dp_values recurrent, const float *bias, dp_u64 n,
                                                dp_u64 steps, dp_u64 h, dp_u64 t) {
    DP_GRID_STRIDE(e, n * h) { dp_lstm_forward_unit(gates, cells, hprev, out, hidden, recurrent, bias, steps, h, t, e); }
}

extern "C" __global__ void dp_lstm_backward_step(dp_values gates, dp_values cells, dp_values dout,
                                                 dp_values recurrent, dp_values cell_grad, dp_values step_delta,
                                                 dp_values delta, dp_u64 n, dp_u64 steps, dp_u64 h, dp_u64 t) {
    DP_GRID_STRIDE(e, n * h) {
        dp_lstm_backward_unit(gates, cells, dout, recurrent, cell_grad, step_delta, delta, steps, h, t, e);
    }
}
#endif
