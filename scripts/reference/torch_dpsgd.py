"""PyTorch and Opacus reference for `dp bench`: the six paper models and the residual CNN, timed.

The same architectures as `src/models/*.rs` built from PyTorch's modules (`torch_models.py`), their
parameter counts checked against ours (`dp models`, stated in `our_models.py`), with synthetic inputs
of the same shapes as `dp bench --model NAME --batch-size B` (uniform [0, 1) features, token ids below
the vocabulary, valid labels) and PyTorch's initialisation.

    pip install torch opacus==1.6.0
    python3 scripts/reference/torch_dpsgd.py --batch-size 128 --steps 30 [--models lstm,cifar10-cnn] [--json]
    python3 scripts/reference/torch_dpsgd.py --device cuda --steps 30   # on a GPU: each step synchronises

Modes, each timed on one fixed batch (warm-up steps, then each step alone; median, min and max in ms):
- `non-private`: PyTorch, f32: zero the gradients, forward, mean loss, backward, SGD update.
- `non-private-bf16`: the same step with the forward and the loss under
  `torch.autocast(DEVICE, dtype=torch.bfloat16)` (PyTorch's mixed precision: the products in bf16 where
  the CPU has the instructions, the parameters, their gradients and the update in f32).
- `private-hooks`: Opacus's DP-SGD with per-example gradients from its hooks (`grad_sample_mode="hooks"`),
  flat clipping at C = 1, Gaussian noise σ = 1 (std σC on the sum), divided by the batch size, SGD.
- `private-ghost`: Opacus's ghost clipping (`grad_sample_mode="ghost"`): per-example norms, a second
  backward of the loss reweighted by the clip factors, the same noise and SGD. Opacus 1.6 has ghost norms
  for `nn.Linear` and `nn.Embedding` only; every other layer with parameters (Conv2d, GroupNorm, the
  LSTM's linear maps) falls back to "fast gradient clipping": its per-example gradients are formed to
  take their norms. Each ghost line names the layers on each path.
Opacus's Poisson sampling is bypassed as in `opacus_transformer.py`: `make_private(poisson_sampling=False)`
on a data loader of exactly one batch of the given size, whose loader is never iterated; the step feeds
the same fixed batch every time, and the optimizer divides the noisy sum by that batch size.

The architectures are in `torch_models.py` (the LSTM's one bias per gate: see there);
`check_against_dp.py` compares one step of each against `dp step`. Opacus draws its noise from
PyTorch's default generator (`secure_mode` off), ours from ChaCha20.
"""

import argparse

import torch

from our_models import PARAMETERS
from step_timing import default_warmup, emit, result, time_steps
from torch_models import MODELS, batch, build

MODES = ("non-private", "non-private-bf16", "private-hooks", "private-ghost")


def on(device, name, size):
    """The model's synthetic batch and loss, moved to `device`."""
    x, y, criterion = batch(name, size)
    return x.to(device), y.to(device), criterion


def finished(device, step):
    """`step` returning only when its work is done: on a GPU, after the device synchronises."""
    if device.type != "cuda":
        return step

    def synchronised():
        step()
        torch.cuda.synchronize(device)

    return synchronised


def non_private_step(name, size, bf16, device):
    model = build(name, private=False).to(device)
    x, y, criterion = on(device, name, size)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    return finished(device, step), None


def ghost_paths(model):
    """Which trainable layer types Opacus 1.6 handles by ghost norms and which by per-example gradients."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.layers import DPLSTM

    ghost, per_example = set(), set()
    for module in model.modules():
        if isinstance(module, DPLSTM):
            continue  # a container: its RNNLinear layers are listed themselves
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        kind = type(module).__name__
        (ghost if type(module) in GradSampleModuleFastGradientClipping.NORM_SAMPLERS else per_example).add(kind)
    return (
        f"ghost norms: {', '.join(sorted(ghost)) or 'none'}; "
        f"per-example gradients (fast gradient clipping): {', '.join(sorted(per_example)) or 'none'}"
    )


def private_step(name, size, grad_sample_mode, device):
    from opacus import PrivacyEngine

    model = build(name, private=True).to(device)
    x, y, criterion = on(device, name, size)
    # One batch of exactly `size` examples, never iterated: with poisson_sampling=False Opacus keeps
    # the loader's fixed batch size, which the optimizer uses as the expected batch size.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=size)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    made = PrivacyEngine().make_private(
        module=model,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode=grad_sample_mode,
    )
    note = None
    if grad_sample_mode == "ghost":
        model, optimizer, criterion, _ = made
        note = ghost_paths(model)
    else:
        model, optimizer, _ = made

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    return finished(device, step), note


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: a fifth of --steps, at least 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N (each timed step then synchronises)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    args = parser.parse_args()
    device = torch.device(args.device)
    models, modes = args.models.split(","), args.modes.split(",")
    for requested, known, what in ((models, MODELS, "model"), (modes, MODES, "mode")):
        unknown = set(requested) - set(known)
        if unknown:
            raise SystemExit(f"unknown {what} {', '.join(sorted(unknown))}: choose from {', '.join(known)}")
    warmup = default_warmup(args.steps) if args.warmup is None else args.warmup
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    versions = f"torch {torch.__version__}"
    if device.type == "cuda":
        versions += f" on {torch.cuda.get_device_name(device)}"
    for name in models:
        for mode in modes:
            if mode.startswith("private"):
                import opacus

                system = f"opacus {opacus.__version__}, {versions}"
                step, note = private_step(name, args.batch_size, mode.removeprefix("private-"), device)
            else:
                system = versions
                step, note = non_private_step(name, args.batch_size, bf16=mode.endswith("bf16"), device=device)
            emit(
                result(
                    model=name,
                    mode=mode,
                    system=system,
                    parameters=PARAMETERS[name],
                    batch_size=args.batch_size,
                    threads=args.threads,
                    steps=args.steps,
                    warmup=warmup,
                    timing=time_steps(step, args.steps, warmup),
                    note=note,
                ),
                args.json,
            )


if __name__ == "__main__":
    main()
