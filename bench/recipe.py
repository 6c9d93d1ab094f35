"""tftl-train accuracy on splits nobody tuned on (issue 13): one run per (scheme, split, seed).

    python bench/recipe.py --models mobiletl-3=M1.tflite ft_blocks-3=M2.tflite
        [--splits flowers5 flowers5-swap ...] [--seeds 0 1 2] [--min-steps 500] [--jobs 2]
        [--eval-at-end] [--tag default] [--out bench/recipe.json] [-- extra tftl-train flags]

Each split (bench/splits.py) is materialised as symlink folders under bench/.cache/splits and
trained with `tftl-train MODEL <split>/train --val <split>/test --seed S` in a fresh process;
the row keeps the last epoch's test ("val") accuracy, every epoch's, the exact flags and the
settings tftl-train resolved. The test part is only scored, never used to pick anything
inside a run. Compare with bench/linear_probe.json (bench/accuracy_table.py does).

--min-steps N passes `--epochs max(10, ceil(N / steps per epoch))` (the rule that became
tftl-train's default, `tftl.runtime.loop.default_epochs`), so a run states its epochs
explicitly. --jobs runs that many trainings at once, each with `--threads 1` (added to the
flags) so they do not oversubscribe the cores; rows are appended as runs finish.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile
import threading

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import common  # noqa: E402
import splits  # noqa: E402

BATCH = 8  # the bench exports' fixed batch
SUMMARY = ("split", "scheme", "seed", "tag", "test_accuracy", "wall_s", "peak_rss_mb", "error")


def scaled_epochs(split, min_steps, batch=BATCH):
    """max(10, ceil(min_steps / steps per epoch)) for `split`'s training part."""
    from tftl.runtime import loop

    return loop.default_epochs(len(splits.split(split)[0]), batch, min_steps=min_steps)


def run(model, split, extra, seed=0, eval_at_end=False):
    """One tftl-train run; returns its row (test accuracy [per epoch], settings, wall, RSS).

    eval_at_end: train without --val and score the fine-tuned file once with tftl-eval (the
    same eval crop and int8 trunk; it skips the per-epoch validation passes, a third of a
    small split's run time, and gives no per-epoch curve).
    """
    train_dir, test_dir = splits.materialize(split, os.path.join(BENCH, ".cache", "splits"))
    work = tempfile.mkdtemp(prefix="tftl_recipe_")
    hist, out = os.path.join(work, "history.json"), os.path.join(work, "out.tflite")
    val = [] if eval_at_end else ["--val", test_dir]
    cmd = [sys.executable, "-m", "tftl.runtime.cli", "train", model, train_dir, *val, "--seed", str(seed),
           "--history", hist, "--output", out, "--checkpoint-dir", os.path.join(work, "ckpt"), *extra]
    rc, wall, rss, tail = common.run_measured(cmd, os.path.join(work, "stderr.txt"))
    row = {"split": split, "model": os.path.basename(model), "flags": extra, "seed": seed, "rc": rc,
           "wall_s": wall, "peak_rss_mb": rss}
    if rc != 0:
        row["error"] = tail
        return row
    with open(hist) as f:
        h = json.load(f)
    eps = h["epochs"]
    row.update(test_accuracy=eps[-1]["val_accuracy"], test_accuracy_per_epoch=[e["val_accuracy"] for e in eps],
               train_accuracy=eps[-1]["train_accuracy"], losses=[e["loss"] for e in eps],
               settings=h.get("settings"))
    if eval_at_end:
        threads = extra[extra.index("--threads"):][:2] if "--threads" in extra else []
        res, err, _ = common.run_json(["-m", "tftl.runtime.cli", "eval", out, test_dir, "--json", *threads], nice=0)
        row.update(test_accuracy=res and res["accuracy"], test_accuracy_per_epoch=None, scored_by="tftl-eval",
                   **({"per_class": {k: v["accuracy"] for k, v in res["per_class"].items()}} if res else
                      {"rc": -1, "error": err.splitlines()[-3:]}))
    return row


def plan(a, extra):
    """[(scheme, model, split, seed, flags)] of the runs asked for."""
    jobs = []
    for spec in a.models:
        scheme, _, model = spec.partition("=")
        if not model or not os.path.isfile(model):
            raise SystemExit(f"--models {spec!r}: expected SCHEME=PATH to an existing .tflite")
        for split in a.splits:
            flags = list(extra)
            if a.min_steps:
                flags += ["--epochs", str(scaled_epochs(split, a.min_steps))]
            if a.jobs > 1 and "--threads" not in flags:
                flags += ["--threads", "1"]
            jobs += [(scheme, model, split, seed, flags) for seed in a.seeds]
    return jobs


def main(argv=None):
    argv, extra = common.split_passthrough(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, metavar="SCHEME=PATH",
                   help="what each model file trains and where it is, e.g. mobiletl-3=mbv2_mtl3.tflite")
    p.add_argument("--splits", nargs="+", default=list(splits.SPLITS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--min-steps", type=int, help="pass --epochs max(10, ceil(N / steps per epoch))")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--eval-at-end", action="store_true", help="no per-epoch --val; score the output once")
    p.add_argument("--tag", default="default")
    p.add_argument("--out", default=os.path.join(BENCH, "recipe.json"))
    a = p.parse_args(argv)
    lock = threading.Lock()

    def one(job):
        scheme, model, split, seed, flags = job
        row = run(model, split, flags, seed, a.eval_at_end)
        row.update(scheme=scheme, tag=a.tag)
        with lock:
            print(json.dumps({k: row.get(k) for k in SUMMARY}), flush=True)
            common.append_json_rows(a.out, [row])
        return row

    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        rows = list(pool.map(one, plan(a, extra)))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
