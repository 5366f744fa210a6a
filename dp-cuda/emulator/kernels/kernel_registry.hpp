// The kernels the emulator can launch, by name: for each, a trampoline that unpacks CUDA's
// `void **kernelParams` (params[i] points to argument i) into the kernel's parameter types, and the
// size and alignment of each parameter (what a driver copies when it queues a launch for later).
// build.rs generates one table per dp-cuda/kernels/*.cu file (DP_EMU_KERNEL_ENTRY) and the list of
// those tables (kernel_files).
#ifndef DP_EMU_KERNEL_REGISTRY_HPP
#define DP_EMU_KERNEL_REGISTRY_HPP

#include <cstddef>
#include <type_traits>
#include <utility>

namespace dp_emu {

// Runs the kernel, as one CUDA thread, on the arguments `params` points to.
using KernelTrampoline = void (*)(void **params);

struct KernelEntry {
    const char *name;
    KernelTrampoline trampoline;
    std::size_t param_count;
    const std::size_t *param_sizes;
    const std::size_t *param_alignments;
};

struct KernelTable {
    const KernelEntry *entries;
    std::size_t count;
};

// The tables of the dp-cuda kernel files, ending with nullptr (generated: registry_files.cpp).
extern const KernelTable *const kernel_files[];

// The emulator's own test kernels (self_test_kernels.cpp), launched only by dp_emu_launch_self_test.
extern const KernelTable self_test_kernels;

// The entry of `name` among `tables` (ending with nullptr), or nullptr.
const KernelEntry *find_kernel(const KernelTable *const *tables, const char *name);

template <class Function>
struct KernelSignature;

template <class... Params>
struct KernelSignature<void (*)(Params...)> {
    // One more than the parameters, so that a kernel without any still has an array.
    static constexpr std::size_t sizes[] = {sizeof(Params)..., 0};
    static constexpr std::size_t alignments[] = {alignof(Params)..., 0};

    template <void (*Kernel)(Params...), std::size_t... I>
    static void call_unpacked(void **params, std::index_sequence<I...>) {
        Kernel(*static_cast<std::remove_reference_t<Params> *>(params[I])...);
    }

    template <void (*Kernel)(Params...)>
    static void call(void **params) {
        call_unpacked<Kernel>(params, std::index_sequence_for<Params...>{});
    }
};

}  // namespace dp_emu

#define DP_EMU_KERNEL_ENTRY(kernel)                                                                       \
    ::dp_emu::KernelEntry {                                                                               \
        #kernel, &::dp_emu::KernelSignature<decltype(&kernel)>::call<&kernel>,                           \
            sizeof(::dp_emu::KernelSignature<decltype(&kernel)>::sizes) / sizeof(std::size_t) - 1,        \
            ::dp_emu::KernelSignature<decltype(&kernel)>::sizes,                                          \
            ::dp_emu::KernelSignature<decltype(&kernel)>::alignments                                      \
    }

#endif
