"""Try the fixes proposed in RESULTS.md without touching tftl/: monkeypatch tftl.ops in a
fresh process, export, and measure the same way as bench/run.py.

    python bench/fix_experiments.py [--labels mobiletl-3,ft_blocks-3,ft_all] [--model mbv3_small]

Patches (all applied together; variant "fixed" also chains the taps, variant "anchor" not):
  dw_pad     ops.depthwise_conv weight gradient pads `x + _zero_from(dy)` instead of `x`, so
             the pad runs in the backward pass and only x (not the padded copy) is saved.
  conv_pad   the same for ops.conv2d (the stem conv of ft_all: 9 hoisted slices of the
             padded image were saved).
  bn_xhat    ops.bn_train recomputes x_hat from `x + _zero_from(dy)`: the centred input is no
             longer hoisted into the forward pass and saved next to x.
  chain      (variant "fixed") each tap of those two weight gradients reads the previous
             tap's result through `+ _zero_from(prev)`, a data dependency that forces the
             converter to run pad/slice -> mul -> sum tap by tap instead of materialising all
             k*k shifted copies first.
  pool_grad  ops.global_avg_pool backward as a broadcasting MUL with a [1,H,W,1] constant
             instead of BROADCAST_TO (a slow reference kernel in LiteRT).
Checks each patched op's gradients against the original in TF (max abs difference), then
exports and measures each label: graph saved activations, measured arena, peak RSS and step
CPU time (probe_litert, 1 thread). Results go to results.json['experiments'].
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402


def patch(chain=True):
    """Replace the four ops in tftl.ops (this process only). chain: make each weight-gradient
    tap depend on the previous one, so that the converter cannot materialise all k*k
    shifted copies at once."""
    import tensorflow as tf

    from tftl import ops
    orig = dict(depthwise_conv=ops.depthwise_conv, conv2d=ops.conv2d, bn_train=ops.bn_train,
                global_avg_pool=ops.global_avg_pool)
    same_padding, _dilate, _pad_or_crop, _zero_from = (ops.same_padding, ops._dilate,
                                                       ops._pad_or_crop, ops._zero_from)

    def depthwise_conv(x, kernel, stride=1, *, need_dx=True, need_dw=True):
        n, h, w, c = x.shape
        k = kernel.shape[0]
        pt, pb, ho = same_padding(h, k, stride)
        pl, pr, wo = same_padding(w, k, stride)

        @tf.custom_gradient
        def op(x, kernel):
            y = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME")

            def grad(dy):
                dyd = _dilate(dy, stride)
                extra_h = ho * stride - ((ho - 1) * stride + 1)
                extra_w = wo * stride - ((wo - 1) * stride + 1)
                dx = dw = None
                if need_dx:
                    t = _pad_or_crop(dyd, k - 1 - pt, k - 1 - pb - extra_h,
                                     k - 1 - pl, k - 1 - pr - extra_w)
                    dx = tf.nn.depthwise_conv2d(t, tf.reverse(kernel, [0, 1]), [1, 1, 1, 1], "VALID")
                if need_dw:
                    xp = tf.pad(x + _zero_from(dy), [[0, 0], [pt, pb], [pl, pr], [0, 0]])  # PATCH
                    hp, wp = h + pt + pb, w + pl + pr
                    taps = []
                    for a in range(k):
                        for b in range(k):
                            src = dyd + _zero_from(taps[-1]) if (chain and taps) else dyd  # PATCH
                            shifted = _pad_or_crop(src, a, hp - a - ho * stride, b, wp - b - wo * stride)
                            taps.append(tf.reduce_sum(xp * shifted, axis=[0, 1, 2]))
                    dw = tf.reshape(tf.stack(taps), [k, k, c, 1])
                return dx, dw

            return y, grad

        return op(x, kernel)

    def conv2d(x, kernel, stride=1, *, need_dx=True, need_dw=True):
        n, h, w, cin = x.shape
        k, cout = kernel.shape[0], kernel.shape[3]
        pt, pb, ho = same_padding(h, k, stride)
        pl, pr, wo = same_padding(w, k, stride)

        @tf.custom_gradient
        def op(x, kernel):
            y = tf.nn.conv2d(x, kernel, stride, "SAME")

            def grad(dy):
                dx = dw = None
                if need_dx:
                    dx = tf.nn.conv2d_transpose(dy, kernel, [n, h, w, cin], stride, "SAME")
                if need_dw:
                    xp = tf.pad(x + _zero_from(dy), [[0, 0], [pt, pb], [pl, pr], [0, 0]])  # PATCH
                    dy2 = tf.reshape(dy, [-1, cout])
                    taps = []
                    for a in range(k):
                        for b in range(k):
                            src = xp + _zero_from(taps[-1]) if (chain and taps) else xp  # PATCH
                            sl = tf.strided_slice(src, [0, a, b, 0],
                                                  [n, a + (ho - 1) * stride + 1, b + (wo - 1) * stride + 1, cin],
                                                  [1, stride, stride, 1])
                            taps.append(tf.matmul(tf.reshape(sl, [-1, cin]), dy2, transpose_a=True))
                    dw = tf.reshape(tf.stack(taps), [k, k, cin, cout])
                return dx, dw

            return y, grad

        return op(x, kernel)

    def bn_train(x, gamma, beta, epsilon, *, need_dx=True):
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
                xhat = (x + _zero_from(dy) - mean) * rstd  # PATCH
                dbeta = tf.reduce_sum(dy, axis=axes)
                dgamma = tf.reduce_sum(dy * xhat, axis=axes)
                dx = None
                if need_dx:
                    dx = (gamma * rstd / m) * (m * dy - dbeta - xhat * dgamma)
                return dx, dgamma, dbeta

            return (y, tf.stop_gradient(mean), tf.stop_gradient(var)), grad

        return op(x, gamma, beta)

    def global_avg_pool(x):
        n, h, w, c = x.shape

        @tf.custom_gradient
        def op(x):
            def grad(dy):  # PATCH: broadcasting MUL instead of BROADCAST_TO
                return tf.reshape(dy, [n, 1, 1, c]) * tf.fill([1, h, w, 1], 1.0 / (h * w))

            return tf.reduce_mean(x, axis=[1, 2]), grad

        return op(x)

    ops.depthwise_conv, ops.conv2d = depthwise_conv, conv2d
    ops.bn_train, ops.global_avg_pool = bn_train, global_avg_pool
    return orig, dict(depthwise_conv=depthwise_conv, conv2d=conv2d, bn_train=bn_train,
                      global_avg_pool=global_avg_pool)


def check_gradients(orig, new):
    """Max |grad_patched - grad_original| per op on random inputs (TF)."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, 9, 9, 6)).astype(np.float32))
    out = {}

    def grads(fn, *args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            y = fn(*args)
            y = y[0] if isinstance(y, tuple) else y
            loss = tf.reduce_sum(y * tf.constant(rng.standard_normal(y.shape).astype(np.float32)))
        return tape.gradient(loss, args)

    cases = {
        "depthwise_conv": (lambda f: (lambda x, k: f(x, k, 2)),
                           [x, tf.constant(rng.standard_normal((5, 5, 6, 1)).astype(np.float32))]),
        "conv2d": (lambda f: (lambda x, k: f(x, k, 2)),
                   [x, tf.constant(rng.standard_normal((3, 3, 6, 4)).astype(np.float32))]),
        "bn_train": (lambda f: (lambda x, g, b: f(x, g, b, 1e-3)),
                     [x, tf.constant(rng.random(6).astype(np.float32) + 0.5),
                      tf.constant(rng.standard_normal(6).astype(np.float32))]),
        "global_avg_pool": (lambda f: f, [x]),
    }
    for name, (wrap, args) in cases.items():
        state = rng.bit_generator.state
        g0 = grads(wrap(orig[name]), *args)
        rng.bit_generator.state = state
        g1 = grads(wrap(new[name]), *args)
        out[name] = float(max(np.max(np.abs(a.numpy() - b.numpy())) for a, b in zip(g0, g1)))
    return out


def export_patched(spec_json):
    """Child process: patch (variant "fixed") or not ("fp32"), export; one JSON line."""
    spec = json.loads(spec_json)
    diffs = {}
    if spec["variant"] in ("fixed", "anchor"):
        orig, new = patch(chain=spec["variant"] == "fixed")
        diffs = check_gradients(orig, new)
    from converters import export
    r = export.export(spec["model"], scheme=spec["scheme"], blocks=spec["blocks"],
                      weights=None, output=spec["output"], log=lambda m: None,
                      quantize="none" if spec["variant"] == "fp32" else "int8")
    print(json.dumps(dict(path=r.path, gradient_max_abs_diff=diffs)))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return export_patched(sys.argv[2])
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mbv3_small")
    p.add_argument("--labels", default="mobiletl-3,ft_blocks-3,ft_all")
    p.add_argument("--variant", default="fixed", choices=("fixed", "anchor", "fp32"),
                   help="fixed: the patched ops; fp32: unpatched, frozen weights kept fp32 "
                        "(--quantize none), to see what the int8 hybrid kernels cost")
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    from tftl import profile
    from tftl.runtime import modelfile

    import run
    import tflite_graph
    src = common.source_hash()
    res = run.load_results()
    exps = res.setdefault("experiments", {})
    if exps.get("source_hash") != src:
        exps.clear()
        exps["source_hash"] = src
    exp = exps.setdefault(a.variant, {})
    exp.update(description={
        "fixed": " ".join(__doc__.split("\n\n")[2].split()),
        "anchor": "As 'fixed' but without chaining the taps (pads/slices anchored to dy only).",
        "fp32": "Unpatched ops; frozen weights exported fp32 (--quantize none) instead of "
                "int8 dynamic-range."}[a.variant])
    rows = exp.setdefault("rows", {})
    for label in a.labels.split(","):
        scheme, blocks = common.parse_label(label)
        out = os.path.join(common.CACHE, f"{a.variant}_{a.model}_{label}_{src}.tflite")
        if not os.path.exists(out):
            common.log(f"exporting patched {a.model} {label}")
            r, err, wall = common.run_json([os.path.abspath(__file__), "--child", json.dumps(
                dict(model=a.model, scheme=scheme, blocks=blocks, output=out, variant=a.variant))])
            if r is None:
                rows[f"{a.model}/{label}"] = dict(error=err)
                run.save_results(res)
                continue
            if r["gradient_max_abs_diff"]:
                exp["gradient_max_abs_diff"] = r["gradient_max_abs_diff"]
        prof = profile.profile(a.model, scheme, blocks, 8, 224, 10)
        g = tflite_graph.analyse(modelfile.read_model(out).flatbuffer, "train",
                                 run.layer_blocks(prof))
        tb = set(run.trained_blocks(a.model, label))
        g["saved_trained_blocks"] = sum(v for k, v in g["saved_by_block"].items()
                                        if k not in ("head", "unattributed") and int(k) in tb)
        common.log(f"probing patched {a.model} {label}")
        pr = run.probe_litert(out, 1, a.steps, 3)
        run._say(pr)
        dec = run.probe_litert(out, 1, a.steps, 2, ["--decompose", "--top", "3"])
        run._say(dec, "decompose")
        nod = run.probe_litert(out, 1, max(a.steps // 2, 2), 2, ["--resolver", "no_delegates",
                                                                  "--top", "3"])
        run._say(nod, "no delegates")
        op, err, _ = common.run_json([os.path.join(common.BENCH, "op_profile.py"), out,
                                      "--reps", "5"])
        rows[f"{a.model}/{label}"] = dict(
            op_profile=op if op else dict(error=err),
            file=os.path.relpath(out, common.ROOT), graph={k: g[k] for k in (
                "saved_bytes", "saved_trained_blocks", "saved_by_block", "ideal_peak_bytes",
                "op_counts", "largest_saved", "live_at_peak_by_kind", "largest_at_peak")},
            litert=pr, decompose=dec.get("decompose_cpu_ms"), no_delegates=nod)
        run.save_results(res)
    import report
    for line in report.write(res):
        print(line)


if __name__ == "__main__":
    main()
