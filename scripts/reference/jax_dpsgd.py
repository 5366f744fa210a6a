"""JAX reference for `dp bench`: the founding paper's jit + vmap DP-SGD on the six models and the residual CNN.

Same shapes, parameter counts and synthetic data as `dp bench --model NAME --batch-size B`; prints one
line per (model, mode) with the median, min and max milliseconds of a step (the format of
`torch_dpsgd.py`, from `step_timing.py`; `--json` for one JSON object per line).

    pip install "jax[cpu]==0.10.2"
    python3 scripts/reference/jax_dpsgd.py --batch-size 128 --steps 10 [--models lstm,embedding] [--json]

A private step is the whole DP-SGD step on a fixed batch: per-example gradients (vmap of grad),
per-example global norms, clip, sum, Gaussian noise, SGD update, all in one jitted function. A
non-private step is the gradient of the mean loss and the SGD update. Compilation is excluded
(warm-up steps), every timed step ends with block_until_ready. XLA sizes its CPU thread pool from the
CPUs the process may run on: `taskset -c 0,1` runs it on two, like `torch_dpsgd.py --threads 2`.
"""

import argparse
import os

import jax
import jax.numpy as jnp
from jax import lax

from our_models import check_parameters
from step_timing import default_warmup, emit, result, time_steps

VOCAB, SEQ = 10_004, 256


def uniform(key, shape, fan_in):
    bound = 1.0 / fan_in**0.5
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def linear_params(key, n_in, n_out):
    k1, k2 = jax.random.split(key)
    return {"w": uniform(k1, (n_out, n_in), n_in), "b": uniform(k2, (n_out,), n_in)}


def linear(p, x):
    return x @ p["w"].T + p["b"]


def conv_params(key, c_in, c_out, k):
    k1, k2 = jax.random.split(key)
    fan_in = c_in * k * k
    return {"w": uniform(k1, (c_out, c_in, k, k), fan_in), "b": uniform(k2, (c_out,), fan_in)}


def conv(p, x, stride=1, padding=0):
    """One example, x [C, H, W] (vmap adds the batch)."""
    y = lax.conv_general_dilated(
        x[None], p["w"], (stride, stride), [(padding, padding)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return y[0] + p["b"][:, None, None]


def max_pool(x, k, s):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k), (1, s, s), "VALID")


def avg_pool(x, k):
    return lax.reduce_window(x, 0.0, lax.add, (1, k, k), (1, k, k), "VALID") / (k * k)


def group_norm_params(channels):
    return {"w": jnp.ones(channels), "b": jnp.zeros(channels)}


def group_norm(p, x, groups, eps=1e-5):
    """One example, x [C, H, W]: each group of C / groups channels standardised over its values."""
    c, h, w = x.shape
    g = x.reshape(groups, c // groups, h, w)
    mean = g.mean(axis=(1, 2, 3), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    g = (g - mean) / jnp.sqrt(var + eps)
    return g.reshape(c, h, w) * p["w"][:, None, None] + p["b"][:, None, None]


def cross_entropy(logits, label):
    return -jax.nn.log_softmax(logits)[label]


# Each model: (init(key) -> params, loss(params, x, y) for ONE example, input maker(key, B), classes).


def logreg():
    def init(key):
        return {"fc": linear_params(key, 104, 1)}

    def loss(p, x, y):
        z = linear(p["fc"], x)[0]
        return jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))

    return init, loss, lambda key, b: jax.random.uniform(key, (b, 104)), 2


def ffnn():
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"fc1": linear_params(k1, 104, 50), "fc2": linear_params(k2, 50, 2)}

    def loss(p, x, y):
        return cross_entropy(linear(p["fc2"], jax.nn.relu(linear(p["fc1"], x))), y)

    return init, loss, lambda key, b: jax.random.uniform(key, (b, 104)), 2


def mnist_cnn():
    def init(key):
        k = jax.random.split(key, 4)
        return {
            "conv1": conv_params(k[0], 1, 16, 8),
            "conv2": conv_params(k[1], 16, 32, 4),
            "fc1": linear_params(k[2], 512, 32),
            "fc2": linear_params(k[3], 32, 10),
        }

    def loss(p, x, y):
        h = max_pool(jax.nn.relu(conv(p["conv1"], x, 2, 3)), 2, 1)
        h = max_pool(jax.nn.relu(conv(p["conv2"], h, 2)), 2, 1)
        h = jax.nn.relu(linear(p["fc1"], h.reshape(-1)))
        return cross_entropy(linear(p["fc2"], h), y)

    return init, loss, lambda key, b: jax.random.uniform(key, (b, 1, 28, 28)), 10


def cifar10_cnn():
    widths = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 10)]

    def init(key):
        keys = jax.random.split(key, len(widths))
        return {f"conv{i + 1}": conv_params(k, a, b, 3) for i, (k, (a, b)) in enumerate(zip(keys, widths))}

    def loss(p, x, y):
        h = x
        for i in range(1, 8):
            h = jax.nn.relu(conv(p[f"conv{i}"], h, 1, 1))
            if i in (2, 4, 6):
                h = avg_pool(h, 2)
        logits = conv(p["conv8"], h, 1, 1).mean(axis=(1, 2))
        return cross_entropy(logits, y)

    return init, loss, lambda key, b: jax.random.uniform(key, (b, 3, 32, 32)), 10


def residual_cnn():
    """src/models/residual.rs (beyond the paper): stem conv + group norm + relu, two residual blocks,
    global average pool, linear to 10."""
    convs = ["stem", "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]

    def init(key):
        keys = jax.random.split(key, len(convs) + 1)
        params = {name: conv_params(k, 3 if name == "stem" else 16, 16, 3) for name, k in zip(convs, keys)}
        for norm in ["stem_norm", "block1_norm1", "block1_norm2", "block2_norm1", "block2_norm2"]:
            params[norm] = group_norm_params(16)
        params["head"] = linear_params(keys[-1], 16, 10)
        return params

    def loss(p, x, y):
        h = jax.nn.relu(group_norm(p["stem_norm"], conv(p["stem"], x, 1, 1), 4))
        for block in ("block1", "block2"):
            r = jax.nn.relu(group_norm(p[f"{block}_norm1"], conv(p[f"{block}_conv1"], h, 1, 1), 4))
            r = group_norm(p[f"{block}_norm2"], conv(p[f"{block}_conv2"], r, 1, 1), 4)
            h = jax.nn.relu(h + r)
        return cross_entropy(linear(p["head"], h.mean(axis=(1, 2))), y)

    return init, loss, lambda key, b: jax.random.uniform(key, (b, 3, 32, 32)), 10


def tokens(key, b):
    return jax.random.randint(key, (b, SEQ), 0, VOCAB)


def embedding():
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"embedding": jax.random.normal(k1, (VOCAB, 16)), "fc": linear_params(k2, 16, 2)}

    def loss(p, x, y):
        return cross_entropy(linear(p["fc"], p["embedding"][x].mean(axis=0)), y)

    return init, loss, tokens, 2


def lstm():
    hidden = 100

    def init(key):
        k = jax.random.split(key, 5)
        return {
            "embedding": jax.random.normal(k[0], (VOCAB, 100)),
            "w_ih": uniform(k[1], (4 * hidden, 100), hidden),
            "w_hh": uniform(k[2], (4 * hidden, hidden), hidden),
            "bias": uniform(k[3], (4 * hidden,), hidden),
            "fc": linear_params(k[4], hidden, 2),
        }

    def loss(p, x, y):
        xs = p["embedding"][x] @ p["w_ih"].T + p["bias"]

        def cell(carry, x_t):
            h, c = carry
            i, f, g, o = jnp.split(x_t + p["w_hh"] @ h, 4)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros(hidden)
        _, hs = lax.scan(cell, (zeros, zeros), xs)
        return cross_entropy(linear(p["fc"], hs.mean(axis=0)), y)

    return init, loss, tokens, 2


MODELS = {
    "logreg": logreg,
    "ffnn": ffnn,
    "mnist-cnn": mnist_cnn,
    "cifar10-cnn": cifar10_cnn,
    "embedding": embedding,
    "lstm": lstm,
    "residual-cnn": residual_cnn,
}


def steps(loss, lr=0.1, clip=1.0, sigma=1.0):
    def private(params, x, y, key):
        grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, y)
        leaves = jax.tree_util.tree_leaves(grads)
        norms = jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in leaves))
        factors = jnp.minimum(1.0, clip / (norms + 1e-12))
        summed = jax.tree_util.tree_map(lambda g: jnp.tensordot(factors, g, axes=1), grads)
        flat, tree = jax.tree_util.tree_flatten(summed)
        keys = jax.random.split(key, len(flat))
        noisy = [s + sigma * clip * jax.random.normal(k, s.shape) for s, k in zip(flat, keys)]
        noisy = jax.tree_util.tree_unflatten(tree, noisy)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g / x.shape[0], params, noisy)

    def non_private(params, x, y, key):
        mean_loss = lambda p: jnp.mean(jax.vmap(loss, in_axes=(None, 0, 0))(p, x, y))
        grads = jax.grad(mean_loss)(params)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)

    return jax.jit(private), jax.jit(non_private)


def timed(step, params, x, y, n, warmup):
    """Median, min and max ms of `step`, a fresh noise key each call (drawn outside the timing)."""
    keys = iter(jax.random.split(jax.random.PRNGKey(1), warmup + n))

    def run():
        jax.block_until_ready(step(params, x, y, next(keys)))

    return time_steps(run, n, warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: a fifth of --steps, at least 2)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    args = parser.parse_args()
    models = args.models.split(",")
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown model {', '.join(sorted(unknown))}: choose from {', '.join(MODELS)}")
    warmup = default_warmup(args.steps) if args.warmup is None else args.warmup
    threads = len(os.sched_getaffinity(0))
    for name in models:
        init, loss, inputs, classes = MODELS[name]()
        key = jax.random.PRNGKey(0)
        k1, k2, k3 = jax.random.split(key, 3)
        params = init(k1)
        count = sum(int(v.size) for v in jax.tree_util.tree_leaves(params))
        check_parameters(name, count)
        x = inputs(k2, args.batch_size)
        y = jax.random.randint(k3, (args.batch_size,), 0, classes)
        if name == "logreg":
            y = y.astype(jnp.float32)
        private, non_private = steps(loss)
        for mode, step in (("private", private), ("non-private", non_private)):
            emit(
                result(
                    model=name,
                    mode=mode,
                    system=f"jax {jax.__version__} jit+vmap on {jax.devices()[0].device_kind}",
                    parameters=count,
                    batch_size=args.batch_size,
                    threads=threads,
                    steps=args.steps,
                    warmup=warmup,
                    timing=timed(step, params, x, y, args.steps, warmup),
                ),
                args.json,
            )


if __name__ == "__main__":
    main()
