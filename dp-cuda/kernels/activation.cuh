// The activations of device programs, shared by dense.cu (after a product) and conv.cu (after a
// convolution). Codes (dp-cuda/src/dense.rs, activation_code): 0 identity, 1 ReLU, 2 tanh, 3 sigmoid,
// 4 GELU (tanh form), 5 SiLU, 6 GELU (erf form).
#ifndef DP_ACTIVATION_CUH
#define DP_ACTIVATION_CUH

#include "common.cuh"

DP_DEVICE float dp_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

DP_DEVICE float dp_activate(int act, float x) {
    switch (act) {
        case 1: return x < 0.0f ? 0.0f : x;  // NaN stays NaN, as on the CPU: a non-finite example must show
        case 2: return tanhf(x);
        case 3: return dp_sigmoid(x);
        case 4: return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
        case 5: return x * dp_sigmoid(x);
        case 6: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
        default: return x;
    }
}

// dy/dx from the output y, for the activations whose output gives it (the others never reach here:
// the compiler keeps them off the device).
DP_DEVICE float dp_derivative_from_output(int act, float y) {
    switch (act) {
        case 1: return y > 0.0f ? 1.0f : 0.0f;
        case 2: return 1.0f - y * y;
        case 3: return y * (1.0f - y);
        default: return 1.0f;
    }
}

// dy/dx at the input x, for every activation (GELU, SiLU and exact GELU need it): dp-kernels'
// Activation::derivative_from_input, with CUDA's tanhf/erff/expf (equal to the CPU's to rounding).
DP_DEVICE float dp_derivative_from_input(int act, float x) {
    switch (act) {
        case 4: {
            float t = tanhf(0.7978845608f * (x + 0.044715f * x * x * x));
            return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * x * x);
        }
        case 5: {
            float s = dp_sigmoid(x);
            return s * (1.0f + x * (1.0f - s));
        }
        case 6:
            return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
        default: return dp_derivative_from_output(act, dp_activate(act, x));
    }
}

#endif
