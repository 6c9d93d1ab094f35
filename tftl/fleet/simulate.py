"""N simulated clients in one process: Flower's ServerApp logic and ClientApp, without Ray.

Flower's simulation engine needs Ray (`flwr[simulation]`), too heavy for a 2-core box. The
strategy (`Strategy.start`) only talks to a `Grid`, so `LocalGrid` below hands each message
to the ClientApp of its node in this process, one client after the other, and turns a
client's exception into an error reply (Flower's strategies then drop that client, as they
drop a node that failed in a real deployment). Everything else is the real Flower code path:
the same `client.app`, the same Message / RecordDict serialisation objects, the same strategy.
"""

import itertools
import traceback

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from tftl.fleet import client as fleet_client

CLIENT_ERROR = 1  # Error.code of a reply whose ClientApp raised


class LocalGrid(Grid):
    """A Grid whose nodes are ClientApps called in this process, in node order."""

    def __init__(self, client_app, node_configs, *, run_config=None, fail=None):
        """node_configs: one node config dict per client. fail: {node index: exception or
        callable(message, context) -> Message} to inject faults in tests (train messages only:
        the connect-time model check, a query, always reaches the real ClientApp)."""
        self.client_app = client_app
        self.contexts = {i + 1: Context(run_id=1, node_id=i + 1, node_config=dict(cfg), state=RecordDict(),
                                        run_config=dict(run_config or {}))
                         for i, cfg in enumerate(node_configs)}
        self.fail = dict(fail or {})
        # Messages take their run and sender from the process's task identity, which a
        # SuperLink-launched ServerApp process gets at start; this process plays that part.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
        self._replies = {}
        self._ids = itertools.count(1)
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl,
                       group_id=group_id)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg_id = f"local-{next(self._ids)}"
            self._replies[msg_id] = self._deliver(msg)
            ids.append(msg_id)
        return ids

    def _deliver(self, msg) -> Message:
        node = msg.metadata.dst_node_id
        fault = self.fail.get(node - 1) if msg.metadata.message_type == MessageType.TRAIN else None
        try:
            if callable(fault) and not isinstance(fault, BaseException):
                return fault(msg, self.contexts[node])
            if fault is not None:
                raise fault
            return self.client_app(msg, self.contexts[node])
        except Exception as e:  # a client's failure is its own; the round goes on without it
            reason = "".join(traceback.format_exception_only(type(e), e)).strip()
            return Message(Error(code=CLIENT_ERROR, reason=reason), reply_to=msg)

    def pull_messages(self, message_ids):
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))


def node_configs(model, data, n, *, shard="iid", alpha=0.5, seed=0, work_dir, threads=1):
    """The node config of each of `n` clients sharing one image folder."""
    return [{"model": model, "data": data, "partition-id": i, "num-partitions": n, "shard": shard,
             "alpha": float(alpha), "seed": seed, "work-dir": work_dir, "threads": threads} for i in range(n)]


def simulate(settings, data, n, *, shard="iid", alpha=0.5, work_dir=None, threads=1, fail=None):
    """Run a whole federation in this process; returns the server's history (one entry per round).

    settings: server.Settings (settings.min_clients is lowered to n when larger).
    """
    import dataclasses
    import os

    from tftl.fleet import server

    if settings.min_clients > n:
        settings = dataclasses.replace(settings, min_clients=n)
    work_dir = work_dir or os.path.join(settings.out, "clients")
    grid = LocalGrid(fleet_client.app, node_configs(settings.model, data, n, shard=shard, alpha=alpha,
                                                    seed=settings.seed, work_dir=work_dir, threads=threads),
                     fail=fail)
    return server.Fleet(settings).run(grid)
