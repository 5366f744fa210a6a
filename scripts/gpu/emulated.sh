#!/usr/bin/env bash
# The GPU tests on the emulated device: dp-cuda-emulator (dp-cuda/emulator/) stands in for the CUDA
# driver and cuBLAS on this machine's CPU, and every GPU test runs against it with DP_REQUIRE_GPU (a
# test that finds no device fails). NVRTC is the real one: it compiles every kernel as for a GPU, and
# its PTX gives the kernels' parameters and launch bounds. This is not a GPU: it checks the device
# code's logic (every launch, copy, product, stream, event and graph the tests make, and the
# kernels' arithmetic compiled for the CPU), never its speed or a GPU's own arithmetic. See
# docs/GPU.md, "The emulated device".
#
#   scripts/gpu/emulated.sh            every GPU test, release build (about 25 minutes on 2 cores)
#   scripts/gpu/emulated.sh --quick    all but the slowest six (a few minutes; CI runs this)
#   scripts/gpu/emulated.sh --dev      the dev profile (reuses `cargo test`'s build)
#   scripts/gpu/emulated.sh --streams  only the tests of the steps that use several streams (the
#                                      trainer's overlap, the landing, the noise's branch)
#
# NVRTC must be on the loader's path (LD_LIBRARY_PATH, as for `cargo test`). DP_EMULATOR_LATE_STREAMS=later
# (or earlier) runs the streams made later (or earlier) as late as their events allow (a missing wait
# between streams then shows, inside a captured graph too); DP_EMULATOR_THREAD_ORDER=reverse (or
# shuffled) runs a launch's blocks, and each block's threads between barriers, backwards (or in a
# pseudo-random order, which DP_EMULATOR_SEED changes), and =warps runs a block warp by warp, each as
# far as it can go, so a kernel that counts on the order (a missing __syncthreads) shows;
# DP_EMULATOR_MEMORY_BYTES sets the device's memory (8 GiB by default).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=(--release) dir=release quick=0 streams=0
for arg in "$@"; do
    case $arg in
        --quick) quick=1 ;;
        --dev) profile=() dir=debug ;;
        --streams) streams=1 ;;
        *) echo "usage: scripts/gpu/emulated.sh [--quick] [--dev] [--streams]" >&2; exit 2 ;;
    esac
done
cargo build ${profile[@]+"${profile[@]}"} -p dp-cuda-emulator
links=$(mktemp -d)
trap 'rm -rf "$links"' EXIT
for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.12; do
    ln -s "$PWD/target/$dir/libdp_cuda_emulator.so" "$links/$name"
done
# The slowest tests here (the phases are timed over 100 steps of four models; the transformers, the
# image, norm and LSTM models and the LSTM's fused recurrence take minutes each on the CPU's model of
# the kernels).
skip=()
if [ $quick = 1 ]; then
    for t in gpu_step_phases gpu_transformers_match_the_cpu gpu_image_models_match_the_cpu \
        gpu_norm_models_match_the_cpu gpu_lstm_models_match_the_cpu \
        gpu_lstm_recurrence_as_one_kernel_equals_it_step_by_step; do
        skip+=(--skip "$t")
    done
fi
export LD_LIBRARY_PATH="$links${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DP_REQUIRE_GPU=1 DP_REQUIRE_NVRTC=1
if [ $streams = 1 ]; then
    cargo test ${profile[@]+"${profile[@]}"} --features cuda --test gpu_programs -- --include-ignored \
        gpu_private_steps gpu_steps_overlapped gpu_batches_copied_in_beside gpu_noise_beside gpu_trainer \
        gpu_evaluation gpu_distributed gpu_non_private_baseline gpu_clipped_sum_out ${skip[@]+"${skip[@]}"}
    exit
fi
cargo test ${profile[@]+"${profile[@]}"} -p dp-cuda --test gpu -- --include-ignored
cargo test ${profile[@]+"${profile[@]}"} --features cuda --test gpu_programs --test gpu_programs_bf16 --test gpu_storage_bf16 \
    -- --include-ignored ${skip[@]+"${skip[@]}"}
