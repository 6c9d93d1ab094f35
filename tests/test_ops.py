"""Gradients of every tftl op vs TF autodiff (exact mode) and vs the formula (approximate)."""

import numpy as np
import pytest
import tensorflow as tf

from tftl import ops

RTOL = 1e-5


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def _grads(fn, *args):
    args = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        for a in args:
            tape.watch(a)
        y = fn(*args)
        loss = tf.reduce_sum(y * tf.constant(_upstream(y.shape)))
    return y, tape.gradient(loss, args)


def _upstream(shape):
    return np.random.default_rng(1).normal(size=shape).astype(np.float32)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _check(mine, ref, *args):
    y1, g1 = _grads(mine, *args)
    y2, g2 = _grads(ref, *args)
    assert _rel(y1, y2) < RTOL
    for a, b in zip(g1, g2):
        assert a is not None and b is not None
        assert _rel(a, b) < RTOL, _rel(a, b)


@pytest.mark.parametrize("shape,cout", [((2, 7, 5, 3), 4), ((3, 4, 4, 8), 16)])
def test_pointwise_conv(shape, cout):
    x, w = _rand(*shape), _rand(1, 1, shape[-1], cout, seed=1)
    _check(ops.pointwise_conv, lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), x, w)


@pytest.mark.parametrize("hw,k,stride", [((7, 7), 3, 1), ((7, 7), 3, 2), ((8, 6), 3, 2),
                                         ((7, 9), 5, 1), ((7, 7), 5, 2), ((8, 8), 5, 2),
                                         ((7, 7), 7, 2), ((1, 1), 3, 1), ((2, 2), 5, 2)])
def test_depthwise_conv(hw, k, stride):
    x, w = _rand(2, hw[0], hw[1], 3), _rand(k, k, 3, 1, seed=1)
    _check(lambda x, w: ops.depthwise_conv(x, w, stride),
           lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME"), x, w)


@pytest.mark.parametrize("hw,k,stride", [((9, 9), 3, 2), ((8, 8), 3, 2), ((7, 5), 3, 1)])
def test_conv2d(hw, k, stride):
    x, w = _rand(2, hw[0], hw[1], 3), _rand(k, k, 3, 5, seed=1)
    _check(lambda x, w: ops.conv2d(x, w, stride),
           lambda x, w: tf.nn.conv2d(x, w, stride, "SAME"), x, w)


def test_dense_pool_scale():
    x, w, b = _rand(3, 5), _rand(5, 4, seed=1), _rand(4, seed=2)
    _check(ops.dense, lambda x, w, b: tf.matmul(x, w) + b, x, w, b)
    _check(ops.global_avg_pool, lambda x: tf.reduce_mean(x, [1, 2]), _rand(2, 5, 3, 4))
    _check(ops.channel_scale, lambda x, g: x * g[:, None, None, :], _rand(2, 5, 3, 4), _rand(2, 4))


@pytest.mark.parametrize("hw,size", [((7, 7), 2), ((8, 6), 2), ((9, 9), 4)])
def test_avg_pool_and_upsample(hw, size):
    x = _rand(2, hw[0], hw[1], 3)

    def ref_pool(t):  # windows from the top-left corner, partial ones averaged over valid
        rows = []
        for i in range(0, hw[0], size):
            rows.append(tf.stack([tf.reduce_mean(t[:, i:i + size, j:j + size, :], [1, 2])
                                  for j in range(0, hw[1], size)], axis=1))
        return tf.stack(rows, axis=1)
    _check(lambda x: ops.avg_pool(x, size), ref_pool, x)
    small = _rand(2, -(-hw[0] // size), -(-hw[1] // size), 3)

    def ref(t):
        up = tf.repeat(tf.repeat(t, size, axis=1), size, axis=2)
        return up[:, :hw[0], :hw[1], :]
    _check(lambda t: ops.upsample_nearest(t, size, hw), ref, small)


def test_bn_modes():
    x, g, b = _rand(4, 5, 3, 6), _rand(6, seed=1) + 2, _rand(6, seed=2)
    scale, shift = tf.constant(g), tf.constant(b)
    _check(lambda x, b: ops.bn_affine(x, scale, b), lambda x, b: x * scale + b, x, b)

    def ref(x, g, b):
        mean, var = tf.nn.moments(x, [0, 1, 2])
        return tf.nn.batch_normalization(x, mean, var, b, g, 1e-3)
    _check(lambda x, g, b: ops.bn_train(x, g, b, 1e-3)[0], ref, x, g, b)


ACT_REFS = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "hard_sigmoid": lambda x: tf.nn.relu6(x + 3) / 6,
    "hard_swish": lambda x: x * tf.nn.relu6(x + 3) / 6,
}


def _act_input():
    # odd size, values spread over all the kinks, away from them by > 1e-3
    x = _rand(3, 5, 7, 3) * 4
    for kink in (-3.0, 0.0, 3.0, 6.0):
        x = np.where(np.abs(x - kink) < 1e-3, x + 0.01, x)
    return x


@pytest.mark.parametrize("kind", list(ACT_REFS))
def test_activation_exact(kind):
    x = _act_input()
    _check(lambda x: ops.activation(x, kind, "exact"), ACT_REFS[kind], x)


@pytest.mark.parametrize("kind", ["relu6", "hard_swish", "relu"])
@pytest.mark.parametrize("backward", ["sign", "packed"])
def test_activation_sign_mask(kind, backward):
    x = _act_input()
    y, (g,) = _grads(lambda x: ops.activation(x, kind, backward), x)
    assert _rel(y, ACT_REFS[kind](x)) < RTOL
    expected = _upstream(x.shape) * (x >= 0)  # MobileTL Table 2
    np.testing.assert_array_equal(g.numpy(), expected)


def test_pack_roundtrip_odd_size():
    mask = tf.constant(np.random.default_rng(3).random((3, 5, 7)) > 0.5)
    packed = ops.pack_bits(mask)
    assert packed.dtype == tf.uint8 and packed.shape == (-(-105 // 8),)
    back = ops.unpack_bits(packed, mask.shape, tf.ones([2]))
    np.testing.assert_array_equal(back.numpy(), mask.numpy())


def test_need_flags_drop_gradients():
    x, w = tf.constant(_rand(1, 4, 4, 3)), tf.Variable(_rand(3, 3, 3, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.depthwise_conv(x, w, 1, need_dx=False)
    gx, gw = tape.gradient(y, [x, w])
    assert gx is None and gw is not None


@pytest.mark.parametrize("hw,k,stride", [((9, 9), 3, 2), ((8, 8), 3, 2), ((7, 5), 3, 1), ((8, 8), 1, 2)])
@pytest.mark.parametrize("conv", ["conv", "depthwise"])
def test_valid_padding_convs(hw, k, stride, conv):
    """Imported Keras convs with padding='valid' (after ZeroPadding2D, ResNet's 1x1 stride-2
    shortcut): the input rows no window reaches get a zero gradient."""
    cout = 5 if conv == "conv" else 1
    x, w = _rand(2, hw[0], hw[1], 3), _rand(k, k, 3, cout, seed=1)
    if conv == "conv":
        _check(lambda x, w: ops.conv2d(x, w, stride, padding="valid"),
               lambda x, w: tf.nn.conv2d(x, w, stride, "VALID"), x, w)
    else:
        _check(lambda x, w: ops.depthwise_conv(x, w, stride, padding="valid"),
               lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "VALID"), x, w)


@pytest.mark.parametrize("hw,size,stride,padding", [((9, 9), 3, 2, "valid"), ((8, 8), 2, 2, "valid"),
                                                    ((7, 6), 3, 2, "same"), ((5, 5), 3, 1, "same")])
def test_max_pool(hw, size, stride, padding):
    """Against TF's MaxPoolGrad, ties included: ReLU zeros make whole windows equal, and the
    gradient must go to the first maximum only."""
    x = np.maximum(_rand(2, hw[0], hw[1], 3), 0.0)
    _check(lambda x: ops.max_pool(x, size, stride, padding),
           lambda x: tf.nn.max_pool2d(x, size, stride, padding.upper()), x)


def test_zero_pad_affine():
    _check(lambda x: ops.zero_pad(x, 1, 2, 0, 1),
           lambda x: tf.pad(x, [[0, 0], [1, 2], [0, 1], [0, 0]]), _rand(2, 4, 5, 3))
    scale, offset = _rand(3, seed=4), _rand(3, seed=5)
    _check(lambda x: ops.affine(x, scale, offset), lambda x: x * scale + offset, _rand(2, 4, 5, 3))


@pytest.mark.parametrize("kind,ref", [("swish", tf.nn.silu), ("sigmoid", tf.math.sigmoid)])
def test_smooth_activations(kind, ref):
    """Swish and sigmoid keep their exact backward whatever the scheme asks."""
    x = _act_input()
    for backward in ("exact", "sign"):
        _check(lambda x: ops.activation(x, kind, backward), ref, x)
