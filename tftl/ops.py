"""Differentiable ops whose backward passes lower to TFLite builtins only.

Plain autodiff of a conv net emits Conv2DBackpropFilter, DepthwiseConv2dNativeBackprop*,
Relu6Grad and FusedBatchNormGradV3, none of which are TFLite builtins (and no Python TFLite
runtime ships Flex). Every op here is a `tf.custom_gradient` whose backward is written in
ops that convert to builtins: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, BATCH_MATMUL /
FULLY_CONNECTED, PAD, RESHAPE, STRIDED_SLICE, MUL, SUM, SELECT_V2, FLOOR_DIV, FLOOR_MOD.

Conventions that keep the TFLite training graph small:
- `need_dx` / `need_dw` switch off gradients nobody consumes, so no tensor is kept for them.
- Backward code slices tensors derived from the upstream gradient, not the forward input:
  the converter schedules backward ops that depend only on forward tensors inside the
  forward pass, which would keep every slice alive.
- Masks are consumed through SELECT_V2 against dy, never cast to float in the forward.
- No static-shape zeros_like and no rank-5 tensors (they are constant-folded into the file).
All tensors are NHWC float32 with static shapes.
"""

import tensorflow as tf

PACK_BITS = 8


def same_padding(size: int, kernel: int, stride: int):
    """TF 'SAME' padding (before, after) and output size for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def conv_padding(size: int, kernel: int, stride: int, padding: str = "same"):
    """(before, after, output size) of one spatial axis for TF's 'same' or 'valid' padding."""
    if padding == "same":
        return same_padding(size, kernel, stride)
    if padding == "valid":
        return 0, 0, (size - kernel) // stride + 1
    raise ValueError(f"unknown padding {padding!r}; use same or valid")


def _zero_from(t):
    """A scalar 0 that data-depends on `t`: forces an op into the backward schedule."""
    return tf.reduce_sum(tf.slice(tf.reshape(t, [-1]), [0], [1])) * 0.0


def _dilate(dy, stride):
    """Insert stride-1 zeros after every row / column of dy (4-D PAD + RESHAPE only)."""
    if stride == 1:
        return dy
    n, h, w, c = dy.shape
    t = tf.reshape(dy, [n, h, 1, w * c])
    t = tf.pad(t, [[0, 0], [0, 0], [0, stride - 1], [0, 0]])
    t = tf.reshape(t, [n * h * stride, w, 1, c])
    t = tf.pad(t, [[0, 0], [0, 0], [0, stride - 1], [0, 0]])
    return tf.reshape(t, [n, h * stride, w * stride, c])  # trailing stride-1 zero rows / cols


def _pad_or_crop(t, top, bottom, left, right):
    """Pad (positive) or crop (negative) the spatial axes of an NHWC tensor."""
    if min(top, bottom, left, right) < 0:
        n, h, w, c = t.shape
        ct, cb, cl, cr = (max(-v, 0) for v in (top, bottom, left, right))
        t = tf.slice(t, [0, ct, cl, 0], [n, h - ct - cb, w - cl - cr, c])
        top, bottom, left, right = (max(v, 0) for v in (top, bottom, left, right))
    if max(top, bottom, left, right) > 0:
        t = tf.pad(t, [[0, 0], [top, bottom], [left, right], [0, 0]])
    return t


# --------------------------------------------------------------------------- convolutions

def pointwise_conv(x, kernel, *, need_dx=True, need_dw=True):
    """1x1 conv. kernel: [1, 1, Cin, Cout]. Both gradients are matmuls."""
    cin, cout = kernel.shape[2], kernel.shape[3]

    @tf.custom_gradient
    def op(x, kernel):
        y = tf.nn.conv2d(x, kernel, 1, "SAME")

        def grad(dy):
            dy2 = tf.reshape(dy, [-1, cout])
            w2 = tf.reshape(kernel, [cin, cout])
            dx = tf.reshape(tf.matmul(dy2, w2, transpose_b=True), x.shape) if need_dx else None
            dw = (tf.reshape(tf.matmul(tf.reshape(x, [-1, cin]), dy2, transpose_a=True),
                             kernel.shape) if need_dw else None)
            return dx, dw

        return y, grad

    return op(x, kernel)


def depthwise_conv(x, kernel, stride=1, *, need_dx=True, need_dw=True, padding="same"):
    """kxk depthwise conv, 'same' or 'valid' padding. kernel: [k, k, C, 1] (Keras layout).

    dx: VALID depthwise conv of the dilated, padded dy with the flipped kernel.
    dw: per tap, sum over batch and space of the padded input times dy shifted to that tap.
    """
    n, h, w, c = x.shape
    k = kernel.shape[0]
    pt, pb, ho = conv_padding(h, k, stride, padding)
    pl, pr, wo = conv_padding(w, k, stride, padding)
    # input rows / columns no window reaches (valid padding, or a kernel smaller than the stride)
    unused_h = h + pt + pb - ((ho - 1) * stride + k)
    unused_w = w + pl + pr - ((wo - 1) * stride + k)

    @tf.custom_gradient
    def op(x, kernel):
        y = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], padding.upper())

        def grad(dy):
            dyd = _dilate(dy, stride)  # [n, ho*s, wo*s, c]; true dilated size (ho-1)*s+1
            extra_h = ho * stride - ((ho - 1) * stride + 1)
            extra_w = wo * stride - ((wo - 1) * stride + 1)
            dx = dw = None
            if need_dx:
                t = _pad_or_crop(dyd, k - 1 - pt, k - 1 - pb - extra_h + unused_h,
                                 k - 1 - pl, k - 1 - pr - extra_w + unused_w)
                flipped = tf.reverse(kernel, [0, 1])
                dx = tf.nn.depthwise_conv2d(t, flipped, [1, 1, 1, 1], "VALID")
            if need_dw:
                # Anchored on dy: otherwise the converter pads in the forward pass and keeps
                # the padded copy instead of x (2.66 vs 0.9 MB per block in mbv3_small).
                xp = tf.pad(x + _zero_from(dy), [[0, 0], [pt, pb], [pl, pr], [0, 0]])
                hp, wp = h + pt + pb, w + pl + pr
                taps = []
                for a in range(k):
                    for b in range(k):
                        # chained on the previous tap, so the k*k shifted copies of dy are
                        # made one at a time, not all before the first multiply
                        src = dyd + _zero_from(taps[-1]) if taps else dyd
                        shifted = _pad_or_crop(src, a, hp - a - ho * stride, b, wp - b - wo * stride)
                        taps.append(tf.reduce_sum(xp * shifted, axis=[0, 1, 2]))
                dw = tf.reshape(tf.stack(taps), [k, k, c, 1])
            return dx, dw

        return y, grad

    return op(x, kernel)


def conv2d(x, kernel, stride=1, *, need_dx=True, need_dw=True, padding="same"):
    """Full kxk conv, 'same' or 'valid' padding (the stem, TinyTL's lite residual, imported
    Keras convs). kernel: [k,k,Cin,Cout].

    dx: TRANSPOSE_CONV. dw: per tap, (strided slice of the padded input)^T @ dy, the pad
    anchored on dy and the taps chained, as in depthwise_conv.
    """
    n, h, w, cin = x.shape
    k, cout = kernel.shape[0], kernel.shape[3]
    pt, pb, ho = conv_padding(h, k, stride, padding)
    pl, pr, wo = conv_padding(w, k, stride, padding)

    @tf.custom_gradient
    def op(x, kernel):
        y = tf.nn.conv2d(x, kernel, stride, padding.upper())

        def grad(dy):
            dx = dw = None
            if need_dx:
                dx = tf.nn.conv2d_transpose(dy, kernel, [n, h, w, cin], stride, padding.upper())
            if need_dw:
                xp = tf.pad(x + _zero_from(dy), [[0, 0], [pt, pb], [pl, pr], [0, 0]])
                dy2 = tf.reshape(dy, [-1, cout])
                taps = []
                for a in range(k):
                    for b in range(k):
                        src = xp + _zero_from(taps[-1]) if taps else xp
                        sl = tf.strided_slice(src, [0, a, b, 0],
                                              [n, a + (ho - 1) * stride + 1, b + (wo - 1) * stride + 1, cin],
                                              [1, stride, stride, 1])
                        taps.append(tf.matmul(tf.reshape(sl, [-1, cin]), dy2, transpose_a=True))
                dw = tf.reshape(tf.stack(taps), [k, k, cin, cout])
            return dx, dw

        return y, grad

    return op(x, kernel)


def dense(x, kernel, bias=None, *, need_dx=True, need_dw=True, need_db=True):
    """x @ kernel + bias for x [N, Cin]."""

    @tf.custom_gradient
    def op(x, kernel, bias):
        y = tf.matmul(x, kernel) + bias

        def grad(dy):
            dx = tf.matmul(dy, kernel, transpose_b=True) if need_dx else None
            dw = tf.matmul(x, dy, transpose_a=True) if need_dw else None
            db = tf.reduce_sum(dy, axis=0) if need_db else None
            return dx, dw, db

        return y, grad

    if bias is None:
        bias = tf.zeros([kernel.shape[1]], x.dtype)
        need_db = False
    return op(x, kernel, bias)


def global_avg_pool(x):
    """Mean over H, W -> [N, C]; backward: dy [N,1,1,C] times a [1,H,W,1] fill of 1/(H*W).

    A broadcasting MUL, not BROADCAST_TO, which LiteRT runs on a slow reference kernel
    (22 ms of mbv3_small's ft_all step); tf.fill keeps the constant out of the file.
    """
    n, h, w, c = x.shape

    @tf.custom_gradient
    def op(x):
        def grad(dy):
            return tf.reshape(dy, [n, 1, 1, c]) * tf.fill([1, h, w, 1], 1.0 / (h * w))

        return tf.reduce_mean(x, axis=[1, 2]), grad

    return op(x)


def channel_scale(x, gate, *, need_dx=True, need_dgate=True):
    """x [N,H,W,C] * gate [N,C] (the squeeze-and-excitation multiply)."""
    n, h, w, c = x.shape

    @tf.custom_gradient
    def op(x, gate):
        g4 = tf.reshape(gate, [-1, 1, 1, c])

        def grad(dy):
            dx = dy * tf.reshape(gate, [n, 1, 1, c]) if need_dx else None
            dg = tf.reduce_sum(dy * x, axis=[1, 2]) if need_dgate else None
            return dx, dg

        return x * g4, grad

    return op(x, gate)


def avg_pool(x, size):
    """size x size average pool, stride size -> TinyTL's reduce step.

    Windows start at the top-left corner; a partial window at the bottom / right edge
    averages its valid elements (equal to TF's SAME pooling whenever that pads only at the
    end). Backward: nearest upsample of dy / count, cropped.
    """
    n, h, w, c = x.shape
    ho, wo = -(-h // size), -(-w // size)

    @tf.custom_gradient
    def op(x):
        xp = tf.pad(x, [[0, 0], [0, ho * size - h], [0, wo * size - w], [0, 0]])
        y = tf.nn.avg_pool2d(xp, size, size, "VALID") * (size * size / _window_counts(h, w, size))

        def grad(dy):
            counts = _window_counts(h, w, size)
            g = _upsample_nearest(dy / counts, size)
            return g[:, :h, :w, :] if (ho * size, wo * size) != (h, w) else g

        return y, grad

    return op(x)


def _window_counts(h, w, size):
    import numpy as np
    ho, wo = -(-h // size), -(-w // size)
    ch = np.array([min(size, h - i * size) for i in range(ho)], np.float32)
    cw = np.array([min(size, w - j * size) for j in range(wo)], np.float32)
    return tf.constant((ch[:, None] * cw[None, :])[None, :, :, None])


def _upsample_nearest(x, factor):
    """Nearest upsample with CONCATENATION + RESHAPE of rank <= 4 (batch may be unknown)."""
    _, h, w, c = x.shape
    t = tf.reshape(x, [-1, w, 1, c])
    t = tf.concat([t] * factor, axis=2)
    t = tf.reshape(t, [-1, 1, w * factor * c])
    t = tf.concat([t] * factor, axis=1)
    return tf.reshape(t, [-1, h * factor, w * factor, c])


def upsample_nearest(x, factor, out_hw):
    """Nearest upsample by `factor`, cropped to out_hw. Backward: sum over each window."""
    n, h, w, c = x.shape
    oh, ow = out_hw

    @tf.custom_gradient
    def op(x):
        y = _upsample_nearest(x, factor)
        if (oh, ow) != (h * factor, w * factor):
            y = y[:, :oh, :ow, :]

        def grad(dy):
            g = tf.pad(dy, [[0, 0], [0, h * factor - oh], [0, w * factor - ow], [0, 0]])
            return tf.nn.avg_pool2d(g, factor, factor, "VALID") * float(factor * factor)

        return y, grad

    return op(x)


def zero_pad(x, top, bottom, left, right):
    """Zero padding of the spatial axes (Keras ZeroPadding2D); backward: the crop of dy."""

    @tf.custom_gradient
    def op(x):
        def grad(dy):
            return _pad_or_crop(dy, -top, -bottom, -left, -right)

        return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]]), grad

    return op(x)


def max_pool(x, size, stride, padding="valid", *, need_dx=True):
    """size x size max pool (Keras MaxPooling2D); backward without MaxPoolGrad.

    Backward keeps x: per window tap, the strided slice of the (-inf padded) input that
    equals the window maximum, and no earlier tap did, routes dy back (the first maximum in
    row-major order, as TF's MaxPoolGrad); each tap's share is dilated and padded into
    place. Only STRIDED_SLICE, EQUAL, LOGICAL_*, SELECT_V2, PAD, RESHAPE and ADD.
    """
    y = tf.nn.max_pool2d(x, size, stride, padding.upper())
    if not need_dx:
        return y
    n, h, w, c = x.shape
    pt, pb, ho = conv_padding(h, size, stride, padding)
    pl, pr, wo = conv_padding(w, size, stride, padding)
    hp, wp = h + pt + pb, w + pl + pr

    @tf.custom_gradient
    def op(x):
        def grad(dy):
            xp = tf.pad(x + _zero_from(dy), [[0, 0], [pt, pb], [pl, pr], [0, 0]],
                        constant_values=-3.0e38)
            taps = [(a, b, tf.strided_slice(xp, [0, a, b, 0],
                                            [n, a + (ho - 1) * stride + 1, b + (wo - 1) * stride + 1, c],
                                            [1, stride, stride, 1]))
                    for a in range(size) for b in range(size)]
            ymax = taps[0][2]
            for _, _, t in taps[1:]:
                ymax = tf.maximum(ymax, t)
            taken, dxp = None, None
            for a, b, t in taps:
                sel = tf.equal(t, ymax)
                if taken is not None:
                    sel, taken = tf.logical_and(sel, tf.logical_not(taken)), tf.logical_or(taken, sel)
                else:
                    taken = sel
                part = _pad_or_crop(_dilate(tf.where(sel, dy, 0.0), stride),
                                    a, hp - a - ho * stride, b, wp - b - wo * stride)
                dxp = part if dxp is None else dxp + part
            return _pad_or_crop(dxp, -pt, -pb, -pl, -pr)

        return y, grad

    return op(x)


def affine(x, scale, offset, *, need_dx=True):
    """x * scale + offset with constant (scalar or per-channel) scale and offset (Keras
    Rescaling / Normalization, scalar arithmetic); backward dy * scale."""
    if not need_dx:
        return x * scale + offset

    @tf.custom_gradient
    def op(x):
        return x * scale + offset, lambda dy: dy * scale

    return op(x)


# --------------------------------------------------------------------------- batch norm

def bn_affine(x, scale, shift, *, need_dx=True, need_dshift=True):
    """y = x * scale + shift with constant scale: frozen and shift-only BN store nothing."""

    @tf.custom_gradient
    def op(x, shift):
        def grad(dy):
            dx = dy * scale if need_dx else None
            axes = list(range(len(dy.shape) - 1))
            dshift = tf.reduce_sum(dy, axis=axes) if need_dshift else None
            return dx, dshift

        return x * scale + shift, grad

    return op(x, shift)


def bn_train(x, gamma, beta, epsilon, *, need_dx=True):
    """Training-mode BN with batch statistics; returns (y, batch_mean, batch_variance).

    Backward stores x (one tensor) and recomputes x_hat from it, anchored on dy so that the
    converter does not hoist x - mean into the forward pass and keep it beside x.
    """
    axes = list(range(len(x.shape) - 1))
    m = 1
    for a in axes:
        m *= x.shape[a]

    @tf.custom_gradient
    def op(x, gamma, beta):
        mean = tf.reduce_mean(x, axis=axes)
        var = tf.reduce_mean(tf.square(x - mean), axis=axes)
        rstd = tf.math.rsqrt(var + epsilon)
        y = (x - mean) * (rstd * gamma) + beta

        def grad(dy, dmean_unused=None, dvar_unused=None):
            xhat = (x + _zero_from(dy) - mean) * rstd
            dbeta = tf.reduce_sum(dy, axis=axes)
            dgamma = tf.reduce_sum(dy * xhat, axis=axes)
            dx = None
            if need_dx:
                dx = (gamma * rstd / m) * (m * dy - dbeta - xhat * dgamma)
            return dx, dgamma, dbeta

        return (y, tf.stop_gradient(mean), tf.stop_gradient(var)), grad

    return op(x, gamma, beta)


# --------------------------------------------------------------------------- activations

ACTIVATIONS = ("relu", "relu6", "hard_swish", "hard_sigmoid", "swish", "sigmoid")
# smooth activations: no 1-bit backward; swish keeps its input, sigmoid its output
SMOOTH = ("swish", "sigmoid")


def _act_forward(kind, x):
    if kind == "relu":
        return tf.nn.relu(x)
    if kind == "relu6":
        return tf.nn.relu6(x)
    if kind == "hard_sigmoid":
        return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    if kind == "hard_swish":
        return x * (tf.nn.relu6(x + 3.0) * (1.0 / 6.0))
    if kind == "sigmoid":
        return tf.math.sigmoid(x)
    if kind == "swish":
        return x * tf.math.sigmoid(x)
    raise ValueError(f"unknown activation {kind!r}; choose one of {ACTIVATIONS}")


def _mask(kind, x, backward):
    """The 1-bit mask the backward needs (exact or MobileTL's sign approximation)."""
    if backward == "exact":
        if kind == "relu":
            return x > 0
        if kind == "relu6":
            return tf.logical_and(x > 0, x < 6)
        if kind == "hard_sigmoid":
            return tf.logical_and(x > -3, x < 3)
        raise ValueError("hard_swish's exact backward needs the input, not a mask")
    if kind == "hard_sigmoid":  # its exact backward already is a 1-bit mask
        return tf.logical_and(x > -3, x < 3)
    return x >= 0  # MobileTL Table 2: d/dx ~ 1[x >= 0]


def pack_bits(mask):
    """bool [...] -> uint8 [ceil(M/8)], 1 bit per element (MUL + SUM + CAST)."""
    flat = tf.reshape(mask, [-1])
    m = flat.shape[0]
    pad = (-m) % PACK_BITS
    ints = tf.cast(flat, tf.int32)
    if pad:
        ints = tf.pad(ints, [[0, pad]])
    ints = tf.reshape(ints, [-1, PACK_BITS])
    weights = tf.constant([1 << i for i in range(PACK_BITS)], tf.int32)
    return tf.cast(tf.reduce_sum(ints * weights, axis=1), tf.uint8)


def unpack_bits(packed, shape, anchor):
    """uint8 packed bits -> bool `shape`. `anchor` (a backward tensor) pins it to backward."""
    m = 1
    for d in shape:
        m *= d
    ints = tf.cast(packed, tf.int32) + tf.cast(_zero_from(anchor), tf.int32)
    ints = tf.reshape(ints, [-1, 1])
    div = tf.constant([[1 << i for i in range(PACK_BITS)]], tf.int32)
    bits = tf.math.floormod(tf.math.floordiv(ints, div), 2)
    bits = tf.reshape(bits, [-1])
    if bits.shape[0] != m:
        bits = tf.slice(bits, [0], [m])
    return tf.reshape(tf.cast(bits, tf.bool), shape)


def activation(x, kind, backward="exact", *, need_dx=True):
    """ReLU / ReLU6 / hard-swish / hard-sigmoid / swish / sigmoid with a chosen backward.

    backward: "exact" (masks for ReLU, ReLU6, hard-sigmoid; the input for hard-swish),
      "sign" (MobileTL: bool mask 1[x >= 0]), "packed" (the same mask, bit-packed).
      Swish and sigmoid always use their exact backward (`_smooth`).
    """
    if kind not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kind!r}; choose one of {ACTIVATIONS}")
    if backward not in ("exact", "sign", "packed"):
        raise ValueError(f"unknown activation backward {backward!r}; use exact, sign or packed")
    if not need_dx:
        return _act_forward(kind, x)
    if kind in SMOOTH:
        return _smooth(x, kind)
    shape = x.shape
    scale = 1.0 / 6.0 if kind == "hard_sigmoid" else 1.0

    if backward == "exact" and kind == "hard_swish":
        @tf.custom_gradient
        def hswish(x):
            def grad(dy):
                d = tf.nn.relu6(x + 3.0) * (1.0 / 6.0) + tf.where(
                    tf.logical_and(x > -3.0, x < 3.0), x * (1.0 / 6.0), 0.0)
                return dy * d
            return _act_forward(kind, x), grad
        return hswish(x)

    if backward == "packed":
        @tf.custom_gradient
        def packed_op(x):
            bits = pack_bits(_mask(kind, x, backward))

            def grad(dy):
                mask = unpack_bits(bits, shape, dy)
                return tf.where(mask, dy * scale if scale != 1.0 else dy, 0.0)
            return _act_forward(kind, x), grad
        return packed_op(x)

    @tf.custom_gradient
    def masked_op(x):
        mask = _mask(kind, x, backward)

        def grad(dy):
            return tf.where(mask, dy * scale if scale != 1.0 else dy, 0.0)
        return _act_forward(kind, x), grad

    return masked_op(x)


def _smooth(x, kind):
    """Swish keeps its input (d = s + x s (1 - s), s recomputed by LOGISTIC); sigmoid keeps
    its output y (d = y (1 - y))."""

    @tf.custom_gradient
    def op(x):
        y = _act_forward(kind, x)

        def grad(dy):
            if kind == "sigmoid":
                return dy * (y * (1.0 - y))
            s = tf.math.sigmoid(x + _zero_from(dy))
            return dy * (s + x * s * (1.0 - s))

        return y, grad

    return op(x)
