"""Shrink a converted training graph: frozen weights int8, zero initial values from FILL.

The converter's dynamic-range quantization (`Optimize.DEFAULT`) skips constants under 1024
elements (the stem, most depthwise kernels, SE convs: ~11% of a frozen trunk) and turns the
rest into hybrid int8 kernels, which XNNPACK does not run: mbv2's depthwise convs took 83 ms
hybrid against 18 ms in float. This pass works on the float flatbuffer instead: each float
weight tensor of rank >= 2 becomes a symmetric per-channel int8 tensor followed by a
DEQUANTIZE op. The file holds int8; LiteRT dequantizes constant inputs once (XNNPACK unpacks
them at delegate creation, the builtin kernel caches them in a persistent tensor), so the
trunk then runs at float speed. Activations are never quantized, so the only error is the
weights' rounding. Full-integer quantization of a training graph does not convert in TF 2.21.

The initial values of the resource variables (trained weights, Adam slots) stay float32
unless asked (`initial_values=True`), so training starts from the exact pretrained weights.
Vector-shaped constants (BN scales and shifts, biases, scalars: at most one dimension > 1)
stay float32, like the float scales and int32 biases of a fully quantized model; per-channel
int8 would need one float scale per element there.
"""

import numpy as np

# Per-channel axis by consumer: depthwise filters are [1, H, W, C]; conv, transposed conv and
# fully-connected weights put output channels first. Anything else: the last axis.
_FIRST_AXIS_OPS = frozenset(("CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"))
MIN_ELEMENTS = 16


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _load(flatbuffer):
    schema = _schema()
    return schema, schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)


def _pack(model, size_hint):
    import flatbuffers
    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _drop_unreferenced(model, buffers):
    """Empty those of `buffers` no tensor uses any more; returns the bytes removed."""
    still_used = {t.buffer for sg in model.subgraphs for t in sg.tensors}
    removed = 0
    for b in set(buffers) - still_used:
        removed += len(model.buffers[b].data)
        model.buffers[b].data = None
    return removed


def _op_names(schema, model):
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]


def _opcode_index(schema, model, name, version):
    code = getattr(schema.BuiltinOperator, name)
    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            c.version = max(c.version, version)
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)
    oc.version = version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def quantize_weights(w: np.ndarray, axis: int):
    """Symmetric per-channel int8: (q int8, scales float32 per channel along `axis`)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scale = np.abs(moved).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def int8_weights(flatbuffer: bytes, min_elements: int = MIN_ELEMENTS, select=None,
                 initial_values=False):
    """Float flatbuffer -> (flatbuffer with int8 weights + DEQUANTIZE ops, stats dict).

    Args:
      flatbuffer: a TFLite model converted without quantization.
      min_elements: smaller constants stay float32 (the scales would outweigh the saving).
      select: optional predicate (tensor name, shape) -> bool; False keeps a tensor float.
      initial_values: also round the initial values of the resource variables (the trained
        weights' pretrained start) to int8. Off: training starts from the exact weights.
    Returns:
      (new flatbuffer bytes, stats): quantized_tensors (DEQUANTIZE ops, per subgraph),
      quantized_elements and float_elements (distinct int8 / float32 constant data).
    """
    schema, model = _load(flatbuffer)
    op_names = _op_names(schema, model)
    dequantize = _opcode_index(schema, model, "DEQUANTIZE", 5)   # 5: per-channel int8
    quantized = {}   # (float buffer, shape, axis) -> (int8 buffer index, scales); the
    # converter shares one buffer between tensors of equal bytes, even of different shapes
    stats = {"quantized_tensors": 0, "quantized_elements": 0, "float_elements": 0}
    kept_float = {}  # buffer -> elements of constants left float32 (counted once)
    for sg in model.subgraphs:
        consumers = {}
        for op in sg.operators:
            for pos, t in enumerate(op.inputs if op.inputs is not None else []):
                if t >= 0:
                    consumers.setdefault(t, []).append((op, pos))
        initializers = {t for t, uses in consumers.items()
                        if any(op_names[op.opcodeIndex] == "ASSIGN_VARIABLE" for op, _ in uses)}
        new_ops = []
        for t_index, tensor in enumerate(list(sg.tensors)):
            buf = model.buffers[tensor.buffer] if tensor.buffer else None
            if (buf is None or buf.data is None or len(buf.data) == 0
                    or tensor.type != schema.TensorType.FLOAT32 or t_index not in consumers
                    or tensor.isVariable or (t_index in initializers and not initial_values)):
                continue
            shape = tuple(int(s) for s in tensor.shape)
            size = int(np.prod(shape)) if shape else 1
            vector = sum(d > 1 for d in shape) <= 1   # e.g. [1,1,1,C]: a scale per element
            if vector or size < min_elements or (
                    select is not None and not select(tensor.name.decode(), shape)):
                kept_float[tensor.buffer] = size
                continue
            kinds = {op_names[op.opcodeIndex] for op, _ in consumers[t_index]}
            axis = (len(shape) - 1 if "DEPTHWISE_CONV_2D" in kinds
                    else 0 if kinds & _FIRST_AXIS_OPS else len(shape) - 1)
            key = (tensor.buffer, shape, axis)
            if key not in quantized:
                w = np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.float32).reshape(shape)
                q, scale = quantize_weights(w, axis)
                qbuf = schema.BufferT()
                qbuf.data = np.frombuffer(q.tobytes(), np.uint8)
                model.buffers.append(qbuf)
                quantized[key] = (len(model.buffers) - 1, scale)
                stats["quantized_elements"] += size
            qindex, scale = quantized[key]
            qt = schema.TensorT()
            qt.shape = list(shape)
            qt.type = schema.TensorType.INT8
            qt.buffer = qindex
            qt.name = (tensor.name or b"w") + b"_int8"
            qt.quantization = schema.QuantizationParametersT()
            qt.quantization.scale = [float(s) for s in scale]
            qt.quantization.zeroPoint = [0] * len(scale)
            qt.quantization.quantizedDimension = axis
            sg.tensors.append(qt)
            # the float tensor keeps its index and consumers but is now produced at run time
            tensor.buffer = 0
            op = schema.OperatorT()
            op.opcodeIndex = dequantize
            op.inputs = [len(sg.tensors) - 1]
            op.outputs = [t_index]
            new_ops.append(op)
            stats["quantized_tensors"] += 1
        sg.operators = new_ops + list(sg.operators)
    stats["float_elements"] = sum(kept_float.values())
    _drop_unreferenced(model, [b for b, _, _ in quantized])   # the float copies leave the file
    return _pack(model, len(flatbuffer)), stats


def fill_zero_initial_values(flatbuffer: bytes):
    """Variables whose initial value is all zeros (Adam's m and v) get it from a FILL op.

    The converter stores every initial value as a constant buffer; the Adam slots are zeros
    as large as the trained weights (3.6 MB of mbv2 MobileTL-3's 11.2 MB file). FILL(shape,
    0.0) makes the same tensor when the variables are initialised, from a few bytes.
    Returns (new flatbuffer bytes, bytes of zeros removed).
    """
    schema, model = _load(flatbuffer)
    op_names = _op_names(schema, model)
    fill = _opcode_index(schema, model, "FILL", 1)
    zero_value = len(model.buffers)
    zbuf = schema.BufferT()
    zbuf.data = np.zeros(4, np.uint8)
    model.buffers.append(zbuf)
    dims_buffers, replaced = {}, set()
    for sg in model.subgraphs:
        targets = [op.inputs[1] for op in sg.operators
                   if op_names[op.opcodeIndex] == "ASSIGN_VARIABLE"]
        new_ops, value_tensor = [], None
        for t_index in targets:
            tensor = sg.tensors[t_index]
            buf = model.buffers[tensor.buffer] if tensor.buffer else None
            if (buf is None or buf.data is None or not len(buf.data)
                    or tensor.type != schema.TensorType.FLOAT32 or np.asarray(buf.data).any()):
                continue
            shape = tuple(int(s) for s in tensor.shape)
            if shape not in dims_buffers:
                dbuf = schema.BufferT()
                dbuf.data = np.frombuffer(np.asarray(shape, np.int32).tobytes(), np.uint8)
                model.buffers.append(dbuf)
                dims_buffers[shape] = len(model.buffers) - 1
            dims = schema.TensorT()
            dims.shape, dims.type, dims.buffer = [len(shape)], schema.TensorType.INT32, dims_buffers[shape]
            dims.name = (tensor.name or b"v") + b"_shape"
            sg.tensors.append(dims)
            dims_index = len(sg.tensors) - 1
            if value_tensor is None:
                value = schema.TensorT()
                value.shape, value.type, value.buffer = [], schema.TensorType.FLOAT32, zero_value
                value.name = b"zero"
                sg.tensors.append(value)
                value_tensor = len(sg.tensors) - 1
            replaced.add(tensor.buffer)
            tensor.buffer = 0
            op = schema.OperatorT()
            op.opcodeIndex = fill
            op.inputs = [dims_index, value_tensor]
            op.outputs = [t_index]
            new_ops.append(op)
        sg.operators = new_ops + list(sg.operators)
    removed = _drop_unreferenced(model, replaced)
    return _pack(model, len(flatbuffer)), removed
