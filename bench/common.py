"""Shared helpers of the benchmark: paths, scheme labels, the export cache, subprocesses.

Imports no TensorFlow (the probes that must stay light import this module too).
"""

import hashlib
import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
CACHE = os.path.join(BENCH, ".cache")
PY = sys.executable
MB = 1e6  # the profiler's unit (10**6 bytes); RSS is reported in the same MB

# Sources whose change changes an exported graph: the cache key hashes them.
GRAPH_SOURCES = ("tftl/archs.py", "tftl/schemes.py", "tftl/models.py", "tftl/layers.py",
                 "tftl/ops.py", "tftl/training.py", "converters/export.py",
                 "converters/quantize.py", "converters/op_order.py")

SCHEME_LABELS = ("ft_all", "ft_last", "ft_norm", "ft_bias", "ft_blocks-3", "mobiletl-3", "tinytl")
MODELS = ("mbv3_small", "mbv2")


def parse_label(label):
    """'mobiletl-3' -> ('mobiletl', 3); 'ft_all' -> ('ft_all', 3) (blocks ignored)."""
    if "-" in label:
        scheme, blocks = label.rsplit("-", 1)
        return scheme, int(blocks)
    return label, 3


def split_passthrough(argv):
    """(own arguments, arguments after "--") of a bench command that passes the rest to tftl-train."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def source_hash():
    h = hashlib.sha256()
    for rel in GRAPH_SOURCES:
        with open(os.path.join(ROOT, rel), "rb") as f:
            h.update(rel.encode() + b"\0" + f.read())
    return h.hexdigest()[:10]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def nice_env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_json(args, timeout=3600, nice=5):
    """Run `python args...` in a fresh process (niced); parse the last stdout line as JSON.

    Returns (dict or None, stderr tail, wall seconds, child's ru_maxrss in MB).
    """
    cmd = (["nice", "-n", str(nice)] if nice else []) + [PY] + list(args)
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                         env=nice_env(), text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += f"\n(timed out after {timeout}s)"
    wall = time.time() - t0
    result = None
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
            break
    if p.returncode != 0:
        result = None
    return result, "\n".join(err.strip().splitlines()[-15:]), wall


def run_measured(cmd, log_path, timeout=None):
    """Run `cmd` (a list) in a fresh process from the repo root, stdout dropped, stderr to
    `log_path`; returns (exit code, wall seconds, the child's peak RSS in MB, stderr tail).

    os.wait4 reads the child's own ru_maxrss, so runs in parallel threads do not mix their
    peaks (RUSAGE_CHILDREN would). timeout: seconds, then the child is killed (exit -9).
    """
    t0 = time.time()
    with open(log_path, "w") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=nice_env())
        timer = None
        if timeout:
            import threading

            timer = threading.Timer(timeout, p.kill)
            timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        if timer:
            timer.cancel()
    with open(log_path) as f:
        tail = f.read().strip().splitlines()[-3:]
    return os.waitstatus_to_exitcode(status), round(time.time() - t0, 1), round(usage.ru_maxrss * 1024 / MB, 1), tail


def write_json(path, obj):
    """json.dump to `path` atomically (a temp file beside it, then os.replace)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def append_json_rows(path, rows):
    """Append `rows` to the JSON list in `path` (created if missing), atomically; a lock file
    beside it serialises writers, so bench runs in parallel processes keep every row."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = []
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
        write_json(path, old + list(rows))


def export_path(model, label, *, batch=8, image_size=224, classes=10, weights_tag="random",
                quantize="int8", src=None):
    scheme, blocks = parse_label(label)
    src = src or source_hash()
    name = (f"{model}_{label}_b{batch}_r{image_size}_k{classes}_{weights_tag}_{quantize}_{src}"
            ".tflite")
    return os.path.join(CACHE, name)


def ensure_export(model, label, *, batch=8, image_size=224, labels=None, classes=10,
                  weights=None, weights_tag="random", quantize="int8", src=None,
                  timeout=1800):
    """The cached .tflite of (model, scheme, ...), exporting it in a fresh process if needed.

    Returns (path, seconds spent exporting or 0.0 when cached, error or None).
    """
    os.makedirs(CACHE, exist_ok=True)
    n = len(labels) if labels else classes
    path = export_path(model, label, batch=batch, image_size=image_size, classes=n,
                       weights_tag=weights_tag, quantize=quantize, src=src)
    if os.path.exists(path):
        return path, 0.0, None
    scheme, blocks = parse_label(label)
    spec = dict(model=model, scheme=scheme, blocks=blocks, batch=batch, image_size=image_size,
                labels=labels or [f"class_{i}" for i in range(classes)], weights=weights,
                quantize=quantize, output=path)
    log(f"exporting {os.path.basename(path)}")
    res, err, wall = run_json([os.path.join(BENCH, "export_one.py"), json.dumps(spec)],
                              timeout=timeout)
    if res is None or not os.path.exists(path):
        return None, wall, f"export failed: {err}"
    log(f"  exported in {wall:.0f}s ({os.path.getsize(path) / MB:.1f} MB)")
    return path, wall, None
