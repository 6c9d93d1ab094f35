"""The README's main job, offline: export mbv2 (MobileTL-3, ImageNet weights) to a trainable
.tflite, fine-tune it on flowers5 with the device trainer (LiteRT, no TensorFlow in the loop),
evaluate the fine-tuned model.

Reads the reference data in $TFTL_SHARED or ../shared; writes into ./quickstart_out/.
"""

import os
import sys


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tftl
    shared = tftl.shared_dir()
    weights = os.path.join(shared, "weights",
                           "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    flowers = os.path.join(shared, "data", "flowers5")
    for p in (weights, flowers):
        if not os.path.exists(p):
            print(f"error: {p} not found; set TFTL_SHARED to the reference data folder",
                  file=sys.stderr)
            return 2
    out = os.path.abspath("quickstart_out")
    os.makedirs(out, exist_ok=True)
    from converters import export
    model_path = os.path.join(out, "mbv2_mobiletl3.tflite")
    labels = sorted(d for d in os.listdir(os.path.join(flowers, "train")) if not d.startswith("."))
    r = export.export("mbv2", scheme="mobiletl", blocks=3, labels=labels, weights=weights,
                      output=model_path, log=lambda s: print(s, file=sys.stderr))
    print(f"exported {r.path} ({r.size_bytes / 1e6:.1f} MB, {r.trainable_params:,} trainable)")
    from tftl.runtime import cli
    tuned = os.path.join(out, "mbv2_flowers5.tflite")
    rc = cli.train_main([model_path, os.path.join(flowers, "train"),
                         "--val", os.path.join(flowers, "val"), "--output", tuned,
                         "--history", os.path.join(out, "history.json")])
    if rc:
        return rc
    return cli.eval_main([tuned, os.path.join(flowers, "val")])


if __name__ == "__main__":
    sys.exit(main())
