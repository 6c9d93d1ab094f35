"""The same training step in TensorFlow, in a FRESH process: `tf.function` of
`tftl.training.train_step` (the reference trainer's step) on the Keras model.

    python bench/probe_tf.py --model mbv3_small --scheme mobiletl --blocks 3 [--threads 1]
        [--steps 20] [--warmup 3] [--batch 8] [--image-size 224] [--classes 10]

Threads: intra-op = --threads, inter-op = 1 (LiteRT runs ops one after another too).
Prints one JSON line; RSS in bytes: rss_start (TF imported), rss_loaded (model built,
before the first step, which traces), rss_after_first, peak_rss (ru_maxrss).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from probe_common import add_step_args, peak_rss, rss_now, run_steps  # noqa: E402


def main():
    p = add_step_args(argparse.ArgumentParser())
    a = p.parse_args()

    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tftl import models, training
    res = dict(model=a.model, scheme=a.scheme, blocks=a.blocks, threads=a.threads,
               tf_version=tf.__version__, version=tf.__version__)
    res["rss_start"] = rss_now()
    model = models.build_model(a.model, num_classes=a.classes, scheme=a.scheme, blocks=a.blocks,
                               weights=None, image_size=a.image_size)
    variables = training.trainable_tf_variables(model)
    res["trainable_params"] = int(sum(int(np.prod(v.shape)) for v in variables))
    opt = training.Optimizer(variables, "adam")
    step = tf.function(lambda x, y, lr: training.train_step(model, opt, variables, x, y, lr))
    rng = np.random.default_rng(a.seed)
    x = tf.constant(rng.random((a.batch, a.image_size, a.image_size, 3), dtype=np.float32) * 255)
    y = tf.constant(rng.integers(0, a.classes, a.batch).astype(np.int32))
    lr = tf.constant(1e-3, tf.float32)
    res["rss_loaded"] = rss_now()
    res["peak_rss_loaded"] = peak_rss()

    def one():
        res["loss"] = float(step(x, y, lr))  # the first call traces

    run_steps(one, a.warmup, a.steps, res)
    res["output_finite"] = bool(np.isfinite(res["loss"]))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
