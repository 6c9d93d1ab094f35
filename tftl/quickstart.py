"""The README's main job: export mbv2 (MobileTL-3) with the offline ImageNet weights,
fine-tune it on flowers5 with the Keras reference trainer, report validation accuracy.

Uses the reference data in $TFTL_SHARED or ../shared (weights and photos).
"""

import os
import sys


def main():
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
    model = tftl.build_model("mbv2", num_classes=5, scheme="mobiletl", blocks=3, weights=weights)
    hist = tftl.fit(model, os.path.join(flowers, "train"), val_dir=os.path.join(flowers, "val"),
                    epochs=3)
    print(f"mbv2 MobileTL-3 on flowers5: validation accuracy {hist['val_accuracy'][-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
