"""tftl.fleet: many devices fine-tune one tftl .tflite together (federated averaging over Flower).

    client.py  the Flower ClientApp (a Session trained by tftl.runtime.loop.Trainer)
    server.py  the Flower ServerApp (Flower's FedAvg / FedAdam, guarded; checkpoints; global.tflite)
    wire.py    what crosses the wire, and the checks on it (README.md in this folder has the layout)
    local.py   one client's round, without Flower
    keys.py    tftl-fleet keys: the CA, server certificate and device keys TLS and authentication use
    spec.py    the wire contract as data (contract/fleet.json, contract/vectors/fleet.json)
    simulate.py, deploy.py, cli.py   tftl-fleet simulate / serve / join / keys

Importing this package turns Flower's telemetry and update check off unless the environment
already sets them (FLWR_TELEMETRY_ENABLED=1 and FLWR_DISABLE_UPDATE_CHECK=0 turn them back on).
No TensorFlow is imported: the fleet extra is the runtime plus flwr.
"""

import os

QUIET_FLOWER = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}

for _key, _value in QUIET_FLOWER.items():  # before any Flower module reads them
    os.environ.setdefault(_key, _value)
