"""Bring your own Keras model: a user's Keras 3 model read into tftl layer specs.

`read(model)` walks a functional or Sequential Keras 3 model (nested models such as a
`keras.applications` backbone inside a Sequential are inlined) and maps each layer onto
tftl's own layer kinds (`tftl.archs.LayerSpec`), whose backward passes lower to TFLite
builtins only (`tftl.ops`). It returns an `ImportedGraph`: the specs, in topological
order, and the user's trained weights per spec. `tftl.plan.ModelPlan.from_graph` then
decides what trains, `tftl.models.build_imported` builds the Keras model of the plan.

Every layer is checked before anything is built: the first unsupported one raises
`UnsupportedLayer`, one line naming the layer, its class and what to do.

Residual blocks are found from the model's Add merge points: a block is every layer after
the tensor where the two branches of an Add fork, up to that Add. Inside a block with the
inverted-residual shape (1x1 expand conv, BN, activation, depthwise conv, BN, activation,
optional squeeze-and-excitation, 1x1 project conv, BN) the layers get the zoo's IRB roles,
so MobileTL's rules (`tftl.schemes.trained_config`) apply there.
"""

import dataclasses
from typing import Optional

import numpy as np

from tftl.archs import LayerSpec

# Keras class -> what tftl maps it to (the README's table is this one).
SUPPORTED = {
    "Conv2D": "conv (kxk) or pointwise (1x1, stride 1); bias and fused activation kept",
    "DepthwiseConv2D": "depthwise (depth_multiplier 1)",
    "SeparableConv2D": "depthwise + pointwise (depth_multiplier 1)",
    "BatchNormalization": "bn (channels last)",
    "ReLU": "relu, or relu6 with max_value=6",
    "Activation": "relu, relu6, hard_swish / hard_silu, swish / silu, sigmoid, hard_sigmoid, "
                  "linear; softmax as the last layer only",
    "Multiply": "squeeze-and-excitation gate: feature map x per-channel [N,1,1,C] or [N,C]",
    "Add": "residual add (two inputs of the same shape)",
    "GlobalAveragePooling2D": "pool (keepdims too)",
    "AveragePooling2D": "avgpool (pool size = strides, dividing the input)",
    "MaxPooling2D": "maxpool (square pool and strides)",
    "ZeroPadding2D": "pad",
    "Rescaling": "affine (constant scale and offset)",
    "Normalization": "affine (its adapted mean and variance)",
    "Dropout": "removed (identity at inference; training on the device runs without it)",
    "Flatten": "reshape",
    "Reshape": "reshape",
    "Dense": "dense on [N, C]; bias and fused activation kept",
    "InputLayer": "the model input (square RGB images)",
}
_SCALAR_OPS = ("Add", "Multiply", "Subtract", "TrueDivide", "Divide")
_ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "hard_swish": "hard_swish",
                "hard_silu": "hard_swish", "swish": "swish", "silu": "swish",
                "sigmoid": "sigmoid", "hard_sigmoid": "hard_sigmoid"}
_HINT = "rebuild the model with the layers of the README's 'Your own model' table"


class UnsupportedLayer(ValueError):
    """A layer tftl cannot map: one line naming the layer, its class and what to do."""


def unsupported(op, why: str, fix: str = _HINT) -> UnsupportedLayer:
    return UnsupportedLayer(f"layer {op.name!r} ({type(op).__name__}) is not supported: "
                            f"{why}; {fix}")


@dataclasses.dataclass(frozen=True)
class ImportedGraph:
    """A Keras model read into tftl specs.

    name: the Keras model's name. image_size: its square input resolution.
    specs: `LayerSpec`s in topological order (inputs name other specs or "input").
    weights: spec name -> {variable name (kernel, bias, gamma, ...): array}.
    """

    name: str
    image_size: int
    specs: tuple
    weights: dict

    @property
    def num_blocks(self) -> int:
        return len({s.block for s in self.specs if s.block is not None})


def load(path: str):
    """A .keras file -> the Keras model (safe mode: no pickled Lambda code is run)."""
    import keras
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError, zipfile errors...
        raise ValueError(f"cannot load Keras model {path}: {e.__class__.__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}; pass a .keras file saved "
                         "by model.save() whose layers are all Keras built-ins") from None


def read(model, image_size: Optional[int] = None) -> ImportedGraph:
    """Walk a Keras 3 model into an `ImportedGraph` (see the module docstring).

    image_size: the input resolution, needed only when the model's input has no fixed size.

    Raises:
        UnsupportedLayer: the first layer tftl cannot map.
        ValueError: a model tftl cannot take as a whole (subclassed, several inputs or
            outputs, non-square or non-RGB input, an output that is not [N, classes]).
    """
    import keras
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or model.inputs is None:
        raise ValueError(f"model {getattr(model, 'name', model)!r} is not a functional or Sequential "
                         "Keras model (subclassed models have no layer graph to read); rebuild it "
                         "with keras.Model(inputs, outputs) or keras.Sequential")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs; tftl takes one image input and one "
                         "[N, classes] output")
    size = _image_size(model, image_size)
    walker = _Walker(size)
    walker.alias[id(model.inputs[0])] = "input"
    walker.shape["input"] = (size, size, 3)
    out = walker.walk(model)
    specs = walker.specs
    if not specs or len(walker.shape[out]) != 1:
        raise ValueError(f"model {model.name!r} outputs shape {walker.shape.get(out)}; tftl "
                         "trains classifiers: end the model with Dense(classes) on [N, C]")
    for op, x in walker.softmax:
        if x != out:
            raise unsupported(op, "softmax before the last layer",
                              "keep softmax for the output only (tftl trains on logits)")
    if out != specs[-1].name:
        raise ValueError(f"model {model.name!r}: its output is not its last layer; end it "
                         "with the classifier")
    specs = _fuse_hard_sigmoid(specs, walker.weights)
    if specs[-1].kind != "dense":
        raise ValueError(f"model {model.name!r} ends with layer {specs[-1].name!r} ({specs[-1].kind}); "
                         "tftl trains a classifier: end the model with Dense(classes)")
    specs[-1] = dataclasses.replace(specs[-1], role="classifier")
    specs = _assign_blocks(specs)
    return ImportedGraph(model.name, size, tuple(specs), walker.weights)


def _image_size(model, image_size):
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"model {model.name!r} takes input shape {shape}; tftl takes RGB images "
                         "[N, H, W, 3] (channels last)")
    h, w = shape[:2]
    if h is None or w is None:
        if not image_size:
            raise ValueError(f"model {model.name!r} takes images of any size; pass --image-size")
        return int(image_size)
    if h != w:
        raise ValueError(f"model {model.name!r} takes {h}x{w} images; tftl takes square images")
    if image_size and image_size != h:
        raise ValueError(f"--image-size {image_size} differs from the model's input size {h}; "
                         f"leave --image-size out or pass {h}")
    return int(h)


def _topo_nodes(outputs, stop_ids):
    """(operation, node) pairs from the inputs to `outputs`, in topological order."""
    order, seen = [], set()
    stack = [(t, False) for t in reversed(outputs)]
    while stack:
        t, expanded = stack.pop()
        if id(t) in stop_ids:
            continue
        op, node_index, _ = t._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        if expanded:
            seen.add(id(node))
            order.append((op, node))
            continue
        stack.append((t, True))
        stack.extend((x, False) for x in reversed(node.input_tensors) if id(x) not in stop_ids)
    return order


class _Walker:
    """Converts nodes to specs; `alias` maps a Keras tensor (id) to the spec producing it."""

    def __init__(self, size):
        self.size = size
        self.specs, self.weights = [], {}
        self.alias, self.shape = {}, {}
        self.softmax = []  # (layer, its input) of dropped softmax activations

    def walk(self, model):
        import keras
        stop = {id(t) for t in model.inputs}
        for op, node in _topo_nodes(model.outputs, stop):
            if isinstance(op, keras.layers.InputLayer):
                continue
            ins = [self.alias[id(t)] for t in node.input_tensors]
            if isinstance(op, keras.Model):
                inner = op if hasattr(op, "inputs") and op.inputs else None
                if inner is None or len(inner.inputs) != 1 or len(node.input_tensors) != 1:
                    raise unsupported(op, "a nested model must be functional or Sequential with "
                                      "one input", "rebuild it with keras.Model(inputs, outputs)")
                self.alias[id(inner.inputs[0])] = ins[0]
                name = self.walk(inner)
            else:
                name = self.convert(op, node, ins)
            for t in node.output_tensors:
                self.alias[id(t)] = name
        return self.alias[id(model.outputs[0])]

    # ------------------------------------------------------------------ helpers

    def add(self, op_name, kind, inputs, out_shape, **kw):
        if op_name in self.shape:
            raise ValueError(f"two layers are named {op_name!r}; give the model's layers unique "
                             "names")
        spec = LayerSpec(op_name, kind, kw.pop("role", kind), None, self.shape[inputs[0]],
                         tuple(out_shape), inputs=tuple(inputs), **kw)
        self.specs.append(spec)
        self.shape[op_name] = spec.out_shape
        return op_name

    def act(self, op, name, x, activation, last_ok=False):
        """A (fused) activation by its Keras name; None for linear."""
        act_name = getattr(activation, "__name__", str(activation))
        if act_name == "linear":
            return x
        if act_name == "softmax" and last_ok:
            self.softmax.append((op, x))  # the exporter applies softmax to the logits
            return x
        if act_name not in _ACTIVATIONS:
            raise unsupported(op, f"activation {act_name!r}",
                              f"use one of {', '.join(sorted(_ACTIVATIONS))}")
        return self.add(name, "act", [x], self.shape[x], act=_ACTIVATIONS[act_name])

    # ------------------------------------------------------------------ layers

    def convert(self, op, node, ins):
        import keras
        L = keras.layers
        cls = type(op).__name__
        x = ins[0] if ins else None
        out = tuple(node.output_tensors[0].shape[1:])
        if isinstance(op, (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D)):
            return self.conv(op, x, out)
        if isinstance(op, L.BatchNormalization):
            if op.axis not in (-1, len(self.shape[x])) and op.axis != [len(self.shape[x])]:
                raise unsupported(op, f"axis={op.axis}", "use channels-last BatchNormalization")
            c = self.shape[x][-1]
            self.weights[op.name] = dict(
                gamma=_np(op.gamma) if op.scale else np.ones(c, np.float32),
                beta=_np(op.beta) if op.center else np.zeros(c, np.float32),
                moving_mean=_np(op.moving_mean), moving_variance=_np(op.moving_variance))
            return self.add(op.name, "bn", [x], out, epsilon=float(op.epsilon))
        if isinstance(op, L.ReLU):
            slope, thr = float(op.negative_slope or 0), float(op.threshold or 0)
            mx = None if op.max_value is None else float(op.max_value)
            if slope or thr or mx not in (None, 6.0):
                raise unsupported(op, f"ReLU(max_value={mx}, negative_slope={slope}, "
                                  f"threshold={thr})", "use ReLU() or ReLU(6.0)")
            return self.add(op.name, "act", [x], out, act="relu6" if mx else "relu")
        if isinstance(op, L.Activation):
            return self.act(op, op.name, x, op.activation, last_ok=True)
        if isinstance(op, L.Dropout):
            return x
        if isinstance(op, L.Add):
            if len(ins) != 2 or self.shape[ins[0]] != self.shape[ins[1]]:
                raise unsupported(op, "it adds other than two tensors of one shape",
                                  "add two tensors of the same shape per Add layer")
            return self.add(op.name, "add", ins, out)
        if isinstance(op, L.Multiply):
            return self.multiply(op, ins, out)
        if isinstance(op, L.GlobalAveragePooling2D):
            c = self.shape[x][-1]
            y = self.add(op.name if not op.keepdims else op.name + "_pool", "pool", [x], (c,))
            return self.add(op.name, "reshape", [y], (1, 1, c)) if op.keepdims else y
        if isinstance(op, (L.Flatten, L.Reshape)):
            return self.add(op.name, "reshape", [x], out)
        if isinstance(op, L.ZeroPadding2D):
            (t, b), (l_, r) = op.padding
            return self.add(op.name, "pad", [x], out, pads=(int(t), int(b), int(l_), int(r)))
        if isinstance(op, (L.MaxPooling2D, L.AveragePooling2D)):
            return self.pool(op, x, out)
        if isinstance(op, L.Rescaling):
            c = self.shape[x][-1]
            return self.affine(op.name, x, _vec(op.scale, c), _vec(op.offset, c))
        if isinstance(op, L.Normalization):
            return self.normalization(op, x)
        if isinstance(op, L.Dense):
            return self.dense(op, x, out)
        if type(op).__module__.endswith("ops.numpy") and cls in _SCALAR_OPS:
            return self.scalar(op, node, x)
        raise unsupported(op, "tftl has no builtin-only backward pass for it")

    def conv(self, op, x, out):
        import keras
        k, s = tuple(op.kernel_size), tuple(op.strides)
        dil = tuple(getattr(op, "dilation_rate", (1, 1)))
        if k[0] != k[1] or s[0] != s[1] or dil != (1, 1) or op.padding not in ("same", "valid") \
                or op.data_format != "channels_last" or getattr(op, "groups", 1) != 1:
            raise unsupported(op, f"kernel {k}, strides {s}, dilation {dil}, padding "
                              f"{op.padding!r}, groups {getattr(op, 'groups', 1)}",
                              "use square kernels and strides, no dilation or groups, "
                              "'same' or 'valid' padding, channels last")
        if getattr(op, "depth_multiplier", 1) != 1:
            raise unsupported(op, f"depth_multiplier={op.depth_multiplier}",
                              "use depth_multiplier=1 (or a DepthwiseConv2D + Conv2D 1x1)")
        k, s = k[0], s[0]
        bias = _np(op.bias) if op.use_bias else None
        if isinstance(op, keras.layers.SeparableConv2D):
            dw = op.name + "_depthwise"
            self.weights[dw] = dict(kernel=_np(op.depthwise_kernel))
            x = self.add(dw, "depthwise", [x], out[:2] + self.shape[x][-1:], kernel=k,
                         stride=s, padding=op.padding)
            self.weights[op.name] = dict(kernel=_np(op.pointwise_kernel), **_bias(bias))
            y = self.add(op.name, "pointwise", [x], out, use_bias=bias is not None)
        elif isinstance(op, keras.layers.DepthwiseConv2D):
            self.weights[op.name] = dict(kernel=_np(op.kernel), **_bias(bias))
            y = self.add(op.name, "depthwise", [x], out, kernel=k, stride=s,
                         padding=op.padding, use_bias=bias is not None)
        else:
            kind = "pointwise" if k == 1 and s == 1 else "conv"
            self.weights[op.name] = dict(kernel=_np(op.kernel), **_bias(bias))
            y = self.add(op.name, kind, [x], out, kernel=k, stride=s, padding=op.padding,
                         use_bias=bias is not None)
        return self.act(op, op.name + "_activation", y, op.activation)

    def dense(self, op, x, out):
        if len(self.shape[x]) != 1:
            raise unsupported(op, f"its input has shape {self.shape[x]}",
                              "put Flatten or GlobalAveragePooling2D before Dense")
        bias = _np(op.bias) if op.use_bias else None
        self.weights[op.name] = dict(kernel=_np(op.kernel), **_bias(bias))
        y = self.add(op.name, "dense", [x], out, use_bias=bias is not None)
        return self.act(op, op.name + "_activation", y, op.activation, last_ok=True)

    def multiply(self, op, ins, out):
        if len(ins) == 2:
            a, b = (self.shape[i] for i in ins)
            for x, g, xs, gs in ((ins[0], ins[1], a, b), (ins[1], ins[0], b, a)):
                if len(xs) == 3 and gs in ((xs[-1],), (1, 1, xs[-1])):
                    return self.add(op.name, "se_mul", [x, g], out)
        raise unsupported(op, "only the squeeze-and-excitation product (feature map times a "
                          "per-channel gate) is supported", _HINT)

    def pool(self, op, x, out):
        import keras
        p, s = tuple(op.pool_size), tuple(op.strides)
        h, w, _ = self.shape[x]
        if p[0] != p[1] or s[0] != s[1] or op.data_format != "channels_last":
            raise unsupported(op, f"pool_size {p}, strides {s}", "use square pools and strides")
        if isinstance(op, keras.layers.MaxPooling2D):
            return self.add(op.name, "maxpool", [x], out, kernel=p[0], stride=s[0],
                            padding=op.padding)
        if p != s or h % p[0] or w % p[0]:
            raise unsupported(op, f"pool_size {p}, strides {s} on a {h}x{w} input",
                              "use pool_size = strides dividing the input size")
        return self.add(op.name, "avgpool", [x], out, kernel=p[0], stride=p[0])

    def affine(self, name, x, scale, offset):
        self.weights[name] = dict(scale=scale.astype(np.float32), offset=offset.astype(np.float32))
        return self.add(name, "affine", [x], self.shape[x])

    def normalization(self, op, x):
        if getattr(op, "invert", False):
            raise unsupported(op, "invert=True", "apply the inverse outside the model")
        import keras
        c = self.shape[x][-1]
        mean, var = _vec(op.mean, c), _vec(op.variance, c)
        scale = 1.0 / np.maximum(np.sqrt(var), keras.backend.epsilon())
        return self.affine(op.name, x, scale, -mean * scale)

    def scalar(self, op, node, x):
        args = node.arguments.args
        consts = [a for a in args if isinstance(a, (int, float))]
        if len(args) != 2 or len(consts) != 1:
            raise unsupported(op, "arithmetic between two tensors",
                              "use the Add / Multiply layers, or a constant operand")
        c, cls = float(consts[0]), type(op).__name__
        first = isinstance(args[0], (int, float))
        ch = self.shape[x][-1]
        if cls == "Add":
            s, o = 1.0, c
        elif cls == "Multiply":
            s, o = c, 0.0
        elif cls == "Subtract":
            s, o = (-1.0, c) if first else (1.0, -c)
        elif not first:  # x / c
            s, o = 1.0 / c, 0.0
        else:
            raise unsupported(op, "a constant divided by a tensor", _HINT)
        return self.affine(op.name, x, _vec(s, ch), _vec(o, ch))


def _np(v):
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float32)


def _bias(bias):
    return {} if bias is None else {"bias": bias}


def _vec(v, c):
    """A scalar, [C] or [1,1,1,C] constant as a [C] float32 vector."""
    a = np.asarray(_np(v)).reshape(-1)
    return np.full(c, a[0], np.float32) if a.size == 1 else a.astype(np.float32)


# ----------------------------------------------------------------------------- passes

def _consumers(specs):
    out = {}
    for s in specs:
        for i in s.inputs:
            out.setdefault(i, []).append(s)
    return out


def _fuse_hard_sigmoid(specs, weights):
    """(x + 3) -> ReLU6 -> (* 1/6), as keras.applications' MobileNetV3 writes its SE gate,
    becomes one hard_sigmoid activation (its output is what the backward keeps)."""
    by_name, cons = {s.name: s for s in specs}, _consumers(specs)

    def const(name, scale, offset):
        w = weights.get(name)
        s = by_name.get(name)
        return (s is not None and s.kind == "affine" and len(cons.get(name, ())) == 1
                and np.allclose(w["scale"], scale) and np.allclose(w["offset"], offset))

    drop, out = set(), []
    for s in specs:
        if s.kind == "affine" and const(s.name, 1 / 6, 0.0):
            relu = by_name[s.inputs[0]]
            if relu.kind == "act" and relu.act == "relu6" and len(cons[relu.name]) == 1 \
                    and const(relu.inputs[0], 1.0, 3.0):
                plus = by_name[relu.inputs[0]]
                drop |= {relu.name, plus.name}
                weights.pop(s.name)
                weights.pop(plus.name)
                s = dataclasses.replace(s, kind="act", role="act", act="hard_sigmoid",
                                        in_shape=plus.in_shape, inputs=plus.inputs)
        out.append(s)
    return [s for s in out if s.name not in drop]


def _assign_blocks(specs):
    """Residual blocks from Add merge points, and IRB roles inside IRB-shaped ones."""
    index = {s.name: i for i, s in enumerate(specs)}
    ancestors = {"input": {"input"}}
    for s in specs:
        ancestors[s.name] = {s.name}.union(*(ancestors[i] for i in s.inputs))
    block_of, block = {}, 0
    for i, s in enumerate(specs):
        if s.kind != "add":
            continue
        common = ancestors[s.inputs[0]] & ancestors[s.inputs[1]]
        fork = max(common, key=lambda n: index.get(n, -1))
        for j in range(index.get(fork, -1) + 1, i + 1):
            if specs[j].name in ancestors[s.name]:
                block_of[specs[j].name] = block
        block += 1
    specs = [dataclasses.replace(s, block=block_of.get(s.name)) for s in specs]
    roles = {}
    for b in range(block):
        roles.update(_irb_roles([s for s in specs if s.block == b], _consumers(specs)))
    return [dataclasses.replace(s, role=roles.get(s.name, s.role)) for s in specs]


def _irb_roles(members, cons):
    """{name: IRB role} when a residual block has the inverted-residual shape, else {}."""
    by_name = {s.name: s for s in members}
    dws = [s for s in members if s.kind == "depthwise"]
    add = members[-1]
    if len(dws) != 1 or add.kind != "add":
        return {}
    dw = dws[0]
    roles = {dw.name: "dw"}

    def one(name, kind):
        c = [s for s in cons.get(name, ()) if s.name in by_name and s.kind == kind]
        return c[0] if len(c) == 1 else None

    dw_bn = one(dw.name, "bn")
    dw_act = dw_bn and one(dw_bn.name, "act")
    project_bn = next((by_name.get(i) for i in add.inputs
                       if by_name.get(i) is not None and by_name[i].kind == "bn"), None)
    project = project_bn and by_name.get(project_bn.inputs[0])
    if not (dw_bn and dw_act and project and project.kind == "pointwise"):
        return {}
    roles.update({dw_bn.name: "dw_bn", dw_act.name: "dw_act", project.name: "project",
                  project_bn.name: "project_bn"})
    prev = by_name.get(dw.inputs[0])
    if prev is not None and prev.kind == "pad":
        prev = by_name.get(prev.inputs[0])
    if prev is not None and prev.kind == "act":
        bn = by_name.get(prev.inputs[0])
        conv = bn and bn.kind == "bn" and by_name.get(bn.inputs[0])
        if conv and conv.kind == "pointwise":
            roles.update({conv.name: "expand", bn.name: "expand_bn", prev.name: "expand_act"})
    return roles
