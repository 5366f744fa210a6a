#!/usr/bin/env bash
# The GPU check: runs the prebuilt dp-cuda test binaries on a machine with an NVIDIA GPU and no Rust,
# and writes one report. Build them first on a machine with Rust (no GPU or toolkit needed):
#
#   scripts/gpu/build.sh          # puts the binaries in target/gpu-check/
#
# then, on the GPU machine, from the repository root (NVRTC must be loadable: the CUDA toolkit, or
# `pip install nvidia-cuda-nvrtc-cu12` with its lib folder on LD_LIBRARY_PATH):
#
#   scripts/gpu/check.sh [REPORT]  # default report: gpu-check-report.txt
#
# Every GPU test must run (DP_REQUIRE_GPU, DP_REQUIRE_NVRTC): a missing device or library fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
report=${1:-gpu-check-report.txt}
bins=target/gpu-check
[ -d "$bins" ] || { echo "error: $bins missing; run scripts/gpu/build.sh on a machine with Rust" >&2; exit 2; }
export DP_REQUIRE_GPU=1 DP_REQUIRE_NVRTC=1
failed=0
{
    echo "# dp GPU check, $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not found"
    # The GPU tests and the NVRTC compile tests; the host-C tests need the source tree and a C compiler
    # and run in CI instead.
    for name in nvrtc_compile gpu; do
        echo "## $name"
        "$bins/$name" --include-ignored --test-threads=1 --nocapture 2>&1 || { echo "## $name FAILED"; failed=1; }
    done
    echo "# end: $([ $failed = 0 ] && echo all passed || echo FAILURES)"
} | tee "$report"
grep -q "^# end: all passed" "$report"
