"""Model zoo: `build_model(name, ...)` decodes a block table into Keras layers.

Everything about the model (architecture, per-layer training configuration, which input
gradients are needed, where the frozen trunk ends) comes from one `tftl.plan.ModelPlan`;
this module only instantiates and wires layers, and loads weights.
"""

import os
from typing import Optional

import h5py
import keras
import numpy as np

from tftl import layers
from tftl.plan import ModelPlan

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


def _make_layer(spec, plan, config, need_dx):
    kw = dict(name=spec.name, config=config, need_dx=need_dx[0] if need_dx else False)
    k = spec.kind
    if k in ("conv", "pointwise", "depthwise"):
        filters = spec.out_shape[-1]
        return layers.Conv(k, filters, spec.kernel, spec.stride, spec.use_bias, spec.padding, **kw)
    if k == "bn":
        init = "zeros" if spec.role == "lite_bn2" else "ones"
        eps = plan.bn_epsilon if spec.epsilon is None else spec.epsilon
        return layers.BatchNorm(epsilon=eps, gamma_initializer=init, **kw)
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
    if k == "pad":
        return layers.Pad(spec.pads, **kw)
    if k == "maxpool":
        return layers.MaxPool(spec.kernel, spec.stride, spec.padding, **kw)
    if k == "affine":
        return layers.Affine(**kw)
    if k == "reshape":
        return layers.Reshape(spec.out_shape, **kw)
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


@keras.saving.register_keras_serializable(package="tftl")
class TftlModel(keras.Model):
    """A functional Keras model built from a `ModelPlan`, which it carries as `.plan`.

    Its config is the plan's arguments, so `keras.saving.save_model` / `load_model`
    round-trip it: `from_config` rebuilds the same layers from the plan and Keras then
    loads the weights.
    """

    def __init__(self, plan: ModelPlan, name: Optional[str] = None, **kwargs):
        model_layers = [_make_layer(s, plan, plan.configs[s.name], plan.need_dx[s.name])
                        for s in plan.specs]
        inputs = keras.Input((plan.image_size, plan.image_size, 3), name="images")
        x = layers.Normalize(*plan.normalization, name="normalize")(inputs)
        outputs = run_layers(model_layers, plan.specs, {"input": x})
        super().__init__(inputs, outputs, name=name or plan.model, **kwargs)
        self._plan = plan

    @property
    def plan(self) -> ModelPlan:
        return self._plan

    @property
    def tftl_layers(self) -> list:
        """The layers of `plan.specs`, in the same order (the normalisation excluded)."""
        return [self.get_layer(s.name) for s in self._plan.specs]

    def get_config(self):
        return {"name": self.name, "plan": self._plan.arguments()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        return cls(ModelPlan.from_arguments(config.pop("plan")), **config)


def build(plan: ModelPlan, weights=None) -> TftlModel:
    """The Keras model of a plan, with "imagenet", None (random init) or a weights file."""
    model = TftlModel(plan)
    if weights is not None:
        load_weights(model, weights)
    return model


def build_model(name: str, *, num_classes: Optional[int] = 10, scheme: str = "mobiletl",
                blocks: int = 3, weights="imagenet", image_size: int = 224,
                packed_masks: bool = False) -> TftlModel:
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
        A `TftlModel` taking float32 RGB [B, R, R, 3] in 0..255 and returning logits
        (or pooled features); `model.plan` is its `ModelPlan`.

    Raises:
        ValueError: unknown name / scheme, blocks out of range, bad image size or weights.
        FileNotFoundError: ImageNet weights unavailable offline (the message says how to
            pass a local file).
    """
    plan = ModelPlan.build(name, scheme=scheme, blocks=blocks, image_size=image_size,
                           num_classes=num_classes, packed_masks=packed_masks)
    return build(plan, weights)


def build_imported(plan: ModelPlan, graph) -> TftlModel:
    """The Keras model of an imported plan, carrying the user's weights (`graph.weights`)."""
    model = TftlModel(plan)
    for layer in model.tftl_layers:
        arrays = graph.weights.get(layer.name, {})
        names = sorted(v.name for v in layer.weights)
        if sorted(arrays) != names:
            raise ValueError(f"layer {layer.name}: imported weights {sorted(arrays)}, "
                             f"the tftl layer has {names}")
        for v in layer.weights:
            v.assign(np.asarray(arrays[v.name], np.float32).reshape(v.shape))
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
    plan = model.plan
    path = imagenet_weights_path(plan.model, plan.image_size) if weights == "imagenet" else weights
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
    plan = model.plan
    missing = []
    for spec, layer in zip(plan.specs, model.tftl_layers):
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
        raise ValueError(f"{path}: no weights for {len(missing)} layers of {plan.model} "
                         f"(e.g. {missing[0]}); is this a {plan.model} weights file?")
