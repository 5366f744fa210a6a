#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and no Rust, runs the prebuilt GPU test binaries, then
# `dp bench --device cuda:0` where the prebuilt binary has it, then the JAX and PyTorch/Opacus references
# on the same GPU, and writes one report. Build the binaries first on a machine with Rust (no GPU or
# toolkit needed):
#
#   scripts/gpu/build.sh          # puts the binaries in target/gpu-check/
#
# then, on the GPU machine, from the repository root:
#
#   scripts/gpu/check.sh [REPORT]  # default report: gpu-check-report.txt
#
# and, anywhere with Python 3, `python3 scripts/gpu/summarise.py REPORT` for its tables in Markdown.
#
# NVRTC and cuBLAS are taken from the CUDA toolkit or the pip wheels there (`nvidia-cuda-nvrtc`,
# `nvidia-cublas`): cudarc looks for `libnvrtc.so`, `libnvrtc.so.12`, ...; a CUDA 13 machine has
# `libnvrtc.so.13`, so the script links the unversioned names to what it finds, in a folder of its own
# put first on LD_LIBRARY_PATH. Every GPU test must run (DP_REQUIRE_GPU, DP_REQUIRE_NVRTC): a missing
# device or library fails. DP_CHECK_PEERS=jax runs the JAX reference alone, =none neither; DP_CHECK_STEPS
# sets the timed steps of every measurement. Each part has a time limit (DP_CHECK_LIMIT scales them; 1
# by default), so that a part that hangs is reported as timed out and the parts after it still run.
# DP_CHECK_DEADLINE=S ends the check S seconds after it starts: each part's limit is cut to the time
# left, and the parts after the deadline are reported as skipped (and fail the check). Set it below a
# session's per-call limit so that the report always ends.
set -uo pipefail
cd "$(dirname "$0")/../.."
report=${1:-gpu-check-report.txt}
bins=target/gpu-check
[ -d "$bins" ] || { echo "error: $bins missing; run scripts/gpu/build.sh on a machine with Rust" >&2; exit 2; }
export DP_REQUIRE_GPU=1 DP_REQUIRE_NVRTC=1
steps=${DP_CHECK_STEPS:-20}
links=$(mktemp -d)
for lib in nvrtc nvrtc-builtins cublas cublasLt; do
    found=$( { ls /usr/local/cuda/lib64/lib$lib.so* /usr/local/cuda/targets/x86_64-linux/lib/lib$lib.so* 2>/dev/null
               python3 - "$lib" <<'PY' 2>/dev/null
import glob, os, site, sys
for root in site.getsitepackages():
    for p in sorted(glob.glob(os.path.join(root, "nvidia", "**", f"lib{sys.argv[1]}.so*"), recursive=True)):
        print(p)
PY
             } | grep -E "lib$lib\.so(\.[0-9]+)*$" | head -1)
    if [ -n "$found" ]; then
        ln -sf "$found" "$links/lib$lib.so"
        export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
done
export LD_LIBRARY_PATH="$links${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
failed=0
scale=${DP_CHECK_LIMIT:-1}
deadline=${DP_CHECK_DEADLINE:-0}
# `limited SECONDS COMMAND...`: the command, stopped after SECONDS·scale or at the deadline; a stop is
# reported and fails, and so does a command the deadline leaves no time for.
limited() {
    local seconds=$(( $1 * scale )); shift
    if [ "$deadline" -gt 0 ]; then
        local left=$(( deadline - SECONDS ))
        if [ $left -le 5 ]; then
            echo "## SKIPPED at the check's deadline (DP_CHECK_DEADLINE=$deadline): $*"
            return 125
        fi
        [ $left -lt $seconds ] && seconds=$left
    fi
    timeout -k 5 "$seconds" "$@"
    local rc=$?
    # On a line of its own: a hung test's `test NAME ... ` has no newline.
    [ $rc = 124 ] || [ $rc = 137 ] && printf '\n## TIMED OUT after %ss: %s\n' "$seconds" "$*"
    return $rc
}
# `run_tests BINARY SECONDS`: every test of a test binary, one at a time, the run stopped after
# SECONDS·scale. A run that stops before its summary (a test hung past the limit, or crashed the
# process) is reported with the test it stopped in, and the binary runs again for the tests it had not
# started (the started ones skipped), so that one test cannot hide the others; after three stops the
# rest is given up (a GPU that hangs every test would otherwise take the limit once per test). Fails if
# a test failed or a run stopped.
run_tests() {
    local bin=$1 seconds=$2 started=() log rc stops=0
    log=$(mktemp)
    while :; do
        local skips=()
        for t in ${started[@]+"${started[@]}"}; do skips+=(--skip "$t"); done
        limited "$seconds" "$bin" --include-ignored --test-threads=1 --nocapture --exact ${skips[@]+"${skips[@]}"} 2>&1 \
            | tee "$log"
        rc=${PIPESTATUS[0]}
        grep -q "^test result: " "$log" && break
        local now=()
        mapfile -t now < <(sed -n 's/^test \([^ ]*\) \.\.\. .*$/\1/p' "$log")
        [ ${#now[@]} = 0 ] && break
        started+=("${now[@]}")
        stops=$((stops + 1))
        if [ $stops -ge 3 ]; then
            echo "## STOPPED in ${now[${#now[@]}-1]} (exit $rc): a third stop, the tests it had not started are given up"
            break
        fi
        echo "## STOPPED in ${now[${#now[@]}-1]} (exit $rc): the tests it had not started run again"
    done
    rm -f "$log"
    [ ${#started[@]} = 0 ] && return "$rc"
    return 1
}
{
    echo "# dp GPU check, $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader \
        || echo "nvidia-smi: not found"
    echo "libraries: $(ls -l "$links" | awk 'NR>1 {print $9 " -> " $11}' | tr '\n' ' ')"
    # The GPU tests and the NVRTC compile tests; the host-C tests need the source tree and a C compiler
    # and run in CI instead.
    for name in nvrtc_compile gpu gpu_programs gpu_programs_bf16 gpu_storage_bf16; do
        [ -x "$bins/$name" ] || continue
        echo "## $name"
        run_tests "$bins/$name" 240 || { echo "## $name FAILED"; failed=1; }
    done
    if [ -x "$bins/dp" ]; then
        for precision in f32 bf16; do
            echo "## dp bench --device cuda:0 --precision $precision"
            limited 150 "$bins/dp" bench --device cuda:0 --all --batch-size 128 --steps "$steps" --precision "$precision" \
                --json 2>&1 || { echo "## dp bench FAILED"; failed=1; }
        done
        # The front door: a private run on the Adult data shipped in the repository, on the GPU and, for
        # comparison, on this machine's CPUs (same seed: the same batches and noise).
        for device in cuda:0 cpu; do
            echo "## dp train --model ffnn --data data/adult --device $device"
            limited 120 "$bins/dp" train --model ffnn --data data/adult --target-epsilon 1 --seed 1 --device "$device" 2>&1 \
                | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
            echo "## dp train --model embedding --data data/reviews --max-steps 200 --device $device"
            limited 120 "$bins/dp" train --model embedding --data data/reviews/womens_clothing_reviews.csv.gz \
                --target-epsilon 3 --seed 1 --max-steps 200 --device "$device" 2>&1 \
                | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
            echo "## dp train --model mnist-cnn --data data/mnist --max-steps 300 --device $device"
            limited 120 "$bins/dp" train --model mnist-cnn --data data/mnist --target-epsilon 3 --seed 1 --max-steps 300 \
                --device "$device" 2>&1 | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
            echo "## dp train --model mnist-cnn --data data/mnist --max-steps 300 --precision bf16 --device $device"
            limited 120 "$bins/dp" train --model mnist-cnn --data data/mnist --target-epsilon 3 --seed 1 --max-steps 300 \
                --precision bf16 --device "$device" 2>&1 | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
        done
        # The transformers on the GPU only (100 steps of either take minutes on a few CPU cores): the text
        # transformer with momentum, its LoRA variant with Adam (the Adam kernel), the ViT in bf16.
        echo "## dp train --model text-transformer --data data/reviews --max-steps 100 --device cuda:0"
        limited 120 "$bins/dp" train --model text-transformer --data data/reviews/womens_clothing_reviews.csv.gz \
            --target-epsilon 3 --seed 1 --max-steps 100 --device cuda:0 2>&1 \
            | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
        echo "## dp train --model text-transformer-lora --optimizer adam --lr 0.001 --max-steps 100 --device cuda:0"
        limited 120 "$bins/dp" train --model text-transformer-lora --data data/reviews/womens_clothing_reviews.csv.gz \
            --optimizer adam --lr 0.001 --target-epsilon 3 --seed 1 --max-steps 100 --device cuda:0 2>&1 \
            | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
        echo "## dp train --model mnist-vit --data data/mnist --max-steps 100 --precision bf16 --device cuda:0"
        limited 120 "$bins/dp" train --model mnist-vit --data data/mnist --target-epsilon 3 --seed 1 --max-steps 100 \
            --precision bf16 --device cuda:0 2>&1 | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
        # The non-private baseline's steps and a private run's non-private diagnostics on the GPU.
        echo "## dp train --model mnist-cnn --non-private --max-steps 300 --device cuda:0"
        limited 120 "$bins/dp" train --model mnist-cnn --data data/mnist --non-private --seed 1 --max-steps 300 \
            --device cuda:0 2>&1 | grep -v "^epoch" || { echo "## dp train FAILED"; failed=1; }
        echo "## dp train --model ffnn --data data/adult --max-steps 300 --non-private-diagnostics --json --device cuda:0"
        limited 120 "$bins/dp" train --model ffnn --data data/adult --target-epsilon 1 --seed 1 --max-steps 300 --non-private-diagnostics \
            --json --device cuda:0 2>&1 | tail -n 3 || { echo "## dp train FAILED"; failed=1; }
        # Poisson batches of about 1,024 in physical chunks of at most 256 (their clipped sums added on the
        # host), evaluated by the GPU's forward at each epoch's end.
        echo "## dp train --model mnist-cnn --batch-size 1024 --max-physical-batch 256 --max-steps 60 --device cuda:0"
        limited 120 "$bins/dp" train --model mnist-cnn --data data/mnist --target-epsilon 3 --seed 1 --batch-size 1024 \
            --max-physical-batch 256 --max-steps 60 --device cuda:0 2>&1 | grep -v "^epoch" \
            || { echo "## dp train FAILED"; failed=1; }
    fi
    peers=${DP_CHECK_PEERS:-all}
    if [ "$peers" != none ]; then
        echo "## jax_dpsgd.py (jit + vmap) on the GPU"
        limited 300 python3 scripts/reference/jax_dpsgd.py --batch-size 128 --steps "$steps" --json 2>&1 \
            || echo "## jax FAILED"
    fi
    if [ "$peers" = all ]; then
        echo "## torch_dpsgd.py --device cuda"
        limited 300 python3 scripts/reference/torch_dpsgd.py --device cuda --batch-size 128 --steps "$steps" --json \
            --modes "${DP_CHECK_TORCH_MODES:-non-private,non-private-bf16,private-hooks,private-ghost}" 2>&1 \
            || echo "## torch FAILED"
    fi
    echo "# end: $([ $failed = 0 ] && echo all passed || echo FAILURES)"
} 2>&1 | tee "$report"
grep -q "^# end: all passed" "$report"
