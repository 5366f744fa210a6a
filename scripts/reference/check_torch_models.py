"""Checks that `torch_models.py` rebuilds our models: one DP-SGD step of each against `dp step`.

    cargo build --release
    python3 scripts/reference/check_torch_models.py --dp target/release/dp [--models lstm,residual-cnn]

For each model: PyTorch's initial weights (its `state_dict`, F32 safetensors), a few examples of the
synthetic inputs `torch_dpsgd.py` times, and the clip norm C set to the median of the examples' gradient
norms (so that some are clipped and some are not). Then `dp step --noise-multiplier 0` on them, and the
same step in PyTorch in f64 as docs/CLI.md defines it: each example's loss (not divided by N) and its
gradient over all trainable parameters, the norms, the factors min(1, C/norm), the clipped sum / N, and
W - LR * g. The norms and the gradient recovered from the updated weights must agree to 1e-4 of their
scales (the largest norm; the largest coordinate of the whole gradient). Also checks that the model's
private build (Opacus's `DPLSTM` for the LSTM) computes the same logits as the non-private build from
the same weights. Exits non-zero on any difference.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from torch_models import MODELS, batch, build

EXAMPLES = 6
LR = 100.0  # large, so that the update stands out of the f32 rounding of the weights
TOLERANCE = 1e-4


def trainable(model):
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def reference_step(model, x, y, loss_of):
    """Per-example gradients in f64: (norms [N], gradient sum function of the factors)."""
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    y = y.double() if y.is_floating_point() else y
    params = trainable(model)
    per_example = []
    for i in range(len(x)):
        loss = loss_of(model(x[i : i + 1]), y[i : i + 1])
        per_example.append(torch.autograd.grad(loss, [p for _, p in params]))
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in grads)) for grads in per_example])

    def clipped_mean(clip):
        factors = torch.clamp(clip / norms, max=1.0)
        return {
            name: sum(f * grads[k] for f, grads in zip(factors, per_example)) / len(x)
            for k, (name, _) in enumerate(params)
        }

    return norms, clipped_mean


def relative_error(ours, reference):
    scale = reference.abs().max().item()
    return (ours - reference).abs().max().item() / max(scale, 1e-30)


def check(name, dp, workdir):
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

    norms, clipped_mean = reference_step(model, x, y, loss_of)
    clip = norms.median().item()
    gradient = clipped_mean(clip)

    init, inputs, labels = workdir / f"{name}.safetensors", workdir / f"{name}-x.npy", workdir / f"{name}-y.npy"
    out, norms_out = workdir / f"{name}-out.safetensors", workdir / f"{name}-norms.npy"
    save_file(weights, str(init))
    np.save(inputs, x.numpy())
    np.save(labels, y.numpy())
    command = [
        dp, "step", "--model", name, "--init", str(init),
        "--inputs", str(inputs), "--labels", str(labels),
        "--clip-norm", repr(clip), "--lr", repr(LR), "--noise-multiplier", "0",
        "--out", str(out), "--norms-out", str(norms_out),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        return False, f"{name}: dp step failed ({run.returncode}): {run.stderr.strip()}"

    norm_error = relative_error(torch.from_numpy(np.load(norms_out)).double(), norms)
    updated = load_file(str(out))
    keys = list(gradient)
    gradient_error = relative_error(
        torch.cat([((weights[k].double() - updated[k].double()) / LR).flatten() for k in keys]),
        torch.cat([gradient[k].flatten() for k in keys]),
    )
    untouched = [k for k in weights if k not in gradient and not torch.equal(updated[k], weights[k])]
    ok = norm_error <= TOLERANCE and gradient_error <= TOLERANCE and logits_gap <= 1e-5 and not untouched
    return ok, (
        f"{name}: {EXAMPLES} examples, C = {clip:.4g} ({int((norms > clip).sum())} clipped): norms within "
        f"{norm_error:.1e}, clipped mean gradient within {gradient_error:.1e} of their scales; private "
        f"build's logits within {logits_gap:.1e}" + (f"; frozen tensors changed: {untouched}" if untouched else "")
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp", required=True, help="the dp binary (cargo build --release: target/release/dp)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown model {', '.join(sorted(unknown))}: choose from {', '.join(MODELS)}")
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            ok, line = check(name, args.dp, Path(workdir))
            print(("ok    " if ok else "FAIL  ") + line, flush=True)
            failed |= not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
