"""Our built-in models rebuilt in PyTorch: the same architectures, layer names and parameter counts.

Each class is the model of the `src/models/` file it names, built from PyTorch's modules, with the
attribute names of our layers, so that its `state_dict()` is what `dp step --init` reads (docs/CLI.md)
and `check_against_dp.py` can compare a step of each against ours. `build` checks the trainable
parameter count against `our_models.PARAMETERS`.

The LSTM. Ours (`src/models/lstm_net.rs`) has ONE bias per gate, PyTorch's `bias_ih_l0 + bias_hh_l0`,
which only ever appear summed. Here `bias_hh_l0` is fixed at zero and frozen (`requires_grad=False`), so
the function and the trainable parameters (1,081,002) are ours; the frozen vector is not counted and
`dp step` reads it as the zero it is. Non-private builds use `nn.LSTM` (PyTorch's fused kernel); Opacus
cannot take per-example gradients of `nn.LSTM`, so private builds use its `DPLSTM` (the same parameters
and names; a Python loop over time of `RNNLinear` layers whose per-example gradients add up over the
256 steps).
"""

import torch
from torch import nn

from our_models import check_parameters

VOCAB, SEQ = 10_004, 256


class AdultLogReg(nn.Module):
    """src/models/logreg.rs: one logit from the 104 features (its loss: BCE with logits)."""

    def __init__(self, private):
        super().__init__()
        self.fc = nn.Linear(104, 1)

    def forward(self, x):
        return self.fc(x).squeeze(1)


class AdultFfnn(nn.Module):
    """src/models/ffnn.rs: 104 -> 50 -> relu -> 2."""

    def __init__(self, private):
        super().__init__()
        self.fc1 = nn.Linear(104, 50)
        self.fc2 = nn.Linear(50, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class MnistCnn(nn.Module):
    """src/models/mnist_cnn.rs: conv 8x8/2 pad 3, relu, max-pool 2/1, conv 4x4/2, relu, max-pool 2/1,
    flatten (512), linear 32, relu, linear 10."""

    def __init__(self, private):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 8, stride=2, padding=3)
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2)
        self.fc1 = nn.Linear(512, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2, stride=1)
        h = nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2, stride=1)
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


class Cifar10Cnn(nn.Module):
    """src/models/cifar10_cnn.rs: eight 3x3 convs, padding 1 (3->32->32, avg-pool 2, ->64->64, avg-pool 2,
    ->128->128, avg-pool 2, ->256->10), relu after all but the last, global average pool of the logits."""

    WIDTHS = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 10)]

    def __init__(self, private):
        super().__init__()
        for i, (c_in, c_out) in enumerate(self.WIDTHS, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1))

    def forward(self, x):
        h = x
        for i in range(1, 8):
            h = torch.relu(getattr(self, f"conv{i}")(h))
            if i in (2, 4, 6):
                h = nn.functional.avg_pool2d(h, 2)
        return self.conv8(h).mean(dim=(2, 3))


class EmbeddingNet(nn.Module):
    """src/models/embedding_net.rs: embedding 10,004 x 16, mean over the 256 tokens, linear 16 -> 2."""

    def __init__(self, private):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, tokens):
        return self.fc(self.embedding(tokens).mean(dim=1))


class LstmNet(nn.Module):
    """src/models/lstm_net.rs: embedding 10,004 x 100, LSTM of 100 units with one bias per gate (see the
    module), mean of the output sequence, linear 100 -> 2."""

    def __init__(self, private):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 100)
        if private:
            from opacus.layers import DPLSTM

            self.lstm = DPLSTM(100, 100, batch_first=True)
        else:
            self.lstm = nn.LSTM(100, 100, batch_first=True)
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()
        self.lstm.bias_hh_l0.requires_grad_(False)
        self.fc = nn.Linear(100, 2)

    def forward(self, tokens):
        outputs, _ = self.lstm(self.embedding(tokens))
        return self.fc(outputs.mean(dim=1))


class ResidualCnn(nn.Module):
    """src/models/residual.rs: stem conv 3->16 + group norm (4 groups) + relu, two residual blocks (conv,
    group norm, relu, conv, group norm, skip added, relu), global average pool, linear 16 -> 10."""

    def __init__(self, private):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.stem_norm = nn.GroupNorm(4, 16)
        for block in ("block1", "block2"):
            for i in (1, 2):
                setattr(self, f"{block}_conv{i}", nn.Conv2d(16, 16, 3, padding=1))
                setattr(self, f"{block}_norm{i}", nn.GroupNorm(4, 16))
        self.head = nn.Linear(16, 10)

    def block(self, name, h):
        layer = lambda kind: getattr(self, f"{name}_{kind}")
        r = layer("norm2")(layer("conv2")(torch.relu(layer("norm1")(layer("conv1")(h)))))
        return torch.relu(h + r)

    def forward(self, x):
        h = torch.relu(self.stem_norm(self.stem(x)))
        h = self.block("block2", self.block("block1", h))
        return self.head(h.mean(dim=(2, 3)))


def features(shape):
    return lambda generator, b: torch.rand((b, *shape), generator=generator)


def tokens(generator, b):
    return torch.randint(0, VOCAB, (b, SEQ), generator=generator)


# name (as `dp models` lists it) -> (class, inputs(generator, B), classes; 0: one logit, BCE with logits).
MODELS = {
    "logreg": (AdultLogReg, features((104,)), 0),
    "ffnn": (AdultFfnn, features((104,)), 2),
    "mnist-cnn": (MnistCnn, features((1, 28, 28)), 10),
    "cifar10-cnn": (Cifar10Cnn, features((3, 32, 32)), 10),
    "embedding": (EmbeddingNet, tokens, 2),
    "lstm": (LstmNet, tokens, 2),
    "residual-cnn": (ResidualCnn, features((3, 32, 32)), 10),
}


def build(name, private):
    """The model with PyTorch's initialisation, its trainable parameter count checked against ours."""
    model_class, _, _ = MODELS[name]
    model = model_class(private)
    check_parameters(name, sum(p.numel() for p in model.parameters() if p.requires_grad))
    return model


def batch(name, size, seed=0):
    """Synthetic inputs of the model's shapes (uniform [0, 1) features or token ids below the vocabulary),
    valid labels, and the model's loss (mean over the batch)."""
    _, inputs, classes = MODELS[name]
    generator = torch.Generator().manual_seed(seed)
    x = inputs(generator, size)
    if classes == 0:
        return x, torch.randint(0, 2, (size,), generator=generator).float(), nn.BCEWithLogitsLoss()
    return x, torch.randint(0, classes, (size,), generator=generator), nn.CrossEntropyLoss()
