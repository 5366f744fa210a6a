// Running a grid: each block's threads as fibers, round robin, with CUDA's barriers between them
// (block_scheduler.cpp). One scheduler per OS thread; a launch runs on the OS thread that calls it.
#ifndef DP_EMU_BLOCK_SCHEDULER_HPP
#define DP_EMU_BLOCK_SCHEDULER_HPP

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_on_cpu.hpp"
#include "fiber_context.hpp"
#include "kernel_registry.hpp"

namespace dp_emu {

class BlockScheduler;

enum class FiberState : unsigned char {
    NotStarted,
    Runnable,
    Running,
    AtBlockBarrier,
    AtWarpCollective,
    Exited,
};

struct Fiber : ThreadCoordinates {
    BlockScheduler *scheduler;
    void *saved_sp;
    FiberStack *stack;
    FiberState state;
    // Warp collectives: what this lane deposited, which lane's deposit it reads, and what it gets.
    unsigned int source_lane;
    std::uint64_t deposited;
    std::uint64_t result;
};

// The collective the lanes of one warp are gathering at (nothing while `arrived` is 0).
struct WarpGathering {
    unsigned int arrived;
    unsigned int mask;
    WarpOp op;
    // The lanes the block has in this warp, and those that have exited.
    unsigned int existing;
    unsigned int exited;
};

class BlockScheduler {
  public:
    // The scheduler of the calling OS thread.
    static BlockScheduler &of_this_thread();

    // Runs every block of the grid, in order of blockIdx (x fastest); the empty string on success,
    // else what went wrong and in which block. The configuration is valid (launch.cpp checks it).
    std::string run_grid(KernelTrampoline kernel, void **params, dim3 grid, dim3 block);

    // The kernel side of the barriers (cuda_on_cpu.hpp), for the fiber running now.
    void sync_block(Fiber &self);
    std::uint64_t warp_collective(Fiber &self, WarpOp op, unsigned int mask, std::uint64_t value,
                                  unsigned int source_lane);
    [[noreturn]] void fail(Fiber &self, std::string message);

  private:
    bool run_block();
    void finish(Fiber &self);
    void suspend(Fiber &self, FiberState state);
    void release_block_barrier();
    void complete_warp_collective(unsigned int warp, WarpGathering &gathering);
    void abandon_block();
    std::string deadlock_report() const;
    std::string describe(const Fiber &fiber) const;
    static void fiber_main(void *fiber);

    FiberStackPool stacks_;
    std::vector<Fiber> fibers_;
    std::vector<WarpGathering> warps_;
    BlockCoordinates block_{};
    KernelTrampoline kernel_ = nullptr;
    void **params_ = nullptr;
    void *scheduler_sp_ = nullptr;
    unsigned int exited_ = 0;
    unsigned int at_block_barrier_ = 0;
    bool failed_ = false;
    std::string error_;
};

const char *warp_op_name(WarpOp op);

}  // namespace dp_emu

#endif
