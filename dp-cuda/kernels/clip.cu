// Clip factors from per-example squared norms, value for value dp-runtime/src/clipping.rs: a norm that
// is NaN, infinite or negative gives factor 0 (and is counted); otherwise min(1, bound / norm) rounded
// DOWN to f32, so that factor · norm never exceeds the bound. Flat clipping with G groups bounds the
// whole gradient by C (bound C on the root of the summed squares); per-layer clipping bounds each
// group by C / sqrt(G).

#include "common.cuh"

DP_DEVICE int dp_norm_invalid(float sq_norm) { return !(sq_norm >= 0.0f && sq_norm < dp_bits_float(0x7f800000u)); }

DP_DEVICE float dp_clip_factor(double bound, double norm) {
    if (norm <= bound) return 1.0f;
    double exact = bound / norm;
    float rounded = (float)exact;
    return (double)rounded > exact ? dp_bits_float(dp_float_bits(rounded) - 1u) : rounded;
}

// Example `i` of `batch`: its G squared norms in, its G factors out; returns 1 when a norm is invalid.
DP_DEVICE int dp_clip_example(int per_layer, double clip_norm, dp_u64 groups, const float *sq_norms,
                              float *factors) {
    int bad = 0;
    double sum = 0.0;
    for (dp_u64 g = 0; g < groups; ++g) {
        bad |= dp_norm_invalid(sq_norms[g]);
        sum += (double)sq_norms[g];
    }
    if (per_layer) {
        double bound = clip_norm / sqrt((double)groups);
        for (dp_u64 g = 0; g < groups; ++g)
            factors[g] = bad ? 0.0f : dp_clip_factor(bound, sqrt((double)sq_norms[g]));
    } else {
        float f = bad ? 0.0f : dp_clip_factor(clip_norm, sqrt(sum));
        for (dp_u64 g = 0; g < groups; ++g) factors[g] = f;
    }
    return bad;
}

#ifdef __CUDACC__
// One thread per example; `non_finite` counts the examples with an invalid norm (one scalar out).
extern "C" __global__ void dp_clip_factors(int per_layer, double clip_norm, dp_u64 groups, dp_u64 batch,
                                           const float *sq_norms, float *factors, unsigned int *non_finite) {
    dp_u64 i = (dp_u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch) return;
    if (dp_clip_example(per_layer, clip_norm, groups, sq_norms + i * groups, factors + i * groups))
        atomicAdd(non_finite, 1u);
}
#endif
