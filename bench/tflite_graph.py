"""Static per-tensor accounting of one signature of an exported .tflite (no TensorFlow).

Reads the flatbuffer with LiteRT's own schema module and walks the signature's subgraph in
execution order (TFLite runs operators in file order):

  liveness   every non-constant tensor lives from its producer to its last consumer
             (signature inputs from the start, outputs to the end); `ideal_peak_bytes` is
             the maximum of the live bytes over the op sequence: the smallest arena any
             planner could give this op order (op temporaries such as im2col excluded;
             the interpreter's measured arena adds them and fragmentation).
  phases     a tensor is *backward* if it depends on the `labels` input (the loss gradient
             and everything computed from it, optimizer updates included); it is
             *forward* otherwise. The forward/backward *boundary* is the first op that
             depends on both the labels and the images (the loss gradient): no backward
             work can run before it. `saved` = image-dependent tensors produced before the
             boundary and read after it, i.e. what the arena holds across the boundary for
             the backward pass (what the profiler predicts as saved activations). This is
             schedule-based: a forward-only op the converter moved after the boundary (or
             into it) changes what is saved. Image-independent tensors held across it
             (kernel transposes, Adam's b1*m) are `saved_weight_derived`, and READ_VARIABLE
             outputs (fp32 copies of variables in the arena) are weight copies.
  layers     each tensor is attributed to a model layer by its name (TF op name scopes
             carry the Keras layer name); unnamed backward helpers ("mul_14", "Pad_3")
             inherit the layer of their first attributed input.
"""

import re

import numpy as np

_DTYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 16, 11: 8, 16: 4}
# TensorType: FLOAT32 0, FLOAT16 1, INT32 2, UINT8 3, INT64 4, BOOL 6, INT16 7, INT8 9,
# COMPLEX64 8 (unused), FLOAT64 10 -> 8 (rare), RESOURCE 13 (0 bytes), UINT32 16


def _schema():
    from ai_edge_litert import schema_py_generated as S
    return S


def load(flatbuffer):
    S = _schema()
    return S.ModelT.InitFromObj(S.Model.GetRootAsModel(flatbuffer, 0))


def _op_names():
    S = _schema()
    return {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}


def _layer_of(name, layer_names):
    """Layer name of a TFLite tensor name, or None."""
    for part in name.split(";"):
        seg = part.split("/")[0]
        while seg:
            if seg in layer_names:
                return seg
            m = re.match(r"^(.*)_\d+$", seg)
            if not m:
                break
            seg = m.group(1)
    return None


def analyse(flatbuffer, signature="train", layer_block=None, top=15):
    """Per-tensor accounting of one signature; see the module docstring.

    layer_block: {layer name: block index or None} for attribution (from the profiler).
    """
    m = load(flatbuffer)
    ops = _op_names()
    sigs = {sd.signatureKey.decode(): sd for sd in m.signatureDefs}
    sd = sigs[signature]
    sg = m.subgraphs[sd.subgraphIndex]
    inputs = {t.name.decode(): t.tensorIndex for t in sd.inputs}
    outputs = {t.tensorIndex for t in sd.outputs}
    n_ops = len(sg.operators)
    layer_block = layer_block or {}
    names = set(layer_block)

    def nbytes(t):
        if t.type == 13 or t.type == 14:  # resource, variant
            return 0
        shape = t.shape if t.shape is not None else []
        return int(np.prod(shape, dtype=np.int64)) * _DTYPE_BYTES.get(t.type, 4)

    const = set()
    for i, t in enumerate(sg.tensors):
        b = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
        if b is not None and ((b.data is not None and len(b.data)) or (b.offset or 0) > 1):
            const.add(i)
    op_name = []
    producer, consumers = {}, {}
    for k, op in enumerate(sg.operators):
        code = m.operatorCodes[op.opcodeIndex]
        op_name.append(ops.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"))
        for t in op.outputs if op.outputs is not None else []:
            producer[int(t)] = k
        for t in op.inputs if op.inputs is not None else []:
            if t >= 0:
                consumers.setdefault(int(t), []).append(k)

    # phases: backward = depends on labels; D = depends on images
    labels = inputs.get("labels")
    images = inputs.get("images", inputs.get("features"))
    back = {labels} if labels is not None else set()
    dep_img = {images} if images is not None else set()
    attr = {}
    for i, t in enumerate(sg.tensors):
        lay = _layer_of(t.name.decode(), names) if names else None
        if lay:
            attr[i] = lay
    back_op = [False] * n_ops
    boundary = n_ops
    for k, op in enumerate(sg.operators):
        ins = [int(t) for t in (op.inputs if op.inputs is not None else []) if t >= 0]
        outs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
        b = any(t in back for t in ins)
        back_op[k] = b
        d = any(t in dep_img for t in ins)
        if b and d and boundary == n_ops:
            boundary = k
        inherited = next((attr[t] for t in ins if t in attr), None)
        for t in outs:
            if b:
                back.add(t)
            if d:
                dep_img.add(t)
            if t not in attr and inherited is not None:
                attr[t] = inherited

    # liveness of non-constant, non-resource tensors
    live_from, live_to = {}, {}
    for i, t in enumerate(sg.tensors):
        if i in const or nbytes(t) == 0:
            continue
        if i in producer:
            start = producer[i]
        elif i in inputs.values():
            start = 0
        else:
            continue  # never produced (optional / unused)
        end = max(consumers.get(i, [start]))
        if i in outputs:
            end = n_ops - 1
        live_from[i], live_to[i] = start, end
    delta = np.zeros(n_ops + 1, np.int64)
    for i in live_from:
        delta[live_from[i]] += nbytes(sg.tensors[i])
        delta[live_to[i] + 1] -= nbytes(sg.tensors[i])
    live = np.cumsum(delta)[:n_ops]
    peak_op = int(np.argmax(live)) if n_ops else 0

    def kind(i):
        if producer.get(i) is not None and op_name[producer[i]] == "READ_VARIABLE":
            return "weight copy (READ_VARIABLE)"
        if i in back:
            return "backward"
        if live_from[i] < boundary <= live_to[i]:
            return "saved for backward" if i in dep_img else "weight-derived, held across"
        return "forward" if i in dep_img else "weight-derived"

    def row(i):
        t = sg.tensors[i]
        return dict(name=t.name.decode()[:120], bytes=nbytes(t), shape=[int(s) for s in t.shape],
                    kind=kind(i), layer=attr.get(i), block=layer_block.get(attr.get(i)),
                    producer=op_name[producer[i]] if i in producer else "input",
                    live=[live_from[i], live_to[i]])

    at_peak = sorted((i for i in live_from if live_from[i] <= peak_op <= live_to[i]),
                     key=lambda i: -nbytes(sg.tensors[i]))
    by_kind = {}
    for i in at_peak:
        by_kind[kind(i)] = by_kind.get(kind(i), 0) + nbytes(sg.tensors[i])

    saved = [i for i in live_from if kind(i) == "saved for backward"]
    saved_w = [i for i in live_from if kind(i) == "weight-derived, held across"]
    copies = [i for i in live_from if kind(i) == "weight copy (READ_VARIABLE)"]
    per_block, per_layer = {}, {}
    for i in saved:
        lay = attr.get(i)
        blk = layer_block.get(lay)
        key = "unattributed" if lay is None else ("head" if blk is None else str(blk))
        per_block[key] = per_block.get(key, 0) + nbytes(sg.tensors[i])
        per_layer[lay or "?"] = per_layer.get(lay or "?", 0) + nbytes(sg.tensors[i])
    bool_saved = sum(nbytes(sg.tensors[i]) for i in saved if sg.tensors[i].type == 6)
    op_counts = {}
    for k in range(n_ops):
        op_counts[op_name[k]] = op_counts.get(op_name[k], 0) + 1
    # forward / backward op counts
    return dict(
        signature=signature, ops=n_ops, tensors=len(sg.tensors),
        op_counts=dict(sorted(op_counts.items(), key=lambda kv: -kv[1])),
        backward_ops=int(sum(back_op)), boundary_op=boundary,
        sum_nonconst_bytes=int(sum(nbytes(sg.tensors[i]) for i in live_from)),
        ideal_peak_bytes=int(live[peak_op]) if n_ops else 0,
        peak_op=peak_op, peak_op_name=op_name[peak_op] if n_ops else None,
        peak_phase="backward" if n_ops and back_op[peak_op] else "forward",
        live_at_peak_by_kind=by_kind,
        largest_at_peak=[row(i) for i in at_peak[:top]],
        saved_bytes=int(sum(nbytes(sg.tensors[i]) for i in saved)),
        saved_bool_bytes=int(bool_saved),
        saved_count=len(saved),
        saved_by_block=per_block,
        saved_by_layer=dict(sorted(per_layer.items(), key=lambda kv: -kv[1])),
        saved_weight_derived_bytes=int(sum(nbytes(sg.tensors[i]) for i in saved_w)),
        weight_copy_bytes=int(sum(nbytes(sg.tensors[i]) for i in copies)),
        largest_saved=[row(i) for i in sorted(saved, key=lambda i: -nbytes(sg.tensors[i]))[:top]],
    )


def live_curve(flatbuffer, signature="train"):
    """Live bytes per op index (for plots)."""
    return analyse(flatbuffer, signature)["ideal_peak_bytes"]
