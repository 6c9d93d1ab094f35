"""Analytical training-cost profiler: saved activations, peak memory, parameters, FLOPs.

Pure Python (no TensorFlow). It walks the same `tftl.archs.LayerSpec` list the Keras
builder uses and the same `tftl.schemes.LayerConfig`s the trainer uses, so a count here is
a count of exactly the model and the scheme that gets trained. Memory is reported in bytes
(the CLI prints MB = 10**6 bytes, the unit of the MobileTL paper: 912,576 B = "0.913 MB").

Public API
  irb_activation_bytes(...)  saved activations of one inverted residual block (IRB), the
                             setting of MobileTL Table 1 / Figure 1; `irb_profile` returns
                             the same walk with parameters and MACs.
  profile(model, scheme, ...) model-level costs of a training scheme (dict, see `profile`).
  python -m tftl.profile ...  command line (table, --json, --all-schemes, --plot).

Counting rules (TinyTL's memory-cost profiler, extended as MobileTL describes)
------------------------------------------------------------------------------
Saved activations = the tensors the backward pass needs, kept from the forward pass.
Activations are fp32 (4 bytes / element); masks are counted in bits and each saved mask
tensor is rounded up to whole bytes. `requires grad` of a tensor: the model input does not;
a layer output does iff the layer trains anything (`LayerConfig.trains`: kernel, bias or a
BN parameter) or one of its inputs requires grad. A layer needs an input gradient iff its
input requires grad, i.e. some layer below it (on its input path) trains.

  conv / pointwise / depthwise / dense: the input (fp32) iff the kernel trains. Bias-only
      training stores nothing (dL/db = sum dL/dy; TinyTL Eq. 2).
  bn: the input (fp32) iff the scale trains (bn_mode "full"); "shift" (beta only) and
      "frozen" store nothing (MobileTL Eq. 2). A full BN's batch-statistics backward is
      taken to need only that input (x_hat is recomputed from it and the batch moments).
  act, only where its input requires grad (otherwise it has no backward at all):
      relu            1 bit / element (mask a >= 0)                      [TinyTL Table 1]
      relu6 (exact)   `relu6_mask_bits` bits / element: 1 (default, TinyTL's profiler
                      counts ReLU6 as ReLU, and MobileTL Table 1 uses it) or 2 (MobileTL
                      Table 2: the mask 0 <= a <= 6 has three states; Figure 1 uses it;
                      8 / 32 are accepted too, for a bool / fp32 store)
      (profile(bool_masks=True): exact relu / relu6 masks at 8 bits, as tftl stores them)
      hard_swish (exact)  32 bits / element (its input)                  [TinyTL Table 1]
      sigmoid / hard_sigmoid  32 bits / element. They store their *output* y: sigmoid'
                      = y(1-y) and hard_sigmoid' = 1/6 where 0 < y < 1, so the SE gate
                      tensor is the very tensor the SE multiply needs (see se_mul).
      sign (MobileTL's approximated ReLU6 / hard-swish backward, 1_{a >= 0}):
                      8 bits / element with packed_masks=False (a bool tensor, how TFLite
                      stores it), 1 bit / element with packed_masks=True (bit-packed, the
                      paper's count; `irb_activation_bytes` always uses 1 bit).
  se_mul (x * gate): x iff the gate requires grad; the gate iff x requires grad.
  add, pool (global average), avgpool, upsample: nothing (linear; only shapes needed).
  Imported Keras models (tftl.keras_import) add: swish keeps its input (32 bits / element,
  like hard-swish: it has no 1-bit backward, MobileTL's rule leaves it exact); sigmoid its
  output; maxpool its input (fp32) iff its input requires grad (the backward recomputes
  the window maxima); pad, reshape and affine (Rescaling / Normalization) nothing.
  A tensor saved by two layers is counted once (key: tensor name + format). The only case
  in these architectures is the SE gate: stored by the hard-sigmoid and used by the
  multiply, so an SE block stores [pooled input, ReLU mask, reduced, gate] + x.

These rules reproduce MobileTL exactly (tests/test_profile.py):
  Table 1, input/output (8, 96, 7, 7), expansion 1 (the expand conv is still counted),
  kernel 5: MBV2 block (ReLU6 at 1 bit) = 912,576 B ("0.913 MB"); MBV3 block (hard-swish,
  SE) = 1,361,688 B ("1.362 MB"). The SE part must be exactly reduce input (3,072 B) +
  ReLU 1-bit mask (24 B) + expand input (768 B) + ONE (8, 96) fp32 gate-sized tensor
  (3,072 B) + x (150,528 B). Other conventions miss: hard-sigmoid input and multiply gate
  stored separately +3,072 B; the SE ReLU free -24 B; hard-sigmoid as a 1-bit mask with
  the multiply storing both operands +96 B. (Storing x only at the multiply and a 32-bit
  hard-sigmoid input gives the same bytes; sharing the gate is the reading that also
  fits the se_mul rule below.)
  Figure 1, expansion 6, same input: MobileTL saves 1 - 3,108,624/6,664,848 = 53.36% on
  the MBV3 block (reported "53.4%" here; the paper's caption prints 53.3%, i.e. truncated,
  its abstract "53%") and 1 - 2,163,840/4,026,624 = 46.26% ("46.3%") on the MBV2 block when
  vanilla ReLU6 costs 2 bits (45.50% at 1 bit).

Peak activation memory (per training step, the batch included)
  Layers run in list order (a topological order). At layer i the live bytes are
      saved_before(i)  tensors saved for backward by layers < i
    + held(i)          forward tensors produced before i that a layer after i still reads
                       (the IRB input held for the residual add, or for TinyTL's lite
                       residual branch), not already counted as saved
    + temporaries(i)   the inputs of layer i not already counted, plus its output unless
                       it can overwrite an input: bn / act / add / se_mul with an input of
                       the output's size that dies here and is saved by no layer.
  peak_activation_bytes = max_i live(i). (TinyTL's profiler computes the same
  tmp + saved + residual maximum; it ignores the output of BN/act layers and counts
  output/groups for depthwise convs, which undercounts - here the output always counts
  unless computed in place.)
  peak_bytes = peak_activation_bytes + trainable_param_bytes + frozen_param_bytes
             + optimizer_state_bytes.
  Gradient buffers (gradient_bytes = 4 B per trainable parameter) are reported but not
  added: they are produced during the backward pass while saved activations are released,
  so they do not coincide with the forward-end activation peak.

Parameters (shapes as Keras builds them; totals match Keras: MobileNetV2 with the
1000-class top 3,538,984, MobileNetV3-Small 2,554,968, MobileNetV3-Large 5,507,432)
  conv k*k*Cin*Cout, pointwise Cin*Cout, depthwise k*k*C, dense Cin*Cout; + Cout if
  use_bias (all dense layers, SE convs, MobileNetV3's conv_2, lite_conv); bn 4*C.
  Trainable (fp32, 4 B): kernels with train_kernel, biases with train_bias, BN gamma+beta
  in "full" mode, beta in "shift" mode.
  Frozen (Keras' non-trainable count, trainable + frozen = the Keras total). Bytes:
  frozen kernels int8 (1 B, 8-bit weight quantisation as in TinyTL / MobileTL); frozen
  biases fp32; a frozen BN is folded into 2*C fp32 constants (scale, offset), a shift-mode
  BN keeps 2*C fp32 frozen constants (scale and scaled mean) beside its trainable beta;
  the running mean/var of a full BN (2*C) are training state, counted in
  optimizer_state_bytes, not in frozen_param_bytes.
  optimizer_state_bytes = Adam's two fp32 slots per trainable parameter (8 B each)
  + 4 B * 2*C running statistics of every full BN.

FLOPs (batch included; 1 MAC = 2 FLOPs; other ops 1 FLOP per element, as MobileTL's
profiler "approximates all operations as one FLOP")
  forward MACs: conv Ho*Wo*Cout*k*k*Cin, pointwise H*W*Cin*Cout, depthwise Ho*Wo*C*k*k,
      dense Cin*Cout (per sample). forward_macs reports these alone (MobileNetV2 224:
      300.8M, MobileNetV3-Small: 56.5M per image with the 1000-class head).
  forward FLOPs: 2*MACs for weighted layers (+1 per output element for a bias); bn, act,
      add, se_mul 1 per output element; pool / avgpool 1 per input element; upsample 0.
  backward FLOPs, per layer: input gradient (only if needed) 2*MACs for weighted layers,
      1 per element (input elements for pooling, output elements otherwise; both operands
      of se_mul / add that need it); weight gradient 2*MACs if the kernel trains;
      1 per output element for each trained bias / BN beta / BN gamma.
  A layer whose input needs no gradient and that trains nothing has no backward at all,
  so layers below the lowest trainable layer cost no backward FLOPs.
"""

import argparse
import inspect
import json
import sys
import types

from tftl import archs, schemes
from tftl import plan as plan_lib

FP32 = 4
INT8 = 1
MB = 10 ** 6

_WEIGHTED = ("conv", "pointwise", "depthwise", "dense")
_INPLACE = ("bn", "act", "add", "se_mul", "affine", "reshape")
_SMOOTH = ("hard_swish", "swish")  # store their input
_SMOOTH_OUT = ("sigmoid", "hard_sigmoid")  # store their output
_SIGN_BITS = {"sign": 8, "packed": 1}


def _prod(shape):
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _mask_bytes(elements, bits):
    return -(-elements * bits // 8)


def _params(spec, cfg):
    """(trainable count, frozen count, frozen bytes, optimizer-state bytes beyond Adam)."""
    if spec.kind in _WEIGHTED:
        kernel = plan_lib.kernel_params(spec)
        bias = spec.out_shape[-1] if spec.use_bias else 0
        trainable = (kernel if cfg.train_kernel else 0) + (bias if cfg.train_bias else 0)
        frozen = (0 if cfg.train_kernel else kernel) + (0 if cfg.train_bias else bias)
        frozen_bytes = (0 if cfg.train_kernel else kernel * INT8) + \
                       (0 if cfg.train_bias else bias * FP32)
        return trainable, frozen, frozen_bytes, 0
    if spec.kind == "bn":
        c = spec.out_shape[-1]
        if cfg.bn_mode == "full":  # gamma, beta train; running mean/var are state
            return 2 * c, 2 * c, 0, 2 * c * FP32
        if cfg.bn_mode == "shift":  # beta trains; scale & mean folded into 2C constants
            return c, 3 * c, 2 * c * FP32, 0
        return 0, 4 * c, 2 * c * FP32, 0  # folded (scale, offset)
    if spec.kind == "affine":  # constant per-channel scale and offset
        c = spec.out_shape[-1]
        return 0, 2 * c, 2 * c * FP32, 0
    return 0, 0, 0, 0


def _act_save(spec, cfg, relu6_mask_bits, bool_masks=False):
    """(bytes-per-element multiplier in bits, which tensor) saved by an activation."""
    if cfg.act_backward in _SIGN_BITS:
        return _SIGN_BITS[cfg.act_backward], "mask"
    if spec.act == "relu":
        return 8 if bool_masks else 1, "mask"
    if spec.act == "relu6":
        return 8 if bool_masks else relu6_mask_bits, "mask"
    if spec.act in _SMOOTH:
        return 32, "input"
    if spec.act in _SMOOTH_OUT:
        return 32, "output"
    raise ValueError(f"{spec.name}: unknown activation {spec.act!r}")


def saved_tensors(spec, cfg, in_rg, elems, relu6_mask_bits=1, bool_masks=False):
    """What one layer saves for its backward pass: [(tensor, format, bytes)].

    in_rg: per input, does it require grad (the plan's need_dx). elems: tensor -> elements
    (batch included). Formats: "fp32" or "mask<bits>". The rules: module docstring.
    """
    ins = spec.inputs
    n_in = elems[ins[0]]
    if spec.kind in _WEIGHTED and cfg.train_kernel:
        return [(ins[0], "fp32", n_in * FP32)]
    if spec.kind == "bn" and cfg.bn_mode == "full":
        return [(ins[0], "fp32", n_in * FP32)]
    if spec.kind == "maxpool" and any(in_rg):  # the window maxima are recomputed from it
        return [(ins[0], "fp32", n_in * FP32)]
    if spec.kind == "act" and any(in_rg):
        bits, which = _act_save(spec, cfg, relu6_mask_bits, bool_masks)
        if which == "mask":
            return [(spec.name, f"mask{bits}", _mask_bytes(n_in, bits))]
        t = ins[0] if which == "input" else spec.name
        return [(t, "fp32", elems[t] * FP32)]
    if spec.kind == "se_mul":
        (x, gate), (x_rg, gate_rg) = ins, in_rg
        return ([(x, "fp32", elems[x] * FP32)] if gate_rg else []) + \
               ([(gate, "fp32", elems[gate] * FP32)] if x_rg else [])
    return []


def _flops(spec, cfg, in_rg, elems, batch):
    """(forward MACs, forward FLOPs, backward FLOPs) of one layer, batch included."""
    n_out, n_in = elems[spec.name], elems[spec.inputs[0]]
    needs_in_grad = any(in_rg)
    macs = plan_lib.macs(spec) * batch
    if spec.kind in _WEIGHTED:
        bias_elems = n_out if spec.use_bias else 0
        bwd = (2 * macs if needs_in_grad else 0) + (2 * macs if cfg.train_kernel else 0)
        return macs, 2 * macs + bias_elems, bwd + (bias_elems if cfg.train_bias else 0)
    if spec.kind in ("pool", "avgpool", "maxpool"):
        return 0, n_in, n_in if needs_in_grad else 0
    if spec.kind == "upsample":
        return 0, 0, n_out if needs_in_grad else 0
    # bn, act, add, se_mul
    bwd = sum(elems[t] for t, r in zip(spec.inputs, in_rg) if r)
    if spec.kind == "bn":
        bwd += {"full": 2, "shift": 1}.get(cfg.bn_mode, 0) * n_out
    return 0, n_out, bwd


class _Liveness:
    """Live activation memory while layers run in list order (module docstring: Peak)."""

    def __init__(self, specs, elems):
        self.elems = elems
        self.last_use = {t: i for i, s in enumerate(specs) for t in s.inputs}
        self.saved = {}  # (tensor, format) -> bytes
        self.saved_fp32 = set()  # saved in fp32 (also occupying their forward buffer)
        self.produced = ["input"]

    def step(self, i, spec, to_save):
        """Adds layer i's saves; returns (bytes it newly saves, live bytes at layer i)."""
        elems, ins = self.elems, spec.inputs
        new_saved = 0
        for t, fmt, nbytes in to_save:
            if (t, fmt) not in self.saved:
                self.saved[(t, fmt)] = nbytes
                new_saved += nbytes
        own_fp32 = {t for t, fmt, _ in to_save if fmt == "fp32"}
        saved_before = sum(self.saved.values()) - new_saved
        counted = set(self.saved_fp32)
        temporaries = 0
        for t in dict.fromkeys(ins):
            if t not in counted:
                temporaries += elems[t] * FP32
                counted.add(t)
        inplace = spec.kind in _INPLACE and any(
            elems[t] == elems[spec.name] and self.last_use.get(t) == i
            and t not in self.saved_fp32 and t not in own_fp32 for t in ins)
        if not inplace:
            temporaries += elems[spec.name] * FP32
        held = sum(elems[t] * FP32 for t in self.produced
                   if t not in counted and self.last_use.get(t, -1) > i)
        self.saved_fp32 |= own_fp32
        self.produced.append(spec.name)
        return new_saved, saved_before + held + temporaries


def _walk(plan, batch, relu6_mask_bits=1, bool_masks=False):
    """Walk a plan's layers in order; returns (per-layer records, totals dict).

    Which inputs need a gradient is read from `plan.need_dx` (the plan's model input never
    requires grad), not derived again here.
    """
    if relu6_mask_bits not in (1, 2, 8, 32):
        raise ValueError(f"relu6_mask_bits must be 1, 2, 8 or 32, got {relu6_mask_bits!r}")
    specs = plan.specs
    elems = {"input": _prod(specs[0].in_shape) * batch}
    elems.update({s.name: _prod(s.out_shape) * batch for s in specs})
    live = _Liveness(specs, elems)
    records = []
    peak, peak_layer = 0, None
    tot = dict(trainable=0, frozen=0, frozen_bytes=0, state_bytes=0, macs=0, fwd=0, bwd=0)
    for i, s in enumerate(specs):
        cfg = plan.configs.get(s.name, schemes.FROZEN)
        in_rg = plan.need_dx[s.name]
        to_save = saved_tensors(s, cfg, in_rg, elems, relu6_mask_bits, bool_masks)
        new_saved, live_bytes = live.step(i, s, to_save)
        if live_bytes > peak:
            peak, peak_layer = live_bytes, s.name
        trainable, frozen, frozen_bytes, state_bytes = _params(s, cfg)
        macs, fwd, bwd = _flops(s, cfg, in_rg, elems, batch)
        for k, v in (("trainable", trainable), ("frozen", frozen), ("frozen_bytes", frozen_bytes),
                     ("state_bytes", state_bytes), ("macs", macs), ("fwd", fwd), ("bwd", bwd)):
            tot[k] += v
        records.append({
            "name": s.name, "kind": s.kind, "role": s.role, "block": s.block,
            "out_shape": list(s.out_shape), "trains": cfg.trains,
            "needs_input_grad": any(in_rg), "saved_bytes": new_saved,
            "live_bytes": live_bytes, "trainable_params": trainable, "frozen_params": frozen,
            "macs": macs, "forward_flops": fwd, "backward_flops": bwd,
        })
    tot.update(saved=sum(live.saved.values()), peak=peak, peak_layer=peak_layer)
    return records, tot


# ----------------------------------------------------------------------------- one IRB


def _irb_specs(channels, height, width, expansion, kernel, stride, se, activation):
    c, e = channels, int(round(channels * expansion))
    oh, ow = -(-height // stride), -(-width // stride)
    L = archs.LayerSpec
    specs = [
        L("expand", "pointwise", "expand", 0, (height, width, c), (height, width, e),
          inputs=("input",)),
        L("expand_bn", "bn", "expand_bn", 0, (height, width, e), (height, width, e),
          inputs=("expand",)),
        L("expand_act", "act", "expand_act", 0, (height, width, e), (height, width, e),
          act=activation, inputs=("expand_bn",)),
        L("dw", "depthwise", "dw", 0, (height, width, e), (oh, ow, e), kernel=kernel,
          stride=stride, inputs=("expand_act",)),
        L("dw_bn", "bn", "dw_bn", 0, (oh, ow, e), (oh, ow, e), inputs=("dw",)),
        L("dw_act", "act", "dw_act", 0, (oh, ow, e), (oh, ow, e), act=activation,
          inputs=("dw_bn",)),
    ]
    prev = "dw_act"
    if se:
        sq = archs.make_divisible(e / 4)
        specs += [
            L("se_pool", "pool", "se_pool", 0, (oh, ow, e), (e,), inputs=("dw_act",)),
            L("se_reduce", "dense", "se_reduce", 0, (e,), (sq,), use_bias=True,
              inputs=("se_pool",)),
            L("se_reduce_act", "act", "se_reduce_act", 0, (sq,), (sq,), act="relu",
              inputs=("se_reduce",)),
            L("se_expand", "dense", "se_expand", 0, (sq,), (e,), use_bias=True,
              inputs=("se_reduce_act",)),
            L("se_gate", "act", "se_gate", 0, (e,), (e,), act="hard_sigmoid",
              inputs=("se_expand",)),
            L("se_mul", "se_mul", "se_mul", 0, (oh, ow, e), (oh, ow, e),
              inputs=("dw_act", "se_gate")),
        ]
        prev = "se_mul"
    specs += [
        L("project", "pointwise", "project", 0, (oh, ow, e), (oh, ow, c), inputs=(prev,)),
        L("project_bn", "bn", "project_bn", 0, (oh, ow, c), (oh, ow, c), inputs=("project",)),
    ]
    return specs


def irb_profile(batch, channels, height, width, *, expansion, kernel, stride=1, se=False,
                activation="relu6", scheme="vanilla", relu6_mask_bits=1):
    """Costs of one IRB in MobileTL's Table 1 / Figure 1 setting.

    Layers: expand 1x1 conv to round(channels*expansion) (kept even for expansion 1, as the
    paper counts it), BN, act, depthwise kxk (stride), BN, act, [SE: global pool, dense to
    make_divisible(expanded/4) + bias, ReLU, dense back + bias, hard-sigmoid, multiply],
    project 1x1 conv to `channels`, BN. The residual add stores nothing and is left out.
    scheme "vanilla": every weight and BN trains, exact backward. "mobiletl": convs train,
    expand/depthwise BNs shift-only, project BN full, ReLU6 / hard-swish 1-bit sign mask.
    The block input needs no gradient (it changes nothing: the expand conv trains).

    Returns dict: activation_bytes, trainable_params, macs (forward, batch included).
    """
    if scheme not in ("vanilla", "mobiletl"):
        raise ValueError(f"unknown IRB scheme {scheme!r}; choose vanilla or mobiletl")
    if activation not in ("relu", "relu6", "hard_swish"):
        raise ValueError(f"activation must be relu, relu6 or hard_swish, got {activation!r}")
    specs = _irb_specs(channels, height, width, expansion, kernel, stride, se, activation)
    # the block is block 0 of a block-wise scheme training it: vanilla = ft_blocks; the
    # MobileTL rule is `schemes.layer_config`'s, with the paper's 1-bit (packed) masks
    as_scheme = "mobiletl" if scheme == "mobiletl" else "ft_blocks"
    configs = {s.name: schemes.layer_config(as_scheme, s, {0}, packed_masks=True)
               for s in specs}
    plan = plan_lib.ModelPlan.from_layers("irb", as_scheme, 1, height, None, True, specs, configs)
    records, tot = _walk(plan, batch, relu6_mask_bits)
    return {"activation_bytes": tot["saved"], "trainable_params": tot["trainable"],
            "macs": tot["macs"], "layers": records}


def irb_activation_bytes(batch, channels, height, width, *, expansion, kernel, stride=1,
                         se=False, activation="relu6", scheme="vanilla", relu6_mask_bits=1):
    """Bytes of activations one IRB saves for its backward pass (see `irb_profile`).

    MobileTL Table 1, (8, 96, 7, 7), expansion 1, kernel 5: relu6 -> 912,576;
    hard_swish with SE -> 1,361,688.
    """
    return irb_profile(batch, channels, height, width, expansion=expansion, kernel=kernel,
                       stride=stride, se=se, activation=activation, scheme=scheme,
                       relu6_mask_bits=relu6_mask_bits)["activation_bytes"]


# ----------------------------------------------------------------------------- model level


def profile(model, scheme="mobiletl", blocks=3, batch=8, image_size=224, num_classes=10,
            packed_masks=False, relu6_mask_bits=1, bool_masks=False):
    """Training costs of `model` under `scheme` (counting rules: module docstring).

    bool_masks=True counts exact ReLU / ReLU6 masks at 8 bits, as tftl's exported graphs
    store them (a TFLite bool per element), instead of TinyTL's 1 bit: what bench/ compares
    with measured memory.

    Returns a dict (bytes, counts and FLOPs all for one training step of `batch` images):
      model, scheme, blocks (0 for schemes that are not block-wise), batch, image_size,
      num_classes, packed_masks, relu6_mask_bits,
      activation_bytes       saved for backward, total
      peak_activation_bytes  max live activation memory, and peak_layer where it occurs
      trainable_params, trainable_param_bytes (fp32)
      frozen_params (Keras non-trainable count), frozen_param_bytes (int8 kernels, fp32
        biases / folded BN constants)
      optimizer_state_bytes  Adam m, v (fp32) + running statistics of full BNs
      gradient_bytes         fp32 gradient per trainable parameter (not in peak_bytes)
      peak_bytes             peak_activation_bytes + parameter bytes + optimizer state
      forward_macs, forward_flops, backward_flops
      layers                 per-layer list: name, kind, role, block, out_shape, trains,
                             needs_input_grad, saved_bytes, live_bytes, trainable_params,
                             frozen_params, macs, forward_flops, backward_flops
    Raises ValueError (one-line message) for a bad model, scheme, blocks or image size.
    """
    plan = plan_lib.ModelPlan.build(model, scheme=scheme, blocks=blocks, image_size=image_size,
                                    num_classes=num_classes, packed_masks=packed_masks)
    return profile_plan(plan, batch, relu6_mask_bits=relu6_mask_bits, bool_masks=bool_masks)


def profile_plan(plan, batch=8, *, relu6_mask_bits=1, bool_masks=False):
    """Training costs of a `tftl.plan.ModelPlan` (the dict of `profile`).

    The exporter calls this with the plan it builds the model from, so the estimate in a
    model file describes exactly that model.
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    records, tot = _walk(plan, batch, relu6_mask_bits, bool_masks=bool_masks)
    trainable_bytes = tot["trainable"] * FP32
    optimizer = 2 * tot["trainable"] * FP32 + tot["state_bytes"]
    return {
        "model": plan.model, "scheme": plan.scheme, "blocks": plan.blocks,
        "batch": batch, "image_size": plan.image_size, "num_classes": plan.num_classes,
        "packed_masks": plan.packed_masks, "relu6_mask_bits": relu6_mask_bits,
        "bool_masks": bool(bool_masks),
        "activation_bytes": tot["saved"],
        "peak_activation_bytes": tot["peak"], "peak_layer": tot["peak_layer"],
        "trainable_params": tot["trainable"], "trainable_param_bytes": trainable_bytes,
        "frozen_params": tot["frozen"], "frozen_param_bytes": tot["frozen_bytes"],
        "optimizer_state_bytes": optimizer,
        "gradient_bytes": trainable_bytes,
        "peak_bytes": tot["peak"] + trainable_bytes + tot["frozen_bytes"] + optimizer,
        "forward_macs": tot["macs"], "forward_flops": tot["fwd"],
        "backward_flops": tot["bwd"],
        "layers": records,
    }


def trunk_pair_bytes(plan, micro_batch=1) -> int:
    """The largest live pair of frozen-trunk activations (a layer's inputs + its output, fp32)
    at `micro_batch` images: the workspace the trunk needs when it is streamed."""
    specs = plan.specs[:plan.trunk_index]
    shapes = {"input": plan.specs[0].in_shape, **{s.name: s.out_shape for s in plan.specs}}
    pairs = [sum(_prod(shapes[t]) for t in dict.fromkeys(s.inputs)) + _prod(s.out_shape) for s in specs]
    return max(pairs, default=0) * FP32 * micro_batch


def micro_batch_for(plan, batch=8) -> int:
    """The exporter's micro-batch for the streamed `extract`: the largest power of two below
    `batch` whose trunk workspace (`trunk_pair_bytes`) stays under the training step's own
    live activations, so streaming the trunk never sets the trainer's peak; at least 1."""
    top = profile_plan(plan, batch, bool_masks=True)["peak_activation_bytes"]
    m = 1
    while m * 2 < batch and trunk_pair_bytes(plan, m * 2) <= top:
        m *= 2
    return m


def physical_limit(plan, batch=8, micro_batch=1) -> dict:
    """The least memory a streamed MobileTL-style trainer can hold (bytes): weights (trained
    fp32, frozen int8) + optimizer state + the activations the backward pass saves at `batch`
    + the largest live pair of trunk activations at `micro_batch`."""
    p = profile_plan(plan, batch, bool_masks=True)
    parts = dict(weights=p["trainable_param_bytes"] + p["frozen_param_bytes"],
                 optimizer_state=p["optimizer_state_bytes"], saved_activations=p["activation_bytes"],
                 trunk_pair=trunk_pair_bytes(plan, micro_batch))
    return dict(parts, total=sum(parts.values()), batch=batch, micro_batch=micro_batch)


# ----------------------------------------------------------------------------- CLI


def label(result):
    """Short scheme label, e.g. 'mobiletl-3' for block-wise schemes."""
    if not result["blocks"]:
        return result["scheme"]
    return f"{result['scheme']}-{result['blocks']}"


def format_summary(r):
    head = (f"{r['model']}  {label(r)}  batch {r['batch']}  {r['image_size']}px  "
            f"{r['num_classes']} classes")
    rows = [
        ("saved activations", f"{r['activation_bytes'] / MB:10.3f} MB"),
        ("peak activations", f"{r['peak_activation_bytes'] / MB:10.3f} MB  (at {r['peak_layer']})"),
        ("trainable params", f"{r['trainable_params']:>10,d}  ({r['trainable_param_bytes'] / MB:.3f} MB fp32)"),
        ("frozen params", f"{r['frozen_params']:>10,d}  ({r['frozen_param_bytes'] / MB:.3f} MB int8 kernels + fp32 constants)"),
        ("optimizer state", f"{r['optimizer_state_bytes'] / MB:10.3f} MB  (Adam + BN running stats)"),
        ("peak training memory", f"{r['peak_bytes'] / MB:10.3f} MB"),
        ("forward", f"{r['forward_flops'] / 1e6:10.1f} MFLOPs  ({r['forward_macs'] / 1e6:.1f} M MACs)"),
        ("backward", f"{r['backward_flops'] / 1e6:10.1f} MFLOPs"),
    ]
    return "\n".join([head] + [f"  {k:<21} {v}" for k, v in rows])


def format_layers(r):
    lines = [f"  {'layer':<36} {'kind':<9} {'train':<5} {'grad':<4} {'saved KB':>10} "
             f"{'live MB':>9} {'fwd MFLOP':>10} {'bwd MFLOP':>10}"]
    for L in r["layers"]:
        lines.append(f"  {L['name']:<36} {L['kind']:<9} {'y' if L['trains'] else '-':<5} "
                     f"{'y' if L['needs_input_grad'] else '-':<4} {L['saved_bytes'] / 1e3:10.1f} "
                     f"{L['live_bytes'] / MB:9.3f} {L['forward_flops'] / 1e6:10.2f} "
                     f"{L['backward_flops'] / 1e6:10.2f}")
    return "\n".join(lines)


def format_comparison(results):
    r0 = results[0]
    head = (f"{r0['model']}  batch {r0['batch']}  {r0['image_size']}px  "
            f"{r0['num_classes']} classes")
    cols = (f"  {'scheme':<12} {'act MB':>9} {'peak MB':>9} {'train params':>13} "
            f"{'fwd MFLOPs':>11} {'bwd MFLOPs':>11}")
    lines = [head, cols]
    for r in results:
        lines.append(f"  {label(r):<12} {r['activation_bytes'] / MB:9.2f} "
                     f"{r['peak_bytes'] / MB:9.2f} {r['trainable_params']:>13,d} "
                     f"{r['forward_flops'] / 1e6:11.1f} {r['backward_flops'] / 1e6:11.1f}")
    return "\n".join(lines)


def plot(results, path):
    """Bar chart like MobileTL Figure 4: FLOPs (left axis), memory (right axis)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError(f"--plot needs matplotlib ({e}); install it with "
                           f"'pip install matplotlib'") from None
    labels = [label(r) for r in results]
    x = list(range(len(results)))
    w = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(results) + 2), 4.5))
    fwd = [r["forward_flops"] / 1e6 for r in results]
    bwd = [r["backward_flops"] / 1e6 for r in results]
    ax.bar([i - w / 2 for i in x], fwd, w, label="forward FLOPs", color="#4c72b0")
    ax.bar([i - w / 2 for i in x], bwd, w, bottom=fwd, label="backward FLOPs", color="#8fb0de")
    ax.set_ylabel("MFLOPs per step")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20)
    ax2 = ax.twinx()
    act = [r["peak_activation_bytes"] / MB for r in results]
    rest = [(r["peak_bytes"] - r["peak_activation_bytes"]) / MB for r in results]
    ax2.bar([i + w / 2 for i in x], act, w, label="peak activations", color="#dd8452")
    ax2.bar([i + w / 2 for i in x], rest, w, bottom=act,
            label="params + optimizer", color="#f2c09a")
    ax2.set_ylabel("training memory (MB)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4,
              fontsize=8, frameon=False)
    r0 = results[0]
    ax.set_title(f"{r0['model']}, batch {r0['batch']}, {r0['image_size']}px")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    p = _Parser(prog="python -m tftl.profile",
                description="Analytical training memory / FLOPs of a model under a scheme.")
    p.add_argument("--model", default="mbv3_small", help=", ".join(archs.MODEL_NAMES))
    p.add_argument("--keras", default=None, metavar="PATH.keras",
                   help="profile your own Keras model instead (needs TensorFlow)")
    p.add_argument("--train-from", default=None, metavar="LAYER",
                   help="--keras: a block-wise scheme trains this layer and all above it")
    p.add_argument("--scheme", default="mobiletl", help=", ".join(schemes.SCHEMES))
    p.add_argument("--blocks", type=int, default=3, help="top IRBs trained (ft_blocks, mobiletl)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--packed-masks", action="store_true",
                   help="mobiletl sign masks bit-packed (1 bit) instead of bool (1 byte)")
    p.add_argument("--relu6-mask-bits", type=int, default=1, choices=(1, 2),
                   help="bits per element of an exact ReLU6 mask (TinyTL: 1, MobileTL Table 2: 2)")
    p.add_argument("--bool-masks", action="store_true",
                   help="exact ReLU/ReLU6 masks at 8 bits, as the exported graph stores them")
    p.add_argument("--all-schemes", action="store_true", help="compare all 7 schemes")
    p.add_argument("--layers", action="store_true", help="per-layer table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="PNG", help="bar chart like MobileTL Figure 4")
    a = p.parse_args(argv)
    names = schemes.SCHEMES if a.all_schemes else (a.scheme,)
    try:
        if a.keras:
            plans = _keras_plans(a.keras, names, a.blocks, a.train_from, a.packed_masks)
            results = [profile_plan(pl, a.batch, relu6_mask_bits=a.relu6_mask_bits,
                                    bool_masks=a.bool_masks) for pl in plans]
        else:
            results = [profile(a.model, s, a.blocks, a.batch, a.image_size, a.num_classes,
                               a.packed_masks, a.relu6_mask_bits, a.bool_masks) for s in names]
    except ValueError as e:
        p.error(str(e))
    if a.json:
        if not a.layers:
            for r in results:
                r.pop("layers")
        print(json.dumps(results if a.all_schemes else results[0], indent=1))
    elif a.all_schemes:
        print(format_comparison(results))
        if a.layers:
            for r in results:
                print(f"\n{label(r)}\n{format_layers(r)}")
    else:
        print(format_summary(results[0]))
        if a.layers:
            print(format_layers(results[0]))
    if a.plot:
        try:
            plot(results, a.plot)
        except RuntimeError as e:
            print(f"{p.prog}: error: {e}", file=sys.stderr)
            return 1
        if not a.json:
            print(f"wrote {a.plot}")
    return 0


def _keras_plans(path, scheme_names, blocks, train_from, packed_masks):
    """The plans of an imported Keras model under each scheme (tinytl left out)."""
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tftl import keras_import
    if not os.path.isfile(path):
        raise ValueError(f"--keras {path}: no such file; pass the .keras file of your model")
    graph = keras_import.read(keras_import.load(path))
    return [plan_lib.ModelPlan.from_graph(
        graph.name, graph.specs, scheme=s, blocks=blocks,
        train_from=train_from if s in schemes.BLOCKWISE else None,
        image_size=graph.image_size, packed_masks=packed_masks)
        for s in scheme_names if s != "tinytl"]


class _CallableModule(types.ModuleType):
    """`tftl.profile` is both this module (`python -m tftl.profile`, `format_summary`) and,
    called, its `profile()` function: one name, whichever way it is imported first."""

    def __call__(self, *args, **kwargs):
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
sys.modules[__name__].__signature__ = inspect.signature(profile)

if __name__ == "__main__":
    sys.exit(main())
