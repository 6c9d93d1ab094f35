"""Peak RSS of one tftl-fleet client's round, in a fresh process.

    python bench/fleet_client_rss.py MODEL.tflite [--clients 5]

What a ClientApp process holds for one round (flwr imported, the Session, the feature cache
of its IID shard of flowers5/train, `Trainer.fit` of one local epoch), without Flower's gRPC
plumbing: `local.train_round`, the function the ClientApp calls. Prints one JSON line.
"""

import argparse
import json
import os
import tempfile

import tftl.fleet.client  # noqa: F401  (imports flwr, as a ClientApp process does)
from tftl.fleet import local, wire

FLOWERS = os.path.join(os.environ.get("TFTL_SHARED", "/work/shared"), "data", "flowers5")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--clients", type=int, default=5)
    a = p.parse_args()
    session = local.open_session(os.path.abspath(a.model))
    samples = local.load_samples(os.path.join(FLOWERS, "train"), session.labels, partition=0,
                                 num_partitions=a.clients, shard="iid", seed=0)
    local.receive(session, session.state(("trainable", "bn_statistics")), wire.sent_names(session.meta, "all"))
    with tempfile.TemporaryDirectory() as tmp:
        _, seconds, _ = local.train_round(session, samples, local.Plan(round=1, rounds=8), cache_dir=tmp, threads=1)
    print(json.dumps({"images": len(samples), "seconds": round(seconds, 1), "peak_rss_mb": round(local.peak_rss_mb(), 1)}))


if __name__ == "__main__":
    main()
