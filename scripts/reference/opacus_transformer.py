"""PyTorch + Opacus reference for `dp bench --model text-transformer`: the same transformer, timed.

The architecture of `src/models/text_transformer.rs`, built from PyTorch's own modules: token
embedding 10,004 x 128, a learned position embedding (an `nn.Embedding` of the 128 positions, so that
Opacus has a per-example rule for it), two `nn.TransformerEncoderLayer(128, 4, 256, dropout=0,
activation="gelu", batch_first=True, norm_first=True)`, a final layer norm, the mean over positions and
a linear layer to 2 classes: 1,562,370 parameters, as `dp describe --model text-transformer` counts.

    pip install torch opacus==1.6.0
    python3 scripts/reference/opacus_transformer.py --batch-size 32 --steps 10

Prints one JSON object per mode with the median milliseconds of a step on a fixed batch of random
tokens (T = 128), after warm-up steps:
- `torch`: non-private, the gradient of the mean loss and an SGD update;
- `opacus-hooks`: Opacus's per-example gradients by hooks, flat clipping at C = 1, noise σ = 1, SGD;
- `opacus-ghost`: Opacus's ghost clipping (fast gradient clipping: per-example norms without the
  per-example gradients, then a second backward of the reweighted loss), same C, σ and SGD.
Opacus replaces `nn.MultiheadAttention` with its `DPMultiheadAttention` (ModuleValidator.fix), which has
the same parameters; the parameter count is checked after the replacement.
"""

import argparse
import json

import torch
from torch import nn

from step_timing import time_steps

VOCAB, SEQ, DIM, HEADS, HIDDEN, LAYERS, CLASSES = 10_004, 128, 128, 4, 256, 2, 2
PARAMS = 1_562_370


class TextTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(SEQ, DIM)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                DIM, HEADS, HIDDEN, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(LAYERS)
        )
        self.final_ln = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)
        self.register_buffer("positions", torch.arange(SEQ), persistent=False)

    def forward(self, tokens):
        # Positions indexed per example, so that Opacus sees the batch dimension in the position embedding.
        h = self.embedding(tokens) + self.position(self.positions.expand(tokens.shape[0], SEQ).contiguous())
        for layer in self.layers:
            h = layer(h)
        return self.head(self.final_ln(h).mean(dim=1))


def batch(size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (size, SEQ), generator=generator)
    labels = torch.randint(0, CLASSES, (size,), generator=generator)
    return tokens, labels


def non_private(size, steps, warmup):
    model = TextTransformer()
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMS, count
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    tokens, labels = batch(size)

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(tokens), labels).backward()
        optimizer.step()

    return time_steps(step, steps, warmup)


def private(size, steps, warmup, mode):
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    model = ModuleValidator.fix(TextTransformer())
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMS, count
    tokens, labels = batch(size)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, labels), batch_size=size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = PrivacyEngine()
    made = engine.make_private(
        module=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    if mode == "ghost":
        model, optimizer, criterion, _ = made
    else:
        model, optimizer, _ = made
        criterion = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(tokens), labels).backward()
        optimizer.step()

    return time_steps(step, steps, warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="torch,opacus-hooks,opacus-ghost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for mode in args.modes.split(","):
        if mode == "torch":
            median, low, high = non_private(args.batch_size, args.steps, args.warmup)
        elif mode in ("opacus-hooks", "opacus-ghost"):
            median, low, high = private(args.batch_size, args.steps, args.warmup, mode.split("-")[1])
        else:
            raise SystemExit(f"unknown mode {mode!r}: torch, opacus-hooks or opacus-ghost")
        print(json.dumps({
            "model": "text-transformer", "mode": mode, "batch_size": args.batch_size,
            "median_ms": round(median, 2), "min_ms": round(low, 2), "max_ms": round(high, 2),
            "torch": torch.__version__, "threads": args.threads,
        }), flush=True)


if __name__ == "__main__":
    main()
