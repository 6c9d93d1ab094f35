"""What crosses the wire between a tftl fleet server and its clients, and how updates are checked.

The payload is a subset of the model's `save` state (tftl.json `state_groups`): by default the
trainable weights and the BN statistics, in `state_names` order, float32, shaped as the
`restore` signature declares them. The optimizer group (Adam's m, v and step) never crosses:
it stays on the device and is reset when the averaged weights arrive (or kept, on request).
`tftl/fleet/README.md` documents the layout for non-Python clients.

No TensorFlow and no Flower here: plain numpy, so the checks can be tested alone.
"""

import math

import numpy as np

from tftl.runtime import contract

# Record names inside a Flower Message's RecordDict.
ARRAYS = "arrays"      # ArrayRecord: state tensors, server -> client and client -> server
CONFIG = "config"      # ConfigRecord: server -> client instructions
METRICS = "metrics"    # MetricRecord: client -> server (num-examples, train loss/accuracy, cost)
NUM_EXAMPLES = "num-examples"  # Flower's default weighting key
NUM_STEPS = "num-steps"        # optional: train steps the client ran (the server's BN round statistics)
MAX_STEPS = 10**7
# The MetricRecord keys Flower aggregates: every accepted reply is normalised to exactly these
# (Flower refuses a round whose replies' keys differ). Other numbers a client reports are
# kept per participant in history.json, never aggregated.
AGGREGATED = (NUM_EXAMPLES, NUM_STEPS)
REPORTED = ("train_loss", "train_accuracy", "seconds", "images_per_second", "peak_rss_mb")

# ConfigRecord keys (server -> client).
ROUND = "tftl.round"                 # int, 1-based global round (continues after a server resume)
ROUNDS = "tftl.rounds"               # int, total rounds of the run (for the LR schedule)
EPOCHS = "tftl.local-epochs"         # int, local epochs per round
LR = "tftl.lr"                       # float, peak learning rate
MODEL_HASH = "tftl.content-hash"     # str, sha256 of the model's flatbuffer: same graph everywhere
LABELS = "tftl.labels"               # list[str], the model's labels in output order
OPTIMIZER = "tftl.optimizer"         # str, "reset" (default) or "keep"
SEED = "tftl.seed"                   # int, the run's seed (clients add their partition and round)

SEND_CHOICES = ("all", "head")       # all: trainable + BN statistics; head: the classifier only
OPTIMIZER_CHOICES = ("reset", "keep")


class UpdateError(ValueError):
    """An update that does not fit the model (wrong names or shapes, NaN or infinite values)."""


def head_names(meta: contract.ModelMetadata) -> list:
    """The classifier's tensors: the trainable names sharing the last trainable layer's prefix."""
    trainable = list(meta.state_groups[contract.TRAINABLE])
    if not trainable:
        return []
    layer = trainable[-1].split("__", 1)[0]
    return [n for n in trainable if n.split("__", 1)[0] == layer]


def sent_names(meta: contract.ModelMetadata, send: str = "all") -> list:
    """State names exchanged each round, in `state_names` order.

    Raises:
        ValueError: an unknown `send` choice.
    """
    if send == "head":
        wanted = set(head_names(meta))
    elif send == "all":
        wanted = set(meta.state_groups[contract.TRAINABLE]) | set(meta.state_groups[contract.BN_STATISTICS])
    else:
        raise ValueError(f"send must be one of {', '.join(SEND_CHOICES)}, got {send!r}")
    return [n for n in meta.state_names if n in wanted]


def payload_bytes(arrays: dict) -> int:
    """Bytes of tensor data in one update (what grows with the model; framing is extra)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def check_update(arrays: dict, shapes: dict, where: str = "update") -> None:
    """Refuse an update whose names, shapes, dtypes or values do not fit `shapes`.

    Args:
        arrays: name -> numpy array, as received.
        shapes: name -> expected shape (the sent names only).
        where: who sent it, for the message.
    Raises:
        UpdateError: one line naming the first problem.
    """
    missing = sorted(set(shapes) - set(arrays))
    extra = sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise UpdateError(f"{where}: tensors do not match the model (missing {missing[:3]}, unknown {extra[:3]})")
    for name, shape in shapes.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(shape):
            raise UpdateError(f"{where}: {name} has shape {tuple(a.shape)}, the model has {tuple(shape)}")
        if a.dtype != np.float32:
            raise UpdateError(f"{where}: {name} has dtype {a.dtype}, expected float32")
        if not np.isfinite(a).all():
            raise UpdateError(f"{where}: {name} holds NaN or infinite values")


def check_count(value, key: str, where: str = "update", *, low=1, high=math.inf, what="a positive number") -> int:
    """A count a client reports in its metrics (`key`): a finite number in [low, high].

    Raises:
        UpdateError: naming `where`, `key` and `what` it must be.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise UpdateError(f"{where}: {key} must be {what}, got {value!r}")
    return int(value)


def check_weight(value, where: str = "update") -> int:
    """The example count a client reports (the FedAvg weight): a positive integer."""
    return check_count(value, NUM_EXAMPLES, where)


def normalise_metrics(metrics, where: str, *, default_steps, cap: int) -> tuple:
    """A reply's metrics as (the fixed AGGREGATED key set, the REPORTED numbers it sent).

    metrics: the reply's MetricRecord (any mapping). num-examples is required and capped at
    `cap` (a claim of 10^9 weighs as `cap`); num-steps is optional (default_steps(examples)
    when absent). Unknown keys and REPORTED values that are not finite numbers are dropped.

    Raises:
        UpdateError: num-examples missing or not a positive count, num-steps not a count.
    """
    examples = check_weight(metrics.get(NUM_EXAMPLES), where)
    steps = metrics.get(NUM_STEPS)
    steps = default_steps(examples) if steps is None else \
        check_count(steps, NUM_STEPS, where, low=0, high=MAX_STEPS, what="a count of steps")
    reported = {k: float(metrics[k]) for k in REPORTED if isinstance(metrics.get(k), (int, float))
                and not isinstance(metrics.get(k), bool) and math.isfinite(metrics[k])}
    reported["claimed-examples"] = examples
    return {NUM_EXAMPLES: min(examples, int(cap)), NUM_STEPS: steps}, reported
