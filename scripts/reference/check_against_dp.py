"""Checks that the reference scripts rebuild our models: one DP-SGD step of each against `dp step`.

    cargo build --release
    python3 scripts/reference/check_against_dp.py --dp target/release/dp [--systems torch,jax] [--models lstm]

For each system (`torch_models.py` for `torch_dpsgd.py`, the models of `jax_dpsgd.py`) and model: the
system's initial weights under PyTorch's state-dict names (F32 safetensors), a few examples of the
synthetic inputs its timing script uses, and the clip norm C set to the median of the examples'
gradient norms (so that some are clipped and some are not). Then `dp step --noise-multiplier 0` on them,
and the same step in the system in f64 as docs/CLI.md defines it: each example's loss (not divided by N)
and its gradient over all trainable parameters, the norms, the factors min(1, C/norm), the clipped sum
/ N, and W - LR * g. The norms and the gradient recovered from the updated weights must agree to 1e-4 of
their scales (the largest norm; the largest coordinate of the whole gradient). For PyTorch it also
checks that the model's private build (Opacus's `DPLSTM` for the LSTM) computes the same logits as the
non-private build from the same weights. Exits non-zero on any difference.
"""

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import numpy as np
from safetensors.numpy import load_file, save_file

from our_models import PARAMETERS

EXAMPLES = 6
LR = 100.0  # large, so that the update stands out of the f32 rounding of the weights
TOLERANCE = 1e-4


@dataclass
class Reference:
    """One model in one system: what `dp step` is given, and the system's own f64 step."""

    weights: Dict[str, np.ndarray]  # f32, PyTorch's state-dict names, frozen tensors included
    inputs: np.ndarray
    labels: np.ndarray
    norms: np.ndarray  # f64 [N]
    clipped_mean: Callable[[float], Dict[str, np.ndarray]]  # C -> f64 gradient per trainable tensor
    logits_gap: float = 0.0  # private build against non-private build (PyTorch only)


def clipped_mean_of(norms, per_example):
    """The clipped sum / N of per-example gradients [{name: array}], as a function of C."""

    def clipped_mean(clip):
        factors = np.minimum(1.0, clip / norms)
        return {
            name: sum(f * grads[name] for f, grads in zip(factors, per_example)) / len(norms)
            for name in per_example[0]
        }

    return clipped_mean


def torch_reference(name):
    import torch

    from torch_models import batch, build

    torch.manual_seed(0)
    model = build(name, private=False)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    x, y, criterion = batch(name, EXAMPLES, seed=1)
    loss_of = type(criterion)(reduction="sum")

    private_model = build(name, private=True)
    # Child by child: Opacus's DPLSTM maps PyTorch's LSTM names onto its own in its own load_state_dict,
    # which a parent's load_state_dict does not call.
    for child_name, child in private_model.named_children():
        prefix = child_name + "."
        child.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    with torch.no_grad():
        logits_gap = (private_model(x) - model(x)).abs().max().item()

    model = model.double()
    x64 = x.double() if x.is_floating_point() else x
    y64 = y.double() if y.is_floating_point() else y
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    per_example = []
    for i in range(EXAMPLES):
        loss = loss_of(model(x64[i : i + 1]), y64[i : i + 1])
        grads = torch.autograd.grad(loss, [p for _, p in params])
        per_example.append({k: g.numpy() for (k, _), g in zip(params, grads)})
    norms = np.sqrt([sum((g**2).sum() for g in grads.values()) for grads in per_example])
    return Reference(
        weights={k: v.numpy() for k, v in weights.items()},
        inputs=x.numpy(),
        labels=y.numpy(),
        norms=norms,
        clipped_mean=clipped_mean_of(norms, per_example),
        logits_gap=logits_gap,
    )


# jax_dpsgd.py's parameter names -> PyTorch's state-dict names.
JAX_LEAF_NAMES = {"w": "weight", "b": "bias"}
JAX_LSTM_NAMES = {"w_ih": "lstm.weight_ih_l0", "w_hh": "lstm.weight_hh_l0", "bias": "lstm.bias_ih_l0"}


def torch_names(params):
    """A jax_dpsgd.py parameter dictionary as flat arrays under PyTorch's state-dict names."""
    flat = {}
    for layer, value in params.items():
        if isinstance(value, dict):
            for leaf, array in value.items():
                flat[f"{layer}.{JAX_LEAF_NAMES[leaf]}"] = np.asarray(array)
        elif layer == "embedding":
            flat["embedding.weight"] = np.asarray(value)
        else:
            flat[JAX_LSTM_NAMES[layer]] = np.asarray(value)
    return flat


def jax_reference(name):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from jax_dpsgd import MODELS

    init, loss, inputs, classes = MODELS[name]()
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), init(k1))
    x = inputs(k2, EXAMPLES)
    x = x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.int64)
    y = jax.random.randint(k3, (EXAMPLES,), 0, classes).astype(jnp.int64)
    y = y.astype(jnp.float32) if name == "logreg" else y

    params64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    x64 = x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
    y64 = y.astype(jnp.float64) if name == "logreg" else y
    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params64, x64, y64)
    flat = torch_names(grads)
    per_example = [{k: np.asarray(g[i]) for k, g in flat.items()} for i in range(EXAMPLES)]
    norms = np.sqrt([sum((g**2).sum() for g in example.values()) for example in per_example])
    weights = torch_names(params)
    if "lstm.weight_ih_l0" in weights:
        # dp step reads PyTorch's two LSTM biases; jax_dpsgd.py has the one (their sum).
        weights["lstm.bias_hh_l0"] = np.zeros_like(weights["lstm.bias_ih_l0"])
    return Reference(
        weights=weights,
        inputs=np.asarray(x),
        labels=np.asarray(y),
        norms=norms,
        clipped_mean=clipped_mean_of(norms, per_example),
    )


SYSTEMS = {"torch": torch_reference, "jax": jax_reference}
MODELS = list(PARAMETERS)  # both systems rebuild all of them


def relative_error(ours, reference):
    scale = np.abs(reference).max()
    return np.abs(ours - reference).max() / max(scale, 1e-30)


def check(system, name, dp, workdir):
    reference = SYSTEMS[system](name)
    # The lower median: the examples above it (half of them, rounded down) are clipped.
    clip = float(np.sort(reference.norms)[(EXAMPLES - 1) // 2])
    gradient = reference.clipped_mean(clip)

    stem = workdir / f"{system}-{name}"
    init, inputs, labels = stem.with_suffix(".safetensors"), Path(f"{stem}-x.npy"), Path(f"{stem}-y.npy")
    out, norms_out = Path(f"{stem}-out.safetensors"), Path(f"{stem}-norms.npy")
    save_file(reference.weights, str(init))
    np.save(inputs, reference.inputs)
    np.save(labels, reference.labels)
    command = [
        dp, "step", "--model", name, "--init", str(init),
        "--inputs", str(inputs), "--labels", str(labels),
        "--clip-norm", repr(clip), "--lr", repr(LR), "--noise-multiplier", "0",
        "--out", str(out), "--norms-out", str(norms_out),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        return False, f"{system} {name}: dp step failed ({run.returncode}): {run.stderr.strip()}"

    norm_error = relative_error(np.load(norms_out).astype(np.float64), reference.norms)
    updated = load_file(str(out))
    before = reference.weights
    keys = list(gradient)
    gradient_error = relative_error(
        np.concatenate([((before[k].astype(np.float64) - updated[k]) / LR).ravel() for k in keys]),
        np.concatenate([gradient[k].ravel() for k in keys]),
    )
    changed_frozen = [k for k in before if k not in gradient and not np.array_equal(updated[k], before[k])]
    ok = (
        norm_error <= TOLERANCE
        and gradient_error <= TOLERANCE
        and reference.logits_gap <= 1e-5
        and not changed_frozen
    )
    clipped = int((reference.norms > clip).sum())
    line = (
        f"{system} {name}: {EXAMPLES} examples, C = {clip:.4g} ({clipped} clipped): norms within "
        f"{norm_error:.1e}, clipped mean gradient within {gradient_error:.1e} of their scales"
    )
    if system == "torch":
        line += f"; private build's logits within {reference.logits_gap:.1e}"
    if changed_frozen:
        line += f"; frozen tensors changed: {changed_frozen}"
    return ok, line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp", required=True, help="the dp binary (cargo build --release: target/release/dp)")
    parser.add_argument("--systems", default="torch,jax", help="comma-separated, of: torch, jax")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    args = parser.parse_args()
    systems, models = args.systems.split(","), args.models.split(",")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown system {', '.join(sorted(unknown))}: choose from torch, jax")
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown model {', '.join(sorted(unknown))}: choose from {', '.join(MODELS)}")
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        for system in systems:
            for name in models:
                ok, line = check(system, name, args.dp, Path(workdir))
                print(("ok    " if ok else "FAIL  ") + line, flush=True)
                failed |= not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
