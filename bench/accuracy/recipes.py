"""Issue 19's recipe search: many training recipes on one feature cache per (dataset, K, seed).

    python bench/accuracy/recipes.py [--datasets ...] [--regimes 10] [--seeds 0 1 2]
        [--recipes NAME ...] [--out bench/accuracy/recipes.json]

tftl-train spends most of a few-shot run building its feature cache (the frozen trunk once
per view and photo) and evaluating; the steps on cached features are cheap. So this runs the
runtime's own pieces (tftl.runtime.features.build_cache, Session.train_features_step,
loop.Schedule, tftl.runtime.probe) once per cache and tries every recipe of RECIPES on it,
scoring test accuracy after every epoch. The exported file is bench/accuracy/run.py's
(mbv2 MobileTL-3, 224 px, batch 8, int8 trunk, the dataset's labels).

Rows (one per dataset x K x seed x recipe) go to --out; a key already there is skipped.
The recipe finally chosen is then run end to end by tftl-train (bench/accuracy/run.py).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import common  # noqa: E402
import run as grid  # noqa: E402  (ensure_model, DATASETS, ROOT, MODELS_DIR)

from tftl.runtime import data, features, probe  # noqa: E402
from tftl.runtime.loop import Schedule  # noqa: E402
from tftl.runtime.session import Session  # noqa: E402

OUT = os.path.join(HERE, "recipes.json")
EVAL_AT = (2, 5, 10)  # epochs after which test accuracy is recorded (and the last)

# name -> (head init, lr, epochs rule, views). epochs rule: ("epochs", E) or ("steps", S).
RECIPES = {
    "default": dict(head="zero", lr=5e-4, epochs=("min_steps", 500), views=2),
    "e10": dict(head="zero", lr=5e-4, epochs=("epochs", 10), views=2),
    "e10_v8": dict(head="zero", lr=5e-4, epochs=("epochs", 10), views=8),
    "lp": dict(head="probe", lr=0.0, epochs=("epochs", 0), views=8),
    "lpft_1e-4_e10_v8": dict(head="probe", lr=1e-4, epochs=("epochs", 10), views=8),
    "lpft_5e-5_e10_v8": dict(head="probe", lr=5e-5, epochs=("epochs", 10), views=8),
    "lpft_2e-4_e10_v8": dict(head="probe", lr=2e-4, epochs=("epochs", 10), views=8),
    "lpft_1e-4_e20_v8": dict(head="probe", lr=1e-4, epochs=("epochs", 20), views=8),
    "lpft_3e-5_e10_v8": dict(head="probe", lr=3e-5, epochs=("epochs", 10), views=8),
    "lp_v2": dict(head="probe", lr=0.0, epochs=("epochs", 0), views=2),
    # the probe on each photo's mean embedding over its views: n photos, not n x views rows
    "lpm": dict(head="probe_mean", lr=0.0, epochs=("epochs", 0), views=8),
    "lpmft_1e-4_e10": dict(head="probe_mean", lr=1e-4, epochs=("epochs", 10), views=8),
    "lpmft_3e-5_e10": dict(head="probe_mean", lr=3e-5, epochs=("epochs", 10), views=8),
    "lpmft_3e-4_e10": dict(head="probe_mean", lr=3e-4, epochs=("epochs", 10), views=8),
    "lpmft_1e-4_e20": dict(head="probe_mean", lr=1e-4, epochs=("epochs", 20), views=8),
    # the same, with the full BNs' running statistics put back after every step (eval-mode statistics)
    "lpmft_1e-4_e10_bnfix": dict(head="probe_mean", lr=1e-4, epochs=("epochs", 10), views=8, bn="fixed"),
    "lpmft_3e-4_e10_bnfix": dict(head="probe_mean", lr=3e-4, epochs=("epochs", 10), views=8, bn="fixed"),
}


def embeddings(session, cache, views):
    """embed_features of every cached (view, sample): [views * n, D]."""
    n = cache.features.shape[1]
    out = []
    for v in range(views):
        rows = np.stack([cache.get(v, i) for i in range(n)])
        out.append(session.embed_features(rows))
    return np.concatenate(out)


def evaluate(session, test_feats, y):
    p = session.predict_features(test_feats)
    return float((p.argmax(1) == y).mean())


def run_recipe(session, init, r, cache, ytr, test_feats, yte, seed):
    session.restore_state(init, what="initial state")
    views = r["views"]
    curve = []
    if r["head"].startswith("probe"):
        t0 = time.monotonic()
        emb = embeddings(session, cache, views)
        if r["head"] == "probe_mean":
            kernel, bias, info = probe.fit_head(emb.reshape(views, len(ytr), -1).mean(0), ytr, len(session.labels))
        else:
            kernel, bias, info = probe.fit_head(emb, np.tile(ytr, views), len(session.labels), groups=np.tile(
                np.arange(len(ytr)), views))
        kn, bn = session.meta.recipe.classifier
        session.restore_state({kn: kernel, bn: bias}, what="probe head", partial=True)
        curve.append(evaluate(session, test_feats, yte))
        info["seconds"] = round(time.monotonic() - t0, 2)
    else:
        info = {}
    kind, n = r["epochs"]
    steps_per_epoch = math.ceil(len(ytr) / session.batch)
    epochs = n if kind == "epochs" else max(10, math.ceil(n / steps_per_epoch))
    sched = Schedule(lr=r["lr"] or 1e-9).resolved(steps_per_epoch * epochs)
    rng = np.random.default_rng(seed)
    bn_init = {n: init[n] for n in session.meta.state_groups["bn_statistics"]}
    step = 0
    for e in range(epochs):
        perm = rng.permutation(len(ytr))
        view = rng.integers(views, size=len(ytr))
        for b in range(0, len(perm), session.batch):
            idx = perm[b:b + session.batch]
            feats = np.stack([cache.get(view[i], i) for i in idx])
            session.train_features_step(feats, ytr[idx].astype(np.int32), sched(step))
            if r.get("bn") == "fixed":
                session.restore_state(bn_init, what="BN statistics", partial=True)
            step += 1
        if e + 1 in EVAL_AT or e + 1 == epochs:
            curve.append(evaluate(session, test_feats, yte))
    return {"test_accuracy": curve[-1], "curve": curve, "epochs": epochs, "steps": step, "probe": info}


def labelled(root, dataset, part, labels):
    folder = data.ImageFolder(os.path.join(root, dataset, part), labels=labels)
    return features.as_samples(folder, labels)


def report(rows, probe_rows, path):
    """RECIPES.md: mean test accuracy per recipe and dataset (seeds in brackets), beside the probe."""
    import statistics
    probe = {(r["dataset"], r["per_class"], r["seed"]): r["test_accuracy"] for r in probe_rows}
    names = list(dict.fromkeys(r["recipe"] for r in rows))
    keys = sorted({(r["dataset"], r["per_class"]) for r in rows})
    lines = ["# Recipe search on cached features (bench/accuracy/recipes.py)", "",
             "Generated by `python bench/accuracy/recipes.py --report`. Test accuracy, mean over the seeds run "
             "(their count in brackets); `probe` is bench/accuracy/probe.json's linear probe on the same seeds; "
             "`lpm` is the head fitted on the model's own embeddings (mean of 8 augmented views), before any "
             "step; `lpmft_LR_eE` fine-tunes E epochs after it; `e10_v8` fine-tunes from the exported head; "
             "`bnfix` puts the BN statistics back after each step; `_evalbn` rows use an export whose full BNs "
             "train on running statistics. mbv2 MobileTL-3, 224 px, batch 8, int8 trunk.", "",
             "| recipe | " + " | ".join(f"{d} n{k}" for d, k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name in ["probe"] + names:
        cells = []
        for d, k in keys:
            seeds = sorted({r["seed"] for r in rows if (r["dataset"], r["per_class"], r["recipe"]) == (d, k, name)}) \
                if name != "probe" else sorted({r["seed"] for r in rows if (r["dataset"], r["per_class"]) == (d, k)})
            accs = [probe.get((d, k, s)) for s in seeds] if name == "probe" else [
                next(r["test_accuracy"] for r in rows if (r["dataset"], r["per_class"], r["recipe"], r["seed"]) ==
                     (d, k, name, s)) for s in seeds]
            accs = [a for a in accs if a is not None]
            cells.append(f"{statistics.mean(accs):.3f} ({len(accs)})" if accs else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(grid.DATASETS))
    p.add_argument("--regimes", nargs="+", type=int, default=[10])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--root", default=grid.ROOT)
    p.add_argument("--models-dir", default=grid.MODELS_DIR)
    p.add_argument("--out", default=OUT)
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--model-file", help="use this export instead of run.py's (one dataset; rows tagged with it)")
    p.add_argument("--tag", default="", help="appended to the recipe names of the rows")
    p.add_argument("--report", action="store_true", help="only write RECIPES.md from --out and recipes_evalbn.json")
    a = p.parse_args(argv)
    if a.report:
        rows = [r for f in (a.out, os.path.join(HERE, "recipes_evalbn.json")) if os.path.exists(f)
                for r in json.load(open(f))]
        report(rows, json.load(open(os.path.join(HERE, "probe.json")))["rows"], os.path.join(HERE, "RECIPES.md"))
        return 0
    a.deadline_timeout = lambda: None
    rows = json.load(open(a.out)) if os.path.exists(a.out) else []
    done = {(r["dataset"], r["per_class"], r["seed"], r["recipe"]) for r in rows}
    tagged = lambda name: name + a.tag  # noqa: E731
    pool = features.pool_for(1)
    for dataset in a.datasets:
        model, err = (a.model_file, None) if a.model_file else grid.ensure_model(a, dataset, "mobiletl-3")
        assert model, err
        session = Session(model, threads=1)
        init = session.state()
        test = labelled(a.root, dataset, "test", session.labels)
        with session.transient("extract"):
            tc = features.build_cache(session, test, pool, views=1, augment=False, seed=0)
        test_feats = np.stack([tc.get(0, i) for i in range(len(test))])
        yte = test.labels
        for k in a.regimes:
            for seed in a.seeds:
                todo = [n for n in a.recipes if (dataset, k, seed, tagged(n)) not in done]
                if not todo:
                    continue
                train = labelled(a.root, dataset, f"train-n{k}-s{seed}", session.labels)
                views = max(RECIPES[n]["views"] for n in todo)
                t0 = time.monotonic()
                with session.transient("extract"):
                    cache = features.build_cache(session, train, pool, views=views, augment=True, seed=seed)
                common.log(f"{dataset} n{k} s{seed}: cache {views} views in {time.monotonic() - t0:.0f}s")
                for name in todo:
                    t0 = time.monotonic()
                    res = run_recipe(session, init, RECIPES[name], cache, train.labels, test_feats, yte, seed)
                    row = dict(dataset=dataset, per_class=k, seed=seed, recipe=tagged(name), spec=RECIPES[name],
                               model=os.path.basename(model),
                               wall_s=round(time.monotonic() - t0, 1), **res)
                    rows.append(row)
                    common.write_json(a.out, rows)
                    common.log(f"  {name}: {res['test_accuracy']:.3f}  curve {[round(c, 3) for c in res['curve']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
