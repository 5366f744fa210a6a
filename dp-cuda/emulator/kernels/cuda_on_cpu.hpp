// CUDA's execution model for kernel files compiled as C++ on the CPU (included before each
// dp-cuda/kernels/*.cu file; build.rs). Every CUDA thread of a block is a fiber (block_scheduler.cpp):
// the threads of a block run one at a time on one OS thread, each until it ends or waits at a barrier
// (__syncthreads, or a warp collective: the shuffles, __ballot_sync, __syncwarp), so shared memory
// is per OS thread and barriers order the threads' memory accesses as on a GPU. Blocks run one
// after the other; several OS threads (one per emulated stream) may run kernels at once, hence
// atomics that are atomic across OS threads. In which order the blocks run, and the threads between
// barriers, is DP_EMULATOR_THREAD_ORDER's (forward by default; reverse and shuffled show a kernel
// that counts on an order CUDA does not promise), and every block finds its __shared__ variables
// filled with 0xff bytes (NaN in f32 and bf16, -1 in integers), so a read before a write shows.
//
// What the device code sees of CUDA: the qualifiers, the built-in index variables, barriers, warp
// collectives, the integer and bit intrinsics, atomics, and the math library as float and double
// overloads in the global namespace (glibc's: correctly rounded or nearly, where CUDA's are within
// their documented ulps).
#ifndef DP_EMU_CUDA_ON_CPU_HPP
#define DP_EMU_CUDA_ON_CPU_HPP

// The kernel files select their device code with #ifdef __CUDACC__.
#define __CUDACC__ 1

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- Qualifiers ---------------------------------------------------------------------------------

// A kernel: an ordinary function, called by the scheduler once per thread.
#define __global__
// Device functions are defined in headers included by several kernel files, each its own translation
// unit here (NVRTC compiles each file alone): internal linkage, and `inline` so that an unused one is
// no warning.
#define __device__ static inline
#define __host__
#define __forceinline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// One copy per OS thread: a block's threads all run on one, and blocks run one after the other.
// build.rs appends dp_emu::poison_shared(NAME) to every declaration, which refills it with 0xff bytes
// for each block.
#define __shared__ static thread_local

#define warpSize 32

// ---- Built-in variables ---------------------------------------------------------------------------

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

namespace dp_emu {

// What a launch's threads of one block share.
struct BlockCoordinates {
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

// One CUDA thread's place in its block (the scheduler's fiber extends it).
struct ThreadCoordinates {
    uint3 thread_idx;
    // x fastest, then y, then z: its warp is linear / 32, its lane linear % 32.
    unsigned int linear;
    const BlockCoordinates *block;
};

// The thread running on this OS thread (set by the scheduler before it switches to a fiber). Not
// initial-exec: that would put all of the library's TLS (the kernels' __shared__ arrays included) in
// the static TLS block, and dlopen (cudarc loads the library so) fails when it does not fit.
extern __thread ThreadCoordinates *current_thread;

inline const ThreadCoordinates &current() { return *current_thread; }
inline unsigned int lane_id() { return current_thread->linear & 31u; }

// The barrier of the block's threads that have not exited.
void sync_block();

enum class WarpOp : unsigned int { Shuffle, ShuffleUp, ShuffleDown, ShuffleXor, Ballot, SyncWarp };

// A collective of the lanes in `mask`, which must all call it with the same op and mask: deposits
// `value`, waits for them, and returns the value lane `source_lane` deposited (the shuffles), the
// ballot of the deposited predicates (Ballot), or 0 (SyncWarp). An error of the launch (reported by
// dp_emu_launch) when a named lane does not exist or has exited, the lanes disagree, or a shuffle
// reads a lane outside the mask.
std::uint64_t warp_collective(WarpOp op, unsigned int mask, std::uint64_t value, unsigned int source_lane);

// Ends the launch with `message` (dp_emu_launch reports it).
[[noreturn]] void launch_error(const char *message);

// Fills `bytes` at `address` with 0xff unless they have been since the running block began.
void poison_shared_bytes(void *address, std::size_t bytes);

// What build.rs appends to each __shared__ declaration: the first thread of a block to pass it
// poisons the variable, and every thread passes it before it can name the variable, so no read in
// the block comes before. A call, so a declaration outside a function does not compile.
template <class T>
inline void poison_shared(T &variable) {
    poison_shared_bytes(const_cast<void *>(static_cast<const volatile void *>(&variable)), sizeof variable);
}

template <class T>
inline std::uint64_t bits_of(T value) {
    static_assert(sizeof(T) <= sizeof(std::uint64_t) && std::is_trivially_copyable<T>::value,
                  "a warp shuffle moves at most 8 bytes of a trivially copyable value");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof value);
    return bits;
}

template <class T>
inline T value_of(std::uint64_t bits) {
    T value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// A shuffle's `width`: a power of two from 1 to 32, as CUDA requires.
inline unsigned int shuffle_width(int width) {
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) launch_error("a shuffle's width is not a power of two from 1 to 32");
    return static_cast<unsigned int>(width);
}

template <class T>
inline T shuffle(WarpOp op, unsigned int mask, T value, unsigned int source_lane) {
    return value_of<T>(warp_collective(op, mask, bits_of(value), source_lane));
}

}  // namespace dp_emu

#define threadIdx (::dp_emu::current().thread_idx)
#define blockIdx (::dp_emu::current().block->block_idx)
#define blockDim (::dp_emu::current().block->block_dim)
#define gridDim (::dp_emu::current().block->grid_dim)

// ---- Barriers and warp collectives ------------------------------------------------------------

inline void __syncthreads() { dp_emu::sync_block(); }

inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    dp_emu::warp_collective(dp_emu::WarpOp::SyncWarp, mask, 0, dp_emu::lane_id());
}

// The value of lane srcLane (modulo width) of the caller's group of `width` lanes.
template <class T>
inline T __shfl_sync(unsigned int mask, T var, int srcLane, int width = warpSize) {
    unsigned int w = dp_emu::shuffle_width(width), lane = dp_emu::lane_id();
    unsigned int source = (lane & ~(w - 1)) + (static_cast<unsigned int>(srcLane) & (w - 1));
    return dp_emu::shuffle(dp_emu::WarpOp::Shuffle, mask, var, source);
}

// The value of lane - delta, or the caller's own when that is before its group of `width` lanes.
template <class T>
inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize) {
    unsigned int w = dp_emu::shuffle_width(width), lane = dp_emu::lane_id();
    unsigned int source = (lane & (w - 1)) >= delta ? lane - delta : lane;
    return dp_emu::shuffle(dp_emu::WarpOp::ShuffleUp, mask, var, source);
}

// The value of lane + delta, or the caller's own when that is past its group of `width` lanes.
template <class T>
inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize) {
    unsigned int w = dp_emu::shuffle_width(width), lane = dp_emu::lane_id();
    unsigned int source = (lane & (w - 1)) + delta < w ? lane + delta : lane;
    return dp_emu::shuffle(dp_emu::WarpOp::ShuffleDown, mask, var, source);
}

// The value of lane ^ laneMask, or the caller's own when that lies in a later group of `width` lanes.
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T var, int laneMask, int width = warpSize) {
    unsigned int w = dp_emu::shuffle_width(width), lane = dp_emu::lane_id();
    unsigned int target = (lane ^ static_cast<unsigned int>(laneMask)) & 31u;
    unsigned int source = target < (lane & ~(w - 1)) + w ? target : lane;
    return dp_emu::shuffle(dp_emu::WarpOp::ShuffleXor, mask, var, source);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    return static_cast<unsigned int>(
        dp_emu::warp_collective(dp_emu::WarpOp::Ballot, mask, predicate != 0, dp_emu::lane_id()));
}

inline int __all_sync(unsigned int mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }
inline int __any_sync(unsigned int mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

// ---- Integer and bit intrinsics -----------------------------------------------------------------

inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
    unsigned int r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

inline unsigned int __float_as_uint(float x) { return dp_emu::value_of<unsigned int>(dp_emu::bits_of(x)); }
inline float __uint_as_float(unsigned int x) { return dp_emu::value_of<float>(x); }
inline int __float_as_int(float x) { return dp_emu::value_of<int>(dp_emu::bits_of(x)); }
inline float __int_as_float(int x) { return dp_emu::value_of<float>(static_cast<unsigned int>(x)); }
inline long long __double_as_longlong(double x) { return dp_emu::value_of<long long>(dp_emu::bits_of(x)); }
inline double __longlong_as_double(long long x) { return dp_emu::value_of<double>(static_cast<std::uint64_t>(x)); }

template <class T>
inline T __ldg(const T *p) { return *p; }

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ---- Math not in <cmath> -------------------------------------------------------------------------

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN → 0, as CUDA
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

// ---- Atomics: relaxed, as CUDA's, and atomic across OS threads (streams) -----------------------------

#define DP_EMU_INTEGER_ATOMICS(T)                                                                        \
    inline T atomicAdd(T *address, T value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); } \
    inline T atomicSub(T *address, T value) { return __atomic_fetch_sub(address, value, __ATOMIC_RELAXED); } \
    inline T atomicAnd(T *address, T value) { return __atomic_fetch_and(address, value, __ATOMIC_RELAXED); } \
    inline T atomicOr(T *address, T value) { return __atomic_fetch_or(address, value, __ATOMIC_RELAXED); }   \
    inline T atomicXor(T *address, T value) { return __atomic_fetch_xor(address, value, __ATOMIC_RELAXED); } \
    inline T atomicExch(T *address, T value) { return __atomic_exchange_n(address, value, __ATOMIC_RELAXED); } \
    inline T atomicCAS(T *address, T compare, T value) {                                                 \
        __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);   \
        return compare;                                                                                  \
    }                                                                                                    \
    inline T atomicMax(T *address, T value) {                                                            \
        T old = __atomic_load_n(address, __ATOMIC_RELAXED);                                               \
        while (old < value &&                                                                            \
               !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
        }                                                                                                \
        return old;                                                                                      \
    }                                                                                                    \
    inline T atomicMin(T *address, T value) {                                                            \
        T old = __atomic_load_n(address, __ATOMIC_RELAXED);                                               \
        while (old > value &&                                                                            \
               !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
        }                                                                                                \
        return old;                                                                                      \
    }

DP_EMU_INTEGER_ATOMICS(int)
DP_EMU_INTEGER_ATOMICS(unsigned int)
DP_EMU_INTEGER_ATOMICS(unsigned long long)
#undef DP_EMU_INTEGER_ATOMICS

namespace dp_emu {
// *address += value for a floating-point type, by compare-and-swap of its bits; returns the old value.
template <class Float, class Bits>
inline Float atomic_float_add(Float *address, Float value) {
    Bits *bits = reinterpret_cast<Bits *>(address);
    Bits old = __atomic_load_n(bits, __ATOMIC_RELAXED);
    for (;;) {
        Float sum = value_of<Float>(old) + value;
        Bits desired = static_cast<Bits>(bits_of(sum));
        if (__atomic_compare_exchange_n(bits, &old, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return value_of<Float>(old);
    }
}
}  // namespace dp_emu

inline float atomicAdd(float *address, float value) {
    return dp_emu::atomic_float_add<float, unsigned int>(address, value);
}
inline double atomicAdd(double *address, double value) {
    return dp_emu::atomic_float_add<double, unsigned long long>(address, value);
}
inline float atomicExch(float *address, float value) {
    return __uint_as_float(atomicExch(reinterpret_cast<unsigned int *>(address), __float_as_uint(value)));
}

#endif
