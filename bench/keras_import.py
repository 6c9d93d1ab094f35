"""An imported Keras MobileNetV2 against the zoo's mbv2 (issue 25): export time, file size,
train-step time and memory, forward parity.

    python bench/keras_import.py [--steps 20] [--threads 1] [--schemes ft_blocks,mobiletl]

The user's model is keras.applications.MobileNetV2 (include_top=False, the shared ImageNet
weights) with a head (global average pooling, Dense(5)), saved as .keras and exported with
`tftl-export --keras`; the zoo model is `tftl-export --model mbv2` on the same weights. Both
at 96 px, batch 8, the same trained layers: block_14 upward (`--train-from block_14_expand`
vs `--blocks 3`), under ft_blocks (identical rules) and under mobiletl (the import applies
MobileTL's rules to residual IRBs only, so its block_16 trains with exact backward passes).
Step times come from bench/probe_litert.py (a fresh process per file, `--threads`). Writes
bench/keras_import.json and prints a Markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import BENCH, CACHE, PY, ROOT  # noqa: E402

SHARED = os.environ.get("TFTL_SHARED") or os.path.join(ROOT, "..", "shared")
WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
SIZE, BATCH, CLASSES = 96, 8, 5


def user_model(path):
    """The user's model, saved as .keras (the head seeded, so every run exports the same)."""
    import keras
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(include_top=False, weights=WEIGHTS, input_shape=(SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    model = keras.Model(base.input, keras.layers.Dense(CLASSES, name="logits")(x), name="my_mobilenetv2")
    model.save(path)
    return model


def export(out, *args):
    cmd = [PY, "-m", "converters.export", "--batch", str(BATCH), "--classes", str(CLASSES),
           "--quantize", "int8", "--output", out, *args]
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return time.time() - t0


def probe(path, threads, steps):
    cmd = [PY, os.path.join(BENCH, "probe_litert.py"), path, "--threads", str(threads),
           "--steps", str(steps), "--warmup", "3", "--signature", "train"]
    r = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def parity(model, path):
    """Max |probabilities| difference of the file's infer (int8 frozen weights) vs Keras."""
    import numpy as np
    import tensorflow as tf

    from tftl.runtime import interpreter, modelfile
    images = np.random.default_rng(0).uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    it = interpreter.load_interpreter(modelfile.read_model(path).flatbuffer)
    probs = it.get_signature_runner("infer")(images=images)["probabilities"]
    ref = tf.nn.softmax(model(images / 127.5 - 1.0, training=False)).numpy()
    return float(np.abs(probs - ref).max())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--schemes", default="ft_blocks,mobiletl", help="comma-separated")
    a = p.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    keras_path = os.path.join(CACHE, "my_mobilenetv2.keras")
    model = user_model(keras_path)
    rows = []
    for scheme in a.schemes.split(","):
        for kind, args in (("zoo mbv2", ["--model", "mbv2", "--weights", WEIGHTS, "--blocks", "3",
                                         "--image-size", str(SIZE)]),
                           ("imported Keras MobileNetV2", ["--keras", keras_path, "--train-from", "block_14_expand",
                                                           "--input-range", "symmetric"])):
            out = os.path.join(CACHE, f"keras_import_{kind.split()[0]}_{scheme}.tflite")
            seconds = export(out, "--scheme", scheme, *args)
            r = probe(out, a.threads, a.steps)
            rows.append(dict(model=kind, scheme=scheme, export_s=round(seconds, 1),
                             file_mb=round(os.path.getsize(out) / 1e6, 2),
                             step_ms=round(r["median_ms"], 1), peak_rss_mb=round(r["peak_rss"] / 1e6, 1),
                             infer_max_abs_diff_vs_keras=parity(model, out) if kind != "zoo mbv2" else None))
    result = dict(setting=dict(size=SIZE, batch=BATCH, classes=CLASSES, threads=a.threads, steps=a.steps,
                               quantize="int8", signature="train"), rows=rows)
    from tftl.runtime.files import atomic_write
    with atomic_write(os.path.join(BENCH, "keras_import.json")) as f:
        f.write(json.dumps(result, indent=1).encode())
    print(f"| model | scheme | export s | file MB | train step ms ({a.threads} thread) | peak RSS MB | infer vs Keras |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["infer_max_abs_diff_vs_keras"]
        print(f"| {r['model']} | {r['scheme']} | {r['export_s']} | {r['file_mb']} | {r['step_ms']} | "
              f"{r['peak_rss_mb']} | {'' if d is None else f'{d:.1e}'} |")


if __name__ == "__main__":
    main()
