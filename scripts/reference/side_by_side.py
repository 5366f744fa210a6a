"""Side-by-side table of one sitting's step times: ours (`dp bench --json`) and the reference scripts'.

    python3 scripts/reference/side_by_side.py --ours ours.jsonl --torch torch.jsonl --jax jax.jsonl \
        [--ours-bf16 ours_bf16.jsonl] [--ranges]

Reads the JSON lines of `dp bench --json`, `torch_dpsgd.py --json` and `jax_dpsgd.py --json` (any of the
last two may be left out) and prints a Markdown table, one row per model that `dp bench` measured, of
the median milliseconds per step (with `--ranges`, also [min, max]), our private / non-private ratio, the
fastest private peer and our private step over it. With `--ours-bf16` (`dp bench --precision bf16
--json`), a second table: our bf16 steps beside our f32 private step and PyTorch's bf16 step. A missing
measurement is a dash. Refuses files that mix batch sizes, or precisions within one of our files, which
would not be comparable.
"""

import argparse
import json

# (column title, file, mode) for the peers' columns, in the table's order.
PEER_COLUMNS = [
    ("JAX private", "jax", "private"),
    ("Opacus hooks", "torch", "private-hooks"),
    ("Opacus ghost", "torch", "private-ghost"),
    ("JAX non-private", "jax", "non-private"),
    ("PyTorch f32", "torch", "non-private"),
    ("PyTorch bf16", "torch", "non-private-bf16"),
]
PRIVATE_PEERS = {"JAX private", "Opacus hooks", "Opacus ghost"}


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ours(path, precision):
    """model -> {"private": (median, min, max), "non-private": ...} from `dp bench --json` lines, all
    measured in `precision`; batch sizes."""
    lines = read_lines(path)
    found = {m.get("precision", "f32") for m in lines}
    if found != {precision}:
        raise SystemExit(f"{path}: measured in {sorted(found)}, expected {precision} only")
    table = {
        m["model"]: {
            "private": (m["private_ms_median"], m["private_ms_min"], m["private_ms_max"]),
            "non-private": (m["nonprivate_ms_median"], m["nonprivate_ms_min"], m["nonprivate_ms_max"]),
        }
        for m in lines
    }
    return table, {m["batch_size"] for m in lines}


def peers(path):
    """(model, mode) -> (median, min, max) from a reference script's `--json` lines; batch sizes."""
    lines = read_lines(path)
    table = {(m["model"], m["mode"]): (m["median_ms"], m["min_ms"], m["max_ms"]) for m in lines}
    return table, {m["batch_size"] for m in lines}


def cell(timing, ranges):
    if timing is None:
        return "—"
    median, low, high = timing
    return f"{median:.4g} [{low:.4g}, {high:.4g}]" if ranges else f"{median:.4g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", required=True, help="dp bench --json lines")
    parser.add_argument("--torch", help="torch_dpsgd.py --json lines")
    parser.add_argument("--jax", help="jax_dpsgd.py --json lines")
    parser.add_argument("--ours-bf16", help="dp bench --precision bf16 --json lines")
    parser.add_argument("--ranges", action="store_true", help="also [min, max] in each cell")
    args = parser.parse_args()
    our_times, batch_sizes = ours(args.ours, "f32")
    bf16_times, sizes = ours(args.ours_bf16, "bf16") if args.ours_bf16 else ({}, set())
    batch_sizes |= sizes
    files = {}
    for system in ("torch", "jax"):
        path = getattr(args, system)
        files[system], sizes = peers(path) if path else ({}, set())
        batch_sizes |= sizes
    if len(batch_sizes) > 1:
        raise SystemExit(f"the files mix batch sizes {sorted(batch_sizes)}: run them all at one batch size")

    titles = ["model", "ours private", "ours non-private", "ratio"] + [t for t, _, _ in PEER_COLUMNS]
    titles += ["best private peer", "ours / peer"]
    print("| " + " | ".join(titles) + " |")
    print("|---" + "|---:" * (len(titles) - 1) + "|")
    for model, times in our_times.items():
        peer_times = {title: files[system].get((model, mode)) for title, system, mode in PEER_COLUMNS}
        if not any(peer_times.values()):
            continue  # a model the reference scripts do not rebuild
        private, non_private = times["private"], times["non-private"]
        measured = [(t[0], title) for title, t in peer_times.items() if title in PRIVATE_PEERS and t]
        best = min(measured) if measured else None
        row = [model, cell(private, args.ranges), cell(non_private, args.ranges)]
        row.append(f"{private[0] / non_private[0]:.2f}")
        row += [cell(peer_times[title], args.ranges) for title, _, _ in PEER_COLUMNS]
        row += [f"{best[0]:.4g} ({best[1]})", f"{private[0] / best[0]:.2g}"] if best else ["—", "—"]
        print("| " + " | ".join(row) + " |")
    if bf16_times:
        print()
        bf16_table(our_times, bf16_times, files["torch"], args.ranges)


def bf16_table(our_times, bf16_times, torch_times, ranges):
    """Our bf16 steps beside our f32 private step and PyTorch's non-private bf16 step."""
    titles = ["model", "ours bf16 private", "ours bf16 non-private", "ratio", "ours f32 private",
              "f32 / bf16 private", "PyTorch bf16", "ours bf16 private / PyTorch bf16"]
    print("| " + " | ".join(titles) + " |")
    print("|---" + "|---:" * (len(titles) - 1) + "|")
    for model, times in bf16_times.items():
        private, non_private = times["private"], times["non-private"]
        f32 = our_times.get(model, {}).get("private")
        torch_bf16 = torch_times.get((model, "non-private-bf16"))
        row = [model, cell(private, ranges), cell(non_private, ranges), f"{private[0] / non_private[0]:.2f}"]
        row += [cell(f32, ranges), f"{f32[0] / private[0]:.2f}" if f32 else "—", cell(torch_bf16, ranges)]
        row.append(f"{private[0] / torch_bf16[0]:.2f}" if torch_bf16 else "—")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
