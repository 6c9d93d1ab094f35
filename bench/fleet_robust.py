"""Robust aggregation in tftl-fleet: accuracy of each aggregator on flowers5, with honest clients
and with one client of five that sends a poisoned update and claims 10^9 examples.

    python bench/fleet_robust.py MODEL.tflite --work /tmp/fleet_robust [--rounds 4] [--seed 0]

In-process simulation (tftl.fleet.simulate, the real ClientApp for the honest clients), 5 IID
clients, `--rounds` rounds of 1 local epoch, lr 5e-4, server-side val accuracy of the global
model after the last round on flowers5/val (200 photos: one point is two photos). The attacker
(client 0) sends the global tensors plus Gaussian noise of sd 1 on the trained weights (its BN
statistics unchanged) and claims 10^9 examples. Writes bench/fleet_robust.json (one row per
configuration, with the command line) and prints a markdown table.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

FLOWERS = os.path.join(os.environ.get("TFTL_SHARED", "/work/shared"), "data", "flowers5")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fleet_robust.json")
ROWS = [  # (name, strategy, max-examples, attacked, dp-clip, dp-noise)
    ("fedavg", "fedavg", 10_000, False, 0, 0),
    ("fedmedian", "fedmedian", 10_000, False, 0, 0),
    ("fedtrimmedavg", "fedtrimmedavg", 10_000, False, 0, 0),
    ("fedavg, attacked, no cap", "fedavg", 10**9, True, 0, 0),
    ("fedavg, attacked, --max-examples 100", "fedavg", 100, True, 0, 0),
    ("fedmedian, attacked", "fedmedian", 10_000, True, 0, 0),
    ("fedtrimmedavg, attacked", "fedtrimmedavg", 10_000, True, 0, 0),
    ("fedavg, --dp-clip 5", "fedavg", 10_000, False, 5.0, 0),
    ("fedavg, --dp-clip 5 --dp-noise 0.01", "fedavg", 10_000, False, 5.0, 0.01),
    ("fedavg, --dp-clip 5 --dp-noise 0.1", "fedavg", 10_000, False, 5.0, 0.1),
]


def attacker(trainable, rng):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from tftl.fleet import wire

    def reply(msg, context):
        arrays = {n: a.numpy() + (rng.normal(0, 1, a.shape).astype(np.float32) if n in trainable else 0)
                  for n, a in msg.content[wire.ARRAYS].items()}
        content = RecordDict({wire.ARRAYS: ArrayRecord({n: Array(np.ascontiguousarray(v, np.float32))
                                                        for n, v in arrays.items()}),
                              wire.METRICS: MetricRecord({wire.NUM_EXAMPLES: 10**9})})
        return Message(content=content, reply_to=msg)
    return reply


def run(a, name, strategy, cap, attacked, dp_clip, dp_noise) -> dict:
    from tftl.fleet import server, simulate
    from tftl.runtime.session import Session

    out = os.path.join(a.work, name.replace(", ", "_").replace(" ", "_").replace("-", "").replace(".", ""))
    s = server.Settings(model=os.path.abspath(a.model), out=out, val=os.path.join(a.data, "val"), rounds=a.rounds,
                        strategy=strategy, max_examples=cap, seed=a.seed, min_clients=5, dp_clip=dp_clip,
                        dp_noise=dp_noise)
    trainable = set(Session(s.model).meta.state_groups["trainable"])
    fail = {0: attacker(trainable, np.random.default_rng(a.seed))} if attacked else None
    np.random.seed(a.seed)  # Flower's DP noise draws from numpy's global generator
    t0 = time.monotonic()
    history = simulate.simulate(s, os.path.join(a.data, "train"), 5, shard="iid", fail=fail)
    return {"name": name, "strategy": strategy, "max_examples": cap, "attacked": attacked, "dp_clip": dp_clip,
            "dp_noise": dp_noise,
            "val_accuracy": [round(r["val_accuracy"], 4) for r in history],
            "final": round(history[-1]["val_accuracy"], 4), "seconds": round(time.monotonic() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--work", required=True, help="folder for the runs (outside the repository)")
    p.add_argument("--data", default=FLOWERS, help="folder with train/ and val/")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", nargs="+", default=None,
                   help="run only these row names; the others are kept from bench/fleet_robust.json")
    a = p.parse_args(argv)
    kept = {}
    if a.rows and os.path.exists(OUT):
        with open(OUT, encoding="utf-8") as f:
            kept = {r["name"]: r for r in json.load(f)["rows"]}
    rows = []
    for name, *config in ROWS:
        if a.rows and name not in a.rows and name in kept:
            rows.append(kept[name])
            continue
        rows.append(run(a, name, *config))
        print(json.dumps(rows[-1]), flush=True)
    from tftl.runtime import files

    with files.atomic_write(OUT) as f:
        f.write(json.dumps({"command": " ".join(["python", "bench/fleet_robust.py", *(argv or sys.argv[1:])]),
                            "clients": 5, "rounds": a.rounds, "seed": a.seed, "rows": rows}, indent=1).encode())
    print("| aggregator | val accuracy after each round (0 = start) | final |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['name']} | {', '.join(f'{v:.3f}' for v in r['val_accuracy'])} | **{r['final']:.3f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
