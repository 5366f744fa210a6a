#!/usr/bin/env bash
# One sitting: every column of docs/PERFORMANCE.md's table measured back to back on this machine, f32
# and bf16, ours before and after the peers, then the side-by-side tables.
#
#   scripts/reference/sitting.sh OUT_DIR [STEPS]
#
# Needs a release build (`cargo build --release`), PyTorch + Opacus and JAX (see "Reference scripts" in
# docs/PERFORMANCE.md), and an idle machine: it takes 15-25 minutes on two cores at 30 steps. Writes into
# OUT_DIR (which must not exist: nothing is overwritten) the JSON lines of every run, `lscpu`, the
# start and end of each part, and tables.md.
set -euo pipefail

out=${1:?usage: scripts/reference/sitting.sh OUT_DIR [STEPS]}
steps=${2:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
dp="$root/target/release/dp"
[ -x "$dp" ] || { echo "no $dp: run cargo build --release first" >&2; exit 1; }
[ -e "$out" ] && { echo "$out exists: give a new folder" >&2; exit 1; }
mkdir -p "$out"

lscpu > "$out/lscpu.txt"
git -C "$root" rev-parse HEAD > "$out/commit.txt"
stamp() { echo "$(date -u +%FT%TZ) $1" | tee -a "$out/times.txt"; }

ours() { # $1: the run's name
  for precision in f32 bf16; do
    "$dp" bench --all --batch-size 128 --steps "$steps" --threads 2 --precision "$precision" --json \
      > "$out/$1_$precision.jsonl" 2>> "$out/$1.err"
  done
}

stamp "ours, first run"
ours ours1
stamp "PyTorch and Opacus"
python3 "$root/scripts/reference/torch_dpsgd.py" --batch-size 128 --steps "$steps" --threads 2 --json \
  > "$out/torch.jsonl" 2> "$out/torch.err"
stamp "JAX"
taskset -c 0,1 python3 "$root/scripts/reference/jax_dpsgd.py" --batch-size 128 --steps "$steps" --json \
  > "$out/jax.jsonl" 2> "$out/jax.err"
stamp "ours, second run"
ours ours2
stamp "done"

for run in ours1 ours2; do
  {
    echo "## $run"
    echo
    python3 "$root/scripts/reference/side_by_side.py" --ours "$out/${run}_f32.jsonl" \
      --ours-bf16 "$out/${run}_bf16.jsonl" --torch "$out/torch.jsonl" --jax "$out/jax.jsonl" --ranges
    echo
  } >> "$out/tables.md"
done
echo "tables: $out/tables.md"
