#!/usr/bin/env bash
# Builds what scripts/gpu/check.sh runs on a GPU machine, into target/gpu-check/ (no GPU or CUDA
# toolkit needed: cudarc loads the libraries at run time): the dp-cuda test binaries, the device-program
# tests of the dp crate (tests/gpu_programs.rs, tests/gpu_programs_bf16.rs, tests/gpu_storage_bf16.rs) and the `dp` binary, all with the `cuda` feature.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/gpu-check
copy_tests() {
    python3 -c '
import json, os, shutil, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
        name = msg["target"]["name"]
        # Replaced, not overwritten: a binary still running keeps its old file.
        shutil.copy(msg["executable"], f"target/gpu-check/{name}.new")
        os.replace(f"target/gpu-check/{name}.new", f"target/gpu-check/{name}")
        print("target/gpu-check/" + name)
'
}
cargo test --release -p dp-cuda --no-run --message-format=json | copy_tests
cargo test --release --features cuda --test gpu_programs --no-run --message-format=json | copy_tests
cargo test --release --features cuda --test gpu_programs_bf16 --no-run --message-format=json | copy_tests
cargo test --release --features cuda --test gpu_storage_bf16 --no-run --message-format=json | copy_tests
cargo build --release --features cuda --bin dp
cp target/release/dp target/gpu-check/dp.new && mv target/gpu-check/dp.new target/gpu-check/dp
echo target/gpu-check/dp
