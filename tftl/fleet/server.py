"""The Flower ServerApp: FedAvg (or FedAdam, Flower's own) over a tftl model's state.

Run config (`flwr run --run-config` or `tftl-fleet serve` flags):
  model           the fleet's .tflite (its labels, state groups and content hash rule the fleet)
  out             folder for checkpoint.npz, history.json and the global model (global.tflite)
  val             optional image folder for server-side evaluation after every round
  rounds, local-epochs, lr, lr-scaling, strategy, server-lr, server-momentum, bn-stats, send, optimizer, min-clients, round-timeout, seed

Every round: sample clients, send the global tensors, drop error replies (a client that died
or raised) and updates that do not fit (wrong names, shapes, dtype, NaN/inf, bad example
count), aggregate the rest, evaluate on `val`, then write checkpoint.npz (atomically) and the
self-contained `global.tflite` (`tftl.runtime.modelfile.save_model`). A restarted server
with the same `out` resumes after the last finished round.
"""

import dataclasses
import json
import math
from logging import INFO, WARNING
import os
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flwr_strategy

from tftl.fleet import wire
from tftl.fleet.client import from_record, to_record
from tftl.runtime import checkpoint as ckpt
from tftl.runtime import contract, files
from tftl.runtime import evaluate as evaluation
from tftl.runtime.errors import InputError
from tftl.runtime.modelfile import save_model
from tftl.runtime.session import Session

app = ServerApp()

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_FORMAT = "tftl-fleet-1"
VELOCITY = "server_velocity__"  # checkpoint.npz prefix of the server momentum's buffers
GLOBAL_MODEL = "global.tflite"
HISTORY = "history.json"
STRATEGIES = ("fedavg", "fedadam")
LR_SCALING = ("none", "sqrt")
BN_STATS = ("round", "running")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The server's run configuration, validated once."""

    model: str
    out: str
    val: str = ""
    rounds: int = 3
    local_epochs: int = 1
    lr: float = 5e-4
    lr_scaling: str = "none"
    strategy: str = "fedavg"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    bn_stats: str = "round"
    send: str = "all"
    optimizer: str = "reset"
    min_clients: int = 2
    round_timeout: float = 600.0
    seed: int = 0

    def __post_init__(self):
        """Validated on every path (the CLI's, the ServerApp's run config); InputError, one line."""
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.lr_scaling not in LR_SCALING:
            raise InputError(f"lr-scaling must be one of {', '.join(LR_SCALING)}, got {self.lr_scaling!r}")
        if self.bn_stats not in BN_STATS:
            raise InputError(f"bn-stats must be one of {', '.join(BN_STATS)}, got {self.bn_stats!r}")
        if self.send not in wire.SEND_CHOICES or self.optimizer not in wire.OPTIMIZER_CHOICES:
            raise InputError(f"send must be all|head and optimizer reset|keep, got {self.send!r}, {self.optimizer!r}")
        if self.rounds < 1 or self.local_epochs < 1 or self.min_clients < 1 or not self.lr > 0 \
                or not self.server_lr > 0:
            raise InputError("rounds, local-epochs and min-clients must be >= 1, lr and server-lr > 0")
        if not 0 <= self.server_momentum < 1:
            raise InputError(f"server-momentum must be in [0, 1), got {self.server_momentum!r}")
        if (self.server_lr != 1.0 or self.server_momentum) and self.strategy != "fedavg":
            raise InputError(f"--server-lr and --server-momentum apply to fedavg only ({self.strategy} has its "
                             "own server optimizer)")

    @classmethod
    def from_config(cls, cfg) -> "Settings":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in cfg.items():
            name = key.replace("-", "_")
            if name in fields:
                values[name] = type(fields[name].default)(value) if name not in ("model", "out") else str(value)
        return cls(**values)


def server_step(before: ArrayRecord, average: ArrayRecord, stepped, lr: float, momentum: float = 0.0,
                velocity: dict = None) -> ArrayRecord:
    """`before + lr * u` for the tensors in `stepped`, where u = momentum * u' + (average - before)
    (u' in `velocity`, updated in place); the others take the average.

    FedAvg with a server learning rate and momentum (FedAvgM, Hsu et al. 2019; FedOpt with
    server SGD, Reddi et al. 2021): each round's averaged client update is a pseudo-gradient.
    BN running statistics are never stepped: they are running means, not gradient-trained,
    and a step past the average could make a variance negative.
    """
    if lr == 1.0 and not momentum:
        return average
    out = {}
    for name, array in average.items():
        value = array.numpy()
        if name in stepped:
            old = before[name].numpy()
            update = value - old
            if momentum:
                update = update + np.float32(momentum) * velocity.get(name, 0.0)
                velocity[name] = update
            value = old + np.float32(lr) * update
        out[name] = Array(np.ascontiguousarray(value, np.float32))
    return ArrayRecord(out)


def round_statistics(sent: np.ndarray, running: np.ndarray, steps: int, momentum: float,
                     variance: bool) -> np.ndarray:
    """The mean of a client's batch statistics over its round, recovered from its running average.

    After `steps` updates `running = m^n sent + (1 - m^n) b` where `b` is the (m-weighted) mean
    of the round's batch statistics; this returns `b`. Averaging `running` instead keeps
    m^n of the old value every round: with momentum 0.99 and 10 steps a round, 45 % of the
    global model's statistics would still be ImageNet's after 8 rounds, while its weights
    moved on. A variance is clipped at 0 (only a bad client could make it negative).
    """
    keep = float(momentum) ** max(int(steps), 0)
    if keep >= 1.0:
        return running
    value = (running.astype(np.float64) - keep * sent) / (1.0 - keep)
    return np.maximum(value, 0.0).astype(np.float32) if variance else value.astype(np.float32)


def client_steps(metrics, examples: int, batch: int, local_epochs: int, where: str) -> int:
    """The train steps a client ran this round: its `num-steps` metric, else what its
    (already checked) example count implies.

    Raises:
        wire.UpdateError: `num-steps` is not a count.
    """
    steps = metrics.get(wire.NUM_STEPS)
    if steps is None:
        return math.ceil(examples / batch) * local_epochs
    return wire.check_count(steps, wire.NUM_STEPS, where, low=0, high=wire.MAX_STEPS, what="a count of steps")


@dataclasses.dataclass(frozen=True)
class Sent:
    """What crosses the wire and how the server treats each tensor, from the model file.

    shapes: every sent tensor's shape; stepped: the trained weights (the server learning rate
    and momentum apply to them); bn: {name: is a variance} of the BN running statistics;
    bn_momentum and batch: the model's, to turn a client's running statistics into its
    round's (`round_statistics`).
    """

    shapes: dict
    stepped: frozenset
    bn: dict
    bn_momentum: float
    batch: int

    @classmethod
    def of(cls, session, names) -> "Sent":
        meta, shapes = session.meta, session.state_shapes()
        groups = meta.state_groups
        return cls(shapes={n: shapes[n] for n in names},
                   stepped=frozenset(n for n in names if n in groups["trainable"]),
                   bn={n: n.endswith(contract.BN_VARIANCE_SUFFIX) for n in names if n in groups["bn_statistics"]},
                   bn_momentum=meta.bn_momentum, batch=meta.batch)


def guarded(base):
    """A subclass of Flower strategy `base` that refuses bad updates, numbers rounds globally,
    turns the clients' BN running statistics into their round's (`--bn-stats round`) and
    applies the server learning rate and momentum (`server_step`).

    s: the run's Settings; sent: the Sent tensors; round_offset: rounds finished before a
    resume; velocity: the momentum buffers (continued after a resume, updated in place).
    With `--lr-scaling sqrt` the clients train at the peak lr x √(clients in the round),
    Adam's square-root scaling rule (Malladi et al. 2022) for the K-times larger effective
    batch of K averaged clients.
    """

    class Guarded(base):
        def __init__(self, *args, s: Settings, sent: Sent, round_offset=0, velocity=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.s, self.tensors, self.round_offset = s, sent, round_offset
            self.velocity = velocity if velocity is not None else {}  # name -> the server momentum's buffer
            self.round_global = None  # the global tensors (ArrayRecord) of the round in progress
            self.rejected = {}  # round -> [reasons]

        def configure_train(self, server_round, arrays, config, grid):
            config[wire.ROUND] = server_round + self.round_offset
            self.round_global = arrays
            messages = list(super().configure_train(server_round, arrays, config, grid))
            if self.s.lr_scaling == "sqrt":  # K averaged clients: a K x larger effective batch
                for msg in messages:  # they share `config` (also across rounds): set, never scale in place
                    msg.content[wire.CONFIG][wire.LR] = self.s.lr * math.sqrt(len(messages))
            return messages

        def aggregate_train(self, server_round, replies):
            kept = []
            for msg in replies:
                if msg.has_error():
                    kept.append(msg)  # Flower logs and drops it
                    continue
                where = f"update from node {msg.metadata.src_node_id}"
                try:
                    from_record(msg.content[wire.ARRAYS], self.tensors.shapes, where)
                    examples = wire.check_weight(msg.content[wire.METRICS].get(wire.NUM_EXAMPLES), where)
                    if self.s.bn_stats == "round":
                        self.round_statistics(msg, examples, where)
                except (wire.UpdateError, KeyError, ValueError) as e:
                    reason = str(e) if not isinstance(e, KeyError) else f"{where}: record {e} missing"
                    log(WARNING, "rejected %s", reason)
                    self.rejected.setdefault(server_round + self.round_offset, []).append(reason)
                    continue
                kept.append(msg)
            arrays, metrics = super().aggregate_train(server_round, kept)
            if arrays is not None:
                arrays = server_step(self.round_global, arrays, self.tensors.stepped, self.s.server_lr, self.s.server_momentum,
                                     self.velocity)
            return arrays, metrics

        def round_statistics(self, msg, examples, where):
            """Replace the reply's BN running statistics by the means of its round's batch statistics."""
            steps = client_steps(msg.content[wire.METRICS], examples, self.tensors.batch, self.s.local_epochs, where)
            record = msg.content[wire.ARRAYS]
            for name, variance in self.tensors.bn.items():
                value = round_statistics(self.round_global[name].numpy(), record[name].numpy(), steps,
                                         self.tensors.bn_momentum, variance)
                record[name] = Array(np.ascontiguousarray(value))

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def make_strategy(s: Settings, sent: Sent, round_offset=0, velocity=None):
    """The Flower strategy of `s.strategy`, guarded (see `guarded`)."""
    kind = {"fedavg": flwr_strategy.FedAvg, "fedadam": flwr_strategy.FedAdam}[s.strategy]
    extra = {"eta": 1e-3} if s.strategy == "fedadam" else {}
    return guarded(kind)(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=s.min_clients,
                         min_available_nodes=s.min_clients, s=s, sent=sent, round_offset=round_offset,
                         velocity=velocity, **extra)


class Fleet:
    """The server's model, checkpoint and per-round reports."""

    def __init__(self, s: Settings):
        self.s = s
        self.session = Session(s.model)
        self.names = wire.sent_names(self.session.meta, s.send)
        self.sent = Sent.of(self.session, self.names)
        os.makedirs(s.out, exist_ok=True)
        self.ckpt_path = os.path.join(s.out, CHECKPOINT)
        self.history = []
        self.done = 0
        self.rejected = {}
        self.velocity = {}  # the server momentum's buffers (the strategy updates this dict)

    def initial(self) -> dict:
        """The global tensors to start from: the last checkpoint of this run, else the model's own."""
        if not os.path.exists(self.ckpt_path):
            return self.session.state(("trainable", "bn_statistics"))
        arrays, meta = ckpt.load_checkpoint(self.ckpt_path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ckpt.CheckpointError(f"{self.ckpt_path} is not a tftl-fleet checkpoint — use another --out")
        ckpt.check_compatible(meta, model_hash=self.session.meta.content_hash, labels=self.session.labels,
                              path=self.ckpt_path)
        if meta.get("send") != self.s.send:
            raise ckpt.CheckpointError(f"{self.ckpt_path} was written with --send {meta.get('send')} — "
                                       "resume with the same setting or use another --out")
        self.done, self.history = int(meta["round"]), list(meta.get("history", []))
        self.velocity.update({k[len(VELOCITY):]: v for k, v in arrays.items()
                              if k.startswith(VELOCITY) and k[len(VELOCITY):] in self.names})
        log(INFO, "resuming after round %d from %s", self.done, self.ckpt_path)
        return {n: arrays[n] for n in self.names}

    def config(self) -> ConfigRecord:
        s = self.s
        return ConfigRecord({wire.ROUNDS: s.rounds, wire.EPOCHS: s.local_epochs, wire.LR: float(s.lr),
                             wire.MODEL_HASH: self.session.meta.content_hash, wire.LABELS: list(self.session.labels),
                             wire.OPTIMIZER: s.optimizer, wire.SEED: s.seed})

    def evaluate(self, server_round: int, record: ArrayRecord) -> MetricRecord:
        """Server-side evaluation after a round, then the checkpoint and the global model file."""
        global_round = server_round + self.done_at_start
        arrays = from_record(record, self.sent.shapes, "the aggregated model")
        self.session.restore_state(arrays, what="the aggregated model", partial=True)
        metrics = {"round": global_round, "bytes_per_client": wire.payload_bytes(arrays),
                   "time": round(time.monotonic() - self.t0, 3)}
        if self.s.val:
            result = evaluation.evaluate(self.session, self.s.val, threads=1)
            metrics["val_accuracy"] = float(result["accuracy"])
        if server_round == 0:  # the starting point (not re-recorded after a resume)
            if not self.history:
                self.history.append(metrics)
            return MetricRecord({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        self.history.append(metrics)
        meta = {"format": CHECKPOINT_FORMAT, "round": global_round, "model_hash": self.session.meta.content_hash,
                "labels": list(self.session.labels), "send": self.s.send, "history": self.history}
        ckpt.save_checkpoint(self.ckpt_path, {**arrays, **{VELOCITY + k: v for k, v in self.velocity.items()}}, meta)
        save_model(os.path.join(self.s.out, GLOBAL_MODEL), self.session.model_file, self.session.labels,
                   self.session.state(), {"fleet": {"round": global_round, "strategy": self.s.strategy}})
        with files.atomic_write(os.path.join(self.s.out, HISTORY)) as f:
            f.write(json.dumps({"settings": dataclasses.asdict(self.s), "rounds": self.history,
                                "rejected": self.rejected}, indent=1).encode())
        log(INFO, "round %d: %s", global_round, metrics)
        return MetricRecord({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def run(self, grid: Grid):
        """Run the remaining rounds; returns the history (one entry per finished round)."""
        start = self.initial()
        self.done_at_start = self.done
        remaining = self.s.rounds - self.done
        self.t0 = time.monotonic()
        if remaining <= 0:
            log(INFO, "all %d rounds already done in %s", self.s.rounds, self.s.out)
            return self.history
        strategy = make_strategy(self.s, self.sent, self.done, self.velocity)
        self.rejected = strategy.rejected
        strategy.start(grid=grid, initial_arrays=to_record(start, self.names), num_rounds=remaining,
                       timeout=self.s.round_timeout, train_config=self.config(), evaluate_fn=self.evaluate)
        return self.history


@app.main()
def main(grid: Grid, context: Context) -> None:
    Fleet(Settings.from_config(context.run_config)).run(grid)
