"""Issue 19's accuracy grid: tftl-train with its defaults on the few-shot datasets, one row per run.

    python bench/accuracy/run.py [--datasets dtd10 ...] [--regimes 10 20 40] [--seeds 0 1 2]
        [--methods mobiletl-3 ft_blocks-3 [ft_last ft_all]] [--tag default]
        [--root /work/cache/datasets] [--models-dir /work/cache/accuracy_models]
        [--no-start-after HH:MM] [--kill-at HH:MM] [--dry-run] [-- extra tftl-train flags]

Runs, in order, for each regime K, each method, each dataset, each seed:

    tftl-train MODEL ROOT/NAME/train-nK-sS --seed S --threads 1 --output OUT [extra flags]
    tftl-eval OUT ROOT/NAME/test --json --threads 1

(run as `python -m tftl.runtime.cli train|eval`, the console scripts' entry point; --history and
--checkpoint-dir only say where the run writes its files). MODEL is mbv2 with ImageNet weights,
224 px, batch 8, int8 frozen trunk, the dataset's class folder names as labels, exported once
per (dataset, method) into --models-dir with `python -m converters.export` and reused when
present (the file name carries the hash of the graph sources, bench/common.py).

Each finished run appends one row to --out (bench/accuracy/results.json; atomic write): test
accuracy and per-class accuracy from tftl-eval, train accuracy, epochs, steps, per-epoch loss,
wall time, peak RSS and the flags. A (dataset, K, seed, method, tag) with a row of exit 0
already present is skipped, so the command can be interrupted and rerun. --tag names the
recipe: rows of extra flags need their own tag (default: "default" without extra flags,
the flags joined otherwise). The linear probe's rows are bench/accuracy/probe.json's;
bench/accuracy/report.py writes RESULTS.md from both files.
"""

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import common  # noqa: E402  (bench/common.py: subprocess, atomic JSON, graph-source hash)

DATASETS = ("dtd10", "imagewoof10", "intel6", "trashnet6", "weather4")
REGIMES = (10, 20, 40)
METHODS = ("mobiletl-3", "ft_blocks-3", "ft_last", "ft_all")
DEFAULT_METHODS = ("mobiletl-3", "ft_blocks-3")
ROOT = "/work/cache/datasets"
MODELS_DIR = "/work/cache/accuracy_models"
RUNS_DIR = "/work/cache/accuracy_runs"
WEIGHTS = "/work/shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
OUT = os.path.join(HERE, "results.json")
BATCH, IMAGE_SIZE, MODEL = 8, 224, "mbv2"
SUMMARY = ("dataset", "per_class", "seed", "method", "tag", "test_accuracy", "train_accuracy", "epochs",
           "steps", "wall_s", "rc")


def labels_of(root, dataset):
    """The dataset's class folder names (sorted): the model's labels."""
    test = os.path.join(root, dataset, "test")
    return sorted(d for d in os.listdir(test) if os.path.isdir(os.path.join(test, d)))


def model_path(models_dir, dataset, method, src=None):
    return os.path.join(models_dir, f"{dataset}_{MODEL}_r{IMAGE_SIZE}_b{BATCH}_{method}_int8_"
                                    f"{src or common.source_hash()}.tflite")


def export_cmd(labels_file, method, output, weights=WEIGHTS):
    """The documented export command (bench/ACCURACY.md) for one method."""
    scheme, blocks = common.parse_label(method)
    cmd = [sys.executable, "-m", "converters.export", "--model", MODEL, "--scheme", scheme]
    if "-" in method:
        cmd += ["--blocks", str(blocks)]
    return cmd + ["--labels", labels_file, "--image-size", str(IMAGE_SIZE), "--batch", str(BATCH),
                  "--weights", weights, "--output", output]


def ensure_model(a, dataset, method):
    """Path of the (dataset, method) export, exporting it (niced, fresh process) if missing."""
    path = model_path(a.models_dir, dataset, method)
    if os.path.exists(path):
        return path, None
    os.makedirs(a.models_dir, exist_ok=True)
    labels_file = os.path.join(a.models_dir, f"{dataset}.labels.txt")
    with open(labels_file, "w") as f:
        f.write("\n".join(labels_of(a.root, dataset)) + "\n")
    tmp = path + ".part.tflite"
    common.log(f"exporting {os.path.basename(path)}")
    rc, wall, _, tail = common.run_measured(["nice", "-n", str(a.nice)] + export_cmd(labels_file, method, tmp),
                                            path + ".log", timeout=a.deadline_timeout())
    if rc != 0 or not os.path.exists(tmp):
        return None, f"export failed (exit {rc}): {tail}"
    os.replace(tmp, path)
    common.log(f"  exported in {wall:.0f}s")
    return path, None


def key(row):
    return (row["dataset"], row["per_class"], row["seed"], row["method"], row["tag"])


def done_keys(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {key(r) for r in json.load(f) if r.get("rc") == 0}


def train_and_eval(a, model, dataset, k, seed, method, extra):
    """One tftl-train run and one tftl-eval of its output; returns the row."""
    regime = f"train-n{k}-s{seed}"
    train_dir, test_dir = os.path.join(a.root, dataset, regime), os.path.join(a.root, dataset, "test")
    work = os.path.join(a.runs_dir, a.tag, method, dataset, regime)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    out, hist = os.path.join(work, "out.tflite"), os.path.join(work, "history.json")
    flags = ["--seed", str(seed), "--threads", "1", *extra]
    cmd = ["nice", "-n", str(a.nice), sys.executable, "-m", "tftl.runtime.cli", "train", model, train_dir, *flags,
           "--output", out, "--history", hist, "--checkpoint-dir", os.path.join(work, "ckpt")]
    row = {"dataset": dataset, "per_class": k, "regime": regime, "seed": seed, "method": method, "tag": a.tag,
           "flags": flags, "model": os.path.basename(model),
           "command": f"tftl-train {model} {train_dir} {' '.join(flags)} --output OUT",
           "eval_command": f"tftl-eval OUT {test_dir} --json --threads 1", "started": time.strftime("%FT%TZ", time.gmtime())}
    rc, wall, rss, tail = common.run_measured(cmd, os.path.join(work, "train.stderr"), timeout=a.deadline_timeout())
    row.update(rc=rc, wall_s=wall, peak_rss_mb=rss)
    if rc != 0:
        row["error"] = tail
        return row
    with open(hist) as f:
        h = json.load(f)
    eps, settings = h["epochs"], h.get("settings") or {}
    row.update(epochs=len(eps), steps=settings.get("total_steps"), train_images=settings.get("train_images"),
               train_accuracy=eps[-1].get("train_accuracy"), losses=[e.get("loss") for e in eps],
               train_accuracy_per_epoch=[e.get("train_accuracy") for e in eps], settings=settings,
               skipped=h.get("skipped"), feature_cache=h.get("feature_cache"))
    t0 = time.time()
    res, err, _ = common.run_json(["-m", "tftl.runtime.cli", "eval", out, test_dir, "--json", "--threads", "1"],
                                  nice=a.nice, timeout=a.deadline_timeout() or 3600)
    row["eval_wall_s"] = round(time.time() - t0, 1)
    if not res:
        row.update(rc=-1, error=err.splitlines()[-3:])
        return row
    row.update(test_accuracy=res["accuracy"], test_images=res.get("n"), test_loss=res.get("loss"),
               per_class_accuracy={c: v["accuracy"] for c, v in res.get("per_class", {}).items()},
               confusion=res.get("confusion"))
    if not a.keep_outputs:
        shutil.rmtree(os.path.join(work, "ckpt"), ignore_errors=True)
        os.remove(out)
    return row


def plan(a):
    """[(dataset, K, seed, method)] in run order: regime, then method, then dataset, then seed."""
    return [(d, k, s, m) for k in a.regimes for m in a.methods for d in a.datasets for s in a.seeds]


def _clock(hhmm):
    """Today's (UTC) epoch seconds of HH:MM, or None."""
    if not hhmm:
        return None
    h, m = map(int, hhmm.split(":"))
    t = time.gmtime()
    return time.mktime(time.struct_time((t.tm_year, t.tm_mon, t.tm_mday, h, m, 0, 0, 0, 0))) - time.timezone


def main(argv=None):
    argv, extra = common.split_passthrough(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Arguments after -- go to tftl-train.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--regimes", nargs="+", type=int, default=list(REGIMES), metavar="K", help="photos per class")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    p.add_argument("--tag", help="recipe tag of the rows (default: 'default', or the extra flags joined)")
    p.add_argument("--root", default=ROOT, help="datasets built by bench/accuracy/datasets.py")
    p.add_argument("--models-dir", default=MODELS_DIR)
    p.add_argument("--runs-dir", default=RUNS_DIR, help="per-run work folders (history, stderr)")
    p.add_argument("--out", default=OUT)
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--keep-outputs", action="store_true", help="keep each fine-tuned .tflite and checkpoint")
    p.add_argument("--no-start-after", metavar="HH:MM", help="UTC time after which no new run starts")
    p.add_argument("--kill-at", metavar="HH:MM", help="UTC time at which a running run is killed (no row)")
    p.add_argument("--dry-run", action="store_true", help="list the runs left to do")
    a = p.parse_args(argv)
    a.tag = a.tag or (" ".join(extra) if extra else "default")
    stop_start, kill_at = _clock(a.no_start_after), _clock(a.kill_at)
    a.deadline_timeout = lambda: max(1, kill_at - time.time()) if kill_at else None
    done = done_keys(a.out)
    todo = [j for j in plan(a) if (j[0], j[1], j[2], j[3], a.tag) not in done]
    common.log(f"{len(todo)} runs to do, {len(plan(a)) - len(todo)} already in {a.out}")
    if a.dry_run:
        for j in todo:
            print(*j)
        return 0
    failed = 0
    for dataset, k, seed, method in todo:
        if stop_start and time.time() >= stop_start:
            common.log(f"--no-start-after {a.no_start_after}: stopping; rerun to continue")
            break
        model, err = ensure_model(a, dataset, method)
        if model is None:
            common.log(err)
            failed += 1
            continue
        if stop_start and time.time() >= stop_start:
            continue
        common.log(f"run {method} {dataset} n{k} s{seed} [{a.tag}]")
        row = train_and_eval(a, model, dataset, k, seed, method, extra)
        if kill_at and time.time() >= kill_at and row["rc"] != 0:
            common.log("--kill-at reached: run killed, no row written")
            break
        common.append_json_rows(a.out, [row])
        print(json.dumps({f: row.get(f) for f in SUMMARY}), flush=True)
        failed += row["rc"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
