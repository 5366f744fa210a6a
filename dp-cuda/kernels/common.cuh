// What every kernel file shares: the integer types, the function qualifier, and the reinterpretation
// of a float's bits, spelled for both NVRTC and the host's C compiler (the tests compile the kernel
// files as C to compare their arithmetic with the CPU's).
#ifndef DP_COMMON_CUH
#define DP_COMMON_CUH

#ifdef __CUDACC__
#define DP_DEVICE __device__ __forceinline__
#else
#include <math.h>
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

#endif
