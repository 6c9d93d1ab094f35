"""Op-level timing of one signature in LiteRT, without a profiler API.

ai_edge_litert 2.3's Python Interpreter exposes no op profiler, so every operator of the
signature's subgraph is cut out into a one-op .tflite (its constant inputs keep their
buffers, the other inputs become random model inputs of the same shape and type) and
timed alone (process CPU time, median of --reps) in a fresh interpreter with the same
thread count and the default delegates.
Resource-variable plumbing (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE) cannot be
cut out and is reported as untimed. The sum over ops approximates the step (no cache reuse
between ops, no XNNPACK fusion across ops); the point is the ranking by op type.

    python bench/op_profile.py MODEL.tflite [--signature train] [--threads 1] [--reps 5]
Prints one JSON line: per op type {count, ms}, top ops, total.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

UNTIMED = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
_NP = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
       7: np.int16, 9: np.int8}


def one_op_model(S, m, sg, op):
    """A ModelT with a single operator `op` of subgraph `sg` of model `m`."""
    import copy
    new = S.ModelT()
    new.version = 3
    new.description = b"op"
    new.buffers = [S.BufferT()]
    code = copy.deepcopy(m.operatorCodes[op.opcodeIndex])
    new.operatorCodes = [code]
    sub = S.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs = [], [], []
    remap = {}

    def add(ti, as_input):
        if ti in remap:
            return remap[ti]
        t = copy.deepcopy(sg.tensors[ti])
        b = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
        has_data = b is not None and b.data is not None and len(b.data) > 0
        if has_data:
            nb = S.BufferT()
            nb.data = b.data
            new.buffers.append(nb)
            t.buffer = len(new.buffers) - 1
        else:
            t.buffer = 0
            if as_input:
                sub.inputs.append(len(sub.tensors))
        t.isVariable = False
        sub.tensors.append(t)
        remap[ti] = len(sub.tensors) - 1
        return remap[ti]

    nop = copy.deepcopy(op)
    nop.opcodeIndex = 0
    nop.inputs = [add(int(t), True) if t >= 0 else -1 for t in op.inputs]
    nop.outputs = [add(int(t), False) for t in op.outputs]
    if op.intermediates is not None and len(op.intermediates):
        nop.intermediates = [add(int(t), False) for t in op.intermediates]
    sub.outputs = list(nop.outputs)
    sub.operators = [nop]
    new.subgraphs = [sub]
    return new


def pack(S, model):
    import flatbuffers
    b = flatbuffers.Builder(1 << 20)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def random_input(d, rng):
    shape, dtype = d["shape"], d["dtype"]
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def profile_ops(flatbuffer, signature="train", threads=1, reps=5, log=None):
    from ai_edge_litert import interpreter as litert
    from ai_edge_litert import schema_py_generated as S
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(flatbuffer, 0))
    sd = next(s for s in m.signatureDefs if s.signatureKey.decode() == signature)
    sg = m.subgraphs[sd.subgraphIndex]
    rng = np.random.default_rng(0)
    # phase: an op is backward (gradient or optimizer update) when it depends on the labels
    labels = next((t.tensorIndex for t in sd.inputs if t.name.decode() == "labels"), None)
    back = {labels} if labels is not None else set()
    phase = []
    for op in sg.operators:
        b = any(int(t) in back for t in (op.inputs if op.inputs is not None else []) if t >= 0)
        if b:
            back.update(int(t) for t in (op.outputs if op.outputs is not None else []))
        phase.append("backward" if b else "forward")
    per_op, failed, untimed = [], {}, {}
    for k, op in enumerate(sg.operators):
        code = m.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        if name in UNTIMED:
            untimed[name] = untimed.get(name, 0) + 1
            continue
        try:
            interp = litert.Interpreter(model_content=pack(S, one_op_model(S, m, sg, op)),
                                        num_threads=threads)
            interp.allocate_tensors()
            for d in interp.get_input_details():
                interp.set_tensor(d["index"], random_input(d, rng))
            interp.invoke()
            ts = []  # process CPU time: robust to preemption by other jobs (1 thread)
            for _ in range(reps):
                t = time.process_time()
                interp.invoke()
                ts.append((time.process_time() - t) * 1e3)
            out = sg.tensors[op.outputs[0]] if len(op.outputs) else None
            per_op.append(dict(index=k, op=name, ms=statistics.median(ts), phase=phase[k],
                               output=(out.name.decode()[:90] if out is not None else ""),
                               shape=[int(s) for s in out.shape] if out is not None else []))
        except Exception as e:  # an op that cannot run alone (e.g. needs valid indices)
            failed[name] = failed.get(name, 0) + 1
            if log:
                log(f"op {k} {name}: {type(e).__name__}: {str(e)[:100]}")
    by_type = {}
    for r in per_op:
        t = by_type.setdefault(r["op"], dict(count=0, ms=0.0))
        t["count"] += 1
        t["ms"] += r["ms"]
    total = sum(r["ms"] for r in per_op)
    by_phase = {}
    for r in per_op:
        t = by_phase.setdefault(r["phase"], {})
        t[r["op"]] = t.get(r["op"], 0.0) + r["ms"]
    by_phase = {ph: dict(total_ms=sum(v.values()),
                         top=dict(sorted(v.items(), key=lambda kv: -kv[1])[:8]))
                for ph, v in by_phase.items()}
    return dict(signature=signature, threads=threads, total_ms=total, by_phase=by_phase,
                by_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"])),
                top=sorted(per_op, key=lambda r: -r["ms"])[:25], untimed=untimed, failed=failed)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--signature", default="train")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    from tftl.runtime import modelfile
    fb = modelfile.read_model(a.model).flatbuffer
    t = time.time()
    r = profile_ops(fb, a.signature, a.threads, a.reps,
                    log=lambda s: print(s, file=sys.stderr))
    r["model"] = os.path.basename(a.model)
    r["wall_s"] = round(time.time() - t, 1)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
