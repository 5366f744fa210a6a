#!/usr/bin/env bash
# Builds the dp-cuda test binaries that scripts/gpu/check.sh runs on a GPU machine, into
# target/gpu-check/ (no GPU or CUDA toolkit needed: cudarc loads the libraries at run time).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/gpu-check
cargo test --release -p dp-cuda --no-run --message-format=json \
    | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
        name = msg["target"]["name"]
        shutil.copy(msg["executable"], f"target/gpu-check/{name}")
        print("target/gpu-check/" + name)
'
