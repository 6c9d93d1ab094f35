"""Reorder each signature's operators so that fewer activations are alive at once.

LiteRT runs a subgraph's operators in the order the file lists them, and its arena planner
gives each tensor memory from the op that writes it to the last op that reads it. The TF
converter's order is not chosen for memory: in a training step it reads every trained weight
and optimizer slot (READ_VARIABLE copies into the arena) and computes Adam's `b1 * m` long
before the gradient it is combined with, and it leaves the ReLU6 backward masks to the
backward, which keeps each full-precision pre-activation alive across the whole step.

This pass keeps every operator and every tensor; it only changes the order:
  1. a demand-driven order: the step's sinks (variable updates, outputs) in the converter's
     order, each preceded by whatever it needs that has not run yet, so reads and optimizer
     arithmetic run just before their use;
  2. then a list schedule that runs at once any ready operator that frees more than it
     allocates (a 1-byte mask computed from a float pre-activation that then dies), and
     otherwise the next operator of the demand-driven order.
Resource-variable operators on the same variable keep their relative order (reads before the
assign that follows them, assigns in order); operators with other side effects (CALL_ONCE,
control flow, random numbers, custom ops) keep their order relative to every stateful
operator. Each operator computes exactly what it did, from the same inputs, so a step gives
bit-identical results (tests/test_op_order.py).

A subgraph is rewritten only where the pass lowers its peak of live arena bytes, estimated
as LiteRT's planner sees lifetimes (constants excluded). `estimate(flatbuffer)` reports it.
"""

import numpy as np

_VARIABLE_OPS = frozenset(("READ_VARIABLE", "ASSIGN_VARIABLE"))
_PURE_EXTRA = frozenset(("VAR_HANDLE",))
_STATEFUL = frozenset(("CALL_ONCE", "WHILE", "IF", "CUSTOM", "?", "RANDOM_UNIFORM",
                       "RANDOM_STANDARD_NORMAL", "MULTINOMIAL", "HASHTABLE", "HASHTABLE_FIND",
                       "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "VAR_HANDLE_PLACEHOLDER"))
_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1,
             "INT16": 2, "INT8": 1, "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "RESOURCE": 4}


class _Graph:
    """One subgraph's operators as a dependency graph, with tensor sizes and users."""

    def __init__(self, schema, model, sg, op_names):
        self.sg, self.ops = sg, sg.operators or []
        self.names = [op_names[o.opcodeIndex] for o in self.ops]
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.size = [self._bytes(model, t, type_names) for t in (sg.tensors or [])]
        producer = {t: i for i, o in enumerate(self.ops) for t in self._outs(o)}
        self.deps = [{producer[t] for t in self._ins(o) if t in producer} for o in self.ops]
        self._order_side_effects()
        self.users = {}
        for i, o in enumerate(self.ops):
            for t in set(self._ins(o)):
                self.users.setdefault(t, set()).add(i)
        self.outputs = set(sg.outputs if sg.outputs is not None else [])
        self.rdeps = [[] for _ in self.ops]
        for i, d in enumerate(self.deps):
            for p in d:
                self.rdeps[p].append(i)

    @staticmethod
    def _ins(op):
        return [t for t in (op.inputs if op.inputs is not None else []) if t >= 0]

    @staticmethod
    def _outs(op):
        return [t for t in (op.outputs if op.outputs is not None else []) if t >= 0]

    @staticmethod
    def _bytes(model, tensor, type_names):
        buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
        if buf is not None and (buf.data is not None and len(buf.data) or buf.size):
            return 0                                   # a constant: not in the arena
        shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            return 0                                   # dynamic: not planned in the arena
        return int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(type_names.get(tensor.type), 4)

    def _order_side_effects(self):
        """Dependencies that data edges do not show: per variable, and across side effects."""
        handle = {}
        for o, name in zip(self.ops, self.names):
            if name == "VAR_HANDLE":
                opts = o.builtinOptions
                handle[self._outs(o)[0]] = (getattr(opts, "container", None),
                                            getattr(opts, "sharedName", None))
        last_assign, reads, barrier, touched = {}, {}, None, []
        for i, (o, name) in enumerate(zip(self.ops, self.names)):
            if name in _VARIABLE_OPS:
                var = handle.get(self._ins(o)[0], ("input", self._ins(o)[0]))
                if var in last_assign:
                    self.deps[i].add(last_assign[var])
                if name == "ASSIGN_VARIABLE":
                    self.deps[i].update(reads.pop(var, ()))
                    last_assign[var] = i
                else:
                    reads.setdefault(var, []).append(i)
                if barrier is not None:
                    self.deps[i].add(barrier)
                touched.append(i)
            elif name in _STATEFUL:
                self.deps[i].update(touched)
                if barrier is not None:
                    self.deps[i].add(barrier)
                barrier, touched = i, []
        for d, i in zip(self.deps, range(len(self.deps))):
            d.discard(i)

    def peak(self, order):
        """The largest sum of live arena bytes over `order` (inputs live from the start)."""
        first, last = {t: -1 for t in (self.sg.inputs if self.sg.inputs is not None else [])}, {}
        for step, i in enumerate(order):
            o = self.ops[i]
            for t in self._outs(o):
                first.setdefault(t, step)
            for t in self._ins(o) + self._outs(o):
                last[t] = step
        for t in self.outputs:
            last[t] = len(order)
        live = np.zeros(len(order) + 2, np.int64)
        for t, f in first.items():
            live[f + 1:last.get(t, f) + 2] += self.size[t]
        return int(live.max()) if len(live) else 0

    def demand_order(self):
        """Sinks in their original order, each after what it needs (iterative DFS)."""
        order, seen = [], set()
        for sink in (i for i in range(len(self.ops)) if not self.rdeps[i]):
            stack = [(sink, iter(sorted(self.deps[sink])))]
            seen.add(sink)
            while stack:
                node, it = stack[-1]
                child = next((c for c in it if c not in seen), None)
                if child is None:
                    order.append(node)
                    stack.pop()
                else:
                    seen.add(child)
                    stack.append((child, iter(sorted(self.deps[child]))))
        return order

    def _net(self, i, remaining):
        o = self.ops[i]
        alloc = sum(self.size[t] for t in self._outs(o) if t in self.users or t in self.outputs)
        freed = sum(self.size[t] for t in set(self._ins(o))
                    if t not in self.outputs and remaining.get(t) == {i})
        return alloc - freed

    def schedule(self):
        """The demand order, but any ready op that frees more than it allocates runs first."""
        base = {op: step for step, op in enumerate(self.demand_order())}
        remaining = {t: set(u) for t, u in self.users.items()}
        waiting = [len(d) for d in self.deps]
        ready = {i for i, w in enumerate(waiting) if w == 0}
        order = []
        while ready:
            nets = {i: self._net(i, remaining) for i in ready}
            eager = [i for i in ready if nets[i] < 0]
            best = (min(eager, key=lambda i: (nets[i], base[i])) if eager
                    else min(ready, key=base.__getitem__))
            ready.remove(best)
            order.append(best)
            for t in set(self._ins(self.ops[best])):
                remaining[t].discard(best)
            for c in self.rdeps[best]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.add(c)
        if len(order) != len(self.ops):
            raise ValueError("operator graph has a cycle; left in the converter's order")
        return order


def _signature_subgraphs(model):
    return {(s.signatureKey.decode() if isinstance(s.signatureKey, bytes) else s.signatureKey):
            s.subgraphIndex for s in (model.signatureDefs or [])}


def _graphs(flatbuffer):
    from converters.quantize import _load, _op_names
    schema, model = _load(flatbuffer)
    names = _op_names(schema, model)
    return model, {key: _Graph(schema, model, model.subgraphs[i], names)
                   for key, i in _signature_subgraphs(model).items()}


def estimate(flatbuffer: bytes) -> dict:
    """{signature: estimated peak live arena bytes} in the file's own operator order."""
    _, graphs = _graphs(flatbuffer)
    return {key: g.peak(list(range(len(g.ops)))) for key, g in graphs.items()}


def memory_order(flatbuffer: bytes):
    """The flatbuffer with each signature's operators reordered where that lowers the
    estimated arena peak; returns (bytes, {signature: (peak before, peak after)})."""
    from converters.quantize import _pack
    model, graphs = _graphs(flatbuffer)
    report = {}
    for key, g in graphs.items():
        before = g.peak(list(range(len(g.ops))))
        order = g.schedule()
        after = g.peak(order)
        if after < before:
            g.sg.operators = [g.ops[i] for i in order]
        report[key] = (before, min(before, after))
    return _pack(model, len(flatbuffer) + 1024), report
