"""The Flower ClientApp: a tftl `Session` trained by the runtime's `Trainer` on the device's photos.

Node config (`flower-supernode --node-config` or `tftl-fleet join` flags):
  model            the fleet's .tflite (the server's file, same content hash and labels)
  data             the device's image folder, one subfolder per class named after the model's labels
  work-dir         where the feature cache and the kept optimizer state live (default: data/.tftl-fleet)
  partition-id, num-partitions, shard, alpha, seed
                   simulation only: this client's share of a folder every simulated client reads
  threads          interpreter / decode threads (default 1)

Each train message: restore the global tensors, reset the optimizer (or restore the client's
kept one), `Trainer.fit` the round's local epochs on the schedule position the round implies,
send back the same tensors with the example count. `tftl/fleet/README.md` has the layout.
"""

import os

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from tftl.fleet import local, wire

app = ClientApp()
KEPT_OPTIMIZER = "tftl.optimizer"  # Context.state record: this client's Adam state, with --optimizer keep
PERSONAL = "tftl.personal"         # Context.state record: trained tensors the server does not average (--send head)

_SESSIONS = {}  # (model path, threads) -> Session: a long-lived client process loads the model once
_SAMPLES = {}   # node-config key -> Samples


def _session(cfg):
    key = (os.path.abspath(str(cfg["model"])), int(cfg.get("threads", 1)))
    if key not in _SESSIONS:
        _SESSIONS[key] = local.open_session(key[0], threads=key[1])
    return _SESSIONS[key]


def _samples(cfg, labels):
    part = cfg.get("partition-id")
    key = (str(cfg["data"]), part, cfg.get("num-partitions"), cfg.get("shard"), cfg.get("alpha"), cfg.get("seed"))
    if key not in _SAMPLES:
        _SAMPLES[key] = local.load_samples(
            cfg["data"], labels, partition=None if part is None else int(part),
            num_partitions=int(cfg.get("num-partitions", 1)), shard=str(cfg.get("shard", "iid")),
            alpha=float(cfg.get("alpha", 0.5)), seed=int(cfg.get("seed", 0)))
    return _SAMPLES[key]


def _work_dir(cfg) -> str:
    base = cfg.get("work-dir") or os.path.join(str(cfg["data"]), ".tftl-fleet")
    part = cfg.get("partition-id")
    path = os.path.join(str(base), f"client-{part}") if part is not None else str(base)
    os.makedirs(os.path.join(path, "cache"), exist_ok=True)
    return path


def to_record(arrays: dict, names) -> ArrayRecord:
    """An ArrayRecord of `names` in order (float32 numpy arrays)."""
    return ArrayRecord({n: Array(np.ascontiguousarray(arrays[n], np.float32)) for n in names})


def from_record(record: ArrayRecord, shapes: dict, where: str) -> dict:
    """numpy arrays from an ArrayRecord, checking each Array's declared dtype and shape first."""
    out = {}
    for name, array in record.items():
        if name in shapes and (array.dtype != "float32" or tuple(array.shape) != tuple(shapes[name])):
            raise wire.UpdateError(f"{where}: {name} has shape {tuple(array.shape)} and dtype {array.dtype}, "
                                   f"the model has {tuple(shapes[name])} float32")
        out[name] = array.numpy()
    wire.check_update(out, shapes, where)
    return out


def plan_of(config) -> local.Plan:
    return local.Plan(round=int(config[wire.ROUND]), rounds=int(config[wire.ROUNDS]),
                      local_epochs=int(config.get(wire.EPOCHS, 1)), lr=float(config.get(wire.LR, 5e-4)),
                      optimizer=str(config.get(wire.OPTIMIZER, "reset")), seed=int(config.get(wire.SEED, 0)))


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The server's check when this device connects, before any weights are sent: refuse (an
    error reply) unless this device's model file and labels are the fleet's."""
    config = msg.content[wire.CONFIG]
    session = _session(context.node_config)
    local.check_model(session, str(config.get(wire.MODEL_HASH, "")), config.get(wire.LABELS))
    content = RecordDict({wire.CONFIG: ConfigRecord({wire.MODEL_HASH: session.meta.content_hash,
                                                     wire.LABELS: list(session.labels)})})
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round on this device; errors become an error reply, and the server drops this client."""
    cfg = context.node_config
    config = msg.content[wire.CONFIG]
    session = _session(cfg)
    local.check_model(session, str(config.get(wire.MODEL_HASH, "")), config.get(wire.LABELS))
    samples = _samples(cfg, session.labels)
    record = msg.content[wire.ARRAYS]
    names = list(record.keys())
    shapes = session.state_shapes()
    unknown = [n for n in names if n not in shapes]
    if unknown:
        raise wire.UpdateError(f"the server sent tensors this model lacks: {unknown[:3]}")
    arrays = from_record(record, {n: shapes[n] for n in names}, "the server's global model")
    plan = plan_of(config)
    work = _work_dir(cfg)
    kept = context.state.get(KEPT_OPTIMIZER) if plan.optimizer == "keep" else None
    personal = context.state.get(PERSONAL)
    local.receive(session, arrays, names, None if kept is None else {k: v.numpy() for k, v in kept.items()},
                  personal=None if personal is None else {k: v.numpy() for k, v in personal.items()})
    history, seconds, steps = local.train_round(session, samples, plan, cache_dir=os.path.join(work, "cache"),
                                         seed_offset=1000 * int(cfg.get("partition-id", 0)),
                                         threads=int(cfg.get("threads", 1)))
    state = session.state()
    if plan.optimizer == "keep":
        context.state[KEPT_OPTIMIZER] = to_record(state, session.meta.state_groups["optimizer"])
    own = local.personal_names(session, names)
    if own:
        context.state[PERSONAL] = to_record(state, own)
    content = RecordDict({wire.ARRAYS: to_record(state, names),
                          wire.METRICS: MetricRecord(local.summary(history, seconds, len(samples), steps))})
    return Message(content=content, reply_to=msg)
