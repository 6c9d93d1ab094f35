"""Architecture tables of the model zoo, decoded into per-layer specs.

Pure Python (no TensorFlow): the Keras builder (`tftl.models`) and the analytical
profiler (`tftl.profile`) both walk the same `LayerSpec` list, so an architecture is
written exactly once. Each model is a literal table of inverted residual blocks (IRBs),
Keras-applications style; layer names follow Keras' own applications so that Keras'
ImageNet weight files load by name (MobileNetV2, MobileNetV3), and Keras' EfficientNet
naming for EfficientNet-Lite0.

Spec roles (used by `tftl.schemes` to pick trainability, BN mode and activation backward):
  stem_conv, stem_bn, stem_act,
  expand, expand_bn, expand_act, dw, dw_bn, dw_act,
  se_pool, se_reduce, se_reduce_act, se_expand, se_gate, se_mul,
  project, project_bn, add,
  head_conv, head_bn, head_act, pool, fusion_conv, fusion_act, classifier.
"""

import dataclasses
from typing import Optional

MODEL_NAMES = ("mbv3_small", "mbv3_large", "mbv2", "efficientnet_lite0")


@dataclasses.dataclass(frozen=True)
class BlockDef:
    """One inverted residual block of a table.

    expansion: ratio of expanded to input channels (1 means no expand conv).
    se: squeeze-and-excitation ratio (0 for none). act: "relu", "relu6" or "hard_swish".
    """

    expansion: float
    filters: int
    kernel: int
    stride: int
    se: float
    act: str


@dataclasses.dataclass(frozen=True)
class ArchDef:
    name: str
    stem_filters: int
    stem_act: str
    blocks: tuple
    head_filters: Optional[int]  # 1x1 conv after the blocks (feature fusion), with BN
    head_act: str
    fusion_filters: Optional[int]  # 1x1 conv with bias after pooling (MobileNetV3 only)
    normalization: tuple  # (scale, offset): model input x in [0,255] -> x * scale + offset
    bn_epsilon: float
    names: str  # naming style: "mbv2", "mbv3", "effnet"
    round_expanded: bool  # MobileNetV3 rounds expanded channels with _depth()


def _b(expansion, filters, kernel, stride, se=0.0, act="relu6"):
    return BlockDef(expansion, filters, kernel, stride, se, act)


_HS, _RE = "hard_swish", "relu"

ARCHS = {
    "mbv2": ArchDef(
        name="mbv2", stem_filters=32, stem_act="relu6",
        blocks=(
            _b(1, 16, 3, 1),
            _b(6, 24, 3, 2), _b(6, 24, 3, 1),
            _b(6, 32, 3, 2), _b(6, 32, 3, 1), _b(6, 32, 3, 1),
            _b(6, 64, 3, 2), _b(6, 64, 3, 1), _b(6, 64, 3, 1), _b(6, 64, 3, 1),
            _b(6, 96, 3, 1), _b(6, 96, 3, 1), _b(6, 96, 3, 1),
            _b(6, 160, 3, 2), _b(6, 160, 3, 1), _b(6, 160, 3, 1),
            _b(6, 320, 3, 1),
        ),
        head_filters=1280, head_act="relu6", fusion_filters=None,
        normalization=(1.0 / 127.5, -1.0), bn_epsilon=1e-3, names="mbv2", round_expanded=False,
    ),
    "mbv3_small": ArchDef(
        name="mbv3_small", stem_filters=16, stem_act=_HS,
        blocks=(
            _b(1, 16, 3, 2, 0.25, _RE),
            _b(72 / 16, 24, 3, 2, 0, _RE), _b(88 / 24, 24, 3, 1, 0, _RE),
            _b(4, 40, 5, 2, 0.25, _HS), _b(6, 40, 5, 1, 0.25, _HS), _b(6, 40, 5, 1, 0.25, _HS),
            _b(3, 48, 5, 1, 0.25, _HS), _b(3, 48, 5, 1, 0.25, _HS),
            _b(6, 96, 5, 2, 0.25, _HS), _b(6, 96, 5, 1, 0.25, _HS), _b(6, 96, 5, 1, 0.25, _HS),
        ),
        head_filters=576, head_act=_HS, fusion_filters=1024,
        normalization=(1.0 / 127.5, -1.0), bn_epsilon=1e-3, names="mbv3", round_expanded=True,
    ),
    "mbv3_large": ArchDef(
        name="mbv3_large", stem_filters=16, stem_act=_HS,
        blocks=(
            _b(1, 16, 3, 1, 0, _RE),
            _b(4, 24, 3, 2, 0, _RE), _b(3, 24, 3, 1, 0, _RE),
            _b(3, 40, 5, 2, 0.25, _RE), _b(3, 40, 5, 1, 0.25, _RE), _b(3, 40, 5, 1, 0.25, _RE),
            _b(6, 80, 3, 2, 0, _HS), _b(2.5, 80, 3, 1, 0, _HS),
            _b(2.3, 80, 3, 1, 0, _HS), _b(2.3, 80, 3, 1, 0, _HS),
            _b(6, 112, 3, 1, 0.25, _HS), _b(6, 112, 3, 1, 0.25, _HS),
            _b(6, 160, 5, 2, 0.25, _HS), _b(6, 160, 5, 1, 0.25, _HS), _b(6, 160, 5, 1, 0.25, _HS),
        ),
        head_filters=960, head_act=_HS, fusion_filters=1280,
        normalization=(1.0 / 127.5, -1.0), bn_epsilon=1e-3, names="mbv3", round_expanded=True,
    ),
    "efficientnet_lite0": ArchDef(
        name="efficientnet_lite0", stem_filters=32, stem_act="relu6",
        blocks=(
            _b(1, 16, 3, 1),
            _b(6, 24, 3, 2), _b(6, 24, 3, 1),
            _b(6, 40, 5, 2), _b(6, 40, 5, 1),
            _b(6, 80, 3, 2), _b(6, 80, 3, 1), _b(6, 80, 3, 1),
            _b(6, 112, 5, 1), _b(6, 112, 5, 1), _b(6, 112, 5, 1),
            _b(6, 192, 5, 2), _b(6, 192, 5, 1), _b(6, 192, 5, 1), _b(6, 192, 5, 1),
            _b(6, 320, 3, 1),
        ),
        head_filters=1280, head_act="relu6", fusion_filters=None,
        normalization=(1.0 / 128.0, -127.0 / 128.0), bn_epsilon=1e-3, names="effnet",
        round_expanded=False,
    ),
}

# EfficientNet stage boundaries (block indices where a new stage starts), for Keras-style
# names block1a, block2a, block2b, ...
_EFFNET_STAGES = (0, 1, 3, 5, 8, 11, 15)


def make_divisible(v, divisor=8, min_value=None):
    """Keras' `_depth` / `_make_divisible`: round channels to a multiple of 8."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer of a decoded architecture.

    kind: conv (full kxk), pointwise, depthwise, bn, act, se_pool, se_mul, add, pool, dense;
      imported Keras models (`tftl.keras_import`) also use pad (zero padding, `pads` =
      (top, bottom, left, right)), maxpool, affine (constant x * scale + offset) and reshape.
    block: index of the IRB (0 = closest to the input) or None for stem / head layers; in an
      imported model, the residual block (found from its Add merge points).
    in_shape / out_shape: (H, W, C) for feature maps, (C,) after pooling.
    inputs: names of the layers feeding this one (two for `add` and `se_mul`).
    padding: "same" or "valid" (convs and pools; the zoo is all "same").
    epsilon: the BN epsilon where it is not the architecture's (imported models).
    """

    name: str
    kind: str
    role: str
    block: Optional[int]
    in_shape: tuple
    out_shape: tuple
    kernel: int = 1
    stride: int = 1
    use_bias: bool = False
    act: Optional[str] = None
    inputs: tuple = ()
    padding: str = "same"
    epsilon: Optional[float] = None
    pads: tuple = ()


def block_prefix(arch: ArchDef, index: int) -> str:
    if arch.names == "mbv2":
        return "expanded_conv_" if index == 0 else f"block_{index}_"
    if arch.names == "mbv3":
        return "expanded_conv_" if index == 0 else f"expanded_conv_{index}_"
    stage = max(i for i, s in enumerate(_EFFNET_STAGES) if s <= index)
    letter = "abcdefghijklmnop"[index - _EFFNET_STAGES[stage]]
    return f"block{stage + 1}{letter}_"


_SUFFIX = {
    # role -> per naming style suffix (prefixed by the block prefix)
    "mbv2": dict(expand="expand", expand_bn="expand_BN", expand_act="expand_relu",
                 dw="depthwise", dw_bn="depthwise_BN", dw_act="depthwise_relu",
                 project="project", project_bn="project_BN", add="add"),
    "mbv3": dict(expand="expand", expand_bn="expand_bn", expand_act="expand_act",
                 dw="depthwise", dw_bn="depthwise_bn", dw_act="depthwise_act",
                 se_pool="squeeze_excite_avg_pool", se_reduce="squeeze_excite_conv",
                 se_reduce_act="squeeze_excite_relu", se_expand="squeeze_excite_conv_1",
                 se_gate="squeeze_excite_gate", se_mul="squeeze_excite_mul",
                 project="project", project_bn="project_bn", add="add"),
    "effnet": dict(expand="expand_conv", expand_bn="expand_bn", expand_act="expand_activation",
                   dw="dwconv", dw_bn="bn", dw_act="activation",
                   project="project_conv", project_bn="project_bn", add="add"),
}

_TOP_NAMES = {
    "mbv2": dict(stem_conv="Conv1", stem_bn="bn_Conv1", stem_act="Conv1_relu",
                 head_conv="Conv_1", head_bn="Conv_1_bn", head_act="out_relu",
                 pool="global_average_pooling2d", classifier="predictions"),
    "mbv3": dict(stem_conv="conv", stem_bn="conv_bn", stem_act="conv_act",
                 head_conv="conv_1", head_bn="conv_1_bn", head_act="conv_1_act",
                 pool="avg_pool", fusion_conv="conv_2", fusion_act="conv_2_act",
                 classifier="logits"),
    "effnet": dict(stem_conv="stem_conv", stem_bn="stem_bn", stem_act="stem_activation",
                   head_conv="top_conv", head_bn="top_bn", head_act="top_activation",
                   pool="avg_pool", classifier="predictions"),
}


def _conv_out(size, stride):
    return -(-size // stride)  # SAME padding


def decode(name: str, image_size: int = 224, num_classes: Optional[int] = 1000,
           lite_residual: bool = False) -> list:
    """Decode a model table into the ordered list of `LayerSpec`s.

    lite_residual: add TinyTL's lite residual module to every IRB: 2x2 average pool of the
      block input (stride 2 x block stride), 3x3 conv (bias) to C_in, BN, ReLU, 1x1 conv to
      C_out, BN (scale initialised to zero), nearest 2x upsample; added to the project BN
      output (roles lite_pool, lite_conv, lite_bn1, lite_act, lite_project, lite_bn2,
      lite_upsample, lite_add). The paper's group conv and bilinear upsample are replaced by
      a dense 3x3 conv and nearest upsample, whose backward passes are TFLite builtins.

    Raises:
        ValueError: unknown model name or an image size the network cannot take.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if not isinstance(image_size, int) or image_size < 32 or image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32 and >= 32, got {image_size!r}")
    arch = ARCHS[name]
    top = _TOP_NAMES[arch.names]
    suffix = _SUFFIX[arch.names]
    specs = []

    def add(spec):
        specs.append(spec)
        return spec

    h = w = image_size
    c = 3
    s = image_size // 2
    prev = add(LayerSpec(top["stem_conv"], "conv", "stem_conv", None, (h, w, c),
                         (s, s, arch.stem_filters), kernel=3, stride=2, inputs=("input",)))
    h = w = s
    c = arch.stem_filters
    prev = add(LayerSpec(top["stem_bn"], "bn", "stem_bn", None, (h, w, c), (h, w, c),
                         inputs=(prev.name,)))
    prev = add(LayerSpec(top["stem_act"], "act", "stem_act", None, (h, w, c), (h, w, c),
                         act=arch.stem_act, inputs=(prev.name,)))
    for i, blk in enumerate(arch.blocks):
        p = block_prefix(arch, i)
        block_input = prev
        in_c = c
        if blk.expansion != 1:
            e = make_divisible(in_c * blk.expansion) if arch.round_expanded else int(in_c * blk.expansion)
            prev = add(LayerSpec(p + suffix["expand"], "pointwise", "expand", i, (h, w, c), (h, w, e),
                                 inputs=(prev.name,)))
            c = e
            prev = add(LayerSpec(p + suffix["expand_bn"], "bn", "expand_bn", i, (h, w, c), (h, w, c),
                                 inputs=(prev.name,)))
            prev = add(LayerSpec(p + suffix["expand_act"], "act", "expand_act", i, (h, w, c),
                                 (h, w, c), act=blk.act, inputs=(prev.name,)))
        oh = _conv_out(h, blk.stride)
        prev = add(LayerSpec(p + suffix["dw"], "depthwise", "dw", i, (h, w, c), (oh, oh, c),
                             kernel=blk.kernel, stride=blk.stride, inputs=(prev.name,)))
        h = w = oh
        prev = add(LayerSpec(p + suffix["dw_bn"], "bn", "dw_bn", i, (h, w, c), (h, w, c),
                             inputs=(prev.name,)))
        prev = add(LayerSpec(p + suffix["dw_act"], "act", "dw_act", i, (h, w, c), (h, w, c),
                             act=blk.act, inputs=(prev.name,)))
        if blk.se:
            sq = make_divisible(c * blk.se)
            se_in = prev
            pool = add(LayerSpec(p + suffix["se_pool"], "pool", "se_pool", i, (h, w, c), (c,),
                                 inputs=(prev.name,)))
            r = add(LayerSpec(p + suffix["se_reduce"], "dense", "se_reduce", i, (c,), (sq,),
                              use_bias=True, inputs=(pool.name,)))
            r = add(LayerSpec(p + suffix["se_reduce_act"], "act", "se_reduce_act", i, (sq,), (sq,),
                              act="relu", inputs=(r.name,)))
            r = add(LayerSpec(p + suffix["se_expand"], "dense", "se_expand", i, (sq,), (c,),
                              use_bias=True, inputs=(r.name,)))
            r = add(LayerSpec(p + suffix["se_gate"], "act", "se_gate", i, (c,), (c,),
                              act="hard_sigmoid", inputs=(r.name,)))
            prev = add(LayerSpec(p + suffix["se_mul"], "se_mul", "se_mul", i, (h, w, c), (h, w, c),
                                 inputs=(se_in.name, r.name)))
        prev = add(LayerSpec(p + suffix["project"], "pointwise", "project", i, (h, w, c),
                             (h, w, blk.filters), inputs=(prev.name,)))
        c = blk.filters
        prev = add(LayerSpec(p + suffix["project_bn"], "bn", "project_bn", i, (h, w, c), (h, w, c),
                             inputs=(prev.name,)))
        if lite_residual:
            prev = _lite_residual(add, p, i, block_input, prev, in_c, blk.stride)
        if blk.stride == 1 and in_c == c:
            prev = add(LayerSpec(p + suffix["add"], "add", "add", i, (h, w, c), (h, w, c),
                                 inputs=(block_input.name, prev.name)))
    if arch.head_filters:
        prev = add(LayerSpec(top["head_conv"], "pointwise", "head_conv", None, (h, w, c),
                             (h, w, arch.head_filters), inputs=(prev.name,)))
        c = arch.head_filters
        prev = add(LayerSpec(top["head_bn"], "bn", "head_bn", None, (h, w, c), (h, w, c),
                             inputs=(prev.name,)))
        prev = add(LayerSpec(top["head_act"], "act", "head_act", None, (h, w, c), (h, w, c),
                             act=arch.head_act, inputs=(prev.name,)))
    prev = add(LayerSpec(top["pool"], "pool", "pool", None, (h, w, c), (c,), inputs=(prev.name,)))
    if num_classes is None:
        return specs
    if arch.fusion_filters:
        prev = add(LayerSpec(top["fusion_conv"], "dense", "fusion_conv", None, (c,),
                             (arch.fusion_filters,), use_bias=True, inputs=(prev.name,)))
        c = arch.fusion_filters
        prev = add(LayerSpec(top["fusion_act"], "act", "fusion_act", None, (c,), (c,),
                             act=arch.stem_act, inputs=(prev.name,)))
    add(LayerSpec(top["classifier"], "dense", "classifier", None, (c,), (num_classes,),
                  use_bias=True, inputs=(prev.name,)))
    return specs


def _lite_residual(add, p, i, block_input, main, in_c, stride):
    h, w, c = main.out_shape
    bh, bw, _ = block_input.out_shape
    lh = _conv_out(bh, 2 * stride)
    x = add(LayerSpec(p + "lite_pool", "avgpool", "lite_pool", i, (bh, bw, in_c), (lh, lh, in_c),
                      kernel=2 * stride, stride=2 * stride, inputs=(block_input.name,)))
    x = add(LayerSpec(p + "lite_conv", "conv", "lite_conv", i, (lh, lh, in_c), (lh, lh, in_c),
                      kernel=3, use_bias=True, inputs=(x.name,)))
    x = add(LayerSpec(p + "lite_bn1", "bn", "lite_bn1", i, (lh, lh, in_c), (lh, lh, in_c),
                      inputs=(x.name,)))
    x = add(LayerSpec(p + "lite_act", "act", "lite_act", i, (lh, lh, in_c), (lh, lh, in_c),
                      act="relu", inputs=(x.name,)))
    x = add(LayerSpec(p + "lite_project", "pointwise", "lite_project", i, (lh, lh, in_c),
                      (lh, lh, c), inputs=(x.name,)))
    x = add(LayerSpec(p + "lite_bn2", "bn", "lite_bn2", i, (lh, lh, c), (lh, lh, c),
                      inputs=(x.name,)))
    x = add(LayerSpec(p + "lite_upsample", "upsample", "lite_upsample", i, (lh, lh, c), (h, w, c),
                      stride=2, inputs=(x.name,)))
    return add(LayerSpec(p + "lite_add", "add", "lite_add", i, (h, w, c), (h, w, c),
                         inputs=(main.name, x.name)))


def num_blocks(name: str) -> int:
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return len(ARCHS[name].blocks)
