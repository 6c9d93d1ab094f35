"""A federated-learning client on the tftl runtime (the server is simulated by `fedavg`).

Each round the client trains one epoch on its in-memory samples, continuing ONE learning-rate
schedule across rounds (Schedule.offset), sends its trained weights and BN statistics,
receives the average and resets its optimizer (Adam's moments belong to the old weights).
    python examples/federated_client.py model.tflite flowers5/train --rounds 3
"""
import dataclasses

import numpy as np

from tftl.runtime import contract
from tftl.runtime.loop import Schedule, Trainer

SENT = (contract.TRAINABLE, contract.BN_STATISTICS)  # the optimizer state stays on the device


def client_round(session, samples, round_, rounds, *, lr=5e-4, seed=0):
    """Train one epoch of the run's schedule; returns (update to send, this epoch's history entry)."""
    steps = -(-len(samples[1]) // session.batch)  # steps per epoch
    schedule = Schedule(lr, total_steps=rounds * steps, offset=round_ * steps)
    # the fleet's head is the average: no head fitted per client (the file's recipe otherwise fits one)
    recipe = dataclasses.replace(session.meta.recipe, head_init="none")
    result = Trainer(session, seed=seed + round_, quiet=True, recipe=recipe).fit(samples, epochs=1, schedule=schedule)
    return session.state(SENT), result.history[-1]


def receive(session, averaged):
    session.restore_state(averaged, partial=True)  # weights + BN statistics only
    session.reset_optimizer()


def fedavg(updates, sizes):
    """The server: the sample-weighted mean of the clients' updates."""
    w = np.asarray(sizes, np.float64) / sum(sizes)
    return {k: sum(wi * u[k] for wi, u in zip(w, updates)).astype(np.float32) for k in updates[0]}


def main(argv=None):
    """Two clients holding halves of a folder's photos, `--rounds` rounds; prints JSON."""
    import argparse
    import json

    from tftl.runtime import data, features
    from tftl.runtime.session import Session

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("images")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    sessions = [Session(a.model, threads=1) for _ in range(2)]
    s0 = sessions[0]
    smp = features.as_samples(a.images, labels=s0.labels)
    x = np.stack([data.load_image(path, s0.image_size) for path in smp.paths])
    shards = [(x[i::2], smp.labels[i::2]) for i in range(2)]
    log = []
    for r in range(a.rounds):
        sent = [client_round(s, shard, r, a.rounds) for s, shard in zip(sessions, shards)]
        averaged = fedavg([u for u, _ in sent], [len(shard[1]) for shard in shards])
        for s in sessions:
            receive(s, averaged)
        log.append([{"loss": h["loss"], "learning_rate": h["learning_rate"]} for _, h in sent])
    print(json.dumps({"rounds": log}))


if __name__ == "__main__":
    main()
