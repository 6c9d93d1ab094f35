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
    return sig.signatureKey.decode() if isinstance(sig.signatureKey, bytes) else sig.signatureKey


def signatures_only(flatbuffer: bytes, names) -> bytes:
    """The model with only signatures `names` (and the subgraphs they call); ValueError when
    one of `names` is not a signature of the model."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    by_name = {_key(s): s for s in model.signatureDefs}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"model has no signature {', '.join(missing)} (it has: {', '.join(sorted(by_name))})")
    sigs = [by_name[n] for n in names]
    keep, codes = [], _op_names(schema, model)
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
