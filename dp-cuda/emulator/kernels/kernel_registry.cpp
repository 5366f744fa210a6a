// Finding a kernel by name among the generated tables (kernel_registry.hpp).
#include "kernel_registry.hpp"

#include <cstring>

namespace dp_emu {

const KernelEntry *find_kernel(const KernelTable *const *tables, const char *name) {
    // A linear search: some sixty names, against a launch's thousands of fiber switches at least.
    for (; *tables != nullptr; ++tables) {
        const KernelTable &table = **tables;
        for (std::size_t i = 0; i < table.count; ++i) {
            if (std::strcmp(table.entries[i].name, name) == 0) return &table.entries[i];
        }
    }
    return nullptr;
}

}  // namespace dp_emu
