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
REPORTED = (  # (title, file) of each search RECIPES.md shows, newest first
    ("## Search 2: per-group rates, WiSE-FT, K = 10 and 20 (export `aba9ee8f11`, `--out recipes_v2.json`)",
     "recipes_v2.json"),
    ("## Search 1: LP-FT variants, K = 10 (export `b4dfb6489b`)", "recipes.json"),
    ("## Search 1b: full BNs on running statistics (a re-export, seed 0)", "recipes_evalbn.json"))
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
    # per-group rates: the blocks' Adam steps scaled by `blocks` (Adam's moments do not depend on the
    # rate, so scaling a step's change is exactly a lower rate for that group); the head at `lr`
    "lpmft_1e-4_e10_b0.1": dict(head="probe_mean", lr=1e-4, epochs=("epochs", 10), views=8, blocks=0.1),
    "lpmft_3e-4_e10_b0.1": dict(head="probe_mean", lr=3e-4, epochs=("epochs", 10), views=8, blocks=0.1),
    "lpmft_1e-3_e10_b0.03": dict(head="probe_mean", lr=1e-3, epochs=("epochs", 10), views=8, blocks=0.03),
    "lpmft_1e-4_e5": dict(head="probe_mean", lr=1e-4, epochs=("epochs", 5), views=8),
    "lpmft_3e-4_e20": dict(head="probe_mean", lr=3e-4, epochs=("epochs", 20), views=8),
}
WISE = (0.25, 0.5, 0.75)  # WiSE-FT: the trained weights (and BN statistics) blended with the run's start, (1 - a) start + a trained


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
    start = session.state(("trainable", "bn_statistics"))
    blocks = [n for n in session.meta.state_groups["trainable"] if n not in session.meta.recipe.classifier]
    step = 0
    for e in range(epochs):
        perm = rng.permutation(len(ytr))
        view = rng.integers(views, size=len(ytr))
        for b in range(0, len(perm), session.batch):
            idx = perm[b:b + session.batch]
            feats = np.stack([cache.get(view[i], i) for i in idx])
            before = session.state(("trainable",)) if "blocks" in r else None
            session.train_features_step(feats, ytr[idx].astype(np.int32), sched(step))
            if before is not None:
                after = session.state(("trainable",))
                session.restore_state({n: before[n] + r["blocks"] * (after[n] - before[n]) for n in blocks},
                                      what="scaled block step", partial=True)
            if r.get("bn") == "fixed":
                session.restore_state(bn_init, what="BN statistics", partial=True)
            step += 1
        if e + 1 in EVAL_AT or e + 1 == epochs:
            curve.append(evaluate(session, test_feats, yte))
    wise = {}
    if step:
        trained = session.state(("trainable", "bn_statistics"))
        for a in WISE:
            session.restore_state({n: (1 - a) * start[n] + a * trained[n] for n in trained},
                                  what="WiSE-FT blend", partial=True)
            wise[str(a)] = evaluate(session, test_feats, yte)
        session.restore_state(trained, what="trained weights", partial=True)
    return {"test_accuracy": curve[-1], "curve": curve, "epochs": epochs, "steps": step, "probe": info,
            "wise": wise}


def labelled(root, dataset, part, labels):
    folder = data.ImageFolder(os.path.join(root, dataset, part), labels=labels)
    return features.as_samples(folder, labels)


LEGEND = (
    "`probe` is bench/accuracy/probe.json's linear probe (centre crop) on the same seeds; `lpm` is the head "
    "fitted on the model's own embeddings (mean of 8 augmented views), before any step; `lpmft_LR_eE` fine-tunes "
    "E epochs after it (the file's recipe is `lpmft_1e-4_e10`); `e10_v8` fine-tunes from the exported head; "
    "`bnfix` puts the BN statistics back after each step; `_bS` scales the blocks' steps by S (per-group rates: "
    "the head at LR, the blocks at S x LR); `+wiseA` is WiSE-FT, the run's weights and BN statistics blended "
    "(1 - A) x start + A x trained; `_evalbn` rows use an export whose full BNs train on running statistics.")


def _table(rows, probe, title):
    """One markdown table: a row per recipe (and WiSE-FT blend), a column per (dataset, K)."""
    import statistics
    acc = {}
    for r in rows:
        acc.setdefault(r["recipe"], {}).setdefault((r["dataset"], r["per_class"]), {})[r["seed"]] = r["test_accuracy"]
        for a, v in sorted(r.get("wise", {}).items()):
            acc.setdefault(f"{r['recipe']}+wise{a}", {}).setdefault((r["dataset"], r["per_class"]), {})[r["seed"]] = v
    keys = sorted({(r["dataset"], r["per_class"]) for r in rows})
    acc = {"probe": {k: {s: probe[(*k, s)] for s in {r["seed"] for r in rows if (r["dataset"], r["per_class"]) == k}
                         if (*k, s) in probe} for k in keys}, **acc}
    lines = [title, "", "| recipe | " + " | ".join(f"{d} n{k}" for d, k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, by_key in acc.items():
        cells = []
        for k in keys:
            seeds = by_key.get(k, {})
            base = [probe[(*k, s)] for s in seeds if (*k, s) in probe]
            diff = f", {100 * (statistics.mean(seeds.values()) - statistics.mean(base)):+.1f}" \
                if seeds and name != "probe" and len(base) == len(seeds) else ""
            cells.append(f"{statistics.mean(seeds.values()):.3f} ({len(seeds)}{diff})" if seeds else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def report(sources, probe_rows, path):
    """RECIPES.md: per search file, mean test accuracy per recipe and dataset (seed count and the
    difference from the probe on the same seeds, in points, in brackets)."""
    probe = {(r["dataset"], r["per_class"], r["seed"]): r["test_accuracy"] for r in probe_rows}
    lines = ["# Recipe search on cached features (bench/accuracy/recipes.py)", "",
             "Generated by `python bench/accuracy/recipes.py --report`. Test accuracy, mean over the seeds run "
             "(in brackets: their count, and the difference from the probe on the same seeds in points). "
             + LEGEND + " mbv2 MobileTL-3, 224 px, batch 8, int8 trunk.", ""]
    for title, rows in sources:
        lines += _table(rows, probe, title) + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(grid.DATASETS))
    p.add_argument("--regimes", nargs="+", type=int, default=[10])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--root", default=grid.ROOT)
    p.add_argument("--models-dir", default=grid.MODELS_DIR)
    p.add_argument("--out", default=OUT)
    p.add_argument("--cache-dir", default=os.path.join(grid.ROOT, "..", "feature_cache"),
                   help="keep each (dataset, K, seed) feature cache here and reuse it ('' for none)")
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--model-file", help="use this export instead of run.py's (one dataset; rows tagged with it)")
    p.add_argument("--tag", default="", help="appended to the recipe names of the rows")
    p.add_argument("--report", action="store_true", help="only write RECIPES.md from --out and recipes_evalbn.json")
    a = p.parse_args(argv)
    if a.report:
        sources = [(title, json.load(open(os.path.join(HERE, f)))) for title, f in REPORTED
                   if os.path.exists(os.path.join(HERE, f))]
        report(sources, json.load(open(os.path.join(HERE, "probe.json")))["rows"], os.path.join(HERE, "RECIPES.md"))
        return 0
    a.deadline_timeout = lambda: None
    if a.cache_dir:
        os.makedirs(a.cache_dir, exist_ok=True)
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
                path = os.path.join(a.cache_dir, f"{dataset}_n{k}_s{seed}_v{views}.f16") if a.cache_dir else None
                with session.transient("extract"):
                    cache = features.build_cache(session, train, pool, views=views, augment=True, seed=seed,
                                                 path=path)
                common.log(f"{dataset} n{k} s{seed}: cache {views} views in {time.monotonic() - t0:.0f}s")
                for name in todo:
                    t0 = time.monotonic()
                    res = run_recipe(session, init, RECIPES[name], cache, train.labels, test_feats, yte, seed)
                    row = dict(dataset=dataset, per_class=k, seed=seed, recipe=tagged(name), spec=RECIPES[name],
                               model=os.path.basename(model),
                               wall_s=round(time.monotonic() - t0, 1), **res)
                    rows.append(row)
                    common.write_json(a.out, rows)
                    common.log(f"  {name}: {res['test_accuracy']:.3f}  curve {[round(c, 3) for c in res['curve']]}"
                               f"  wise {res['wise']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
