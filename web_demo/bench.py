"""Browser (LiteRT.js in Chromium) against Python (ai-edge-litert) on the same model file:
train_features step time at 1 and more threads, extract time per batch, the tab's peak
memory, and the size of what the page ships. Prints a Markdown table and one JSON line.

Usage (from the repository root, after web_demo/install_test_deps.sh):
    python web_demo/bench.py MODEL.tflite [--threads 1,2] [--steps 20]
Wall-clock medians; on a shared machine run it when nothing else is.
"""

import argparse
import gzip
import json
import pathlib
import statistics
import subprocess
import time

import numpy as np

from tftl.runtime.session import Session

WEB = pathlib.Path(__file__).resolve().parent


def python_times(model, threads, steps):
    """Median train_features step and extract-batch wall time (ms) in ai-edge-litert."""
    session = Session(model, threads=threads)
    meta = session.metadata
    rng = np.random.default_rng(1)
    batch, size = meta["batch"], meta["image_size"]
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    session.extract(images)
    t = time.perf_counter()
    session.extract(images)
    extract_ms = 1000 * (time.perf_counter() - t)
    feats = rng.uniform(0, 3, (batch, *meta["feature_shape"])).astype(np.float32)
    labels = np.arange(batch, dtype=np.int32) % len(session.labels)
    times = []
    cpu0 = time.process_time()
    for _ in range(steps + 1):
        t = time.perf_counter()
        session.train_features_step(feats, labels, 1e-4)
        times.append(1000 * (time.perf_counter() - t))
    cpu_ms = 1000 * (time.process_time() - cpu0) / (steps + 1)
    return statistics.median(times[1:]), cpu_ms, extract_ms


def bundle_sizes():
    """Bytes the page loads for one variant (index.html, style.css, main.js, worker.js, one wasm pair)."""
    dist = WEB / "dist"
    common = [WEB / "index.html", WEB / "style.css", dist / "main.js", dist / "worker.js"]
    out = {}
    for variant in ("litert_wasm_internal", "litert_wasm_threaded_internal"):
        files = common + [dist / f"{variant}.js", dist / f"{variant}.wasm"]
        raw = sum(f.stat().st_size for f in files)
        gz = sum(len(gzip.compress(f.read_bytes(), 6)) for f in files)
        out[variant] = {"bytes": raw, "gzip_bytes": gz}
    out["shipped_dist_bytes"] = sum(f.stat().st_size for f in dist.iterdir() if f.suffix != ".map")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    proc = subprocess.run(["node", "bench.mjs", "--model", str(pathlib.Path(a.model).resolve()), "--threads", a.threads,
                           "--steps", str(a.steps)], cwd=WEB, capture_output=True, text=True, check=True)
    browser = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = []
    for run in browser["runs"]:
        py_step, py_cpu, py_extract = python_times(a.model, run["threads"], a.steps)
        rows.append({**run, "pythonStepMs": py_step, "pythonCpuMsPerStep": py_cpu, "pythonExtractBatchMs": py_extract})
    sizes = bundle_sizes()
    print("| threads | cross-origin isolated | browser step wall ms | Python step wall ms | wall ratio "
          "| browser CPU ms/step | Python CPU ms/step | CPU ratio | browser extract/batch ms "
          "| Python extract/batch ms | tab peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['crossOriginIsolated']} | {r['stepMedianMs']:.1f} | {r['pythonStepMs']:.1f} | "
              f"{r['stepMedianMs'] / r['pythonStepMs']:.2f} | {r['cpuMsPerStep']:.1f} | {r['pythonCpuMsPerStep']:.1f} | "
              f"{r['cpuMsPerStep'] / r['pythonCpuMsPerStep']:.2f} | {r['extractBatchMs']:.0f} | "
              f"{r['pythonExtractBatchMs']:.0f} | {r['tabPeakMB']:.0f} |")
    for variant in ("litert_wasm_internal", "litert_wasm_threaded_internal"):
        s = sizes[variant]
        print(f"page with {variant}: {s['bytes'] / 1e6:.2f} MB ({s['gzip_bytes'] / 1e6:.2f} MB gzip)")
    print(json.dumps({"rows": rows, "sizes": sizes}))


if __name__ == "__main__":
    main()
