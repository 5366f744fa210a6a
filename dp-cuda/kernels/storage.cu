// The conversion between a span's f32 and bf16 slots (docs/GPU.md, "bf16 storage"): a product whose
// operands are not stored in the type it multiplies (dp-cuda/src/program/products.rs) converts them into
// their slot of the other type first, and an f32 product into a bf16 output converts its result back.
// f32 to bf16 rounds as the host reference's store rounds (dp_set); bf16 to f32 is exact.
#include "common.cuh"
#include "reduce.cuh"

#ifdef __CUDACC__

// dst[i] = src[i] for i < len, each in its own type.
extern "C" __global__ void dp_convert(dp_values src, dp_values dst, dp_u64 len) {
    DP_GRID_STRIDE(i, len) { dp_set(dst, i, dp_get(src, i)); }
}

#endif
