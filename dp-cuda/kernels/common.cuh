// What every kernel file shares: the integer types, the function qualifier, and the reinterpretation
// of a float's bits, spelled for both NVRTC and the host's C compiler (the tests compile the kernel
// files as C to compare their arithmetic with the CPU's).
#ifndef DP_COMMON_CUH
#define DP_COMMON_CUH

#ifdef __CUDACC__
#define DP_DEVICE __device__ __forceinline__
#else
#include <math.h>
#include <stdint.h>
#include <string.h>
#define DP_DEVICE static inline
#endif

typedef unsigned int dp_u32;
typedef unsigned long long dp_u64;

DP_DEVICE dp_u32 dp_float_bits(float x) {
#ifdef __CUDACC__
    return __float_as_uint(x);
#else
    dp_u32 bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
#endif
}

DP_DEVICE float dp_bits_float(dp_u32 bits) {
#ifdef __CUDACC__
    return __uint_as_float(bits);
#else
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
#endif
}

// A buffer that may be stored in bf16 (docs/GPU.md, "bf16 storage"): its address with bit 0 set when
// its values are bf16, as it is when they are f32 (every buffer is at least 2-byte aligned, so bit 0 is
// free). The host sets the tag from the span's `Stored` mark (dp-cuda/src/program/memory.rs,
// RegionMemory::values); a kernel reads and writes such a buffer only through dp_get and dp_set, so
// one compiled kernel serves both types and every mix of them, and computes in f32 either way.
typedef dp_u64 dp_values;

// The memory at a 64-bit address.
#ifdef __CUDACC__
#define DP_ADDRESS(a) ((void *)(a))
#else
#define DP_ADDRESS(a) ((void *)(uintptr_t)(a))
#endif

DP_DEVICE int dp_is_bf16(dp_values v) { return (int)(v & 1u); }

// The bf16 bits of x as dp_kernels::gemm_bf16::bf16_bits forms them (and so the host reference's
// round_to_bf16): round to nearest even, a subnormal flushed to a zero of its sign, a NaN kept a quiet
// NaN.
DP_DEVICE unsigned short dp_bf16_bits(float x) {
    dp_u32 bits = dp_float_bits(x);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
        return (unsigned short)((bits >> 16) | 0x0040u);
    }
    if ((bits & 0x7f800000u) == 0) return (unsigned short)((bits >> 16) & 0x8000u);
    return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

DP_DEVICE float dp_bf16_float(unsigned short b) { return dp_bits_float((dp_u32)b << 16); }

// Value i of v, as f32.
DP_DEVICE float dp_get(dp_values v, dp_u64 i) {
    if (dp_is_bf16(v)) {
        const unsigned short *p = (const unsigned short *)DP_ADDRESS(v & ~(dp_u64)1);
        return dp_bf16_float(p[i]);
    }
    return ((const float *)DP_ADDRESS(v))[i];
}

// Stores x as value i of v, rounded to bf16 when v is stored in bf16.
DP_DEVICE void dp_set(dp_values v, dp_u64 i, float x) {
    if (dp_is_bf16(v)) {
        unsigned short *p = (unsigned short *)DP_ADDRESS(v & ~(dp_u64)1);
        p[i] = dp_bf16_bits(x);
        return;
    }
    ((float *)DP_ADDRESS(v))[i] = x;
}

// v advanced by n values, keeping its type.
DP_DEVICE dp_values dp_advance(dp_values v, dp_u64 n) { return v + n * (dp_is_bf16(v) ? 2u : 4u); }

#endif
