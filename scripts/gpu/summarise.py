"""The tables of a GPU check's report (`scripts/gpu/check.sh`), in Markdown, for docs/PERFORMANCE.md.

    python3 scripts/gpu/summarise.py gpu-check-report.txt

Reads the report's sections (each starts with a `## ` line) and prints:
- the tests: per test binary the tests that passed and failed over its runs, and the tests a run
  stopped in (a hang past its limit, or a crash);
- the step times of `dp bench --device cuda:0 --json` (median [min, max] ms) in f32: private, as the
  trainer overlaps it, with the noise drawn after the program instead of beside it, non-private and the
  privacy ratio, beside JAX's and PyTorch/Opacus's where the report has them;
- where a private step's time goes, phase by phase, where the report has `gpu_step_phases`;
- bf16 against f32, per model;
- issue 12's targets, each met or not per model;
- the last line of each training run (its accuracy and ε).
A missing measurement is a dash, a model the bench skipped is listed with its reason, and a part
that failed or timed out says so. Only the standard library is used.
"""

import json
import re
import sys


def sections(text):
    """[(header, [lines])] in the report's order; the lines before the first header, and the report's
    own lines (`# ...`: its title and its end), are skipped."""
    out = []
    for line in text.splitlines():
        if line.startswith("## "):
            out.append((line[3:].strip(), []))
        elif out and not line.startswith("# "):
            out[-1][1].append(line)
    return out


def json_lines(lines):
    objects = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return objects


START = re.compile(r"^test (\S+) \.\.\. ?(.*)$")


def verdict(text):
    """`ok` or `FAILED` if a line of a test's output ends with libtest's verdict (with --nocapture the
    verdict follows whatever the test printed, on its last line)."""
    text = text.strip()
    for word in ("ok", "FAILED"):
        if text == word or text.endswith(" " + word):
            return word
    return None


def tests(lines):
    """Each test's verdict in a binary's runs: `ok`, `FAILED`, or None where a run stopped in it."""
    outcome, current = {}, None
    for line in lines:
        m = START.match(line)
        if m:
            current = m[1]
            outcome[current] = verdict(m[2])
        elif line.startswith("test result:") or line == "failures:" or re.fullmatch(r"running \d+ tests?", line):
            current = None
        elif current and outcome[current] is None:
            outcome[current] = verdict(line)
    return outcome


def timing(m, key):
    median = m.get(f"{key}_ms_median")
    if median is None:
        return None
    return median, m[f"{key}_ms_min"], m[f"{key}_ms_max"]


def cell(t):
    return "—" if t is None else f"{t[0]:.4g} [{t[1]:.4g}, {t[2]:.4g}]"


def ratio(a, b, digits=2):
    return "—" if a is None or b is None else f"{a[0] / b[0]:.{digits}f}"


def table(titles, rows, text=()):
    """A Markdown table: the first column and those in `text` left-aligned, the numbers right."""
    print("| " + " | ".join(titles) + " |")
    print("|" + "|".join("---" if i == 0 or i in text else "---:" for i in range(len(titles))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: summarise.py REPORT")
    with open(sys.argv[1]) as f:
        parts = sections(f.read())

    # A test binary's output runs on past its own notes (a run that stopped, the binary's failure).
    binaries, current = {}, None
    for header, lines in parts:
        note = header.startswith(("STOPPED", "TIMED OUT", "SKIPPED")) or header == f"{current} FAILED"
        if re.fullmatch(r"[a-z0-9_]+", header):
            current = header
            binaries.setdefault(current, {"lines": [], "stopped": set(), "failed": False})
            binaries[current]["lines"].extend(lines)
        elif current and note:
            binary = binaries[current]
            binary["lines"].extend(lines)
            m = re.match(r"STOPPED in (\S+)", header)
            if m:
                binary["stopped"].add(m[1])
            binary["failed"] |= header == f"{current} FAILED"
        else:
            current = None
    print("Tests:\n")
    rows = []
    for name, binary in binaries.items():
        outcome = tests(binary["lines"])
        # A test a run stopped in is stopped whatever its last line looked like.
        for test in binary["stopped"]:
            outcome[test] = None
        passed = sum(v == "ok" for v in outcome.values())
        failed = sorted(t for t, v in outcome.items() if v == "FAILED")
        stopped = sorted(t for t, v in outcome.items() if v is None)
        rows.append([name, "FAILED" if binary["failed"] else "passed", str(passed), str(len(failed)),
                     ", ".join(failed) or "—", ", ".join(stopped) or "—"])
    table(["binary", "binary's outcome", "tests passed", "tests failed", "failures",
           "stopped in (hung past the limit or crashed)"], rows, text=(1, 4, 5))

    bench, skipped = {}, {}
    peers = {}
    runs = []
    for header, lines in parts:
        m = re.match(r"dp bench --device \S+ --precision (\w+)", header)
        if m:
            for obj in json_lines(lines):
                if "skipped" in obj:
                    skipped[obj.get("model", "?")] = obj["skipped"]
                elif "model" in obj:
                    bench.setdefault(m[1], {})[obj["model"]] = obj
        elif header.startswith(("jax_dpsgd.py", "torch_dpsgd.py")):
            system = "jax" if header.startswith("jax") else "torch"
            for obj in json_lines(lines):
                if all(k in obj for k in ("model", "mode", "median_ms", "min_ms", "max_ms")):
                    peers[(system, obj["model"], obj["mode"])] = (obj["median_ms"], obj["min_ms"], obj["max_ms"])
        elif header == "dp train FAILED" and runs:
            runs[-1] = (runs[-1][0], "FAILED (or timed out) after: " + runs[-1][1])
        elif header.startswith("dp train"):
            last = [line for line in lines if line.strip()]
            runs.append((header, last[-1].strip() if last else "(no output)"))

    f32, bf16 = bench.get("f32", {}), bench.get("bf16", {})
    peer = lambda system, model, mode: peers.get((system, model, mode))
    print("Step times, f32, median [min, max] ms per step:\n")
    rows = []
    for model, m in f32.items():
        private, non_private = timing(m, "private"), timing(m, "nonprivate")
        jax = peer("jax", model, "private")
        rows.append([model, str(m.get("batch_size", "—")), cell(private), cell(timing(m, "private_overlapped")),
                     cell(timing(m, "private_noise_after")), cell(timing(m, "private_copies_behind")),
                     cell(non_private), ratio(private, non_private),
                     cell(jax), cell(peer("jax", model, "non-private")), ratio(private, jax),
                     cell(peer("torch", model, "private-hooks")), cell(peer("torch", model, "non-private"))])
    table(["model", "batch", "private", "overlapped", "noise after", "copies behind", "non-private",
           "private / non-private",
           "JAX private", "JAX non-private", "ours / JAX", "Opacus hooks", "PyTorch non-private"], rows)

    for model, why in skipped.items():
        print(f"- {model}: not measured ({why})")
    if skipped:
        print()

    # tests/gpu_programs.rs's gpu_step_phases: "MODEL batch N, PHASE: median MS ms".
    phases = {}
    for _, lines in parts:
        for line in lines:
            m = re.match(r"^(\S+) batch (\d+), (.+): median ([\d.]+) ms$", line.strip())
            if m:
                phases.setdefault(m[3], {})[f"{m[1]} (batch {m[2]})"] = float(m[4])
    if phases:
        print("Where a private step's time goes (each phase alone, synchronised, median ms):\n")
        models = list(dict.fromkeys(model for times in phases.values() for model in times))
        rows = [[phase] + [f"{times[model]:.3f}" if model in times else "—" for model in models]
                for phase, times in phases.items()]
        table(["phase"] + models, rows)

    print("bf16 against f32 (median ms per step):\n")
    rows = []
    for model, m in bf16.items():
        private, f32_private = timing(m, "private"), timing(f32.get(model, {}), "private")
        rows.append([model, cell(f32_private), cell(private), ratio(f32_private, private),
                     cell(timing(m, "nonprivate")), ratio(private, timing(m, "nonprivate"))])
    table(["model", "f32 private", "bf16 private", "f32 / bf16", "bf16 non-private", "bf16 private / non-private"],
          rows)

    print("Issue 12's targets:\n")
    for model, m in f32.items():
        private, non_private, jax = timing(m, "private"), timing(m, "nonprivate"), peer("jax", model, "private")
        verdicts = []
        if private and jax:
            verdicts.append(f"≤ JAX: {'met' if private[0] <= jax[0] else 'not met'} ({private[0] / jax[0]:.2f}×)")
        if private and non_private:
            r = private[0] / non_private[0]
            verdicts.append(f"≤ 1.2× non-private: {'met' if r <= 1.2 else 'not met'} ({r:.2f}×)")
        if model in ("cifar10-cnn", "lstm"):
            b = timing(bf16.get(model, {}), "private")
            if private and b:
                s = private[0] / b[0]
                verdicts.append(f"bf16 ≥ 1.5× f32: {'met' if s >= 1.5 else 'not met'} ({s:.2f}×)")
            else:
                verdicts.append("bf16 ≥ 1.5× f32: not measured")
        print(f"- {model}: " + ("; ".join(verdicts) or "nothing measured"))
    print()

    print("Training runs (the last line of each):\n")
    for header, last in runs:
        print(f"- `{header}`: {last}")
    deadline = [header for header, _ in parts if header.startswith("SKIPPED")]
    if deadline:
        print("\nNot run, at the check's deadline:\n")
        for header in deadline:
            print(f"- `{header.split(': ', 1)[-1]}`")


if __name__ == "__main__":
    main()
