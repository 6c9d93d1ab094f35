"""One client's part of a round: receive the global state, train locally, return the update.

The training is the runtime's `Trainer.fit` (the loop `tftl-train` runs): the same image
decoding and augmentation, the same feature cache (on disk under the client's work folder,
keyed on the trunk, so rounds after the first reuse it) and one cosine LR schedule that runs
across rounds. The `TrainState` a round starts from says where the fleet is: epoch
(round - 1) * local_epochs, global step (round - 1) * local_epochs * steps per epoch, so the
schedule continues and each round draws a fresh order (seeded by the run seed and epoch).

No Flower and no TensorFlow here: `client.py` wraps this for Flower.
"""

import dataclasses
import math
import os
import resource
import sys
import time

import numpy as np

from tftl.runtime import contract, data, features
from tftl.runtime.errors import InputError
from tftl.runtime.checkpoint import TrainState
from tftl.runtime.loop import Schedule, Trainer
from tftl.runtime.session import Session

from tftl.fleet import shards, wire


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the server asks of a round (from the message's ConfigRecord)."""

    round: int
    rounds: int
    local_epochs: int = 1
    lr: float = 5e-4
    optimizer: str = "reset"
    seed: int = 0


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def load_samples(folder, labels, *, partition=None, num_partitions=1, shard="iid", alpha=0.5, seed=0):
    """The client's training samples from an image folder, classes named after the model's labels.

    partition / num_partitions / shard / alpha: simulation only, this client's share of a
    folder every simulated client reads.

    Raises:
        InputError: one line, when a folder is not one of the fleet's labels (the client is refused).
    """
    try:
        folder_ = data.ImageFolder(folder, labels=labels)
    except ValueError as e:
        raise InputError(f"this client cannot join the fleet: {e}") from None
    items = folder_.samples
    if partition is not None:
        ys = [y for _, y in items]
        part = shards.split(ys, num_partitions, shard, alpha, seed)[partition]
        items = [items[i] for i in part]
    return features.Samples.from_paths(items)


def steps_per_epoch(session, samples) -> int:
    return math.ceil(len(samples) / session.batch)


def train_round(session, samples, plan: Plan, *, cache_dir=None, seed_offset=0, threads=None):
    """Train `plan.local_epochs` epochs of the fleet's schedule; returns (history entries, seconds, steps).

    session already holds the global state (see `receive`). cache_dir: where the feature
    cache lives between rounds (None: rebuilt in RAM every round).
    """
    steps = steps_per_epoch(session, samples)
    done = (plan.round - 1) * plan.local_epochs
    state = TrainState(epoch=done, global_step=done * steps)
    schedule = Schedule(plan.lr, total_steps=plan.rounds * plan.local_epochs * steps)
    # The file's recipe gives the cached views; the schedule is the server's, and the head is the
    # global model's (a probe fitted per device would overwrite the fleet's head in every round).
    recipe = dataclasses.replace(session.meta.recipe, head_init="none")
    trainer = Trainer(session, seed=plan.seed + seed_offset, cache_dir=cache_dir, cache_ram_mb=0,
                      threads=threads, quiet=True, recipe=recipe)
    t0 = time.monotonic()
    start = state.global_step
    result = trainer.fit(samples, epochs=done + plan.local_epochs, schedule=schedule, state=state)
    return result.history[-plan.local_epochs:], time.monotonic() - t0, state.global_step - start


def personal_names(session, sent) -> list:
    """Trained tensors (trainable, BN statistics) the server does not average (with --send head):
    they stay on the device from round to round (FedPer-style personal layers)."""
    sent = set(sent)
    groups = session.meta.state_groups
    return [n for n in session.meta.state_names
            if n not in sent and (n in groups[contract.TRAINABLE] or n in groups[contract.BN_STATISTICS])]


def receive(session, arrays: dict, names, optimizer_state=None, personal=None) -> None:
    """Load the global tensors into `session`; the optimizer is reset, or set to `optimizer_state`
    (the client's own, kept from its previous round). personal: this client's own values of the
    tensors the server does not send (else the model file's values: every round starts alike,
    whichever engine runs the client).

    Raises:
        wire.UpdateError: the server sent tensors that do not fit this model.
    """
    shapes = session.state_shapes()
    wire.check_update(arrays, {n: shapes[n] for n in names}, where="the server's global model")
    session.restore_state(arrays, what="the server's global model", partial=True)
    own = personal_names(session, names)
    if own:
        base = personal if personal is not None else session.fleet_initial
        session.restore_state({n: base[n] for n in own}, what="the personal layers", partial=True)
    if optimizer_state:
        session.restore_state(optimizer_state, what="the kept optimizer state", partial=True)
    else:
        session.reset_optimizer()


def check_model(session, model_hash: str, labels) -> None:
    """Refuse (InputError, one line) a server whose model or labels differ from this client's file."""
    if model_hash and model_hash != session.meta.content_hash:
        raise InputError(f"{session.path} is not the fleet's model (content hash {session.meta.content_hash[:12]}, "
                         f"the server's {model_hash[:12]}) — use the server's .tflite file")
    if labels and list(labels) != list(session.labels):
        raise InputError(f"{session.path} has labels {session.labels}, the fleet {list(labels)} — "
                         "use the server's .tflite file")


def open_session(model, threads=1):
    """A Session on the original (not fine-tuned) model file; the server sends the weights."""
    if not os.path.isfile(model):
        raise InputError(f"model file {model} does not exist — pass the fleet's .tflite file")
    session = Session(model, threads=threads)
    session.require(*contract.TRAIN_SIGNATURES, purpose="federated training")
    # The file's trained values, for tensors the server does not send (--send head, first round).
    session.fleet_initial = session.state((contract.TRAINABLE, contract.BN_STATISTICS))
    return session


def summary(history, seconds, n, steps) -> dict:
    """The MetricRecord a client sends back (all floats or ints)."""
    last = history[-1]
    return {wire.NUM_EXAMPLES: int(n), wire.NUM_STEPS: int(steps), "train_loss": float(last["loss"]),
            "train_accuracy": float(last["train_accuracy"]), "seconds": float(seconds),
            "peak_rss_mb": float(peak_rss_mb()), "images_per_second": float(last["images_per_second"])}


def finite(arrays: dict) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values())
