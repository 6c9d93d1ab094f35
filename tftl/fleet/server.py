"""The Flower ServerApp: FedAvg (or FedAdam, Flower's own) over a tftl model's state.

Run config (`flwr run --run-config` or `tftl-fleet serve` flags):
  model           the fleet's .tflite (its labels, state groups and content hash rule the fleet)
  out             folder for checkpoint.npz, history.json and the global model (global.tflite)
  val             optional image folder for server-side evaluation after every round
  rounds, local-epochs, lr, lr-scaling, strategy, server-lr, server-momentum, bn-stats, send, optimizer,
  min-clients, fraction, wait-timeout, round-timeout, min-accepted, round-retries, max-examples, seed

Every round (the loop is ours; each step in it is Flower's strategy): wait up to wait-timeout
for min-clients, sample a fraction of them, send the global tensors, wait up to round-timeout
for replies, drop error replies and updates that do not fit (recorded with their reasons),
aggregate the rest if there are at least min-accepted, evaluate on `val`, then write
checkpoint.npz (atomically), history.json and the self-contained `global.tflite`. A round that
found too few clients or updates is retried, never counted; after round-retries it stops
(RoundsFailed). A restarted server with the same `out` resumes after the last finished round.
"""

import dataclasses
import json
import math
from logging import INFO, WARNING
import os
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as flwr_strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_clip_model_update, compute_stdv

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
ADAM_STATE = ("m_t", "v_t")  # FedAdam's server moments (checkpointed as server_m_t__NAME, server_v_t__NAME)
STRATEGIES = ("fedavg", "fedadam", "fedmedian", "fedtrimmedavg")
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
    fraction: float = 1.0
    wait_timeout: float = 600.0
    round_timeout: float = 600.0
    min_accepted: int = 1
    round_retries: int = 3
    max_examples: int = 10_000
    dp_clip: float = 0.0
    dp_noise: float = 0.0
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
        if not 0 < self.fraction <= 1 or self.min_accepted < 1 or self.round_retries < 0 or self.max_examples < 1 \
                or not self.wait_timeout > 0 or not self.round_timeout > 0:
            raise InputError("fraction must be in (0, 1], min-accepted and max-examples >= 1, round-retries >= 0, "
                             "wait-timeout and round-timeout > 0")
        if self.dp_clip < 0 or self.dp_noise < 0 or (self.dp_noise and not self.dp_clip):
            raise InputError("dp-clip and dp-noise must be >= 0, and dp-noise needs dp-clip")
        if self.dp_clip and self.strategy != "fedavg":
            raise InputError(f"--dp-clip applies to fedavg only, not {self.strategy}")
        if self.min_accepted > self.min_clients:
            raise InputError(f"min-accepted ({self.min_accepted}) cannot exceed min-clients ({self.min_clients})")
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


def _reason(e: Exception, where: str) -> str:
    """One line for a reply the server drops."""
    if isinstance(e, wire.UpdateError):
        return str(e)
    if isinstance(e, KeyError):
        return f"{where}: record {e} missing"
    return f"{where}: unreadable reply ({type(e).__name__}: {e})"


def guarded(base):
    """A subclass of Flower strategy `base` that takes only replies that fit, normalised:

    every reply is checked (names, shapes, dtype, finite values, a positive example count,
    capped at --max-examples) and rebuilt as exactly one ArrayRecord of the sent names and one
    MetricRecord of wire.AGGREGATED, so no reply can make Flower refuse the round; with
    `--bn-stats round` the BN running statistics become the round's (`round_statistics`);
    FedAdam's server step leaves the BN statistics at their plain average; the server learning
    rate and momentum apply (`server_step`). Below --min-accepted updates nothing is
    aggregated (the round is retried, and no server state moves). `self.report` holds the
    round's participants, failures (error replies) and rejections (dropped replies, with reasons).

    s: the run's Settings; sent: the Sent tensors; server_state: the server optimizer's
    buffers (momentum, or FedAdam's m and v), continued after a resume.
    """

    class Guarded(base):
        def __init__(self, *args, s: Settings, sent: Sent, server_state=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.s, self.tensors = s, sent
            self.velocity = {}  # name -> the server momentum's buffer
            self.round_global = None  # the global tensors (ArrayRecord) of the round in progress
            self.report = {}
            self.origin = {}  # message id -> the node it was sent to (set by Fleet.attempt)
            self.load_server_state(server_state or {})

        def configure_train(self, server_round, arrays, config, grid):
            config[wire.ROUND] = server_round
            self.round_global = arrays
            messages = list(super().configure_train(server_round, arrays, config, grid))
            if self.s.lr_scaling == "sqrt":  # K averaged clients: a K x larger effective batch
                for msg in messages:  # they share `config` (also across rounds): set, never scale in place
                    msg.content[wire.CONFIG][wire.LR] = self.s.lr * math.sqrt(len(messages))
            return messages

        def aggregate_train(self, server_round, replies):
            self.report = report = {"participants": [], "failures": [], "rejected": []}
            kept = []
            for msg in replies:
                node = reply_node(msg, self.origin)
                if msg.has_error():
                    report["failures"].append({"node": node, "reason": str(msg.error.reason)[:500]})
                    continue
                where = f"update from node {node}"
                try:
                    report["participants"].append({"node": node, **self.normalise(msg, where)})
                    kept.append(msg)
                except Exception as e:  # noqa: BLE001 — any reply, however malformed, costs only itself
                    log(WARNING, "rejected %s", _reason(e, where))
                    report["rejected"].append({"node": node, "reason": _reason(e, where)[:500]})
            if len(kept) < self.s.min_accepted:
                return None, None
            if self.s.dp_clip:
                self.clip(kept)
            arrays, metrics = super().aggregate_train(server_round, kept)
            if arrays is not None and self.s.dp_noise:
                arrays = self.add_noise(arrays, len(kept))
            if arrays is not None and self.s.strategy == "fedadam":  # Adam steps weights, not statistics
                plain = aggregate_arrayrecords([m.content for m in kept], wire.NUM_EXAMPLES)
                arrays = ArrayRecord({n: plain[n] if n in self.tensors.bn else  # Flower's step is float64
                                      Array(np.ascontiguousarray(a.numpy(), np.float32)) for n, a in arrays.items()})
            if arrays is not None:
                arrays = server_step(self.round_global, arrays, self.tensors.stepped, self.s.server_lr,
                                     self.s.server_momentum, self.velocity)
            return arrays, metrics

        def normalise(self, msg, where) -> dict:
            """Check a reply and rebuild its content as the fixed layout; returns what it reported."""
            content = msg.content
            record = content[wire.ARRAYS]
            if not isinstance(record, ArrayRecord):
                raise wire.UpdateError(f"{where}: {wire.ARRAYS!r} is not an ArrayRecord")
            from_record(record, self.tensors.shapes, where)
            batch, epochs = self.tensors.batch, self.s.local_epochs
            metrics, reported = wire.normalise_metrics(
                content[wire.METRICS], where, cap=self.s.max_examples,
                default_steps=lambda n: math.ceil(n / batch) * epochs)
            record = ArrayRecord({n: record[n] for n in self.tensors.shapes})
            if self.s.bn_stats == "round":
                self.round_statistics(record, metrics[wire.NUM_STEPS])
            msg.content = RecordDict({wire.ARRAYS: record, wire.METRICS: MetricRecord(metrics)})
            norm = math.sqrt(sum(float(np.sum((record[n].numpy().astype(np.float64) - self.round_global[n].numpy()) ** 2))
                                 for n in self.tensors.shapes))
            return {**reported, **metrics, "update-norm": round(norm, 6)}

        def clip(self, kept) -> None:
            """Differential privacy, server-side fixed clipping (Flower's functions): each update
            (reply - global, every sent tensor: the BN round statistics are computed from the
            device's photos too) is scaled to L2 norm <= --dp-clip."""
            names = list(self.tensors.shapes)
            current = [self.round_global[n].numpy() for n in names]
            for msg in kept:
                record = msg.content[wire.ARRAYS]
                values = [record[n].numpy().astype(np.float32) for n in names]
                compute_clip_model_update(values, current, self.s.dp_clip)
                msg.content[wire.ARRAYS] = ArrayRecord({n: Array(np.ascontiguousarray(v, np.float32))
                                                        for n, v in zip(names, values)})

        def add_noise(self, arrays, clients: int) -> ArrayRecord:
            """Gaussian noise of sd dp-noise x dp-clip / clients on every tensor of the average
            (Flower's compute_stdv); variances are then clipped at 0 (post-processing)."""
            values = {n: a.numpy().astype(np.float32) for n, a in arrays.items()}
            add_gaussian_noise_inplace(list(values.values()), compute_stdv(self.s.dp_noise, self.s.dp_clip, clients))
            return ArrayRecord({n: Array(np.ascontiguousarray(np.maximum(v, 0) if self.tensors.bn.get(n) else v))
                                for n, v in values.items()})

        def round_statistics(self, record, steps):
            """Replace the reply's BN running statistics by the means of its round's batch statistics."""
            for name, variance in self.tensors.bn.items():
                value = round_statistics(self.round_global[name].numpy(), record[name].numpy(), steps,
                                         self.tensors.bn_momentum, variance)
                record[name] = Array(np.ascontiguousarray(value))

        def server_state(self) -> dict:
            """The server optimizer's buffers, for the checkpoint: {prefix + name: array}."""
            out = {VELOCITY + k: v for k, v in self.velocity.items()}
            for attr in ADAM_STATE:
                out.update({f"server_{attr}__{k}": v for k, v in (getattr(self, attr, None) or {}).items()})
            return out

        def load_server_state(self, state: dict) -> None:
            self.velocity.update({k[len(VELOCITY):]: v for k, v in state.items() if k.startswith(VELOCITY)})
            for attr in ADAM_STATE:
                prefix = f"server_{attr}__"
                found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                if found:
                    setattr(self, attr, found)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def make_strategy(s: Settings, sent: Sent, server_state=None):
    """The Flower strategy of `s.strategy`, guarded (see `guarded`)."""
    kind = {"fedavg": flwr_strategy.FedAvg, "fedadam": flwr_strategy.FedAdam, "fedmedian": flwr_strategy.FedMedian,
            "fedtrimmedavg": flwr_strategy.FedTrimmedAvg}[s.strategy]
    extra = {"eta": 1e-3} if s.strategy == "fedadam" else {}
    return guarded(kind)(fraction_train=s.fraction, fraction_evaluate=0.0, min_train_nodes=s.min_clients,
                         min_available_nodes=s.min_clients, s=s, sent=sent, server_state=server_state, **extra)


def origins(messages) -> dict:
    """{message id: destination node} of sent messages (a deployment's grid sets the ids on send)."""
    return {m.metadata.message_id: int(m.metadata.dst_node_id) for m in messages if m.metadata.message_id}


def reply_node(msg, origin: dict) -> int:
    """The node a reply is about: the SuperLink answers for a node that died (its error reply
    comes from the SuperLink's own id), so the message it replies to says which node."""
    return origin.get(msg.metadata.reply_to_message_id, int(msg.metadata.src_node_id))


class SnapshotGrid:
    """The nodes that were connected when a round started: Flower's sampling then never waits."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


def wait_for_nodes(grid, need: int, seconds: float, admit=lambda nodes: nodes) -> list:
    """The connected node ids that `admit` lets in, once at least `need` are, else (after
    `seconds`) those there are."""
    deadline = time.monotonic() + seconds
    while True:
        nodes = admit(list(grid.get_node_ids()))
        if len(nodes) >= need or time.monotonic() >= deadline:
            return nodes
        log(INFO, "waiting for clients: %d connected, %d needed (%.0f s left)", len(nodes), need,
            deadline - time.monotonic())
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))


class RoundsFailed(RuntimeError):
    """A round found too few clients or too few good updates in every attempt (exit non-zero;
    the checkpoint holds the last finished round, and the same command resumes from it)."""


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
        self.gave_up = None  # the failed attempts of the round the server stopped at
        self.done = 0
        self.server_state = {}  # the server optimizer's buffers from the checkpoint
        self.checked = {}  # node id -> None (its model is the fleet's) or why it was refused

    def initial(self) -> dict:
        """The global tensors to start from: the last checkpoint of this run, else the model's own."""
        if not os.path.exists(self.ckpt_path):
            return self.session.state(("trainable", "bn_statistics"))
        arrays, meta = ckpt.load_checkpoint(self.ckpt_path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ckpt.CheckpointError(f"{self.ckpt_path} is not a tftl-fleet checkpoint — use another --out")
        ckpt.check_compatible(meta, model_hash=self.session.meta.content_hash, labels=self.session.labels,
                              path=self.ckpt_path)
        for key in ("send", "strategy"):
            if meta.get(key, getattr(self.s, key)) != getattr(self.s, key):
                raise ckpt.CheckpointError(f"{self.ckpt_path} was written with --{key} {meta.get(key)} — "
                                           "resume with the same setting or use another --out")
        self.done, self.history = int(meta["round"]), list(meta.get("history", []))
        self.server_state = {k: v for k, v in arrays.items() if k.startswith("server_")}
        log(INFO, "resuming after round %d from %s", self.done, self.ckpt_path)
        return {n: arrays[n] for n in self.names}

    def config(self) -> ConfigRecord:
        s = self.s
        return ConfigRecord({wire.ROUNDS: s.rounds, wire.EPOCHS: s.local_epochs, wire.LR: float(s.lr),
                             wire.MODEL_HASH: self.session.meta.content_hash, wire.LABELS: list(self.session.labels),
                             wire.OPTIMIZER: s.optimizer, wire.SEED: s.seed})

    def evaluate(self, global_round: int, record: ArrayRecord, report=None, server_state=None) -> None:
        """Server-side evaluation of a finished round, then the checkpoint, history.json and global.tflite."""
        arrays = from_record(record, self.sent.shapes, "the aggregated model")
        self.session.restore_state(arrays, what="the aggregated model", partial=True)
        metrics = {"round": global_round, "bytes_per_client": wire.payload_bytes(arrays),
                   "time": round(time.monotonic() - self.t0, 3)}
        if self.s.val:
            result = evaluation.evaluate(self.session, self.s.val, threads=1)
            metrics["val_accuracy"] = float(result["accuracy"])
        metrics.update(report or {})
        self.history.append(metrics)
        if global_round == 0:  # the starting point: recorded in history.json, no checkpoint yet
            self.write_history()
            return
        meta = {"format": CHECKPOINT_FORMAT, "round": global_round, "model_hash": self.session.meta.content_hash,
                "labels": list(self.session.labels), "send": self.s.send, "strategy": self.s.strategy,
                "history": self.history}
        ckpt.save_checkpoint(self.ckpt_path, {**arrays, **(server_state or {})}, meta)
        save_model(os.path.join(self.s.out, GLOBAL_MODEL), self.session.model_file, self.session.labels,
                   self.session.state(), {"fleet": {"round": global_round, "strategy": self.s.strategy}})
        self.write_history()
        log(INFO, "round %d: %s", global_round, {k: v for k, v in metrics.items() if not isinstance(v, list)})

    def write_history(self) -> None:
        with files.atomic_write(os.path.join(self.s.out, HISTORY)) as f:
            f.write(json.dumps({"settings": dataclasses.asdict(self.s), "rounds": self.history,
                                "gave_up": self.gave_up}, indent=1).encode())

    def admit(self, grid, nodes) -> list:
        """The nodes whose model file and labels are the fleet's: each new node is asked once
        (a small query message, no weights); one that differs or does not answer is refused."""
        new = [n for n in nodes if n not in self.checked]
        if new:
            config = ConfigRecord({wire.MODEL_HASH: self.session.meta.content_hash,
                                   wire.LABELS: list(self.session.labels)})
            queries = [Message(RecordDict({wire.CONFIG: config}), dst_node_id=n, message_type=MessageType.QUERY)
                       for n in new]
            wait = min(self.s.round_timeout, self.s.wait_timeout)
            answers = list(grid.send_and_receive(queries, timeout=wait))
            origin = origins(queries)
            replies = {reply_node(m, origin): m for m in answers}
            for n in new:
                reply = replies.get(n)
                if reply is None:
                    continue  # asked again next time
                self.checked[n] = str(reply.error.reason)[:500] if reply.has_error() else \
                    (None if reply.content[wire.CONFIG].get(wire.MODEL_HASH) == self.session.meta.content_hash
                     else "its model's content hash differs from the fleet's")
                if self.checked[n]:
                    log(WARNING, "refused node %d: %s", n, self.checked[n])
        return [n for n in nodes if n in self.checked and self.checked[n] is None]

    def attempt(self, strategy, grid, global_round: int, arrays: ArrayRecord):
        """One try at a round: (the aggregated arrays or None, the round's report)."""
        s = self.s
        nodes = wait_for_nodes(grid, s.min_clients, s.wait_timeout, lambda found: self.admit(grid, found))
        refused = [{"node": n, "reason": why} for n, why in sorted(self.checked.items()) if why]
        if len(nodes) < s.min_clients:
            return None, {"reason": f"{len(nodes)} of {s.min_clients} clients connected with the fleet's model "
                                    f"within --wait-timeout {s.wait_timeout:g} s", "refused": refused}
        messages = strategy.configure_train(global_round, arrays, self.config(), SnapshotGrid(nodes))
        sampled = sorted(int(m.metadata.dst_node_id) for m in messages)
        replies = list(grid.send_and_receive(messages, timeout=s.round_timeout))
        strategy.origin = origins(messages)
        result, _ = strategy.aggregate_train(global_round, replies)
        report = {"sampled": sampled, **strategy.report, "refused": refused}
        answered = {reply_node(m, strategy.origin) for m in replies}
        report["failures"] += [{"node": n, "reason": f"no reply within --round-timeout {s.round_timeout:g} s"}
                               for n in sampled if n not in answered]
        for key in ("participants", "failures", "rejected"):
            report[key].sort(key=lambda entry: entry["node"])
        if result is None:
            report["reason"] = (f"{len(report['participants'])} accepted updates, --min-accepted is "
                                f"{s.min_accepted}")
        return result, report

    def run(self, grid: Grid):
        """Run the remaining rounds; returns the history (one entry per finished round).

        Raises:
            RoundsFailed: a round failed --round-retries + 1 attempts in a row (not counted).
        """
        start = self.initial()
        self.t0 = time.monotonic()
        if self.done >= self.s.rounds:
            log(INFO, "all %d rounds already done in %s", self.s.rounds, self.s.out)
            return self.history
        strategy = make_strategy(self.s, self.sent, self.server_state)
        arrays = to_record(start, self.names)
        if not self.history:
            self.evaluate(0, arrays)
        for global_round in range(self.done + 1, self.s.rounds + 1):
            failed = []
            while True:
                log(INFO, "[ROUND %d/%d] attempt %d", global_round, self.s.rounds, len(failed) + 1)
                result, report = self.attempt(strategy, grid, global_round, arrays)
                if result is not None:
                    break
                failed.append(report)
                log(WARNING, "round %d not counted: %s", global_round, report["reason"])
                if len(failed) > self.s.round_retries:
                    self.gave_up = {"round": global_round, "attempts": failed}
                    self.write_history()
                    raise RoundsFailed(f"round {global_round} failed {len(failed)} times (last: {report['reason']}) "
                                       f"— {self.s.out} keeps round {global_round - 1}; run the same command "
                                       "again to resume")
            arrays = result
            self.evaluate(global_round, arrays, {**report, "failed_attempts": failed}, strategy.server_state())
        return self.history


@app.main()
def main(grid: Grid, context: Context) -> None:
    Fleet(Settings.from_config(context.run_config)).run(grid)
