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


def _cut(specs, scheme, blocks, train_from) -> int:
    """Index of the first layer a block-wise scheme trains in an imported model."""
    if scheme not in schemes.BLOCKWISE:
        if train_from is not None:
            raise ValueError(f"--train-from needs a block-wise scheme ({', '.join(schemes.BLOCKWISE)}); "
                             f"{scheme} decides what trains on its own")
        return len(specs)
    names = [s.name for s in specs]
    if train_from is not None:
        if train_from not in names:
            raise ValueError(f"--train-from {train_from!r}: the model has no such layer; pass one "
                             f"of its layer names (e.g. {', '.join(names[-4:])})")
        return names.index(train_from)
    starts = []
    for i, s in enumerate(specs):
        if s.block is not None and s.block >= len(starts):
            starts.append(i)
    n = len(starts)
    if n == 0:
        raise ValueError("the model has no residual blocks (no Add layers), so --blocks has "
                         "nothing to count; pass --train-from LAYER_NAME instead")
    if not isinstance(blocks, int) or isinstance(blocks, bool) or not 1 <= blocks <= n:
        raise ValueError(f"blocks={blocks!r} out of range: the model has {n} residual blocks "
                         f"(Add merge points), so use 1..{n} or --train-from LAYER_NAME")
    return starts[n - blocks]


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
    # imported Keras models only (`from_graph`): the input scaling and the --train-from cut
    imported: bool = False
    input_normalization: Tuple[float, float] = (1.0, 0.0)
    train_from: Optional[str] = None

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

    @classmethod
    def from_graph(cls, name: str, specs, *, scheme: str = "mobiletl", blocks: Optional[int] = 3,
                   train_from: Optional[str] = None, image_size: int = 224,
                   packed_masks: bool = False,
                   normalization: Tuple[float, float] = (1.0, 0.0)) -> "ModelPlan":
        """The plan of an imported Keras model (`tftl.keras_import.ImportedGraph.specs`).

        Non-block-wise schemes train what they train in the zoo (the last Dense is the
        classifier). A block-wise scheme trains every layer from a cut upward: the first layer
        of the `blocks`-th residual block from the top, or the layer `train_from`. Trained
        layers of IRB-shaped blocks follow MobileTL's rules (`schemes.trained_config`).
        `blocks` is stored as the number of residual blocks wholly above the cut.

        Raises:
            ValueError: one line naming the bad argument and the accepted values.
        """
        specs = tuple(specs)
        if scheme not in schemes.SCHEMES or scheme == "tinytl":
            ok = [x for x in schemes.SCHEMES if x != "tinytl"]
            raise ValueError(f"scheme {scheme!r} cannot train an imported model; choose one of "
                             f"{', '.join(ok)} (tinytl adds modules to the zoo's blocks only)")
        cut = _cut(specs, scheme, blocks, train_from)
        configs = {}
        for i, sp in enumerate(specs):
            if scheme in schemes.BLOCKWISE and sp.role != "classifier":
                configs[sp.name] = schemes.trained_config(scheme, sp, bool(packed_masks)) \
                    if i >= cut else schemes.FROZEN
            else:
                configs[sp.name] = schemes.layer_config(scheme, sp, set(), bool(packed_masks))
        first = {}
        for i, sp in enumerate(specs):
            if sp.block is not None:
                first.setdefault(sp.block, i)
        trained_blocks = sum(1 for i in first.values() if i >= cut) if scheme in schemes.BLOCKWISE else 0
        return dataclasses.replace(
            cls.from_layers(name, scheme, trained_blocks, image_size, specs[-1].out_shape[-1],
                            bool(packed_masks), specs, configs),
            imported=True, input_normalization=tuple(float(v) for v in normalization),
            train_from=train_from if scheme in schemes.BLOCKWISE else None)

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

    @property
    def normalization(self) -> Tuple[float, float]:
        """(scale, offset) taking the 0..255 input to the network's input range."""
        return self.input_normalization if self.imported else self.arch.normalization

    @property
    def bn_epsilon(self) -> float:
        """The architecture's BN epsilon (an imported spec carries its own)."""
        return 1e-3 if self.imported else self.arch.bn_epsilon

    def arguments(self) -> dict:
        """The arguments of `build` (or `from_graph`) that reproduce this plan (JSON-serialisable)."""
        if self.imported:
            return dict(graph=[dataclasses.asdict(s) for s in self.specs], model=self.model,
                        scheme=self.scheme, blocks=self.blocks, train_from=self.train_from,
                        image_size=self.image_size, packed_masks=self.packed_masks,
                        normalization=list(self.input_normalization))
        return dict(model=self.model, scheme=self.scheme, blocks=self.blocks,
                    image_size=self.image_size, num_classes=self.num_classes,
                    packed_masks=self.packed_masks)

    @classmethod
    def from_arguments(cls, arguments: dict) -> "ModelPlan":
        """Inverse of `arguments` (validates again: the dict may come from a file)."""
        a = dict(arguments)
        if "graph" in a:
            specs = [archs.LayerSpec(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in d.items()}) for d in a.pop("graph")]
            if a.get("train_from"):
                a["blocks"] = None
            return cls.from_graph(a.pop("model"), specs, **a)
        return cls.build(a.pop("model"), **a)
