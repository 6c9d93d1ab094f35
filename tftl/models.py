"""Model zoo: `build_model(name, ...)` decodes a block table into Keras layers.

The architecture comes from `tftl.archs` (one table per model), the per-layer training
configuration from `tftl.schemes`; this module only instantiates and wires layers, and
loads weights.
"""

import dataclasses
import os
from typing import Optional

import h5py
import keras
import numpy as np

from tftl import archs, layers, schemes

KERAS_WEIGHTS = {
    # name -> (url directory, file name template, md5 hash or None)
    "mbv2": ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5", None),
    "mbv3_small": ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/",
                   "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                   "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "mbv3_large": ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/",
                   "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                   "07fb09a5933dd0c8eaafa16978110389"),
}


@dataclasses.dataclass
class ModelInfo:
    """What the converter and profiler need to know about a built model."""

    name: str
    scheme: str
    blocks: int
    image_size: int
    num_classes: Optional[int]
    specs: list
    configs: dict
    trunk_end: Optional[str]  # name of the last layer of the frozen trunk (None: no trunk)
    packed_masks: bool


def _need_dx(specs, configs):
    """Per layer: does any layer below it train (so its input gradient is needed)?"""
    upstream = {"input": False}
    need = {}
    for s in specs:
        need[s.name] = [upstream[i] for i in s.inputs]
        upstream[s.name] = configs[s.name].trains or any(need[s.name])
    return need


def _trunk_end(specs, configs):
    """Last layer before the first one that trains, if every later layer only reads it."""
    for i, s in enumerate(specs):
        if configs[s.name].trains:
            if i == 0:
                return None
            cut = specs[i - 1].name
            later = {x.name for x in specs[i:]} | {cut}
            if all(inp in later for x in specs[i:] for inp in x.inputs):
                return cut
            return None
    return specs[-1].name


def _make_layer(spec, arch, config, need_dx):
    kw = dict(name=spec.name, config=config, need_dx=need_dx[0] if need_dx else False)
    k = spec.kind
    if k in ("conv", "pointwise", "depthwise"):
        filters = spec.out_shape[-1]
        return layers.Conv(k, filters, spec.kernel, spec.stride, spec.use_bias, **kw)
    if k == "bn":
        init = "zeros" if spec.role == "lite_bn2" else "ones"
        return layers.BatchNorm(epsilon=arch.bn_epsilon, gamma_initializer=init, **kw)
    if k == "act":
        return layers.Activation(spec.act, **kw)
    if k == "pool":
        return layers.GlobalPool(**kw)
    if k == "dense":
        return layers.Dense(spec.out_shape[-1], use_bias=spec.use_bias, **kw)
    if k == "se_mul":
        return layers.ChannelScale(need_dgate=need_dx[1], **kw)
    if k == "avgpool":
        return layers.AvgPool(spec.kernel, **kw)
    if k == "upsample":
        return layers.Upsample(spec.stride, spec.out_shape[:2], **kw)
    if k == "add":
        return layers.Add(name=spec.name)
    raise ValueError(f"unknown layer kind {k!r}")


def run_layers(model_layers, specs, tensors, start=0, training=None):
    """Apply layers[start:] to `tensors` (name -> tensor, updated); returns the last output."""
    out = None
    kw = {} if training is None else {"training": training}
    for s, layer in zip(specs[start:], model_layers[start:]):
        args = [tensors[i] for i in s.inputs]
        out = layer(args if len(args) > 1 else args[0], **kw)
        tensors[s.name] = out
    return out


def build_model(name: str, *, num_classes: Optional[int] = 10, scheme: str = "mobiletl",
                blocks: int = 3, weights="imagenet", image_size: int = 224,
                packed_masks: bool = False) -> keras.Model:
    """Builds a model of the zoo configured for one training scheme.

    Args:
        name: one of `tftl.archs.MODEL_NAMES` (mbv3_small, mbv3_large, mbv2,
            efficientnet_lite0).
        num_classes: classifier size; None gives the backbone with pooled features.
            1000 with weights="imagenet" keeps the pretrained head where the weights have one.
        scheme: one of `tftl.SCHEMES`; fixes what trains, BN modes and activation backward.
        blocks: inverted residual blocks trained by block-wise schemes, counted from the
            output; ignored (any value, 0 included) by the other schemes.
        weights: "imagenet", None (random init) or a path to a Keras .h5 / .weights.h5 file
            (or an EfficientNet-Lite0 .pth).
        image_size: input resolution (multiple of 32).
        packed_masks: MobileTL sign masks stored bit-packed (1 bit / element).

    Returns:
        A `keras.Model` taking float32 RGB [B, R, R, 3] in 0..255 and returning logits
        (or pooled features). `model.tftl` holds a `ModelInfo`.

    Raises:
        ValueError: unknown name / scheme, blocks out of range, bad image size or weights.
        FileNotFoundError: ImageNet weights unavailable offline (the message says how to
            pass a local file).
    """
    specs = archs.decode(name, image_size, num_classes,
                         lite_residual=scheme == "tinytl")
    schemes.validate(scheme, name, blocks)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    configs = schemes.configure(name, scheme, blocks, specs, packed_masks)
    arch = archs.ARCHS[name]
    need = _need_dx(specs, configs)
    model_layers = [_make_layer(s, arch, configs[s.name], need[s.name]) for s in specs]

    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Normalize(*arch.normalization, name="normalize")(inputs)
    outputs = run_layers(model_layers, specs, {"input": x})
    model = keras.Model(inputs, outputs, name=name)
    info = ModelInfo(name, scheme, blocks if scheme in schemes.BLOCKWISE else 0, image_size,
                     num_classes, specs, configs, _trunk_end(specs, configs), packed_masks)
    object.__setattr__(model, "tftl", info)
    object.__setattr__(model, "tftl_layers", model_layers)
    if weights is not None:
        load_weights(model, weights)
    return model


# --------------------------------------------------------------------------- weights

def imagenet_weights_path(name: str, image_size: int = 224) -> str:
    """Path of the ImageNet weights, through Keras' download cache ($KERAS_HOME/models).

    Raises:
        FileNotFoundError: offline and not cached, with the fix in the message.
    """
    if name == "efficientnet_lite0":
        from tftl import torch_weights
        return torch_weights.find_efficientnet_lite0_pth()
    base, template, md5 = KERAS_WEIGHTS[name]
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    fname = template.format(rows=rows)
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
    cached = os.path.join(cache, fname)
    if os.path.exists(cached):
        return cached
    try:
        return keras.utils.get_file(fname, base + fname, cache_subdir="models", file_hash=md5)
    except Exception as e:  # offline: urllib errors, or Keras' wrapped Exception
        raise FileNotFoundError(
            f"cannot download the ImageNet weights of {name} ({fname}): {e.__class__.__name__}. "
            f"Copy the file into {cache}/ or pass weights=PATH (--weights PATH)") from None


def load_weights(model: keras.Model, weights) -> None:
    """Load "imagenet" or a weights file into a tftl model, by layer name.

    Every backbone layer must be found in the file; the head (classifier, MobileNetV3's
    conv_2) keeps its random init when the file has none (no-top files).
    """
    info = model.tftl
    path = imagenet_weights_path(info.name, info.image_size) if weights == "imagenet" else weights
    if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
        raise FileNotFoundError(f"weights file {weights!r} does not exist; pass 'imagenet', "
                                f"None or the path of a Keras .h5 file")
    path = str(path)
    if path.endswith(".pth"):
        from tftl import torch_weights
        by_layer = torch_weights.efficientnet_lite0_to_keras(torch_weights.read_torch_state_dict(path))
    elif path.endswith(".weights.h5") and not _is_legacy_h5(path):
        model.load_weights(path)
        return
    else:
        by_layer = read_keras_h5(path)
    _assign(model, by_layer, path)


def _is_legacy_h5(path):
    with h5py.File(path, "r") as f:
        return "layer_names" in f.attrs


def read_keras_h5(path: str) -> dict:
    """Legacy Keras .h5 weights -> {layer name: [arrays in Keras order]} (h5py, no pickle)."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 weights file ({e})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: not a Keras weights file (no layer_names)")
        out = {}
        for lname in root.attrs["layer_names"]:
            lname = lname.decode() if isinstance(lname, bytes) else lname
            g = root[lname]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
            if names:
                out[lname] = [np.asarray(g[n]) for n in names]
        return out


_HEAD_ROLES = ("classifier", "fusion_conv")
_WEIGHT_ORDER = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


def keras_order(layer) -> list:
    """A layer's variables in Keras' file order (layer.weights lists trainable ones first)."""
    return sorted(layer.weights, key=lambda v: _WEIGHT_ORDER.index(v.name))


def _assign(model, by_layer, path):
    info = model.tftl
    missing = []
    for spec, layer in zip(info.specs, model.tftl_layers):
        if not layer.weights:
            continue
        arrays = by_layer.get(spec.name)
        if arrays is None:
            if spec.role in _HEAD_ROLES or spec.role.startswith("lite_"):
                continue
            missing.append(spec.name)
            continue
        if spec.role == "classifier" and arrays[0].reshape(-1, arrays[-1].shape[-1]).shape != tuple(layer.kernel.shape):
            continue  # a head of another size (e.g. 1000 ImageNet classes vs num_classes)
        variables = keras_order(layer)
        if len(arrays) != len(variables):
            raise ValueError(f"{path}: layer {spec.name} has {len(arrays)} weights, "
                             f"expected {len(variables)}")
        for var, arr in zip(variables, arrays):
            if arr.size != np.prod(var.shape):
                raise ValueError(f"{path}: layer {spec.name} weight {var.name} has shape "
                                 f"{arr.shape}, expected {tuple(var.shape)} (wrong model?)")
            var.assign(arr.reshape(var.shape).astype(np.float32))
    if missing:
        raise ValueError(f"{path}: no weights for {len(missing)} layers of {info.name} "
                         f"(e.g. {missing[0]}); is this a {info.name} weights file?")
