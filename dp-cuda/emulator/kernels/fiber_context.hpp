// Fibers' stacks and the switch between them: a hand-written x86-64 context switch that saves only
// the callee-saved registers (ucontext's swapcontext makes a system call per switch for the signal
// mask, far too slow for kernels of tens of millions of threads).
#ifndef DP_EMU_FIBER_CONTEXT_HPP
#define DP_EMU_FIBER_CONTEXT_HPP

#include <cstddef>
#include <vector>

#if !defined(__x86_64__)
#error "the emulator's context switch is written for x86-64"
#endif

namespace dp_emu {

// Saves the callee-saved registers and the stack pointer of the running context into *save_sp and
// resumes the context saved at load_sp.
extern "C" void dp_emu_switch_context(void **save_sp, void *load_sp);

// A fiber's stack: usable from `top` down for kStackBytes, with an inaccessible guard page below, so
// that an overflow faults instead of overwriting another stack.
struct FiberStack {
    static constexpr std::size_t kStackBytes = 64 * 1024;
    void *mapping;
    std::size_t mapping_bytes;
    unsigned char *top;
};

// The stacks of one OS thread's fibers, reused across blocks and launches (a fiber that ends returns
// its stack, so a kernel without barriers runs every thread on the same one).
class FiberStackPool {
  public:
    FiberStackPool() = default;
    FiberStackPool(const FiberStackPool &) = delete;
    FiberStackPool &operator=(const FiberStackPool &) = delete;
    ~FiberStackPool();

    // A free stack, or nullptr when no more memory can be mapped.
    FiberStack *acquire();
    void release(FiberStack *stack) { free_.push_back(stack); }

  private:
    std::vector<FiberStack *> free_;
    std::vector<FiberStack *> all_;
};

// Prepares `stack` so that switching to the returned stack pointer calls entry(argument) on it, with
// the stack aligned as the ABI requires at a function's entry. `entry` must never return: it ends by
// switching away for good.
void *prepare_fiber(FiberStack *stack, void (*entry)(void *), void *argument);

}  // namespace dp_emu

#endif
