//! The CUDA driver API and the part of cuBLAS that dp-cuda calls, implemented on the CPU.
//!
//! dp's device code has run on a GPU only when one was lent. This library lets the GPU tests and
//! `dp bench --device` run anywhere: cudarc loads it in place of `libcuda.so` and `libcublas.so`
//! (`scripts/gpu/emulated.sh` links those names to it in a folder of its own), and everything above
//! the driver (dp-cuda's streams, events, graphs, pinned copies, kernel launches, cuBLAS calls) runs
//! unchanged. Kernels are the same `.cu` files, compiled by the host's C++ compiler against a model
//! of CUDA's execution (kernels/cuda_on_cpu.hpp): every thread of a block is a fiber, and
//! `__syncthreads` and the warp operations are barriers among them.
//!
//! What it checks beyond the values: device ranges of copies and products against live allocations,
//! reads past a device buffer's ends (guard pages), fresh device memory and a block's `__shared__`
//! memory read before they are written (they hold NaN), launch geometry against the limits and the kernels' launch bounds, stream capture's
//! rules (forks joined, no synchronising call while capturing), and the order between streams (each
//! stream is a thread; `DP_EMULATOR_LATE_STREAMS=later|earlier` runs the streams made later, or earlier, as late as
//! their events allow, and a graph's nodes in the same spirit), and inside a kernel
//! (`DP_EMULATOR_THREAD_ORDER=reverse|shuffled|warps` runs the blocks, and each block's threads between
//! barriers, backwards, in pseudo-random order, or warp by warp with each warp running ahead).
//!
//! What it cannot show: speed, the GPU's own arithmetic (its libm, its cuBLAS's summation order and
//! tensor-core rounding; NVRTC's code generation, whose PTX is read only for its entry points), and
//! races that need the GPU's own concurrency inside a kernel (a block's threads run one at a time).

pub mod api;
pub mod blas;
mod capture;
pub mod kernels;
mod launch;
mod memory;
mod state;
mod stream;
