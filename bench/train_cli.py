"""Benchmarks that drive the device trainer CLI (`python -m tftl.runtime.cli train|eval`).

  available()                      whether `python -m tftl.runtime.cli train --help` works
  run_train(model_path, ...)       one tftl-train run in a fresh process: wall seconds, the
                                   child's peak RSS (os.wait4), the --history JSON
  epoch_seconds(...)               seconds per epoch on flowers5 with and without
                                   --cache-features (mbv2, MobileTL-3, ImageNet weights)
  accuracy(...)                    flowers5 val accuracy of mbv2 / efficientnet_lite0 per
                                   scheme over seeds, same budget; + measured train-step
                                   memory of the same file (probe) for the Pareto plot
Everything here is skipped with a message when the CLI is not there.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

FLOWERS = os.environ.get("TFTL_FLOWERS", "/work/shared/data/flowers5")
MBV2_WEIGHTS = os.environ.get(
    "TFTL_MBV2_WEIGHTS",
    "/work/shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
ACC_WEIGHTS = {"mbv2": (MBV2_WEIGHTS, "imagenet"), "efficientnet_lite0": ("imagenet", "imagenet")}


def available():
    """(True, '') when the trainer CLI answers --help, else (False, reason)."""
    try:
        p = subprocess.run([common.PY, "-m", "tftl.runtime.cli", "train", "--help"],
                           capture_output=True, text=True, timeout=120, cwd=common.ROOT,
                           env=common.nice_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    if p.returncode != 0 or "--cache-features" not in p.stdout:
        return False, (p.stderr.strip().splitlines() or ["no --cache-features in --help"])[-1]
    return True, ""


def flowers_labels():
    return sorted(d for d in os.listdir(os.path.join(FLOWERS, "train"))
                  if os.path.isdir(os.path.join(FLOWERS, "train", d)))


def export_for_training(model, label, src):
    weights, tag = ACC_WEIGHTS[model]
    return common.ensure_export(model, label, labels=flowers_labels(), weights=weights,
                                weights_tag=tag, src=src)


def subset(per_class, val_per_class=None):
    """flowers5 cut to the first `per_class` training and `val_per_class` (default half)
    validation photos of each class: symlinks under bench/.cache/, nothing copied. Returns
    the folder holding train/ and val/ (reused when it exists)."""
    val_per_class = per_class // 2 if val_per_class is None else val_per_class
    root = os.path.join(common.CACHE, f"flowers5_sub{per_class}_{val_per_class}")
    if os.path.isdir(root):
        return root
    tmp = root + f".tmp{os.getpid()}"
    for part, n in (("train", per_class), ("val", val_per_class)):
        for c in flowers_labels():
            src = os.path.join(FLOWERS, part, c)
            dst = os.path.join(tmp, part, c)
            os.makedirs(dst)
            for f in sorted(x for x in os.listdir(src) if not x.startswith("."))[:n]:
                os.symlink(os.path.join(src, f), os.path.join(dst, f))
    os.replace(tmp, root)
    return root


def run_train(model_path, *, epochs, seed=0, cache_features=None, threads=None, timeout=7200,
              data=None, extra=()):
    """One tftl-train run on flowers5 (or `data`, a folder with the same train/ and val/)
    in a fresh, niced process."""
    data = data or FLOWERS
    work = tempfile.mkdtemp(prefix="tftl_bench_train_", dir=common.CACHE)
    hist = os.path.join(work, "history.json")
    cmd = ["nice", "-n", "5", common.PY, "-m", "tftl.runtime.cli", "train", model_path,
           os.path.join(data, "train"), "--val", os.path.join(data, "val"),
           "--epochs", str(epochs), "--seed", str(seed), "--history", hist, *extra,
           "--output", os.path.join(work, "finetuned.tflite"),
           "--checkpoint-dir", os.path.join(work, "ckpt")]
    if cache_features is not None:
        cmd.append("--cache-features" if cache_features else "--no-cache-features")
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.time()
    with open(os.path.join(work, "stderr.txt"), "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=common.ROOT,
                             env=common.nice_env())
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.5)
    wall = time.time() - t0
    rc = os.waitstatus_to_exitcode(status)
    out = dict(command=" ".join(cmd[3:]).replace(common.ROOT + "/", ""), rc=rc,
               wall_s=round(wall, 1), peak_rss=usage.ru_maxrss * 1024, seed=seed, epochs=epochs,
               cpu_s=round(usage.ru_utime + usage.ru_stime, 1), load_avg_end=os.getloadavg()[0])
    if rc != 0 or not os.path.exists(hist):
        with open(os.path.join(work, "stderr.txt")) as f:
            out["error"] = "\n".join(f.read().strip().splitlines()[-5:])
        shutil.rmtree(work, ignore_errors=True)
        return out
    with open(hist) as f:
        h = json.load(f)
    shutil.rmtree(work, ignore_errors=True)
    eps = h.get("epochs", [])
    out.update(
        val_accuracy=eps[-1].get("val_accuracy") if eps else None,
        val_accuracy_per_epoch=[e.get("val_accuracy") for e in eps],
        epoch_seconds=[e.get("seconds") for e in eps],
        epoch_train_seconds=[e.get("train_seconds") for e in eps],
        epoch_train_cpu_seconds=[e.get("train_cpu_seconds") for e in eps],
        images_per_second=[e.get("images_per_second") for e in eps],
        feature_cache=h.get("feature_cache"), settings=h.get("settings"))
    return out


def epoch_seconds(src, *, model="mbv2", label="mobiletl-3", epochs=2, seed=0, log=common.log,
                  per_class=0, random_weights=False):
    """Seconds per epoch of tftl-train on flowers5 with and without --cache-features.

    per_class > 0: on `subset(per_class)` instead of all of flowers5; random_weights: on the
    bench's random-weights export (10 class slots, --fill-placeholders), the file the step
    probes use, instead of an ImageNet export with flowers5's labels (time only)."""
    if random_weights:
        path, _, err = common.ensure_export(model, label, src=src)
        extra = ("--fill-placeholders",)
    else:
        (path, _, err), extra = export_for_training(model, label, src), ()
    if err:
        return dict(error=err)
    data = subset(per_class) if per_class else None
    res = dict(model=model, scheme=label, epochs=epochs, per_class=per_class or None,
               weights="random" if random_weights else "imagenet")
    for cache in (True, False):
        log(f"tftl-train {model} {label} {epochs} epoch(s) "
            f"{'--cache-features' if cache else '--no-cache-features'}")
        r = run_train(path, epochs=epochs, seed=seed, cache_features=cache, data=data, extra=extra)
        if "error" in r:
            log(f"  failed: {r['error']}")
        else:
            fc = r.get("feature_cache") or {}
            log(f"  {r['wall_s']:.0f}s wall, epochs {r['epoch_seconds']} s, cache "
                f"{fc.get('seconds')} s, val_acc {r['val_accuracy']}")
        res["cache" if cache else "no_cache"] = r
    return res


def accuracy(src, *, models, labels, seeds, epochs, probe_steps=3, log=common.log, reuse=None,
             on_row=None):
    """Val accuracy per (model, scheme) over seeds + measured step memory of the same file.

    Scheme-major (every model gets a scheme before the next scheme starts), so an
    interrupted run has whole rows; on_row(rows) is called after each row (to save it).
    """
    rows = []
    reuse = reuse or {}
    for label in labels:
        for model in models:
            path, _, err = export_for_training(model, label, src)
            row = dict(model=model, scheme=label, epochs=epochs, runs=[])
            if err:
                row["error"] = err
                rows.append(row)
                continue
            for seed in seeds:
                key = (model, label, epochs, seed)
                if key in reuse:
                    r = reuse[key]
                else:
                    log(f"tftl-train {model} {label} seed {seed}, {epochs} epoch(s)")
                    r = run_train(path, epochs=epochs, seed=seed)
                log(f"  val_acc {r.get('val_accuracy')} ({r['wall_s']:.0f}s)"
                    + (f" error: {r['error']}" if "error" in r else ""))
                row["runs"].append(r)
            accs = [r["val_accuracy"] for r in row["runs"] if r.get("val_accuracy") is not None]
            if accs:
                import statistics
                row["val_accuracy_mean"] = statistics.mean(accs)
                row["val_accuracy_std"] = statistics.pstdev(accs) if len(accs) > 1 else 0.0
            probe, perr, _ = common.run_json(
                [os.path.join(common.BENCH, "probe_litert.py"), path, "--threads", "1",
                 "--steps", str(probe_steps), "--warmup", "1", "--top", "3"])
            if probe:
                row["peak_rss"] = probe["peak_rss"]
                row["step_ms"] = probe.get("median_ms")
            else:
                row["probe_error"] = perr
            from tftl import profile
            scheme, blocks = common.parse_label(label)
            prof = profile.profile(model, scheme, blocks, 8, 224, len(flowers_labels()),
                                   bool_masks=True)
            row["train_flops"] = prof["forward_flops"] + prof["backward_flops"]
            row["analytical_peak_bytes"] = prof["peak_bytes"]
            rows.append(row)
            if on_row:
                on_row(rows)
    return rows


if __name__ == "__main__":
    print(available())
    sys.exit(0)
