// The private update, value for value dp-runtime/src/optim (NoisyGradient and Sgd::step or
// Adam::step): the noisy gradient g = (s + σC·z) / B with the drawn normal z, weight decay, then SGD
// with PyTorch's momentum (the buffer starts at the first gradient) or Nesterov, or Adam / AdamW;
// every sum in f64, stored as f32.

#include "common.cuh"

DP_DEVICE void dp_sgd_coordinate(float *param, float *velocity, float sum, double z, double noise_std,
                                 double inverse_batch, double lr, double momentum, double weight_decay,
                                 int first, int nesterov) {
    double g = ((double)sum + noise_std * z) * inverse_batch;
    g = g + weight_decay * (double)*param;
    if (momentum == 0.0) {
        *param = (float)((double)*param - lr * g);
        return;
    }
    double v = first ? g : momentum * (double)*velocity + g;
    *velocity = (float)v;
    double direction = nesterov ? g + momentum * v : v;
    *param = (float)((double)*param - lr * direction);
}

// Adam::step for one coordinate: AdamW's decoupled decay on the parameter or Adam's L2 decay on the
// gradient, the moments in f64 from their f32 values and stored as f32, ε outside the root.
// correction1 = 1 − β₁ᵗ and root_correction2 = √(1 − β₂ᵗ) come from the host (Adam::bias_corrections),
// so that t's powers are the CPU's bits.
DP_DEVICE void dp_adam_coordinate(float *param, float *exp_avg, float *exp_avg_sq, float sum, double z,
                                  double noise_std, double inverse_batch, double lr, double beta1,
                                  double beta2, double eps, double weight_decay, int decoupled,
                                  double correction1, double root_correction2) {
    double g = ((double)sum + noise_std * z) * inverse_batch;
    double p = (double)*param;
    if (decoupled) {
        p = p * (1.0 - lr * weight_decay);
    } else {
        g = g + weight_decay * p;
    }
    double m = beta1 * (double)*exp_avg + (1.0 - beta1) * g;
    double v = beta2 * (double)*exp_avg_sq + (1.0 - beta2) * g * g;
    *exp_avg = (float)m;
    *exp_avg_sq = (float)v;
    double denom = sqrt(v) / root_correction2 + eps;
    *param = (float)(p - lr / correction1 * m / denom);
}

#ifdef __CUDACC__
// One thread per coordinate.
extern "C" __global__ void dp_sgd_noisy_update(float *params, float *velocity, const float *sum,
                                               const double *z, double noise_std, double inverse_batch,
                                               double lr, double momentum, double weight_decay, int first,
                                               int nesterov, dp_u64 len) {
    dp_u64 i = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    dp_sgd_coordinate(params + i, velocity + i, sum[i], z[i], noise_std, inverse_batch, lr, momentum,
                      weight_decay, first, nesterov);
}

// One thread per coordinate.
extern "C" __global__ void dp_adam_noisy_update(float *params, float *exp_avg, float *exp_avg_sq,
                                                const float *sum, const double *z, double noise_std,
                                                double inverse_batch, double lr, double beta1, double beta2,
                                                double eps, double weight_decay, int decoupled,
                                                double correction1, double root_correction2, dp_u64 len) {
    dp_u64 i = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    dp_adam_coordinate(params + i, exp_avg + i, exp_avg_sq + i, sum[i], z[i], noise_std, inverse_batch, lr,
                       beta1, beta2, eps, weight_decay, decoupled, correction1, root_correction2);
}
#endif

// Polyak averaging, value for value dp-runtime/src/trainer/ema.rs `fold`: a = d·a + (1 − d)·θ in double,
// stored as float (fmad off: no contraction into an FMA, as on the CPU).
DP_DEVICE float dp_ema_fold_value(float average, float param, double decay) {
    return (float)(decay * (double)average + (1.0 - decay) * (double)param);
}

#ifdef __CUDACC__
// One thread per coordinate: the average after a step that completed.
extern "C" __global__ void dp_ema_fold(float *average, const float *params, double decay, dp_u64 len) {
    dp_u64 i = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    average[i] = dp_ema_fold_value(average[i], params[i], decay);
}
#endif
