"""Keras reference training of every scheme on flowers5 (mbv2, ImageNet weights).

    python bench/keras_schemes.py [--epochs 2] [--out bench/keras_schemes.json]

Prints a table and writes JSON: validation accuracy, last-epoch loss and seconds per scheme.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    import tftl
    from tftl.quickstart import shared_dir
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mbv2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--schemes", default=",".join(tftl.SCHEMES))
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "keras_schemes.json"))
    a = p.parse_args()
    shared = shared_dir()
    weights = os.path.join(shared, "weights",
                           "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    if a.model != "mbv2":
        weights = "imagenet"
    flowers = os.path.join(shared, "data", "flowers5")
    rows = []
    for scheme in a.schemes.split(","):
        m = tftl.build_model(a.model, num_classes=5, scheme=scheme, blocks=a.blocks, weights=weights)
        t = time.time()
        h = tftl.fit(m, os.path.join(flowers, "train"), val_dir=os.path.join(flowers, "val"),
                     epochs=a.epochs, log=lambda s: None)
        rows.append(dict(model=a.model, scheme=scheme, blocks=a.blocks, epochs=a.epochs,
                         val_accuracy=h["val_accuracy"][-1], loss=h["loss"][-1],
                         seconds=round(time.time() - t, 1)))
        print(f"{a.model:18s} {scheme:10s} val_acc {rows[-1]['val_accuracy']:.3f} "
              f"loss {rows[-1]['loss']:.3f} {rows[-1]['seconds']:.0f}s", flush=True)
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
