// Kernels of the emulator's own tests (tests/kernels.rs), launched by dp_emu_launch_self_test: the
// CUDA semantics the scheduler models (indices, shuffles with widths, barriers after exits, atomics,
// the orders of threads and blocks, poisoned shared memory) and the errors it reports, which dp's
// kernels exercise only when they are wrong. Compiled, as dp's kernels, from a copy whose
// __shared__ declarations poison their variables (build.rs).
#include "cuda_on_cpu.hpp"
#include "kernel_registry.hpp"

namespace {

__device__ unsigned int pack(uint3 v) { return v.x | v.y << 10 | v.z << 20; }

__device__ unsigned int linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

}  // namespace

// Per thread of the grid (blocks in blockIdx order, x fastest, each block's threads x fastest):
// its threadIdx and blockIdx packed 10 bits a coordinate, and the order in which threads started.
extern "C" __global__ void dp_emu_selftest_indices(unsigned int *out, unsigned int *started) {
    unsigned int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned int threads = blockDim.x * blockDim.y * blockDim.z;
    unsigned int at = (block * threads + linear_thread()) * 3;
    out[at] = pack(threadIdx);
    out[at + 1] = pack(blockIdx);
    out[at + 2] = atomicAdd(started, 1u);
}

// Six results per thread: __shfl_sync from lane 3, __shfl_up_sync by 2, __shfl_down_sync by 5,
// __shfl_xor_sync with 6 (each within groups of `width` lanes), the ballot of lane % 3 == 0, and a
// 64-bit value exchanged with lane ^ 1.
extern "C" __global__ void dp_emu_selftest_shuffles(int width, int *out) {
    unsigned int t = linear_thread(), lane = t % 32;
    int v = static_cast<int>(t) * 10 + 1;
    int *mine = out + t * 6;
    mine[0] = __shfl_sync(0xffffffffu, v, 3, width);
    mine[1] = __shfl_up_sync(0xffffffffu, v, 2, width);
    mine[2] = __shfl_down_sync(0xffffffffu, v, 5, width);
    mine[3] = __shfl_xor_sync(0xffffffffu, v, 6, width);
    mine[4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
    long long wide = static_cast<long long>(v) << 33;
    mine[5] = static_cast<int>(__shfl_xor_sync(0xffffffffu, wide, 1) >> 33);
}

// Threads at or past `active` exit at once; the others pass three rounds of shared memory between
// barriers (an exited thread counts as arrived): out[t] = Σ_round (t + 1) % active + 1000·round.
extern "C" __global__ void dp_emu_selftest_barriers_after_exit(unsigned int active, unsigned int *out) {
    __shared__ unsigned int slots[1024];
    unsigned int t = linear_thread();
    if (t >= active) return;
    unsigned int sum = 0;
    for (unsigned int round = 0; round < 3; ++round) {
        slots[t] = t + 1000 * round;
        __syncthreads();
        sum += slots[(t + 1) % active];
        __syncthreads();
    }
    out[t] = sum;
}

// Lane 5 exits; the others shuffle with a full mask.
extern "C" __global__ void dp_emu_selftest_shuffle_after_exit(int *out) {
    unsigned int t = linear_thread();
    if (t == 5) return;
    out[t] = __shfl_down_sync(0xffffffffu, static_cast<int>(t), 1);
}

// Odd threads wait at __syncthreads, even ones at a shuffle: a deadlock.
extern "C" __global__ void dp_emu_selftest_mixed_barriers(int *out) {
    unsigned int t = linear_thread();
    if (t % 2 == 1) {
        __syncthreads();
    } else {
        out[t] = __shfl_xor_sync(0xffffffffu, static_cast<int>(t), 1);
    }
}

// Even lanes ballot, odd lanes shuffle, both with a full mask.
extern "C" __global__ void dp_emu_selftest_mismatched_collectives(int *out) {
    unsigned int t = linear_thread();
    if (t % 2 == 0) {
        out[t] = static_cast<int>(__ballot_sync(0xffffffffu, 1));
    } else {
        out[t] = __shfl_xor_sync(0xffffffffu, static_cast<int>(t), 1);
    }
}

// A full-mask shuffle in a block of fewer than 32 threads.
extern "C" __global__ void dp_emu_selftest_full_mask_in_small_block(int *out) {
    unsigned int t = linear_thread();
    out[t] = __shfl_down_sync(0xffffffffu, static_cast<int>(t), 1);
}

// Every thread adds to each counter (f32 1, f64 0.5, u32 1, u64 2^32) and raises the maxima.
extern "C" __global__ void dp_emu_selftest_atomics(float *f, double *d, unsigned int *u, unsigned long long *ull,
                                                   int *max_thread) {
    atomicAdd(f, 1.0f);
    atomicAdd(d, 0.5);
    atomicAdd(u, 1u);
    atomicAdd(ull, 1ull << 32);
    atomicMax(max_thread, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

// The order in which the threads of a one-block launch began (ranks[2t]) and went on past a
// __syncthreads (ranks[2t + 1]), counted by counters[0] and counters[1].
extern "C" __global__ void dp_emu_selftest_pass_order(unsigned int *ranks, unsigned int *counters) {
    unsigned int t = linear_thread();
    ranks[2 * t] = atomicAdd(&counters[0], 1u);
    __syncthreads();
    ranks[2 * t + 1] = atomicAdd(&counters[1], 1u);
}

// Thread `failing_thread` (linear) of block `failing_block` (linear) shuffles with a mask that does
// not name it, an error of the launch; every other thread does nothing.
extern "C" __global__ void dp_emu_selftest_fail_in_block(unsigned int failing_block, unsigned int failing_thread,
                                                         int *out) {
    unsigned int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (block == failing_block && linear_thread() == failing_thread) *out = __shfl_sync(0u, 1, 0);
}

// Each thread writes its slot of shared memory, then reads the slot of the thread before it (thread
// 0 its own) into out[block · threads + t] = 7 · slot + 1. Right only with the __syncthreads between,
// which `synchronise` = 0 leaves out: a bug the forward order hides, as the thread before has
// always run first, and the reverse order shows, as it has not.
extern "C" __global__ void dp_emu_selftest_missing_syncthreads(int synchronise, unsigned int *out) {
    __shared__ unsigned int slots[1024];
    unsigned int t = linear_thread();
    slots[t] = 7 * t + 1;
    if (synchronise) __syncthreads();
    out[blockIdx.x * blockDim.x + t] = slots[t == 0 ? 0 : t - 1];
}

// Every thread reads into out[at] a shared value thread 0 set before a barrier; then warp 0 meets at
// a __syncwarp and its lane 0 sets the value again (as for a next use). Right only with a
// __syncthreads before that write (`synchronise`), which keeps it after every warp's read. A pass
// over the block's threads lets every thread read before warp 0's lane 0 passes the __syncwarp (in
// forward order lane 31 completes it, and lane 0 goes on in the next pass); a warp that runs ahead
// of the others (the Warps order) writes first.
extern "C" __global__ void dp_emu_selftest_warp_runs_ahead(int synchronise, unsigned int *out) {
    __shared__ unsigned int value;
    unsigned int t = linear_thread();
    if (t == 0) value = 1;
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = value;
    if (synchronise) __syncthreads();
    if (t < 32) {
        __syncwarp();
        if (t == 0) value = 2;
    }
}

// Blocks of 64 threads: block 0 writes every slot of two shared arrays, later blocks only the even
// ones; after a barrier each thread reads its own slot back into values[at] and counts[at] (at its
// index in the grid). An odd slot of a later block holds what the block found there.
extern "C" __global__ void dp_emu_selftest_unwritten_shared(float *values, int *counts) {
    __shared__ float value_slots[64];
    __shared__ int count_slots[64];
    unsigned int t = linear_thread(), at = blockIdx.x * blockDim.x + t;
    if (blockIdx.x == 0 || t % 2 == 0) {
        value_slots[t] = static_cast<float>(at) + 0.5f;
        count_slots[t] = static_cast<int>(at);
    }
    __syncthreads();
    values[at] = value_slots[t];
    counts[at] = count_slots[t];
}

// The race check's kernels (tests/race_check.rs): each races, or does not, as its comment says.

// Every thread adds 1 to *sum: with `atomic` by atomicAdd, else by a plain += (a race between the
// threads of a block, which the serial order adds up right all the same).
extern "C" __global__ void dp_emu_selftest_race_sum(int atomic, unsigned int *sum) {
    if (atomic) {
        atomicAdd(sum, 1u);
    } else {
        *sum += 1u;
    }
}

// Thread 0 writes a shared value, every other thread reads it into out[t]: a race unless
// `synchronise` puts a __syncthreads between.
extern "C" __global__ void dp_emu_selftest_race_shared(int synchronise, unsigned int *out) {
    __shared__ unsigned int value;
    unsigned int t = linear_thread();
    if (t == 0) value = 42;
    if (synchronise) __syncthreads();
    if (t != 0) out[t] = value;
}

// Thread 0 of every block writes its block's index to *out: a race between the blocks.
extern "C" __global__ void dp_emu_selftest_race_blocks(unsigned int *out) {
    if (linear_thread() == 0) *out = blockIdx.x;
}

// Thread t of block b writes values[b · threads + t] + 1 into out[...]: run twice on one stream,
// the second launch reading what the first wrote (no race), every block its own values.
extern "C" __global__ void dp_emu_selftest_race_free_copy(const unsigned int *values, unsigned int *out) {
    unsigned int at = blockIdx.x * blockDim.x + linear_thread();
    out[at] = values[at] + 1u;
}

// Each thread writes its slot of shared memory, reads its neighbour's after a __syncthreads, and
// exchanges the result with the next lane by a shuffle; then, after a __syncwarp, lane 0 sums its
// warp's slots: the barriers order every access (no race), in every block.
extern "C" __global__ void dp_emu_selftest_race_free_barriers(unsigned int *out) {
    __shared__ unsigned int slots[256];
    unsigned int t = linear_thread(), threads = blockDim.x * blockDim.y * blockDim.z;
    slots[t] = t + blockIdx.x;
    __syncthreads();
    unsigned int mine = slots[(t + 1) % threads];
    __syncthreads();
    slots[t] = __shfl_xor_sync(0xffffffffu, mine, 1);
    __syncwarp();
    if (t % 32 == 0) {
        unsigned int sum = 0;
        for (unsigned int l = 0; l < 32; ++l) sum += slots[t + l];
        out[blockIdx.x * threads / 32 + t / 32] = sum;
    }
}

namespace dp_emu {
namespace {
const KernelEntry self_test_entries[] = {
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_indices),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_shuffles),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_barriers_after_exit),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_shuffle_after_exit),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_mixed_barriers),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_mismatched_collectives),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_full_mask_in_small_block),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_atomics),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_pass_order),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_fail_in_block),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_missing_syncthreads),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_warp_runs_ahead),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_unwritten_shared),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_race_sum),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_race_shared),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_race_blocks),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_race_free_copy),
    DP_EMU_KERNEL_ENTRY(dp_emu_selftest_race_free_barriers),
};
}  // namespace

extern const KernelTable self_test_kernels = {self_test_entries, sizeof self_test_entries / sizeof self_test_entries[0]};
}  // namespace dp_emu
