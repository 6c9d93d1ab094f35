"""What every fresh-process step probe shares: its flags, RSS readings and the timed loop.

Used by `bench/probe_litert.py` (tftl's file in LiteRT), `bench/probe_tf.py` (TensorFlow
`tf.function`) and `bench/peers/probe_peer.py` (PyTorch eager, ONNX Runtime training), so the
four frameworks are timed and measured by the same code. Standard library only: the peers'
venv (numpy<2, torch, onnxruntime-training; no TensorFlow, no LiteRT) imports it too.

Every probe prints one JSON line with, in bytes: rss_before_step (just before the first
step: model loaded, inputs made), rss_after_first, rss_end, peak_rss (the kernel's high-water
mark of the process), step_mem (peak_rss - rss_before_step); in ms: first_step_ms, step_ms / cpu_ms (every timed step),
median_ms, min_ms, p90_ms, median_cpu_ms (process CPU time: robust to other jobs preempting
the probe); load_avg_start / load_avg_end (1-minute load average).
"""

import os
import resource
import statistics
import time


def rss_now():
    """This process's resident set size (VmRSS) in bytes."""
    return _status_kib("VmRSS:") * 1024


def peak_rss():
    """max(ru_maxrss, VmHWM): the kernel's high-water mark of this process's RSS, in bytes."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
               _status_kib("VmHWM:") * 1024)


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def add_step_args(p, *, job=True):
    """The flags every probe takes; `job` adds the (model, scheme, blocks, batch, size,
    classes) of the training job for the probes that build the network themselves."""
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (inter-op: 1)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps, the first one included")
    p.add_argument("--seed", type=int, default=0)
    if job:
        p.add_argument("--model", default="mbv2")
        p.add_argument("--scheme", default="mobiletl")
        p.add_argument("--blocks", type=int, default=3)
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--image-size", type=int, default=224)
        p.add_argument("--classes", type=int, default=10)
    return p


def run_steps(step, warmup, steps, res):
    """Time `step()`: the first call alone (first_step_ms; it may trace or allocate), then
    warmup - 1 untimed calls, then `steps` timed ones. Call it once the model and the inputs
    exist; fills `res` with the timing and RSS fields of the module docstring."""
    res["rss_before_step"] = rss_now()
    res["timed_steps"], res["warmup_steps"] = steps, warmup
    res["load_avg_start"] = os.getloadavg()[0]
    t = time.perf_counter()
    step()
    res["first_step_ms"] = (time.perf_counter() - t) * 1e3
    res["rss_after_first"] = rss_now()
    for _ in range(max(warmup - 1, 0)):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        c, t = time.process_time(), time.perf_counter()
        step()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    res["rss_end"] = rss_now()
    res.update(summary(wall, cpu))
    finish(res)
    return res


def summary(wall, cpu):
    """Medians (and min / p90 wall) of per-step wall and CPU ms lists."""
    if not wall:
        return {}
    return dict(step_ms=[round(x, 2) for x in wall], cpu_ms=[round(x, 2) for x in cpu],
                median_ms=statistics.median(wall), min_ms=min(wall),
                p90_ms=sorted(wall)[int(0.9 * (len(wall) - 1))],
                median_cpu_ms=statistics.median(cpu))


def finish(res):
    """peak_rss, step_mem and the closing load average: call last, just before printing."""
    res["peak_rss"] = max(peak_rss(), res.get("rss_end", 0), res.get("rss_after_first", 0))
    if "rss_before_step" in res:
        res["step_mem"] = res["peak_rss"] - res["rss_before_step"]
    res["load_avg_end"] = os.getloadavg()[0]
    return res
