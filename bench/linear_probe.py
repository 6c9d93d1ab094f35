"""Linear-probe baseline (issue 13): softmax regression on mbv2's pooled ImageNet features.

    python bench/linear_probe.py [--splits flowers5 flowers5-swap ...] [--out bench/linear_probe.json]

Rows of splits not named are kept in --out; a split probed again replaces its row.

Features: Keras MobileNetV2 (the shared ImageNet weights, include_top=False, global average
pooling, 1280-d) on the eval crop tftl uses (`tftl.runtime.data.load_image(path, 224)`,
then x / 127.5 - 1), computed once per photo and cached in bench/.cache/probe_features.npz.
The probe: multinomial logistic regression on standardised features with an L2 penalty
chosen by 3-fold cross-validation on the TRAINING part only (grid below), fitted by full-batch
(Nesterov) gradient descent. No augmentation. The test part is never looked at until
the final score.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import common  # noqa: E402

from tftl.runtime.probe import L2_GRID, choose_l2, fit_softmax  # noqa: E402,F401  (the runtime's own LP)
from tftl.runtime.probe import standardise as _standardise  # noqa: E402
import splits  # noqa: E402

WEIGHTS = os.environ.get("TFTL_MBV2_WEIGHTS", os.path.join(
    os.environ.get("TFTL_SHARED", "/work/shared"), "weights",
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
CACHE = os.path.join(BENCH, ".cache", "probe_features.npz")


def pooled_features(paths):
    """{path: float32 [1280]} for every path, from the cache or computed (Keras, CPU)."""
    have = {}
    if os.path.exists(CACHE):
        with np.load(CACHE, allow_pickle=False) as z:
            have = dict(zip(z["paths"].tolist(), z["features"]))
    todo = [p for p in paths if p not in have]
    if todo:
        import keras

        from tftl.runtime import data

        net = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=WEIGHTS,
                                             pooling="avg")
        for start in range(0, len(todo), 32):
            chunk = todo[start:start + 32]
            x = np.stack([data.load_image(p, 224) for p in chunk]) / 127.5 - 1.0
            for p, f in zip(chunk, np.asarray(net(x, training=False))):
                have[p] = f.astype(np.float32)
        os.makedirs(os.path.dirname(CACHE), exist_ok=True)
        names = sorted(have)
        np.savez(CACHE + ".tmp.npz", paths=np.array(names), features=np.stack([have[n] for n in names]))
        os.replace(CACHE + ".tmp.npz", CACHE)
    return np.stack([have[p] for p in paths])


def probe(name):
    train, test = splits.split(name)
    k = len(splits.classes())
    xtr, xte = pooled_features([p for p, _ in train]), pooled_features([p for p, _ in test])
    ytr, yte = np.array([c for _, c in train]), np.array([c for _, c in test])
    l2, cv = choose_l2(xtr, ytr, k)
    tr, te = _standardise(xtr, xte)
    w, b = fit_softmax(tr, ytr, k, l2)
    acc = float(((te @ w + b).argmax(1) == yte).mean())
    return {"split": name, "train_images": len(ytr), "test_images": len(yte), "l2": l2, "cv_accuracy": cv,
            "train_accuracy": float(((tr @ w + b).argmax(1) == ytr).mean()), "test_accuracy": acc}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", nargs="+", default=list(splits.SPLITS))
    p.add_argument("--out", default=os.path.join(BENCH, "linear_probe.json"))
    a = p.parse_args(argv)
    out = {"weights": os.path.basename(WEIGHTS), "features": "keras MobileNetV2 include_top=False pooling=avg, "
           "eval crop 224", "l2_grid": list(L2_GRID), "rows": []}
    if os.path.exists(a.out):  # rows of other splits are kept; a split probed again is replaced
        with open(a.out) as f:
            out = json.load(f)
    command = "python bench/linear_probe.py --splits " + " ".join(a.splits)
    for name in a.splits:
        t0 = time.time()
        row = dict(probe(name), command=command, seconds=round(time.time() - t0, 1))
        out["rows"] = [r for r in out["rows"] if r["split"] != name] + [row]
        common.write_json(a.out, out)
        print(json.dumps({k: row[k] for k in ("split", "l2", "test_accuracy")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
