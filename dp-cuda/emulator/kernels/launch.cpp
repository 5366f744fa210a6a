// The C API of kernel execution (src/kernels.rs): launching a kernel by name on the calling OS
// thread, and what the registry knows of the kernels (names, parameter layouts).
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "block_scheduler.hpp"
#include "kernel_registry.hpp"

namespace {

// dp_emu_launch's results (src/kernels.rs mirrors them).
enum LaunchStatus : int {
    kLaunched = 0,
    kUnknownKernel = 1,
    kInvalidConfiguration = 2,
    kExecutionFailed = 3,
};

int report(int status, const std::string &message, char *error, std::size_t error_len) {
    if (error != nullptr && error_len > 0) std::snprintf(error, error_len, "%s", message.c_str());
    return status;
}

// What is wrong with a launch configuration, as CUDA's limits on compute capability 7.0 and later
// have it, or the empty string. Shared memory beyond the kernels' static __shared__ variables
// (`extern __shared__`) is not modelled, and none of dp's kernels declares any.
std::string configuration_error(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                unsigned dynamic_shared_bytes) {
    char buffer[256];
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) {
        std::snprintf(buffer, sizeof buffer, "a dimension of 0 (grid %u x %u x %u, block %u x %u x %u)", gx, gy, gz,
                      bx, by, bz);
        return buffer;
    }
    if (gx > 0x7fffffffu || gy > 65535 || gz > 65535) {
        std::snprintf(buffer, sizeof buffer, "grid %u x %u x %u beyond CUDA's 2^31-1 x 65535 x 65535", gx, gy, gz);
        return buffer;
    }
    unsigned long long threads = static_cast<unsigned long long>(bx) * by * bz;
    if (bx > 1024 || by > 1024 || bz > 64 || threads > 1024) {
        std::snprintf(buffer, sizeof buffer, "block %u x %u x %u beyond CUDA's 1024 threads (1024 x 1024 x 64)", bx,
                      by, bz);
        return buffer;
    }
    if (dynamic_shared_bytes != 0) {
        std::snprintf(buffer, sizeof buffer,
                      "%u bytes of dynamic shared memory: the emulator models only static __shared__ variables",
                      dynamic_shared_bytes);
        return buffer;
    }
    return std::string();
}

int launch_from(const dp_emu::KernelTable *const *tables, const char *name, unsigned gx, unsigned gy, unsigned gz,
                unsigned bx, unsigned by, unsigned bz, unsigned dynamic_shared_bytes, void **params, char *error,
                std::size_t error_len) {
    const dp_emu::KernelEntry *kernel = dp_emu::find_kernel(tables, name);
    if (kernel == nullptr) return report(kUnknownKernel, std::string("no kernel named ") + name, error, error_len);
    std::string invalid = configuration_error(gx, gy, gz, bx, by, bz, dynamic_shared_bytes);
    if (!invalid.empty())
        return report(kInvalidConfiguration, std::string(name) + ": invalid launch configuration: " + invalid, error,
                      error_len);
    std::string failure = dp_emu::BlockScheduler::of_this_thread().run_grid(kernel->trampoline, params,
                                                                            dim3{gx, gy, gz}, dim3{bx, by, bz});
    if (!failure.empty()) return report(kExecutionFailed, std::string(name) + ": " + failure, error, error_len);
    return kLaunched;
}

const dp_emu::KernelTable *const self_test_tables[] = {&dp_emu::self_test_kernels, nullptr};

std::size_t registered_count() {
    std::size_t count = 0;
    for (const dp_emu::KernelTable *const *table = dp_emu::kernel_files; *table != nullptr; ++table)
        count += (*table)->count;
    return count;
}

}  // namespace

extern "C" {

// Runs kernel `name` of dp-cuda/kernels over the grid, on the calling OS thread, before returning.
// params[i] points to argument i, read by every thread while the launch runs. Returns 0, or with a
// message in `error` (truncated to error_len): 1 no such kernel, 2 an invalid configuration, 3 an
// error of its execution (a barrier or warp collective used as CUDA does not allow).
int dp_emu_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  unsigned dynamic_shared_bytes, void **params, char *error, std::size_t error_len) noexcept {
    return launch_from(dp_emu::kernel_files, name, gx, gy, gz, bx, by, bz, dynamic_shared_bytes, params, error,
                       error_len);
}

// dp_emu_launch for the emulator's own test kernels (self_test_kernels.cpp).
int dp_emu_launch_self_test(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned dynamic_shared_bytes, void **params, char *error,
                            std::size_t error_len) noexcept {
    return launch_from(self_test_tables, name, gx, gy, gz, bx, by, bz, dynamic_shared_bytes, params, error,
                       error_len);
}

int dp_emu_has_kernel(const char *name) noexcept { return dp_emu::find_kernel(dp_emu::kernel_files, name) != nullptr; }

std::size_t dp_emu_kernel_count(void) noexcept { return registered_count(); }

// The name of kernel `index` (< dp_emu_kernel_count()), files in name order, kernels in source order.
const char *dp_emu_kernel_name(std::size_t index) noexcept {
    for (const dp_emu::KernelTable *const *table = dp_emu::kernel_files; *table != nullptr; ++table) {
        if (index < (*table)->count) return (*table)->entries[index].name;
        index -= (*table)->count;
    }
    return nullptr;
}

// The number of parameters of kernel `name` (-1: no such kernel), with the size and alignment of the
// first `capacity` of them in sizes and alignments.
long dp_emu_kernel_params(const char *name, std::size_t *sizes, std::size_t *alignments,
                          std::size_t capacity) noexcept {
    const dp_emu::KernelEntry *kernel = dp_emu::find_kernel(dp_emu::kernel_files, name);
    if (kernel == nullptr) return -1;
    for (std::size_t i = 0; i < kernel->param_count && i < capacity; ++i) {
        sizes[i] = kernel->param_sizes[i];
        alignments[i] = kernel->param_alignments[i];
    }
    return static_cast<long>(kernel->param_count);
}

}  // extern "C"
