"""`ModelPlan`: one validated description of a model under a training scheme.

Pure Python (no TensorFlow). Every stage reads the same plan, built and validated once:
the Keras builder (`tftl.models.build`) instantiates its layers, the analytical profiler
(`tftl.profile.profile_plan`) counts its memory, and the exporter (`converters.export`)
cuts its trunk and writes its metadata. Before the plan existed, each stage re-validated
the scheme and re-derived the per-layer configs and input-gradient needs on its own.

Per-layer-kind facts that both the Keras layers and the profiler need (weight shapes,
multiply-accumulates) are also defined here, once.

Conventions
  blocks: the number of top inverted residual blocks a block-wise scheme (ft_blocks,
    mobiletl) trains; 0 for every other scheme, whatever the caller passed.
  mask_kind: how MobileTL's sign masks are stored: "none" (scheme has none), "bool" (one
    byte per element, TFLite's bool) or "packed" (1 bit per element).
"""

import dataclasses
from typing import Mapping, Optional, Tuple

from tftl import archs, schemes

WEIGHTED = ("conv", "pointwise", "depthwise", "dense")


# ----------------------------------------------------------------- per-layer-kind facts

def kernel_shape(kind: str, kernel: int, cin: int, cout: int) -> Tuple[int, ...]:
    """Shape of the kernel of a weighted layer, as Keras stores it (so Keras files load)."""
    if kind == "conv":
        return (kernel, kernel, cin, cout)
    if kind == "pointwise":
        return (1, 1, cin, cout)
    if kind == "depthwise":
        return (kernel, kernel, cin, 1)
    if kind == "dense":
        return (cin, cout)
    raise ValueError(f"{kind!r} layers have no kernel")


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def spec_kernel_shape(spec: "archs.LayerSpec") -> Tuple[int, ...]:
    """Kernel shape of a weighted `LayerSpec` (() for layers without a kernel)."""
    if spec.kind not in WEIGHTED:
        return ()
    return kernel_shape(spec.kind, spec.kernel, spec.in_shape[-1], spec.out_shape[-1])


def kernel_params(spec: "archs.LayerSpec") -> int:
    """Elements of the kernel of a layer (0 for layers without one)."""
    shape = spec_kernel_shape(spec)
    return _prod(shape) if shape else 0


def macs(spec: "archs.LayerSpec") -> int:
    """Forward multiply-accumulates of one layer, per sample: output positions x kernel.

    conv Ho*Wo*k*k*Cin*Cout, pointwise H*W*Cin*Cout, depthwise Ho*Wo*k*k*C, dense Cin*Cout.
    """
    if spec.kind not in WEIGHTED:
        return 0
    return _prod(spec.out_shape[:-1]) * kernel_params(spec)


# ----------------------------------------------------------------------------- the plan

def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def need_dx(specs, configs) -> dict:
    """Per layer, per input: does any layer below that input train (so dL/dinput is needed)?"""
    upstream = {"input": False}
    need = {}
    for s in specs:
        need[s.name] = tuple(upstream[i] for i in s.inputs)
        upstream[s.name] = configs[s.name].trains or any(need[s.name])
    return need


def trunk_end(specs, configs) -> Optional[str]:
    """Last layer before the first one that trains, if every later layer only reads it.

    None when the first layer trains or a later layer reads a tensor from before the cut
    (then there is no frozen trunk whose output alone feeds the trained part).
    """
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


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """A model of the zoo under one training scheme, validated; see the module docstring.

    Build it with `ModelPlan.build(...)`; the fields below are derived, never set by hand.
    """

    model: str
    scheme: str
    blocks: int
    image_size: int
    num_classes: Optional[int]
    packed_masks: bool
    specs: Tuple["archs.LayerSpec", ...]
    configs: Mapping[str, "schemes.LayerConfig"]
    need_dx: Mapping[str, Tuple[bool, ...]]
    trunk_end: Optional[str]

    @classmethod
    def build(cls, model: str, *, scheme: str = "mobiletl", blocks: Optional[int] = 3,
              image_size: int = 224, num_classes: Optional[int] = 10,
              packed_masks: bool = False) -> "ModelPlan":
        """Validates every argument once and derives specs, configs, need_dx and trunk_end.

        Args:
            model: one of `tftl.archs.MODEL_NAMES`.
            scheme: one of `tftl.schemes.SCHEMES`.
            blocks: top IRBs trained by ft_blocks / mobiletl (1..number of IRBs); ignored
                (stored as 0) by the other schemes.
            image_size: input resolution, a multiple of 32.
            num_classes: classifier size, or None for the pooled backbone.
            packed_masks: mobiletl's sign masks bit-packed instead of bool.

        Raises:
            ValueError: one line naming the bad argument and the accepted values.
        """
        if model not in archs.ARCHS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(archs.MODEL_NAMES)}")
        schemes.validate(scheme, model, blocks)
        if num_classes is not None:
            _positive_int("num_classes", num_classes)
        blocks = blocks if scheme in schemes.BLOCKWISE else 0
        specs = tuple(archs.decode(model, image_size, num_classes,
                                   lite_residual=scheme == "tinytl"))
        n = archs.num_blocks(model)
        top = set(range(n - blocks, n))
        configs = {s.name: schemes.layer_config(scheme, s, top, bool(packed_masks))
                   for s in specs}
        return cls.from_layers(model, scheme, blocks, image_size, num_classes,
                               bool(packed_masks), specs, configs)

    @classmethod
    def from_layers(cls, model, scheme, blocks, image_size, num_classes, packed_masks,
                    specs, configs) -> "ModelPlan":
        """A plan of an explicit layer list (the profiler's single-IRB setting uses it)."""
        specs = tuple(specs)
        return cls(model, scheme, blocks, image_size, num_classes, packed_masks, specs,
                   dict(configs), need_dx(specs, configs), trunk_end(specs, configs))

    # ------------------------------------------------------------------ derived views

    @property
    def label(self) -> str:
        """Short scheme label: 'mobiletl-3' for block-wise schemes, else the scheme."""
        return f"{self.scheme}-{self.blocks}" if self.blocks else self.scheme

    @property
    def mask_kind(self) -> str:
        """'packed', 'bool' or 'none': how this plan stores MobileTL sign masks."""
        kinds = {c.act_backward for c in self.configs.values()}
        return "packed" if "packed" in kinds else "bool" if "sign" in kinds else "none"

    @property
    def trunk_index(self) -> int:
        """Index of the first layer after the frozen trunk (0: no trunk)."""
        if self.trunk_end is None:
            return 0
        return next(i for i, s in enumerate(self.specs) if s.name == self.trunk_end) + 1

    @property
    def feature_shape(self) -> tuple:
        """Shape (per sample) of the trunk output that `extract` returns."""
        i = self.trunk_index
        return tuple(self.specs[i - 1].out_shape) if i else (self.image_size,) * 2 + (3,)

    @property
    def arch(self) -> "archs.ArchDef":
        return archs.ARCHS[self.model]

    def arguments(self) -> dict:
        """The arguments of `build` that reproduce this plan (JSON-serialisable)."""
        return dict(model=self.model, scheme=self.scheme, blocks=self.blocks,
                    image_size=self.image_size, num_classes=self.num_classes,
                    packed_masks=self.packed_masks)

    @classmethod
    def from_arguments(cls, arguments: dict) -> "ModelPlan":
        """Inverse of `arguments` (validates again: the dict may come from a file)."""
        a = dict(arguments)
        return cls.build(a.pop("model"), **a)
