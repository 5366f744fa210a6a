"""Timing and output shared by the reference scripts (`jax_dpsgd.py`, `torch_dpsgd.py`).

Both time a step the way `dp bench` does (warm-up steps, then each step timed alone; median, min and max
in milliseconds) and print one line per (model, mode): text by default, one JSON object with `--json`.
The JSON keys are the same in both scripts, so their lines can be read by the same code.
"""

import json
import statistics
import time


def default_warmup(steps):
    """`dp bench`'s default: a fifth of the timed steps, at least 2."""
    return max(2, steps // 5)


def time_steps(step, steps, warmup):
    """Runs `step()` `warmup` times untimed, then `steps` times each timed alone.

    `step` must return only when its work is done (JAX: after `block_until_ready`). Returns the median,
    minimum and maximum in milliseconds.
    """
    if steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {steps}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times), max(times)


def result(*, model, mode, system, parameters, batch_size, threads, steps, warmup, timing, **extra):
    """One measurement as a dictionary with the keys both scripts print (extra keys left out when None)."""
    median, low, high = timing
    return {
        "model": model,
        "mode": mode,
        "system": system,
        "parameters": parameters,
        "batch_size": batch_size,
        "threads": threads,
        "steps": steps,
        "warmup": warmup,
        "median_ms": median,
        "min_ms": low,
        "max_ms": high,
        **{key: value for key, value in extra.items() if value is not None},
    }


def emit(measurement, as_json):
    """Prints one measurement: a JSON object, or an aligned text line with the notes after a `|`."""
    if as_json:
        print(json.dumps(measurement), flush=True)
        return
    m = measurement
    line = (
        f"{m['model']:<13} {m['mode']:<17} median {m['median_ms']:>11.4f} ms  min {m['min_ms']:>11.4f}"
        f"  max {m['max_ms']:>11.4f}  | {m['system']}, {m['parameters']} parameters, batch {m['batch_size']},"
        f" {m['threads']} threads, {m['steps']} steps after {m['warmup']} warm-up"
    )
    if m.get("note"):
        line += f"; {m['note']}"
    print(line, flush=True)
