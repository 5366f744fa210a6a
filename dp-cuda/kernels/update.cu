// The private update, value for value dp-runtime/src/optim (NoisyGradient and Sgd::step): the noisy
// gradient g = (s + σC·z) / B with the drawn normal z, weight decay, then SGD with PyTorch's momentum
// (the buffer starts at the first gradient) or Nesterov; every sum in f64, stored as f32.

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
#endif
