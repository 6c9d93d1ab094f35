"""Keras layers over `tftl.ops`: every trainable layer has a builtin-only backward.

Each layer is built with its `tftl.schemes.LayerConfig` (what trains, BN mode, activation
backward) and `need_dx` (whether any layer below trains, so the input gradient is needed).
Weights are created in Keras' own order and shapes, so Keras ImageNet files load by name.
Every layer has `get_config()` (the LayerConfig as a dict), so it round-trips through
`keras.saving`.
"""

import dataclasses

import keras
import tensorflow as tf

from tftl import ops
from tftl.plan import kernel_shape
from tftl.schemes import FROZEN, LayerConfig


def _t(v):
    return tf.convert_to_tensor(v.value if hasattr(v, "value") else v)


class _TftlLayer(keras.layers.Layer):
    """Base: `config` (a LayerConfig, or its dict from `get_config`) and `need_dx`.

    Subclasses list their own constructor arguments in `_ARGS` for `get_config`.
    """

    _ARGS = ()

    def __init__(self, config=FROZEN, need_dx=False, **kwargs):
        super().__init__(**kwargs)
        self.config = LayerConfig(**config) if isinstance(config, dict) else config
        self.need_dx = bool(need_dx)

    def get_config(self):
        out = super().get_config()
        out.update(config=dataclasses.asdict(self.config), need_dx=self.need_dx)
        out.update({a: getattr(self, a) for a in self._ARGS})
        return out


@keras.saving.register_keras_serializable(package="tftl")
class Normalize(keras.layers.Layer):
    """x * scale + offset: maps 0..255 RGB to the network's input range."""

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = float(scale), float(offset)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}

    def call(self, x):
        return x * self.scale + self.offset


@keras.saving.register_keras_serializable(package="tftl")
class Conv(_TftlLayer):
    """conv (full kxk), pointwise (1x1) or depthwise (kxk) convolution, SAME padding."""

    _ARGS = ("kind", "filters", "kernel_size", "stride", "use_bias", "padding")

    def __init__(self, kind, filters, kernel_size=1, stride=1, use_bias=False, padding="same",
                 **kwargs):
        super().__init__(**kwargs)
        if kind not in ("conv", "pointwise", "depthwise"):
            raise ValueError(f"unknown conv kind {kind!r}")
        self.kind, self.filters, self.kernel_size = kind, filters, kernel_size
        self.stride, self.use_bias, self.padding = stride, use_bias, padding

    def build(self, input_shape):
        cin = input_shape[-1]
        shape = kernel_shape(self.kind, self.kernel_size, cin, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="he_normal",
                                      trainable=self.config.train_kernel)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(shape[-1] if self.kind != "depthwise" else cin,),
                                        initializer="zeros", trainable=self.config.train_bias)

    def call(self, x):
        kw = dict(need_dx=self.need_dx, need_dw=self.config.train_kernel)
        w = _t(self.kernel)
        if self.kind == "pointwise":
            y = ops.pointwise_conv(x, w, **kw)
        elif self.kind == "depthwise":
            y = ops.depthwise_conv(x, w, self.stride, padding=self.padding, **kw)
        else:
            y = ops.conv2d(x, w, self.stride, padding=self.padding, **kw)
        if self.bias is not None:
            y = ops.bn_affine(y, 1.0, _t(self.bias), need_dx=True,
                              need_dshift=self.config.train_bias)
        return y


@keras.saving.register_keras_serializable(package="tftl")
class Dense(_TftlLayer):
    """Fully connected on [N, C] (classifier, SE convs, MobileNetV3's conv_2)."""

    _ARGS = ("units", "use_bias", "kernel_initializer")

    def __init__(self, units, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units, self.use_bias = units, use_bias
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel",
                                      shape=kernel_shape("dense", 1, input_shape[-1], self.units),
                                      initializer=self.kernel_initializer,
                                      trainable=self.config.train_kernel)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros",
                                     trainable=self.config.train_bias) if self.use_bias else None)

    def call(self, x):
        return ops.dense(x, _t(self.kernel), None if self.bias is None else _t(self.bias),
                         need_dx=self.need_dx, need_dw=self.config.train_kernel,
                         need_db=self.config.train_bias)


@keras.saving.register_keras_serializable(package="tftl")
class BatchNorm(_TftlLayer):
    """BatchNorm in three modes (config.bn_mode).

    frozen: constant affine from the running statistics; stores nothing.
    shift: frozen scale and statistics, trainable shift (beta); stores nothing.
    full: batch statistics in training, trainable scale and shift, running statistics
      updated with `momentum`; stores its input.
    """

    _ARGS = ("epsilon", "momentum", "gamma_initializer")

    def __init__(self, epsilon=1e-3, momentum=0.99, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.epsilon, self.momentum = epsilon, momentum
        self.gamma_initializer = gamma_initializer

    def build(self, input_shape):
        c = (input_shape[-1],)
        mode = self.config.bn_mode
        self.gamma = self.add_weight(name="gamma", shape=c, initializer=self.gamma_initializer,
                                     trainable=mode == "full")
        self.beta = self.add_weight(name="beta", shape=c, initializer="zeros",
                                    trainable=mode in ("full", "shift"))
        self.moving_mean = self.add_weight(name="moving_mean", shape=c, initializer="zeros",
                                           trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=c,
                                               initializer="ones", trainable=False)

    def call(self, x, training=False):
        mode = self.config.bn_mode
        if mode == "full" and training:
            y, mean, var = ops.bn_train(x, _t(self.gamma), _t(self.beta), self.epsilon,
                                        need_dx=self.need_dx)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
            return y
        gamma, beta = _t(self.gamma), _t(self.beta)
        mean, var = _t(self.moving_mean), _t(self.moving_variance)
        if mode == "full":  # inference of a trained BN: let gradients reach gamma and beta
            scale = gamma * tf.math.rsqrt(var + self.epsilon)
            return x * scale + (beta - mean * scale)
        scale = tf.stop_gradient(gamma * tf.math.rsqrt(var + self.epsilon))
        return ops.bn_affine(x, scale, beta - mean * scale, need_dx=self.need_dx,
                             need_dshift=mode == "shift")


@keras.saving.register_keras_serializable(package="tftl")
class Activation(_TftlLayer):
    _ARGS = ("kind",)

    def __init__(self, kind, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def call(self, x):
        return ops.activation(x, self.kind, self.config.act_backward, need_dx=self.need_dx)


@keras.saving.register_keras_serializable(package="tftl")
class GlobalPool(_TftlLayer):
    def call(self, x):
        return ops.global_avg_pool(x) if self.need_dx else tf.reduce_mean(x, axis=[1, 2])


@keras.saving.register_keras_serializable(package="tftl")
class ChannelScale(_TftlLayer):
    """Squeeze-and-excitation multiply: inputs [x, gate]."""

    _ARGS = ("need_dgate",)

    def __init__(self, need_dgate=False, **kwargs):
        super().__init__(**kwargs)
        self.need_dgate = need_dgate

    def call(self, inputs):
        x, gate = inputs
        if len(gate.shape) == 4:  # an imported SE gate [N, 1, 1, C]
            gate = tf.reshape(gate, [-1, gate.shape[-1]])
        return ops.channel_scale(x, gate, need_dx=self.need_dx, need_dgate=self.need_dgate)


@keras.saving.register_keras_serializable(package="tftl")
class AvgPool(_TftlLayer):
    _ARGS = ("size",)

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, x):
        return ops.avg_pool(x, self.size)


@keras.saving.register_keras_serializable(package="tftl")
class Upsample(_TftlLayer):
    _ARGS = ("factor", "out_hw")

    def __init__(self, factor, out_hw, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.out_hw = factor, tuple(int(d) for d in out_hw)

    def call(self, x):
        return ops.upsample_nearest(x, self.factor, self.out_hw)


@keras.saving.register_keras_serializable(package="tftl")
class Add(keras.layers.Layer):
    def call(self, inputs):
        return inputs[0] + inputs[1]


# ----------------------------------------------------------------- imported Keras layers

@keras.saving.register_keras_serializable(package="tftl")
class Pad(_TftlLayer):
    """Zero padding (top, bottom, left, right) of an imported ZeroPadding2D."""

    _ARGS = ("pads",)

    def __init__(self, pads, **kwargs):
        super().__init__(**kwargs)
        self.pads = tuple(int(p) for p in pads)

    def call(self, x):
        if not self.need_dx:
            t, b, l_, r = self.pads
            return tf.pad(x, [[0, 0], [t, b], [l_, r], [0, 0]])
        return ops.zero_pad(x, *self.pads)


@keras.saving.register_keras_serializable(package="tftl")
class MaxPool(_TftlLayer):
    _ARGS = ("size", "stride", "padding")

    def __init__(self, size, stride, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.size, self.stride, self.padding = size, stride, padding

    def call(self, x):
        return ops.max_pool(x, self.size, self.stride, self.padding, need_dx=self.need_dx)


@keras.saving.register_keras_serializable(package="tftl")
class Affine(_TftlLayer):
    """Constant per-channel x * scale + offset (imported Rescaling, Normalization, scalar
    arithmetic); scale and offset are frozen weights, so they load like any other."""

    def build(self, input_shape):
        c = (input_shape[-1],)
        self.scale = self.add_weight(name="scale", shape=c, initializer="ones", trainable=False)
        self.offset = self.add_weight(name="offset", shape=c, initializer="zeros", trainable=False)

    def call(self, x):
        return ops.affine(x, _t(self.scale), _t(self.offset), need_dx=self.need_dx)


@keras.saving.register_keras_serializable(package="tftl")
class Reshape(_TftlLayer):
    """Flatten / Reshape to a per-sample shape (autodiff of RESHAPE is a RESHAPE)."""

    _ARGS = ("shape",)

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(int(d) for d in shape)

    def call(self, x):
        return tf.reshape(x, [-1, *self.shape])
