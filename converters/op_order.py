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

import heapq
import struct

import numpy as np

_VARIABLE_OPS = frozenset(("READ_VARIABLE", "ASSIGN_VARIABLE"))
_STATEFUL = frozenset(("CALL_ONCE", "WHILE", "IF", "CUSTOM", "?", "RANDOM_UNIFORM",
                       "RANDOM_STANDARD_NORMAL", "MULTINOMIAL", "HASHTABLE", "HASHTABLE_FIND",
                       "HASHTABLE_IMPORT", "HASHTABLE_SIZE"))
_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1,
             "INT16": 2, "INT8": 1, "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "RESOURCE": 4}
_OPERATORS_FIELD = 10  # SubGraph.operators: vtable slot 4 + 2 x field id 3


def _ints(vector_length, as_numpy):
    return [int(t) for t in as_numpy()] if vector_length() else []


class _Model:
    """What the pass reads of a flatbuffer, through the schema's read-only accessors (no
    object tree): op names, which buffers hold constants, each tensor's byte size."""

    def __init__(self, flatbuffer):
        from converters.quantize import _schema
        self.schema = schema = _schema()
        self.model = model = schema.Model.GetRootAs(flatbuffer, 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        codes = (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))
        self.op_names = [names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "?") for c in codes]
        self.constant = {b for b in range(model.BuffersLength())
                         if model.Buffers(b).DataLength() or model.Buffers(b).Size()}
        self.type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def tensor_bytes(self, tensor):
        if tensor.Buffer() in self.constant:
            return 0                                   # a constant: not in the arena
        shape = _ints(tensor.ShapeLength, tensor.ShapeAsNumpy)
        if any(d < 0 for d in shape):
            return 0                                   # dynamic: not planned in the arena
        return int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(self.type_names.get(tensor.Type()), 4)

    def signature_subgraphs(self):
        sigs = (self.model.SignatureDefs(i) for i in range(self.model.SignatureDefsLength()))
        return {s.SignatureKey().decode(): s.SubgraphIndex() for s in sigs}


class _Graph:
    """One subgraph's operators as a dependency graph, with tensor sizes and users."""

    def __init__(self, m: _Model, sg):
        self.sg, n = sg, sg.OperatorsLength()
        self.ops = [sg.Operators(k) for k in range(n)]
        self.names = [m.op_names[o.OpcodeIndex()] for o in self.ops]
        self.ins = [[t for t in _ints(o.InputsLength, o.InputsAsNumpy) if t >= 0] for o in self.ops]
        self.outs = [[t for t in _ints(o.OutputsLength, o.OutputsAsNumpy) if t >= 0] for o in self.ops]
        self.size = [m.tensor_bytes(sg.Tensors(t)) for t in range(sg.TensorsLength())]
        self.inputs = _ints(sg.InputsLength, sg.InputsAsNumpy)
        self.outputs = set(_ints(sg.OutputsLength, sg.OutputsAsNumpy))
        producer = {t: i for i in range(n) for t in self.outs[i]}
        self.deps = [{producer[t] for t in self.ins[i] if t in producer} for i in range(n)]
        self._order_side_effects(m.schema)
        self.users = {}
        for i in range(n):
            for t in set(self.ins[i]):
                self.users.setdefault(t, set()).add(i)
        self.rdeps = [[] for _ in range(n)]
        for i, d in enumerate(self.deps):
            for p in d:
                self.rdeps[p].append(i)

    def _variable(self, schema, op):
        table = op.BuiltinOptions()
        opts = schema.VarHandleOptions()
        opts.Init(table.Bytes, table.Pos)
        return opts.Container(), opts.SharedName()

    def _order_side_effects(self, schema):
        """Dependencies that data edges do not show: per variable, and across side effects."""
        handle = {self.outs[i][0]: self._variable(schema, o)
                  for i, (o, name) in enumerate(zip(self.ops, self.names)) if name == "VAR_HANDLE"}
        last_assign, reads, barrier, touched = {}, {}, None, []
        for i, name in enumerate(self.names):
            if name in _VARIABLE_OPS:
                var = handle.get(self.ins[i][0], ("input", self.ins[i][0]))
                if var in last_assign:
                    self.deps[i].add(last_assign[var])
                if name == "ASSIGN_VARIABLE":
                    self.deps[i].update(reads.pop(var, ()))
                    last_assign[var] = i
                else:
                    reads.setdefault(var, []).append(i)
                touched.append(i)
            elif name in _STATEFUL:
                self.deps[i].update(touched)
                touched = []
            else:
                continue
            if barrier is not None:
                self.deps[i].add(barrier)
            if name in _STATEFUL:
                barrier = i
        for i, d in enumerate(self.deps):
            d.discard(i)

    def peak(self, order):
        """The largest sum of live arena bytes over `order` (inputs live from the start)."""
        first, last = {t: -1 for t in self.inputs}, {}
        for step, i in enumerate(order):
            for t in self.outs[i]:
                first.setdefault(t, step)
            for t in self.ins[i] + self.outs[i]:
                last[t] = step
        for t in self.outputs:
            last[t] = len(order)
        live = np.zeros(len(order) + 2, np.int64)
        for t, f in first.items():
            live[f + 1:last.get(t, f) + 2] += self.size[t]
        return int(live.max())

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

    def schedule(self):
        """The demand order, but any ready op that frees more than it allocates runs first
        (the one that frees most; ties: the earlier in the demand order)."""
        n = len(self.ops)
        base = [0] * n
        for step, op in enumerate(self.demand_order()):
            base[op] = step
        alloc = [sum(self.size[t] for t in self.outs[i] if t in self.users or t in self.outputs)
                 for i in range(n)]
        unique_ins = [[t for t in set(ins) if t not in self.outputs] for ins in self.ins]
        left = {t: len(u) for t, u in self.users.items()}   # users not yet run

        def net(i):  # a ready op is a user of each input: left == 1 means it is the last one
            return alloc[i] - sum(self.size[t] for t in unique_ins[i] if left[t] == 1)

        waiting, done, ready, eager = [len(d) for d in self.deps], [False] * n, [], []

        def push(i):
            heapq.heappush(ready, (base[i], i))
            v = net(i)
            if v < 0:
                heapq.heappush(eager, (v, base[i], i))

        for i in range(n):
            if waiting[i] == 0:
                push(i)
        order = []
        while ready:
            best = None
            while eager and best is None:
                v, _, i = heapq.heappop(eager)
                best = i if not done[i] and net(i) == v else None
            while best is None and ready:
                _, i = heapq.heappop(ready)
                best = None if done[i] else i
            if best is None:
                break
            done[best] = True
            order.append(best)
            for t in set(self.ins[best]):
                left[t] -= 1
                last = [u for u in self.users[t] if not done[u]] if left[t] == 1 else ()
                if last and waiting[last[0]] == 0 and net(last[0]) < 0:
                    heapq.heappush(eager, (net(last[0]), base[last[0]], last[0]))
            for c in self.rdeps[best]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    push(c)
        if len(order) != n:
            raise ValueError("operator graph has a cycle; left in the converter's order")
        return order

    def write_order(self, out: bytearray, order) -> None:
        """Point the subgraph's operator vector at its tables in `order`, in place: the tables
        stay where they are, only the vector's relative offsets change."""
        vector = self.sg._tab.Vector(self.sg._tab.Offset(_OPERATORS_FIELD))
        for k, i in enumerate(order):
            slot, target = vector + 4 * k, self.ops[i]._tab.Pos
            if target <= slot:
                raise ValueError("operator table before its vector: not a converter-made flatbuffer")
            struct.pack_into("<I", out, slot, target - slot)


def _graphs(flatbuffer):
    m = _Model(flatbuffer)
    return {key: _Graph(m, m.model.Subgraphs(i)) for key, i in m.signature_subgraphs().items()}


def estimate(flatbuffer: bytes) -> dict:
    """{signature: estimated peak live arena bytes} in the file's own operator order."""
    return {key: g.peak(list(range(len(g.ops)))) for key, g in _graphs(flatbuffer).items()}


def memory_order(flatbuffer: bytes):
    """The flatbuffer with each signature's operators reordered where that lowers the
    estimated arena peak; returns (bytes, {signature: (peak before, peak after)}). Every byte
    but the subgraphs' operator vectors stays as it was."""
    out, report, written = bytearray(flatbuffer), {}, set()
    for key, g in _graphs(bytes(flatbuffer)).items():
        before = g.peak(list(range(len(g.ops))))
        order = g.schedule()
        after = g.peak(order)
        vector = g.sg._tab.Offset(_OPERATORS_FIELD) + g.sg._tab.Pos
        if after < before and vector not in written:
            g.write_order(out, order)
            written.add(vector)
        report[key] = (before, min(before, after))
    return bytes(out), report
