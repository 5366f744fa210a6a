// The C API of kernel execution (src/kernels.rs): launching a kernel by name on the calling OS
// thread, in the order of threads and blocks the environment or the thread asks for, and what the
// registry knows of the kernels (names, parameter layouts).
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

// What the environment asks of every launch, read once: the order (DP_EMULATOR_THREAD_ORDER) and the
// seed of shuffled's permutations (DP_EMULATOR_SEED), or what is wrong with them, which fails every
// launch rather than run one in an order nobody asked for.
struct EnvironmentOrder {
    dp_emu::ThreadOrder order = dp_emu::ThreadOrder::Forward;
    std::uint64_t seed = 0x5eed0f0d3e4dcafeull;
    std::string error;
};

EnvironmentOrder read_environment() {
    EnvironmentOrder settings;
    if (const char *order = std::getenv("DP_EMULATOR_THREAD_ORDER")) {
        if (std::strcmp(order, "forward") == 0) {
            settings.order = dp_emu::ThreadOrder::Forward;
        } else if (std::strcmp(order, "reverse") == 0) {
            settings.order = dp_emu::ThreadOrder::Reverse;
        } else if (std::strcmp(order, "shuffled") == 0) {
            settings.order = dp_emu::ThreadOrder::Shuffled;
        } else if (std::strcmp(order, "warps") == 0) {
            settings.order = dp_emu::ThreadOrder::Warps;
        } else {
            settings.error = std::string("DP_EMULATOR_THREAD_ORDER=") + order +
                             ": the accepted values are forward (the default), reverse, shuffled and warps";
            return settings;
        }
    }
    if (const char *seed = std::getenv("DP_EMULATOR_SEED")) {
        char *end = nullptr;
        errno = 0;
        unsigned long long value = std::strtoull(seed, &end, 0);
        if (*seed == '\0' || *seed == '-' || *seed == '+' || *end != '\0' || errno == ERANGE) {
            settings.error = std::string("DP_EMULATOR_SEED=") + seed +
                             ": not an unsigned 64-bit number (decimal, or hexadecimal after 0x)";
            return settings;
        }
        // 0 keeps the default seed.
        settings.seed ^= value;
    }
    return settings;
}

const EnvironmentOrder &environment_order() {
    static const EnvironmentOrder settings = read_environment();
    return settings;
}

// dp_emu_set_thread_order_for_this_thread's order for the launches of this OS thread, or -1: the
// environment's.
thread_local int thread_order_override = -1;

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
    const EnvironmentOrder &environment = environment_order();
    if (!environment.error.empty())
        return report(kInvalidConfiguration, std::string(name) + ": " + environment.error, error, error_len);
    dp_emu::ThreadOrder order = thread_order_override < 0 ? environment.order
                                                          : static_cast<dp_emu::ThreadOrder>(thread_order_override);
    std::string failure = dp_emu::BlockScheduler::of_this_thread().run_grid(
        kernel->trampoline, params, dim3{gx, gy, gz}, dim3{bx, by, bz}, order, environment.seed);
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
// message in `error` (truncated to error_len): 1 no such kernel, 2 an invalid configuration (of the
// launch, or DP_EMULATOR_THREAD_ORDER or DP_EMULATOR_SEED), 3 an error of its execution (a barrier or
// warp collective used as CUDA does not allow).
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

// The order of the launches this OS thread makes from now on: 0 forward, 1 reverse, 2 shuffled, 3 warps (as
// DP_EMULATOR_THREAD_ORDER), or -1: the environment's again. Returns 0, or -1 for another mode (and
// changes nothing). For tests, which run on threads of one process and cannot each set the
// environment.
int dp_emu_set_thread_order_for_this_thread(int mode) noexcept {
    if (mode < -1 || mode > static_cast<int>(dp_emu::ThreadOrder::Warps)) return -1;
    thread_order_override = mode;
    return 0;
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
