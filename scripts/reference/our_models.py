"""Our built-in models as the reference scripts rebuild them: name (as `dp models` lists it) -> parameters.

The counts are those `dp models` prints, each stated in the model's file in src/models/; the reference
scripts check that their rebuilt architectures have exactly as many trainable parameters.
"""

PARAMETERS = {
    "logreg": 105,  # src/models/logreg.rs
    "ffnn": 5_352,  # src/models/ffnn.rs
    "mnist-cnn": 26_010,  # src/models/mnist_cnn.rs
    "cifar10-cnn": 605_226,  # src/models/cifar10_cnn.rs
    "embedding": 160_098,  # src/models/embedding_net.rs
    "lstm": 1_081_002,  # src/models/lstm_net.rs
    "residual-cnn": 10_058,  # src/models/residual.rs
}


def check_parameters(name, count):
    """Stops with a message when a rebuilt model's trainable parameter count differs from ours."""
    if count != PARAMETERS[name]:
        raise SystemExit(f"{name}: {count} trainable parameters here, {PARAMETERS[name]} in ours")
