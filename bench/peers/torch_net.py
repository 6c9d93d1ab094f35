"""The tftl architectures and schemes as plain PyTorch modules, for the peer benchmarks.

The network is built from the same `tftl.plan.ModelPlan` (decoded spec list and per-layer
`LayerConfig`s) as the tftl model, so a peer trains
exactly the parameter set tftl trains: a kernel or bias trains where the config says so, a
`full` BN trains its scale and shift on batch statistics, a `shift` BN trains only its
shift on frozen statistics, a `frozen` BN is a fixed affine map. What the peers do NOT get
is MobileTL's saving: their activation backward is the framework's own (autodiff keeps
what it keeps), which is the point of the comparison.

BNs: a `full` BN is torch's BatchNorm2d in training mode; a `shift` or `frozen` BN is the
fixed affine map of its running statistics (`_FrozenBN`, the maths of BatchNorm2d in eval
mode), written as Mul/Add so that its ONNX export cannot be switched to batch statistics:
PyTorch and ONNX Runtime then run the same computation (their first losses agree to 1e-4,
`probe_peer.py` records both). Each layer's output is dropped after its last consumer, as
eager PyTorch code holding only local variables would (autograd keeps what it saves).

Differences that change neither cost nor the trained set: SAME padding is symmetric here
(TF pads stride-2 convs (0, 1)); weights are random (speed and memory only).

    net = TorchNet("mbv2", "mobiletl", 3, num_classes=10, image_size=224)
    loss = net.loss(images_nhwc_0_255, labels)
"""

import torch
from torch import nn
from torch.nn import functional as F

from tftl.plan import ModelPlan


def _hard_sigmoid(x):
    return F.relu6(x + 3.0) / 6.0


def _hard_swish(x):
    return x * _hard_sigmoid(x)


def _act(name):
    """Hard-swish / hard-sigmoid written with relu6 (ONNX Clip): ONNX Runtime training has
    no gradient for HardSwish / HardSigmoid nodes; torch runs the same formula (Keras' own)."""
    return {"relu": F.relu, "relu6": F.relu6, "hard_swish": _hard_swish,
            "hard_sigmoid": _hard_sigmoid, None: lambda x: x}[name]


def _nearest(x, h, w):
    """Nearest-neighbour resize to (h, w) as two index gathers (torch's `nearest` rule,
    source index floor(i * in / out)). Same maths as F.interpolate, but ONNX Runtime training
    has no CPU kernel for the Resize gradient (ResizeGrad is CUDA-only in 1.19) while Gather's
    gradient runs on the CPU, so TinyTL's lite residual trains in every peer."""
    ih, iw = x.shape[-2:]
    rows = (torch.arange(h) * ih) // h
    cols = (torch.arange(w) * iw) // w
    return x.index_select(2, rows).index_select(3, cols)


class _FrozenBN(nn.Module):
    """BatchNorm2d in eval mode as y = x * a + (beta - mean * a), a = gamma / sqrt(var + eps):
    running statistics fixed, gamma / beta trained where requires_grad says so."""

    def __init__(self, channels, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        a = self.weight * torch.rsqrt(self.running_var + self.eps)
        b = self.bias - self.running_mean * a
        return x * a[None, :, None, None] + b[None, :, None, None]


class TorchNet(nn.Module):
    """A decoded tftl spec list run in torch, NCHW, with tftl's trainability per layer."""

    def __init__(self, model, scheme, blocks, *, num_classes=10, image_size=224):
        super().__init__()
        plan = ModelPlan.build(model, scheme=scheme, blocks=blocks, image_size=image_size,
                               num_classes=num_classes)
        self.specs, self.configs = plan.specs, plan.configs
        self.scale, self.offset = plan.arch.normalization
        self.eps = plan.arch.bn_epsilon
        self.mods = nn.ModuleDict()
        # the names each layer is the last consumer of: its forward drops them afterwards
        last = {name: i for i, spec in enumerate(self.specs) for name in spec.inputs}
        self.drop = [[n for n, i in last.items() if i == j] for j in range(len(self.specs))]
        for spec in self.specs:
            mod = self._module(spec)
            if mod is not None:
                self.mods[spec.name] = mod
        self._set_trainable()

    def _module(self, spec):
        cin = spec.in_shape[-1]
        cout = spec.out_shape[-1]
        if spec.kind in ("conv", "pointwise", "depthwise"):
            k = spec.kernel if spec.kind != "pointwise" else 1
            groups = cin if spec.kind == "depthwise" else 1
            return nn.Conv2d(cin, cout, k, spec.stride, padding=k // 2, groups=groups, bias=spec.use_bias)
        if spec.kind == "dense":
            return nn.Linear(cin, cout, bias=spec.use_bias)
        if spec.kind == "bn":
            if self.configs[spec.name].bn_mode == "full":
                return nn.BatchNorm2d(cout, eps=self.eps)
            return _FrozenBN(cout, self.eps)
        return None

    def _set_trainable(self):
        for spec in self.specs:
            mod = self.mods[spec.name] if spec.name in self.mods else None
            if mod is None:
                continue
            cfg = self.configs[spec.name]
            if spec.kind == "bn":
                mod.weight.requires_grad_(cfg.bn_mode == "full")
                mod.bias.requires_grad_(cfg.bn_mode in ("full", "shift"))
            else:
                mod.weight.requires_grad_(cfg.train_kernel)
                if mod.bias is not None:
                    mod.bias.requires_grad_(cfg.train_bias)

    def train(self, mode=True):
        """Training mode only for fully trained BNs (batch statistics); others stay frozen."""
        super().train(mode)
        for spec in self.specs:
            if spec.kind == "bn":
                self.mods[spec.name].train(mode and self.configs[spec.name].bn_mode == "full")
        return self

    def forward(self, x):
        """x: NHWC float 0..255 (as tftl's `images`) -> logits."""
        t = {"input": x.permute(0, 3, 1, 2) * self.scale + self.offset}
        out = None
        for spec, drop in zip(self.specs, self.drop):
            ins = [t[name] for name in spec.inputs]
            out = self._apply(spec, ins)
            del ins
            for name in drop:
                del t[name]
            t[spec.name] = out
        return out

    def _apply(self, spec, ins):
        x = ins[0]
        kind = spec.kind
        if kind in ("conv", "pointwise", "depthwise", "dense", "bn"):
            return self.mods[spec.name](x)
        if kind == "act":
            return _act(spec.act)(x)
        if kind == "pool":
            return x.mean(dim=(2, 3))
        if kind == "se_mul":
            return x * ins[1][:, :, None, None]
        if kind == "add":
            return x + ins[1]
        if kind == "avgpool":
            return F.avg_pool2d(x, spec.kernel, spec.stride, ceil_mode=True)
        if kind == "upsample":
            return _nearest(x, *spec.out_shape[:2])
        raise ValueError(f"unknown layer kind {kind!r}")

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_count(self) -> int:
        return int(sum(p.numel() for p in self.trainable_parameters()))


def count_tftl_trainable(model, scheme, blocks, num_classes=10, image_size=224) -> int:
    """Trainable parameters of the same (model, scheme) in tftl's own accounting (TorchNet's)."""
    return TorchNet(model, scheme, blocks, num_classes=num_classes, image_size=image_size).trainable_count()
