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
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from probe_litert import peak_rss, rss_now  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--scheme", required=True)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tftl import models, training
    res = dict(model=a.model, scheme=a.scheme, blocks=a.blocks, threads=a.threads,
               tf_version=tf.__version__)
    res["rss_start"] = rss_now()
    model = models.build_model(a.model, num_classes=a.classes, scheme=a.scheme, blocks=a.blocks,
                               weights=None, image_size=a.image_size)
    variables = training.trainable_tf_variables(model)
    opt = training.Optimizer(variables, "adam")
    step = tf.function(lambda x, y, lr: training.train_step(model, opt, variables, x, y, lr))
    rng = np.random.default_rng(a.seed)
    x = tf.constant(rng.random((a.batch, a.image_size, a.image_size, 3), dtype=np.float32) * 255)
    y = tf.constant(rng.integers(0, a.classes, a.batch).astype(np.int32))
    lr = tf.constant(1e-3, tf.float32)
    res["rss_loaded"] = rss_now()
    res["peak_rss_loaded"] = peak_rss()
    t = time.perf_counter()
    loss = float(step(x, y, lr))  # traces + runs
    res["first_step_ms"] = (time.perf_counter() - t) * 1e3
    res["rss_after_first"] = rss_now()
    for _ in range(max(a.warmup - 1, 0)):
        float(step(x, y, lr))
    times, cpu = [], []
    for _ in range(a.steps):
        c = time.process_time()
        t = time.perf_counter()
        loss = float(step(x, y, lr))
        times.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    res["rss_end"] = rss_now()
    res["peak_rss"] = max(peak_rss(), res["rss_end"])
    res["step_ms"] = [round(v, 2) for v in times]
    if times:
        res["median_ms"] = statistics.median(times)
        res["min_ms"] = min(times)
        res["p90_ms"] = sorted(times)[int(0.9 * (len(times) - 1))]
        res["cpu_ms"] = [round(v, 2) for v in cpu]
        res["median_cpu_ms"] = statistics.median(cpu)
    res["load_avg_end"] = os.getloadavg()[0]
    res["output_finite"] = bool(np.isfinite(loss))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
