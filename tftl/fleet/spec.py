"""The fleet's wire contract as data, for clients in other languages: `contract/fleet.json`
(the message layout) and `contract/vectors/fleet.json` (test vectors), generated from wire.py.

    python -m tftl.fleet.spec          # rewrite both files (tests/test_fleet.py checks they are current)

The vectors: `arrays`, a float32 tensor with the exact bytes of its Array `data` (a NumPy .npy
v1 file, as Flower's Array holds it), so a client can test its encoder and decoder; `replies`,
reply MetricRecords with the server's verdict on each (accepted, with the numbers the server
aggregates, or rejected), from `wire.normalise_metrics` itself.
"""

import base64
import io
import json
import os

import numpy as np

from tftl.fleet import wire
from tftl.runtime import files

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "contract")
LAYOUT = os.path.join(ROOT, "fleet.json")
VECTORS = os.path.join(ROOT, "vectors", "fleet.json")
BATCH, LOCAL_EPOCHS, CAP = 8, 1, 10_000  # the vectors' model batch, --local-epochs, --max-examples


def layout() -> dict:
    """The message layout (tftl/fleet/README.md has the prose)."""
    array = {"record": "ArrayRecord", "dtype": "float32", "stype": "numpy.ndarray",
             "data": "a NumPy .npy v1 file: little-endian <f4, C order, shape = the restore signature's input shape"}
    return {
        "format": "tftl-fleet-wire-1",
        "transport": "Flower Message (flwr 1.42 RecordDict); one reply per message, reply_to the message",
        "query": {"why": "sent once to every device when it connects, before any weights",
                  "server_to_client": {wire.CONFIG: {wire.MODEL_HASH: "string", wire.LABELS: "list of string"}},
                  "client_to_server": {wire.CONFIG: {wire.MODEL_HASH: "string: sha256 of the device's model flatbuffer",
                                                     wire.LABELS: "list of string: the device's labels"}},
                  "refusal": "an error reply (or another hash): the device never gets a train message"},
        "train": {
            "server_to_client": {wire.ARRAYS: {"keys": "the sent state names, in tftl.json state_names order",
                                               **array},
                                 wire.CONFIG: {wire.ROUND: "int", wire.ROUNDS: "int", wire.EPOCHS: "int",
                                               wire.LR: "float", wire.MODEL_HASH: "string", wire.LABELS: "list of string",
                                               wire.OPTIMIZER: "string: reset|keep", wire.SEED: "int",
                                               "server-round": "int (equals tftl.round)"}},
            "client_to_server": {wire.ARRAYS: {"keys": "exactly the names received", **array},
                                 wire.METRICS: {wire.NUM_EXAMPLES: "int, required, > 0 (capped by --max-examples)",
                                                wire.NUM_STEPS: "int, optional, >= 0 (default ceil(num-examples / "
                                                                "batch) x local-epochs)",
                                                **{k: "float, optional, reported only" for k in wire.REPORTED}}},
            "aggregated_metrics": list(wire.AGGREGATED),
            "other_records_and_keys": "ignored"},
    }


def _npy(values) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _verdict(metrics) -> dict:
    try:
        aggregated, reported = wire.normalise_metrics(
            metrics, "reply", cap=CAP, default_steps=lambda n: -(-n // BATCH) * LOCAL_EPOCHS)
    except wire.UpdateError as e:
        return {"metrics": metrics, "accepted": False, "why": str(e)}
    return {"metrics": metrics, "accepted": True, "aggregated": aggregated, "reported": reported}


def vectors() -> dict:
    values = np.arange(6, dtype="<f4").reshape(2, 3) / np.float32(4) - np.float32(0.5)
    replies = [{wire.NUM_EXAMPLES: 80, wire.NUM_STEPS: 10, "train_loss": 0.5},
               {wire.NUM_EXAMPLES: 80},
               {wire.NUM_EXAMPLES: 17, "battery": 0.3},
               {wire.NUM_EXAMPLES: 10**9, wire.NUM_STEPS: 3},
               {wire.NUM_EXAMPLES: 0},
               {wire.NUM_STEPS: 3},
               {wire.NUM_EXAMPLES: 2.5e1},
               {wire.NUM_EXAMPLES: 80, wire.NUM_STEPS: -1},
               {wire.NUM_EXAMPLES: [80]}]
    return {"batch": BATCH, "local_epochs": LOCAL_EPOCHS, "max_examples": CAP,
            "arrays": [{"shape": list(values.shape), "values": values.ravel().tolist(),
                        "data_base64": base64.b64encode(_npy(values)).decode()}],
            "replies": [_verdict(m) for m in replies]}


def render() -> dict:
    """{path: the file's text}."""
    return {path: json.dumps(data, indent=1, sort_keys=True) + "\n" for path, data in
            ((LAYOUT, layout()), (VECTORS, vectors()))}


def main() -> int:
    for path, text in render().items():
        with files.atomic_write(path) as f:
            f.write(text.encode())
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
