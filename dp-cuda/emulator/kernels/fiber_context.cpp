// The context switch and the fibers' stacks (fiber_context.hpp).
#include "fiber_context.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

// dp_emu_switch_context(save_sp = rdi, load_sp = rsi): the System V ABI's callee-saved registers
// (rbx, rbp, r12-r15) pushed on the running stack, its pointer stored, the other stack's registers
// popped, and `ret` resumes where that context called the switch. The floating-point control words
// (MXCSR, x87) are not switched: no kernel changes them.
//
// dp_emu_fiber_start is where a new fiber's first switch returns to: prepare_fiber leaves the entry
// function in r13 and its argument in r12.
asm(R"(
    .text
    .globl dp_emu_switch_context
    .type dp_emu_switch_context, @function
dp_emu_switch_context:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size dp_emu_switch_context, .-dp_emu_switch_context

    .globl dp_emu_fiber_start
    .hidden dp_emu_fiber_start
    .type dp_emu_fiber_start, @function
dp_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size dp_emu_fiber_start, .-dp_emu_fiber_start
)");

extern "C" void dp_emu_fiber_start();

namespace dp_emu {

FiberStackPool::~FiberStackPool() {
    for (FiberStack *stack : all_) {
        munmap(stack->mapping, stack->mapping_bytes);
        delete stack;
    }
}

FiberStack *FiberStackPool::acquire() {
    if (!free_.empty()) {
        FiberStack *stack = free_.back();
        free_.pop_back();
        return stack;
    }
    std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    std::size_t bytes = FiberStack::kStackBytes + page;
    void *mapping = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (mapping == MAP_FAILED) return nullptr;
    if (mprotect(mapping, page, PROT_NONE) != 0) {
        munmap(mapping, bytes);
        return nullptr;
    }
    FiberStack *stack = new FiberStack{mapping, bytes, static_cast<unsigned char *>(mapping) + bytes};
    all_.push_back(stack);
    return stack;
}

void *prepare_fiber(FiberStack *stack, void (*entry)(void *), void *argument) {
    // The return address dp_emu_switch_context pops sits 8 bytes off a 16-byte boundary: after `ret`
    // the stack pointer is 16-byte aligned, so dp_emu_fiber_start's `call` enters `entry` with it 8
    // off, as at any function's entry.
    auto top = reinterpret_cast<std::uintptr_t>(stack->top) & ~static_cast<std::uintptr_t>(15);
    auto *frame = reinterpret_cast<void **>(top - 24);
    frame[0] = reinterpret_cast<void *>(&dp_emu_fiber_start);
    // Popped in this order: r15, r14, r13, r12, rbx, rbp.
    void **registers = frame - 6;
    registers[0] = nullptr;                               // r15
    registers[1] = nullptr;                               // r14
    registers[2] = reinterpret_cast<void *>(entry);       // r13
    registers[3] = argument;                              // r12
    registers[4] = nullptr;                               // rbx
    registers[5] = nullptr;                               // rbp: the end of a frame-pointer walk
    return registers;
}

}  // namespace dp_emu
