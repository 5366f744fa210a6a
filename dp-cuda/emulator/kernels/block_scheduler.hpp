// Running a grid: each block's threads as fibers, round robin, with CUDA's barriers between them
// (block_scheduler.cpp). One scheduler per OS thread; a launch runs on the OS thread that calls it.
// The order of the blocks and of each pass over a block's threads is the launch's ThreadOrder.
#ifndef DP_EMU_BLOCK_SCHEDULER_HPP
#define DP_EMU_BLOCK_SCHEDULER_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_on_cpu.hpp"
#include "fiber_context.hpp"
#include "kernel_registry.hpp"

namespace dp_emu {

class BlockScheduler;

// The order in which a launch runs its blocks and each pass over a block's threads
// (DP_EMULATOR_THREAD_ORDER; launch.cpp). CUDA promises none: a kernel whose result depends on it
// is wrong, and the orders other than Forward show it.
enum class ThreadOrder : int {
    // Blocks in order of blockIdx (x fastest), threads in order of threadIdx (x fastest).
    Forward = 0,
    // Both backwards: the last block first, and each pass from the block's last thread to its first.
    Reverse = 1,
    // A pseudo-random permutation of the grid's blocks, and a fresh one of the block's threads for
    // every pass; the same for the same seed and the same launches on an OS thread.
    Shuffled = 2,
    // Blocks as Shuffled's; each pass takes the block's warps in a fresh pseudo-random order and runs
    // each as far as it can go (until its lanes wait at __syncthreads or have ended) before the next,
    // as a GPU's warps may run ahead of each other. A pass over the threads lets every thread take
    // one step before any warp takes two: a missing __syncthreads that only a warp running several
    // collectives ahead of the others shows passes in the other orders.
    Warps = 3,
};

// A pseudo-random permutation of [0, count), computed index by index (a grid may have 2^63 blocks):
// a keyed bijection of the `bits`-bit numbers (additions, odd multiplications and xorshifts), walked
// along its cycle until it lands below `count` (fewer than two steps on average).
class BlockPermutation {
  public:
    BlockPermutation(std::uint64_t count, std::uint64_t seed);
    std::uint64_t at(std::uint64_t index) const;

  private:
    std::uint64_t scramble(std::uint64_t x) const;

    static constexpr int kRounds = 4;
    std::uint64_t count_;
    std::uint64_t mask_;
    unsigned int shift_;
    std::uint64_t offsets_[kRounds];
    std::uint64_t multipliers_[kRounds];
};

enum class FiberState : unsigned char {
    NotStarted,
    Runnable,
    Running,
    AtBlockBarrier,
    AtWarpCollective,
    Exited,
};

#ifdef DP_EMU_RACE_CHECK
// The race check (block_scheduler.cpp): a ThreadSanitizer fiber and the stack it runs on, which
// run CUDA thread `linear` of every `race_sets`-th block of a launch.
struct RaceSlot {
    void *tsan_fiber;
    FiberStack *stack;
};
#endif

struct Fiber : ThreadCoordinates {
    BlockScheduler *scheduler;
    void *saved_sp;
    FiberStack *stack;
    FiberState state;
#ifdef DP_EMU_RACE_CHECK
    RaceSlot *race_slot;
#endif
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
    // Counts the collectives completed: the race check's sync object alternates with it.
    unsigned int generation;
};

class BlockScheduler {
  public:
    // The scheduler of the calling OS thread.
    static BlockScheduler &of_this_thread();

#ifdef DP_EMU_RACE_CHECK
    BlockScheduler() = default;
    BlockScheduler(const BlockScheduler &) = delete;
    BlockScheduler &operator=(const BlockScheduler &) = delete;
    ~BlockScheduler();
#endif

    // Runs every block of the grid in `order` (Shuffled's permutations drawn from `seed` and the
    // number of grids this OS thread has run before); the empty string on success, else what went
    // wrong and in which block. The configuration is valid (launch.cpp checks it).
    std::string run_grid(KernelTrampoline kernel, void **params, dim3 grid, dim3 block, ThreadOrder order,
                         std::uint64_t seed);

    // Fills a __shared__ variable with 0xff bytes unless it has been since the running block began.
    void poison_shared(void *address, std::size_t bytes);

    // The kernel side of the barriers (cuda_on_cpu.hpp), for the fiber running now.
    void sync_block(Fiber &self);
    std::uint64_t warp_collective(Fiber &self, WarpOp op, unsigned int mask, std::uint64_t value,
                                  unsigned int source_lane);
    [[noreturn]] void fail(Fiber &self, std::string message);

  private:
    // Where a __shared__ variable is (one copy per OS thread), and the block that last poisoned it.
    struct PoisonedShared {
        void *address;
        std::uint64_t block_serial;
    };

    bool run_block();
    // One pass over the block (the order's): 1 some thread ran, 0 none could (a deadlock unless all
    // have ended), -1 the block failed (its fibers abandoned, error_ set).
    int pass_by_threads();
    // Warp by warp (ThreadOrder::Warps), each warp's lanes until none can go on.
    int pass_by_warps();
    // Runs fiber `index` until it ends or waits, if it can run: 1 it ran, 0 it could not, -1 the
    // block failed (its fibers abandoned, error_ set).
    int run_fiber(unsigned int index);
    void order_pass();
    void finish(Fiber &self);
    void suspend(Fiber &self, FiberState state);
    void release_block_barrier();
    void complete_warp_collective(unsigned int warp, WarpGathering &gathering);
    void abandon_block();
    std::string deadlock_report() const;
#ifdef DP_EMU_RACE_CHECK
    bool race_prepare_grid(unsigned int threads);
    void forget_previous_blocks(void *address, std::size_t bytes);
    void race_switch_to(Fiber &fiber);
    void race_switch_back();
    void *barrier_sync(unsigned int generation);
    void *warp_sync(unsigned int warp, unsigned int generation);
#endif
    std::string describe(const Fiber &fiber) const;
    static void fiber_main(void *fiber);

    FiberStackPool stacks_;
    std::vector<Fiber> fibers_;
    std::vector<WarpGathering> warps_;
    // The fibers' indices in the order of the current pass over them.
    std::vector<unsigned int> pass_order_;
    // The warps' indices in the order of the current pass over them (ThreadOrder::Warps).
    std::vector<unsigned int> warp_order_;
    ThreadOrder order_ = ThreadOrder::Forward;
    std::uint64_t random_state_ = 0;
    // The grids this OS thread has begun: each Shuffled launch draws other permutations.
    std::uint64_t launches_ = 0;
    // Counts the blocks this OS thread has begun: a block's __shared__ variables are poisoned once.
    std::uint64_t block_serial_ = 0;
    std::vector<PoisonedShared> poisoned_;
    BlockCoordinates block_{};
    KernelTrampoline kernel_ = nullptr;
    void **params_ = nullptr;
    void *scheduler_sp_ = nullptr;
    unsigned int exited_ = 0;
    unsigned int at_block_barrier_ = 0;
    bool failed_ = false;
    // Counts the __syncthreads completed in the running block: the race check's sync object
    // alternates with it.
    unsigned int barrier_generation_ = 0;
    std::string error_;
#ifdef DP_EMU_RACE_CHECK
    // The ThreadSanitizer fibers (race_sets_ of them per thread of the block), created as needed
    // and kept for later launches; the fiber of this OS thread; the blocks of the grid begun.
    std::vector<RaceSlot> race_slots_;
    unsigned int race_sets_ = 2;
    void *os_fiber_ = nullptr;
    std::uint64_t race_blocks_ = 0;
    // The sync objects of the barriers: per set of fibers, two for __syncthreads and two per warp
    // (the generations alternate); where the running block's begin.
    std::vector<unsigned char> race_sync_;
    unsigned int race_sync_base_ = 0;
    unsigned int race_named_threads_ = 0;
    dim3 race_named_shape_{0, 0, 0};
    // From the launching OS thread to every thread of a grid, and from every thread back.
    unsigned char launch_sync_ = 0;
    unsigned char grid_end_sync_ = 0;
#endif
};

const char *warp_op_name(WarpOp op);

}  // namespace dp_emu

#endif
