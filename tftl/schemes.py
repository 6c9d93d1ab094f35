"""Training schemes: for every layer, what trains, the BN mode and the activation backward.

Pure Python (no TensorFlow). This is the single definition of each scheme, read once by
`tftl.plan.ModelPlan.build`: the Keras builder sets `trainable` flags and layer modes from
the plan's `LayerConfig`s, the converter trains exactly `model.trainable_weights`, and the
analytical profiler counts memory from the same plan (its single-IRB setting also calls
`layer_config`, so the MobileTL rule is written only here).

Schemes (MobileTL paper, TinyTL paper):
  ft_all     every weight trains; BNs use batch statistics (full); exact backward.
  ft_last    classifier only.
  ft_norm    every BN fully trained (scale, shift, running statistics) + classifier.
  ft_bias    every bias / BN shift + classifier (TinyTL-B); BN statistics and scales frozen.
  ft_blocks  top-k IRBs fully trained (vanilla), + feature fusion + classifier.
  mobiletl   top-k IRBs per MobileTL: convs train; expand/depthwise BNs train only their
             shift (frozen scale and statistics); the project BN is fully trained; ReLU6 /
             hard-swish backward uses the 1-bit sign mask; + feature fusion + classifier.
  tinytl     TinyTL-L+B: lite residual modules on every IRB + every bias + classifier.
"""

import dataclasses

from tftl import archs

SCHEMES = ("ft_all", "ft_last", "ft_norm", "ft_bias", "ft_blocks", "mobiletl", "tinytl")
BLOCKWISE = ("ft_blocks", "mobiletl")
BN_MODES = ("frozen", "shift", "full")
ACT_BACKWARDS = ("exact", "sign", "packed")
_HEAD_ROLES = ("head_conv", "head_bn", "head_act", "fusion_conv", "fusion_act")
_IRB_ROLES = ("expand_bn", "expand_act", "dw_bn", "dw_act", "project_bn")


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """How one layer trains.

    train_kernel: the conv / dense weight trains. train_bias: its bias trains.
    bn_mode: frozen | shift | full (BN layers only).
    act_backward: exact | sign | packed (activation layers only; sign = MobileTL's mask).
    """

    train_kernel: bool = False
    train_bias: bool = False
    bn_mode: str = "frozen"
    act_backward: str = "exact"

    @property
    def trains(self) -> bool:
        return self.train_kernel or self.train_bias or self.bn_mode != "frozen"


FROZEN = LayerConfig()


def validate(scheme: str, model: str, blocks: int) -> None:
    """Raises ValueError with a one-line reason for a bad (scheme, model, blocks).

    Schemes that do not use `blocks` accept any value.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    n = archs.num_blocks(model)
    if scheme not in BLOCKWISE:
        return
    if not isinstance(blocks, int) or isinstance(blocks, bool):
        raise ValueError(f"blocks must be an integer, got {blocks!r}")
    if not 1 <= blocks <= n:
        raise ValueError(f"blocks={blocks} out of range for {model}: it has {n} inverted "
                         f"residual blocks, so use 1..{n}")


def layer_config(scheme: str, spec: "archs.LayerSpec", top_blocks: set,
                 packed_masks: bool = False) -> LayerConfig:
    """The `LayerConfig` of one layer under a scheme.

    top_blocks: indices of the IRBs trained by a block-wise scheme.
    packed_masks: mobiletl stores its sign masks bit-packed (1 bit / element) instead of
      as bool tensors (1 byte / element in TFLite).
    """
    role, kind = spec.role, spec.kind
    weighted = kind in ("conv", "pointwise", "depthwise", "dense")
    if role == "classifier":
        return LayerConfig(train_kernel=True, train_bias=True)
    if scheme == "ft_all":
        if weighted:
            return LayerConfig(train_kernel=True, train_bias=spec.use_bias)
        if kind == "bn":
            return LayerConfig(bn_mode="full")
        return FROZEN
    if scheme == "ft_last":
        return FROZEN
    if scheme == "ft_norm":
        return LayerConfig(bn_mode="full") if kind == "bn" else FROZEN
    if role.startswith("lite_"):
        if weighted:
            return LayerConfig(train_kernel=True, train_bias=spec.use_bias)
        return LayerConfig(bn_mode="full") if kind == "bn" else FROZEN
    if scheme in ("ft_bias", "tinytl"):
        if weighted and spec.use_bias:
            return LayerConfig(train_bias=True)
        if kind == "bn":
            return LayerConfig(bn_mode="shift")
        return FROZEN
    # block-wise schemes
    in_top = spec.block in top_blocks or role in _HEAD_ROLES
    return trained_config(scheme, spec, packed_masks) if in_top else FROZEN


def trained_config(scheme: str, spec: "archs.LayerSpec", packed_masks: bool = False) -> LayerConfig:
    """The `LayerConfig` of a layer a block-wise scheme trains (in a top block or above it).

    MobileTL's rules (shift-only expand / depthwise BNs, sign masks for ReLU6 and hard-swish)
    apply to the layers of an IRB (`_IRB_ROLES`); every other trained layer trains normally.
    """
    role, kind = spec.role, spec.kind
    if kind in ("conv", "pointwise", "depthwise", "dense"):
        return LayerConfig(train_kernel=True, train_bias=spec.use_bias)
    if scheme == "ft_blocks" or spec.block is None or role not in _IRB_ROLES:
        return LayerConfig(bn_mode="full") if kind == "bn" else FROZEN
    # mobiletl inside a trained IRB
    if kind == "bn":
        return LayerConfig(bn_mode="full" if role == "project_bn" else "shift")
    if kind == "act" and spec.act in ("relu6", "hard_swish"):
        return LayerConfig(act_backward="packed" if packed_masks else "sign")
    return FROZEN
