"""Whole-process peak RSS of `tftl-train` end to end (issue 13, target 3), with per-phase RSS.

    python bench/trainer_rss.py MODEL.tflite [MODEL2.tflite ...] [--epochs 2] [--out bench/trainer_rss.json]
        [--tag before] [-- extra tftl-train flags]

Each model is trained on flowers5 (train -> val, every default setting: 224 px models, batch 8,
feature cache, 2 views) in a FRESH process; the parent reads the child's peak RSS with
os.wait4 (ru_maxrss, which counts everything the process ever touched, imports included).
Inside the child a few functions are wrapped to record VmRSS / VmHWM at phase boundaries:
after imports, after the model is loaded, after the feature cache is built, after each
epoch and at exit. The wrapping only reads /proc/self/status; it changes no computation.

The losses of every epoch are stored too, so a change that must keep results identical can
be checked by comparing two tags' `losses`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWERS = os.environ.get("TFTL_FLOWERS", os.path.join(os.environ.get("TFTL_SHARED", "/work/shared"),
                                                       "data", "flowers5"))


def _status_mb():
    """(VmRSS, VmHWM) of this process in MB (1e6 bytes), from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024 / 1e6
    return round(out.get("VmRSS", 0.0), 1), round(out.get("VmHWM", 0.0), 1)


def child(argv, phases_path):
    """Run tftl-train in this process with phase probes; write the phases to `phases_path`."""
    phases = []

    def mark(name):
        rss, hwm = _status_mb()
        phases.append({"phase": name, "rss_mb": rss, "hwm_mb": hwm})

    mark("python started")
    from tftl.runtime import cli, features, loop, run as run_mod, session as session_mod

    mark("tftl.runtime imported")

    def wrap(owner, attr, name_before, name_after):
        fn = getattr(owner, attr)

        def wrapped(*a, **k):
            if name_before:
                mark(name_before)
            result = fn(*a, **k)
            mark(name_after)
            return result

        setattr(owner, attr, wrapped)

    wrap(session_mod.Session, "__init__", None, "model loaded")
    wrap(features, "open_sources", None, "feature cache built")
    wrap(loop.Trainer, "_fit_head", None, "head fitted (linear probe)")
    wrap(loop.Trainer, "_steps", None, "epoch steps done")
    wrap(loop.Trainer, "_validate", None, "validation done")
    wrap(loop.Trainer, "save", None, "checkpoint written")
    wrap(run_mod, "save_model", None, "output written")
    rc = cli.train_main(argv)
    mark("exit")
    with open(phases_path, "w") as f:
        json.dump(phases, f)
    return rc


def run_one(model, epochs, extra, seed=0):
    """One fresh-process tftl-train run: peak RSS, phases, losses, wall time."""
    work = tempfile.mkdtemp(prefix="tftl_rss_")
    hist, phases_path = os.path.join(work, "history.json"), os.path.join(work, "phases.json")
    argv = [model, os.path.join(FLOWERS, "train"), "--val", os.path.join(FLOWERS, "val"), "--epochs", str(epochs),
            "--seed", str(seed), "--history", hist, "--output", os.path.join(work, "out.tflite"),
            "--checkpoint-dir", os.path.join(work, "ckpt"), *extra]
    cmd = [sys.executable, os.path.abspath(__file__), "--child", phases_path, "--", *argv]
    t0 = time.time()
    with open(os.path.join(work, "stderr.txt"), "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    out = {"model": os.path.basename(model), "argv": ["tftl-train", *argv[:1], "flowers5/train", "--val",
                                                      "flowers5/val", *argv[4:8], *extra],
           "rc": rc, "wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1)}
    if rc != 0:
        with open(os.path.join(work, "stderr.txt")) as f:
            out["error"] = f.read().strip().splitlines()[-3:]
        return out
    with open(phases_path) as f:
        out["phases"] = json.load(f)
    with open(hist) as f:
        h = json.load(f)
    out["losses"] = [e["loss"] for e in h["epochs"]]
    out["val_accuracy"] = [e["val_accuracy"] for e in h["epochs"]]
    out["feature_cache"] = h.get("feature_cache")
    out["train_cpu_seconds"] = [e.get("train_cpu_seconds") for e in h["epochs"]]  # the epochs' steps, all threads
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        rest = argv[2:]
        rest = rest[1:] if rest[:1] == ["--"] else rest
        return child(rest, argv[1])
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--tag", default="current")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "trainer_rss.json"))
    a = p.parse_args(argv)
    results = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            results = json.load(f)
    for model in a.models:
        for _ in range(a.repeat):
            r = run_one(model, a.epochs, extra)
            r["tag"] = a.tag
            print(json.dumps({k: r.get(k) for k in ("model", "tag", "rc", "peak_rss_mb", "wall_s", "losses",
                                                     "error")}), flush=True)
            for ph in r.get("phases", []):
                print(f"   {ph['phase']:<24} rss {ph['rss_mb']:7.1f}  hwm {ph['hwm_mb']:7.1f}", flush=True)
            results.setdefault(a.tag, []).append(r)
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(results, f, indent=1)
            os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
