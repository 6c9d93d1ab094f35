"""A flatbuffer holding only some of a model's signatures, for an interpreter that runs only those.

LiteRT prepares every subgraph of a model when the interpreter is built: XNNPACK packs the
weights of every delegated partition of every signature (the trunk of `train`, `infer` and
`extract` too, each its own fp32 copy of the int8 weights), whether or not that signature is
ever run. A trainer that streams the trunk through `extract_micro` and then trains with
`train_features` needs neither the trunk of `train` nor that of `infer` in its training
interpreter, so it builds that interpreter from `signatures_only(flatbuffer, [...])`.

Subgraphs a kept signature reaches through CALL_ONCE (the resource variables' initialiser)
are kept, with their indices remapped. A kept signature that uses no resource variable loses
its CALL_ONCE, so an `extract_micro`-only model creates no training state. Buffers no kept
tensor uses are emptied. The graph of each kept signature is unchanged, op for op, so it
computes exactly what it computes in the whole model.

`initial` bakes state into the copy: the named variables start from the given values (the
initialiser subgraph assigns them from new constant tensors), so a session whose state is
still the file's own can load a fine-tuned file's state, or the head fitted as a linear
probe, without ever running `restore`. `restore` takes every state tensor as an input and
checks each for finiteness: its arena is a second copy of the state, plus temporaries, and
LiteRT keeps it for the interpreter's lifetime (mbv2 MobileTL-3: about 36 MB).

Needs the flatbuffer schema that ai-edge-litert ships (`schema_py_generated`) and the
`flatbuffers` package, both dependencies of ai-edge-litert; `available()` says whether they
import (tflite_runtime ships no schema: callers then use the whole model).
"""

import importlib

_SCHEMAS = ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated")
_VARIABLE_OPS = frozenset(("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"))


def _schema():
    for name in _SCHEMAS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def available() -> bool:
    """Whether this runtime ships the flatbuffer schema (and flatbuffers imports)."""
    try:
        import flatbuffers  # noqa: F401
    except ImportError:
        return False
    return _schema() is not None


def _op_names(schema, model):
    """The builtin op name of each operator code of `model`."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]


def _key(sig):
    return _text(sig.signatureKey)


def signatures_only(flatbuffer: bytes, names, initial=None) -> bytes:
    """The model with only signatures `names` (None: all) and the subgraphs they call, its
    variables initialised from `initial` ({state name: float32 array}, see the module's
    docstring) where given; ValueError when one of `names` is not a signature of the model or
    a name of `initial` is not a state tensor of the right shape."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    by_name = {_key(s): s for s in model.signatureDefs}
    names = list(by_name) if names is None else names
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"model has no signature {', '.join(missing)} (it has: {', '.join(sorted(by_name))})")
    sigs = [by_name[n] for n in names]
    keep, codes = [], _op_names(schema, model)
    if initial:
        _bake(schema, model, codes, by_name, initial)
    for s in sigs:
        _reach(model, codes, s.subgraphIndex, keep)
    remap = {old: new for new, old in enumerate(keep)}
    for i in keep:
        for op in model.subgraphs[i].operators:
            if codes[op.opcodeIndex] == "CALL_ONCE":
                op.builtinOptions.initSubgraphIndex = remap[op.builtinOptions.initSubgraphIndex]
    for s in sigs:
        s.subgraphIndex = remap[s.subgraphIndex]
    model.subgraphs = [model.subgraphs[i] for i in keep]
    model.signatureDefs = sigs
    used = {t.buffer for sg in model.subgraphs for t in sg.tensors}
    for b, buf in enumerate(model.buffers):
        if b not in used:
            buf.data = None
    builder = flatbuffers.Builder(len(flatbuffer))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _reach(model, codes, index, keep):
    """Append subgraph `index` and those it calls (CALL_ONCE) to `keep`; a subgraph with no
    resource-variable op drops its CALL_ONCE (it needs no initialised variables)."""
    if index in keep:
        return
    keep.append(index)
    sg = model.subgraphs[index]
    ops = [codes[op.opcodeIndex] for op in sg.operators]
    if not _VARIABLE_OPS.intersection(ops):
        sg.operators = [op for op, name in zip(sg.operators, ops) if name != "CALL_ONCE"]
        return
    for op, name in zip(sg.operators, ops):
        if name == "CALL_ONCE":
            _reach(model, codes, op.builtinOptions.initSubgraphIndex, keep)


def _shared_names(model, codes, restore):
    """{restore input name: the variable's shared name} from the `restore` signature: each
    input is assigned, as it is, to one variable."""
    graph = model.subgraphs[restore.subgraphIndex]
    handles = _handles(graph, codes)
    reshaped = {op.outputs[0]: op.inputs[0] for op in graph.operators if codes[op.opcodeIndex] == "RESHAPE"}
    assigned = {reshaped.get(op.inputs[1], op.inputs[1]): handles.get(op.inputs[0]) for op in graph.operators
                if codes[op.opcodeIndex] == "ASSIGN_VARIABLE"}  # opt_step: f32[1] reshaped to f32[]
    return {_text(t.name): assigned.get(t.tensorIndex) for t in restore.inputs}


def _handles(graph, codes):
    """{tensor index: shared name} of the graph's VAR_HANDLE outputs."""
    return {op.outputs[0]: op.builtinOptions.sharedName for op in graph.operators
            if codes[op.opcodeIndex] == "VAR_HANDLE"}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _bake(schema, model, codes, by_name, initial):
    """Point each of `initial`'s variables' assignment in the initialiser subgraph at a new
    constant tensor holding its value (new buffers: a constant may be shared, so none is
    overwritten)."""
    import numpy as np

    restore = by_name.get("restore")
    if restore is None:
        raise ValueError("model has no restore signature: its state names are unknown")
    shared = _shared_names(model, codes, restore)
    unknown = [n for n in initial if shared.get(n) is None]
    if unknown:
        raise ValueError(f"not state tensors of the model: {', '.join(sorted(unknown))}")
    wanted = {shared[n]: n for n in initial}
    done = set()
    signature_graphs = {s.subgraphIndex for s in model.signatureDefs}
    for index, graph in enumerate(model.subgraphs):
        if index in signature_graphs:  # only the initialiser's assignments
            continue
        handles = _handles(graph, codes)
        for op in graph.operators:
            if codes[op.opcodeIndex] != "ASSIGN_VARIABLE":
                continue
            name = wanted.get(handles.get(op.inputs[0]))
            if name is None:
                continue
            old = graph.tensors[op.inputs[1]]
            value = np.ascontiguousarray(initial[name], dtype=np.float32)
            if value.size != int(np.prod(old.shape)):
                raise ValueError(f"{name}: shape {value.shape}, the model's is {tuple(old.shape)}")
            value = value.reshape(tuple(old.shape))
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(value.tobytes(), np.uint8)
            model.buffers.append(buffer)
            tensor = schema.TensorT()
            tensor.shape, tensor.type = list(old.shape), schema.TensorType.FLOAT32
            tensor.buffer, tensor.name = len(model.buffers) - 1, f"tftl_initial/{name}".encode()
            graph.tensors.append(tensor)
            replaced, op.inputs[1] = op.inputs[1], len(graph.tensors) - 1
            if not any(replaced in o.inputs for o in graph.operators):
                old.buffer = 0  # buffer 0 is the empty one: its constant is dropped unless shared
            done.add(name)
    if done != set(initial):
        raise ValueError(f"no initialiser assigns {', '.join(sorted(set(initial) - done))}")
