"""tftl-train accuracy on splits nobody tuned on (issue 13): one run per (model, split, recipe).

    python bench/recipe.py --model M.tflite --scheme mobiletl-3 [--splits flowers5 flowers5-swap ...]
        [--tag default] [--out bench/recipe.json] [-- extra tftl-train flags, e.g. --epochs 6]

Each split (bench/splits.py) is materialised as symlink folders under bench/.cache/splits and
trained with `tftl-train MODEL <split>/train --val <split>/test` in a fresh process; the row
keeps the last epoch's test ("val") accuracy, every epoch's, and the exact flags. The test part
is only scored, never used to pick anything inside a run. Compare with bench/linear_probe.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import splits  # noqa: E402


def run(model, split, extra, seed=0):
    train_dir, test_dir = splits.materialize(split, os.path.join(BENCH, ".cache", "splits"))
    work = tempfile.mkdtemp(prefix="tftl_recipe_")
    hist = os.path.join(work, "history.json")
    cmd = [sys.executable, "-m", "tftl.runtime.cli", "train", model, train_dir, "--val", test_dir, "--seed", str(seed),
           "--history", hist, "--output", os.path.join(work, "out.tflite"), "--checkpoint-dir",
           os.path.join(work, "ckpt"), *extra]
    t0 = time.time()
    with open(os.path.join(work, "stderr.txt"), "w") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    row = {"split": split, "model": os.path.basename(model), "flags": extra, "seed": seed, "rc": rc,
           "wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1)}
    if rc != 0:
        with open(os.path.join(work, "stderr.txt")) as f:
            row["error"] = f.read().strip().splitlines()[-3:]
        return row
    with open(hist) as f:
        h = json.load(f)
    eps = h["epochs"]
    row.update(test_accuracy=eps[-1]["val_accuracy"], test_accuracy_per_epoch=[e["val_accuracy"] for e in eps],
               train_accuracy=eps[-1]["train_accuracy"], losses=[e["loss"] for e in eps],
               settings=h.get("settings"))
    return row


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--scheme", required=True, help="what the model file trains, e.g. mobiletl-3")
    p.add_argument("--splits", nargs="+", default=list(splits.SPLITS))
    p.add_argument("--tag", default="default")
    p.add_argument("--out", default=os.path.join(BENCH, "recipe.json"))
    a = p.parse_args(argv)
    for split in a.splits:
        row = run(a.model, split, extra)
        row.update(scheme=a.scheme, tag=a.tag)
        print(json.dumps({k: row.get(k) for k in ("split", "scheme", "tag", "test_accuracy", "wall_s", "peak_rss_mb",
                                                  "error")}),
              flush=True)
        rows = []
        if os.path.exists(a.out):
            with open(a.out) as f:
                rows = json.load(f)
        rows.append(row)
        with open(a.out + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(a.out + ".tmp", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
