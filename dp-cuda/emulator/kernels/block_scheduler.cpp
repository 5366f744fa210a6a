// The fiber scheduler: a block's threads run round robin, each until it ends or reaches a barrier,
// in passes over the block repeated until every thread has ended; the blocks one after the other.
// The launch's ThreadOrder says in which order: Forward runs thread 0, then 1, ... in every pass and
// the blocks in order of blockIdx; Reverse runs both backwards; Shuffled draws a permutation of the
// grid's blocks and a fresh one of the block's threads for every pass; Warps runs each pass warp by
// warp, in a fresh permutation of the warps, each warp as far as it can go before the next (so that
// one warp may pass several warp collectives while the others wait). CUDA promises no order, so
// none of them changes what a correct kernel computes (but the order in which float atomics add).
// - __syncthreads completes when every thread that has not exited has arrived (exited threads count
//   as arrived, as on current GPUs); the last to arrive goes on and the others become runnable.
// - A warp collective (shuffle, ballot, __syncwarp) completes when every lane of its mask has
//   arrived with the same op and mask; the last to arrive computes every lane's result, so that each
//   lane only reads its own when it resumes and the deposits can be reused at once.
// - A pass in which no thread could run, with threads still waiting, is a deadlock (say some threads
//   at __syncthreads and others at a shuffle): an error of the launch, as are a collective naming a
//   lane that has exited or does not exist. Those errors abandon the block's fibers where they wait.
// - __shared__ variables (one copy per OS thread) are filled with 0xff bytes when the first thread of
//   a block passes their declaration (poison_shared; build.rs appends the call to each), as a GPU's
//   shared memory holds nothing a block may count on when it starts.
//
// The race check (the race-check feature: DP_EMU_RACE_CHECK, the kernels compiled with
// -fsanitize=thread): every CUDA thread runs as a ThreadSanitizer fiber, and the switches between
// them do not synchronise, so that ThreadSanitizer orders two threads' accesses only where CUDA
// does, as the scheduler tells it: at __syncthreads (every arriving thread releases the block's
// sync object, every leaving one acquires it), at a warp collective (the warp's, likewise), from
// the launching OS thread to every thread of a grid, from every thread back to it when the grid
// has ended, and from every grid that has ended to every grid launched later on any OS thread (the
// order of the streams, which their events give, is not visible to ThreadSanitizer). The blocks of
// a grid are not ordered, but a fiber runs the same thread of every race_sets_-th block (creating
// one costs ThreadSanitizer ~0.4 ms), so blocks that many apart in the order they run are: races
// between blocks that near each other are all seen.
#include "block_scheduler.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <utility>

#ifdef DP_EMU_RACE_CHECK
#include <sanitizer/tsan_interface.h>

// ThreadSanitizer's Java interface: its allocation hook is the one exported way to forget the
// accesses recorded for a range of memory (for a __shared__ variable, which every block reuses).
extern "C" void __tsan_java_init(unsigned long heap_begin, unsigned long heap_size);
extern "C" void __tsan_java_alloc(unsigned long pointer, unsigned long bytes);
extern "C" void __tsan_java_free(unsigned long pointer, unsigned long bytes);
#endif

namespace dp_emu {

__thread ThreadCoordinates *current_thread = nullptr;

namespace {

std::string format(const char *pattern, ...) __attribute__((format(printf, 1, 2)));

std::string format(const char *pattern, ...) {
    char buffer[512];
    va_list args;
    va_start(args, pattern);
    vsnprintf(buffer, sizeof buffer, pattern, args);
    va_end(args);
    return buffer;
}

Fiber &running_fiber() { return static_cast<Fiber &>(*current_thread); }

// splitmix64: advances `state` and returns the next of its well-mixed outputs.
std::uint64_t next_random(std::uint64_t &state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A number below `bound` (> 0) from a 64-bit random one, by the high half of their product.
unsigned int below(std::uint64_t random, unsigned int bound) {
    return static_cast<unsigned int>((static_cast<unsigned __int128>(random) * bound) >> 64);
}

#ifdef DP_EMU_RACE_CHECK
// Every grid that has ended, on any OS thread, happens before every grid launched after it.
unsigned char grids_ended_sync = 0;

// ThreadSanitizer's heap on x86-64 Linux (its tsan_platform.h), where glibc allocates the
// dynamically loaded emulator's thread-local storage, the __shared__ variables included: the range
// given to __tsan_java_init, so that its reports look for a Java block only there.
constexpr unsigned long kTsanHeapBegin = 0x7b0000000000ul, kTsanHeapEnd = 0x7c0000000000ul;

// Forgets the accesses ThreadSanitizer has recorded to [address, address + bytes) (rounded out to
// 8 bytes, its Java interface's alignment); false when the range is not in its heap.
bool forget_accesses(void *address, std::size_t bytes) {
    static const bool initialised = (__tsan_java_init(kTsanHeapBegin, kTsanHeapEnd - kTsanHeapBegin), true);
    (void)initialised;
    unsigned long begin = reinterpret_cast<unsigned long>(address) & ~7ul;
    unsigned long end = (reinterpret_cast<unsigned long>(address) + bytes + 7) & ~7ul;
    if (begin < kTsanHeapBegin || end > kTsanHeapEnd || end == begin) return false;
    __tsan_java_free(begin, end - begin);
    __tsan_java_alloc(begin, end - begin);
    return true;
}

inline void race_acquire(void *sync) { __tsan_acquire(sync); }
inline void race_release(void *sync) { __tsan_release(sync); }
#endif

}  // namespace

BlockPermutation::BlockPermutation(std::uint64_t count, std::uint64_t seed) : count_(count) {
    unsigned int bits = count <= 1 ? 0 : 64 - static_cast<unsigned int>(__builtin_clzll(count - 1));
    mask_ = bits == 64 ? ~0ull : (1ull << bits) - 1;
    shift_ = bits < 2 ? 1 : (bits + 1) / 2;
    for (int r = 0; r < kRounds; ++r) {
        offsets_[r] = next_random(seed) & mask_;
        multipliers_[r] = (next_random(seed) | 1) & mask_;
    }
}

std::uint64_t BlockPermutation::scramble(std::uint64_t x) const {
    // Each step is a bijection of the `bits`-bit numbers: so is their composition.
    for (int r = 0; r < kRounds; ++r) {
        x = (x + offsets_[r]) & mask_;
        x = (x * multipliers_[r]) & mask_;
        x ^= x >> shift_;
    }
    return x;
}

std::uint64_t BlockPermutation::at(std::uint64_t index) const {
    // The cycle through `index` returns to it, so a value below count_ comes.
    std::uint64_t x = index;
    do {
        x = scramble(x);
    } while (x >= count_);
    return x;
}

const char *warp_op_name(WarpOp op) {
    switch (op) {
        case WarpOp::Shuffle: return "__shfl_sync";
        case WarpOp::ShuffleUp: return "__shfl_up_sync";
        case WarpOp::ShuffleDown: return "__shfl_down_sync";
        case WarpOp::ShuffleXor: return "__shfl_xor_sync";
        case WarpOp::Ballot: return "__ballot_sync";
        case WarpOp::SyncWarp: return "__syncwarp";
    }
    return "a warp collective";
}

void sync_block() {
    Fiber &self = running_fiber();
    self.scheduler->sync_block(self);
}

std::uint64_t warp_collective(WarpOp op, unsigned int mask, std::uint64_t value, unsigned int source_lane) {
    Fiber &self = running_fiber();
    return self.scheduler->warp_collective(self, op, mask, value, source_lane);
}

void launch_error(const char *message) {
    Fiber &self = running_fiber();
    self.scheduler->fail(self, message);
}

void poison_shared_bytes(void *address, std::size_t bytes) { running_fiber().scheduler->poison_shared(address, bytes); }

BlockScheduler &BlockScheduler::of_this_thread() {
    static thread_local BlockScheduler scheduler;
    return scheduler;
}

#ifdef DP_EMU_RACE_CHECK
BlockScheduler::~BlockScheduler() {
    for (RaceSlot &slot : race_slots_) {
        if (slot.tsan_fiber != nullptr) __tsan_destroy_fiber(slot.tsan_fiber);
    }
}

bool BlockScheduler::race_prepare_grid(unsigned int threads) {
    os_fiber_ = __tsan_get_current_fiber();
    race_blocks_ = 0;
    // Two sets, so that consecutive blocks are never ordered: each acquire and release costs
    // ThreadSanitizer (GCC 12's) as much as it has live threads, so no more fibers than that.
    race_sets_ = 2;
    std::size_t needed = static_cast<std::size_t>(race_sets_) * threads;
    // A fiber's stack stays with it: a stack used by a thread of an unordered block would be a race.
    for (std::size_t i = race_slots_.size(); i < needed; ++i) {
        FiberStack *stack = stacks_.acquire();
        if (stack == nullptr) return false;
        race_slots_.push_back(RaceSlot{__tsan_create_fiber(0), stack});
    }
    if (race_named_threads_ < needed || race_named_shape_.x != block_.block_dim.x ||
        race_named_shape_.y != block_.block_dim.y || race_named_shape_.z != block_.block_dim.z) {
        // Named for the threadIdx each runs in this shape of block (a report names the threads).
        for (std::size_t i = 0; i < needed; ++i) {
            const Fiber &fiber = fibers_[i % threads];
            char name[64];
            std::snprintf(name, sizeof name, "CUDA thread (%u, %u, %u)", fiber.thread_idx.x, fiber.thread_idx.y,
                          fiber.thread_idx.z);
            __tsan_set_fiber_name(race_slots_[i].tsan_fiber, name);
        }
        race_named_threads_ = static_cast<unsigned int>(needed);
        race_named_shape_ = block_.block_dim;
    }
    race_sync_.resize(static_cast<std::size_t>(race_sets_) * (2 + 2 * warps_.size()));
    race_acquire(&grids_ended_sync);
    race_release(&launch_sync_);
    return true;
}

void BlockScheduler::race_switch_to(Fiber &fiber) { __tsan_switch_to_fiber(fiber.race_slot->tsan_fiber, __tsan_switch_to_fiber_no_sync); }

void BlockScheduler::race_switch_back() { __tsan_switch_to_fiber(os_fiber_, __tsan_switch_to_fiber_no_sync); }

void *BlockScheduler::barrier_sync(unsigned int generation) { return &race_sync_[race_sync_base_ + (generation & 1u)]; }

void *BlockScheduler::warp_sync(unsigned int warp, unsigned int generation) {
    return &race_sync_[race_sync_base_ + 2 + 2 * warp + (generation & 1u)];
}
#endif

std::string BlockScheduler::run_grid(KernelTrampoline kernel, void **params, dim3 grid, dim3 block,
                                     ThreadOrder order, std::uint64_t seed) {
    kernel_ = kernel;
    params_ = params;
    block_.block_dim = block;
    block_.grid_dim = grid;
    unsigned int threads = block.x * block.y * block.z;
    fibers_.resize(threads);
    unsigned int linear = 0;
    for (unsigned int z = 0; z < block.z; ++z) {
        for (unsigned int y = 0; y < block.y; ++y) {
            for (unsigned int x = 0; x < block.x; ++x, ++linear) {
                Fiber &fiber = fibers_[linear];
                fiber.thread_idx = uint3{x, y, z};
                fiber.linear = linear;
                fiber.block = &block_;
                fiber.scheduler = this;
                fiber.stack = nullptr;
            }
        }
    }
    unsigned int warps = (threads + 31) / 32;
    warps_.assign(warps, WarpGathering{});
    for (unsigned int w = 0; w < warps; ++w) {
        unsigned int lanes = threads - w * 32 < 32 ? threads - w * 32 : 32;
        warps_[w].existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    }
    order_ = order;
    std::uint64_t launch = launches_++;
    random_state_ = seed ^ next_random(launch);
    pass_order_.resize(threads);
    for (unsigned int i = 0; i < threads; ++i) pass_order_[i] = order == ThreadOrder::Reverse ? threads - 1 - i : i;
    warp_order_.resize(warps);
    for (unsigned int w = 0; w < warps; ++w) warp_order_[w] = w;
    const std::uint64_t blocks = static_cast<std::uint64_t>(grid.x) * grid.y * grid.z;
    const std::uint64_t plane = static_cast<std::uint64_t>(grid.x) * grid.y;
    const BlockPermutation shuffled_blocks(blocks, next_random(random_state_));
    std::string error;
#ifdef DP_EMU_RACE_CHECK
    if (!race_prepare_grid(threads)) return "no memory for another fiber stack";
#endif
    for (std::uint64_t i = 0; i < blocks; ++i) {
        // The block's linear index: x fastest, then y, then z.
        std::uint64_t at = order == ThreadOrder::Forward   ? i
                           : order == ThreadOrder::Reverse ? blocks - 1 - i
                                                           : shuffled_blocks.at(i);
        block_.block_idx = uint3{static_cast<unsigned int>(at % grid.x),
                                 static_cast<unsigned int>(at / grid.x % grid.y),
                                 static_cast<unsigned int>(at / plane)};
        if (!run_block()) {
            const uint3 &b = block_.block_idx;
            error = format("block (%u, %u, %u): ", b.x, b.y, b.z) + error_;
            break;
        }
    }
#ifdef DP_EMU_RACE_CHECK
    race_acquire(&grid_end_sync_);
    race_release(&grids_ended_sync);
#endif
    current_thread = nullptr;
    kernel_ = nullptr;
    params_ = nullptr;
    return error;
}

bool BlockScheduler::run_block() {
    ++block_serial_;
    for (Fiber &fiber : fibers_) fiber.state = FiberState::NotStarted;
    for (WarpGathering &warp : warps_) {
        warp.arrived = 0;
        warp.exited = 0;
    }
    exited_ = 0;
    at_block_barrier_ = 0;
    failed_ = false;
#ifdef DP_EMU_RACE_CHECK
    const std::size_t threads = fibers_.size();
    const unsigned int set = static_cast<unsigned int>(race_blocks_++ % race_sets_);
    for (std::size_t i = 0; i < threads; ++i) fibers_[i].race_slot = &race_slots_[set * threads + i];
    race_sync_base_ = set * static_cast<unsigned int>(2 + 2 * warps_.size());
#endif
    for (;;) {
        order_pass();
        int progressed = order_ == ThreadOrder::Warps ? pass_by_warps() : pass_by_threads();
        if (progressed < 0) return false;
        if (exited_ == fibers_.size()) return true;
        if (progressed == 0) {
            error_ = deadlock_report();
            abandon_block();
            return false;
        }
    }
}

int BlockScheduler::pass_by_threads() {
    int progressed = 0;
    for (unsigned int index : pass_order_) {
        int ran = run_fiber(index);
        if (ran < 0) return -1;
        progressed |= ran;
    }
    return progressed;
}

int BlockScheduler::pass_by_warps() {
    const unsigned int threads = static_cast<unsigned int>(fibers_.size());
    int progressed = 0;
    for (unsigned int warp : warp_order_) {
        const unsigned int first = warp * 32, end = first + 32 < threads ? first + 32 : threads;
        // The warp's lanes, pass after pass, until none can go on.
        for (int warp_progressed = 1; warp_progressed != 0;) {
            warp_progressed = 0;
            for (unsigned int index = first; index < end; ++index) {
                int ran = run_fiber(index);
                if (ran < 0) return -1;
                warp_progressed |= ran;
            }
            progressed |= warp_progressed;
        }
    }
    return progressed;
}

int BlockScheduler::run_fiber(unsigned int index) {
    Fiber &fiber = fibers_[index];
    if (fiber.state == FiberState::NotStarted) {
#ifdef DP_EMU_RACE_CHECK
        fiber.stack = fiber.race_slot->stack;
#else
        fiber.stack = stacks_.acquire();
#endif
        if (fiber.stack == nullptr) {
            error_ = "no memory for another fiber stack";
            abandon_block();
            return -1;
        }
        fiber.saved_sp = prepare_fiber(fiber.stack, &BlockScheduler::fiber_main, &fiber);
    } else if (fiber.state != FiberState::Runnable) {
        return 0;
    }
    fiber.state = FiberState::Running;
    current_thread = &fiber;
#ifdef DP_EMU_RACE_CHECK
    race_switch_to(fiber);
#endif
    dp_emu_switch_context(&scheduler_sp_, fiber.saved_sp);
    if (failed_) {
        abandon_block();
        return -1;
    }
    return 1;
}

void BlockScheduler::order_pass() {
    std::vector<unsigned int> *order = nullptr;
    switch (order_) {
        case ThreadOrder::Forward:
        case ThreadOrder::Reverse: return;
        case ThreadOrder::Shuffled: order = &pass_order_; break;
        case ThreadOrder::Warps: order = &warp_order_; break;
    }
    // Fisher-Yates: every permutation alike.
    for (unsigned int i = static_cast<unsigned int>(order->size()); i > 1; --i) {
        unsigned int j = below(next_random(random_state_), i);
        std::swap((*order)[i - 1], (*order)[j]);
    }
}

void BlockScheduler::poison_shared(void *address, std::size_t bytes) {
    // A kernel names a few __shared__ variables, the library a dozen: a linear search.
    for (PoisonedShared &variable : poisoned_) {
        if (variable.address != address) continue;
        if (variable.block_serial == block_serial_) return;
        variable.block_serial = block_serial_;
        std::memset(address, 0xff, bytes);
#ifdef DP_EMU_RACE_CHECK
        forget_previous_blocks(address, bytes);
#endif
        return;
    }
    poisoned_.push_back(PoisonedShared{address, block_serial_});
    std::memset(address, 0xff, bytes);
#ifdef DP_EMU_RACE_CHECK
    forget_previous_blocks(address, bytes);
#endif
}

#ifdef DP_EMU_RACE_CHECK
void BlockScheduler::forget_previous_blocks(void *address, std::size_t bytes) {
    // The variable is the same memory in every block of this OS thread: what earlier blocks did
    // with it is no race with this one, which the poisoning gives fresh shared memory.
    if (!forget_accesses(address, bytes)) {
        fail(running_fiber(), format("race check: the __shared__ variable at %p is not in ThreadSanitizer's "
                                     "heap, where the check expects thread-local storage",
                                     address));
    }
}
#endif

void BlockScheduler::fiber_main(void *argument) {
    Fiber &self = *static_cast<Fiber *>(argument);
    BlockScheduler &scheduler = *self.scheduler;
#ifdef DP_EMU_RACE_CHECK
    race_acquire(&scheduler.launch_sync_);
#endif
    scheduler.kernel_(scheduler.params_);
    scheduler.finish(self);
#ifdef DP_EMU_RACE_CHECK
    // The stack stays with the fiber's race slot.
    race_release(&scheduler.grid_end_sync_);
    scheduler.race_switch_back();
#else
    // Nothing takes this stack from the pool before the switch away from it below.
    scheduler.stacks_.release(self.stack);
#endif
    self.stack = nullptr;
    void *never_resumed;
    dp_emu_switch_context(&never_resumed, scheduler.scheduler_sp_);
    __builtin_unreachable();
}

void BlockScheduler::finish(Fiber &self) {
    self.state = FiberState::Exited;
    ++exited_;
    unsigned int lane = self.linear & 31u;
    WarpGathering &warp = warps_[self.linear >> 5];
    warp.exited |= 1u << lane;
    if (warp.arrived != 0 && (warp.mask >> lane & 1u)) {
        failed_ = true;
        error_ = describe(self) + format(" exited while lanes 0x%08x of its warp wait for it at %s (mask 0x%08x)",
                                         warp.arrived, warp_op_name(warp.op), warp.mask);
        return;
    }
    if (at_block_barrier_ != 0 && at_block_barrier_ + exited_ == fibers_.size()) release_block_barrier();
}

void BlockScheduler::suspend(Fiber &self, FiberState state) {
    self.state = state;
#ifdef DP_EMU_RACE_CHECK
    race_switch_back();
#endif
    dp_emu_switch_context(&self.saved_sp, scheduler_sp_);
}

void BlockScheduler::fail(Fiber &self, std::string message) {
    failed_ = true;
    error_ = describe(self) + ": " + message;
    // Abandoned: run_block returns this fiber's stack to the pool.
    self.state = FiberState::Exited;
#ifdef DP_EMU_RACE_CHECK
    race_switch_back();
#endif
    dp_emu_switch_context(&self.saved_sp, scheduler_sp_);
    __builtin_unreachable();
}

void BlockScheduler::sync_block(Fiber &self) {
#ifdef DP_EMU_RACE_CHECK
    // Every thread arrives (releases) before any leaves (acquires); the next barrier's object is
    // the other one, as a thread may arrive there before the slowest has left this one.
    void *sync = barrier_sync(barrier_generation_);
    race_release(sync);
#endif
    ++at_block_barrier_;
    if (at_block_barrier_ + exited_ == fibers_.size()) {
        release_block_barrier();
    } else {
        suspend(self, FiberState::AtBlockBarrier);
    }
#ifdef DP_EMU_RACE_CHECK
    race_acquire(sync);
#endif
}

void BlockScheduler::release_block_barrier() {
    for (Fiber &fiber : fibers_) {
        if (fiber.state == FiberState::AtBlockBarrier) fiber.state = FiberState::Runnable;
    }
    at_block_barrier_ = 0;
    ++barrier_generation_;
}

std::uint64_t BlockScheduler::warp_collective(Fiber &self, WarpOp op, unsigned int mask, std::uint64_t value,
                                              unsigned int source_lane) {
    unsigned int lane = self.linear & 31u, w = self.linear >> 5;
    WarpGathering &warp = warps_[w];
    const char *name = warp_op_name(op);
    if (!(mask >> lane & 1u))
        fail(self, format("%s with mask 0x%08x, which does not name the calling lane %u", name, mask, lane));
    if (mask & ~warp.existing)
        fail(self, format("%s with mask 0x%08x names lanes 0x%08x, which the block (%u threads) does not have",
                          name, mask, mask & ~warp.existing, static_cast<unsigned int>(fibers_.size())));
    if (mask & warp.exited)
        fail(self, format("%s with mask 0x%08x names lanes 0x%08x, which have exited", name, mask,
                          mask & warp.exited));
    if (warp.arrived == 0) {
        warp.op = op;
        warp.mask = mask;
    } else if (warp.op != op || warp.mask != mask) {
        fail(self, format("%s with mask 0x%08x while lanes 0x%08x of its warp wait at %s with mask 0x%08x", name,
                          mask, warp.arrived, warp_op_name(warp.op), warp.mask));
    }
    if (!(mask >> source_lane & 1u))
        fail(self, format("%s reads lane %u, which its mask 0x%08x does not name", name, source_lane, mask));
    self.deposited = value;
    self.source_lane = source_lane;
#ifdef DP_EMU_RACE_CHECK
    // As at __syncthreads, for the lanes of the warp, but only at __syncwarp: CUDA orders memory
    // among the lanes of a __syncwarp, and not at a shuffle or a ballot, which exchange registers.
    void *sync = op == WarpOp::SyncWarp ? warp_sync(w, warp.generation) : nullptr;
    if (sync != nullptr) race_release(sync);
#endif
    warp.arrived |= 1u << lane;
    if (warp.arrived == mask) {
        complete_warp_collective(w, warp);
    } else {
        suspend(self, FiberState::AtWarpCollective);
    }
#ifdef DP_EMU_RACE_CHECK
    if (sync != nullptr) race_acquire(sync);
#endif
    return self.result;
}

void BlockScheduler::complete_warp_collective(unsigned int warp_index, WarpGathering &warp) {
    Fiber *lanes = &fibers_[warp_index * 32];
    std::uint64_t ballot = 0;
    if (warp.op == WarpOp::Ballot) {
        for (unsigned int l = 0; l < 32; ++l) {
            if (warp.mask >> l & 1u) ballot |= static_cast<std::uint64_t>(lanes[l].deposited != 0) << l;
        }
    }
    for (unsigned int l = 0; l < 32; ++l) {
        if (!(warp.mask >> l & 1u)) continue;
        Fiber &fiber = lanes[l];
        switch (warp.op) {
            case WarpOp::Ballot: fiber.result = ballot; break;
            case WarpOp::SyncWarp: fiber.result = 0; break;
            default: fiber.result = lanes[fiber.source_lane].deposited; break;
        }
        if (fiber.state == FiberState::AtWarpCollective) fiber.state = FiberState::Runnable;
    }
    warp.arrived = 0;
    ++warp.generation;
}

void BlockScheduler::abandon_block() {
    for (Fiber &fiber : fibers_) {
        if (fiber.stack != nullptr) {
#ifdef DP_EMU_RACE_CHECK
            // Its ThreadSanitizer fiber is left inside the kernel's functions: a fresh one.
            __tsan_destroy_fiber(fiber.race_slot->tsan_fiber);
            fiber.race_slot->tsan_fiber = __tsan_create_fiber(0);
            race_named_threads_ = 0;
#else
            stacks_.release(fiber.stack);
#endif
            fiber.stack = nullptr;
        }
    }
}

std::string BlockScheduler::deadlock_report() const {
    std::string report = "deadlock: no thread can go on";
    if (at_block_barrier_ != 0) report += format("; %u threads wait at __syncthreads", at_block_barrier_);
    for (std::size_t w = 0; w < warps_.size(); ++w) {
        const WarpGathering &warp = warps_[w];
        if (warp.arrived == 0) continue;
        report += format("; warp %zu: lanes 0x%08x wait at %s with mask 0x%08x, lanes 0x%08x have not arrived", w,
                         warp.arrived, warp_op_name(warp.op), warp.mask, warp.mask & ~warp.arrived);
    }
    return report;
}

std::string BlockScheduler::describe(const Fiber &fiber) const {
    return format("thread (%u, %u, %u) (warp %u, lane %u)", fiber.thread_idx.x, fiber.thread_idx.y,
                  fiber.thread_idx.z, fiber.linear >> 5, fiber.linear & 31u);
}

}  // namespace dp_emu
