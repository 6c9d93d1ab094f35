"""Linear-probe sanity run on the built accuracy datasets (issue 19).

    python bench/accuracy/probe.py [--root /work/cache/datasets] [--only NAME ...] [--out bench/accuracy/probe.json]

For each dataset built by `datasets.py build`: Keras MobileNetV2's pooled ImageNet features of
every pool and test photo (the eval crop of bench/linear_probe.py), computed once and cached
in ROOT/NAME/features.npz keyed by the photo's sha256; then, for each train-nK-sS folder, the
probe of bench/linear_probe.py (softmax regression on standardised features, L2 chosen by
3-fold CV on the training part only) scored once on the dataset's fixed test part. Reports
per (dataset, K) the mean, min, max and sample std over the seeds. A probe near 100% means a
dataset is too easy to tell schemes apart; one near chance means it is broken.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import datasets  # noqa: E402
import linear_probe  # noqa: E402  (fit_softmax, choose_l2, _standardise, WEIGHTS)

from tftl.runtime.probe import fit_softmax_gram  # noqa: E402  (the runtime's LP solvers)


SOLVERS = {"gram": fit_softmax_gram, "primal": linear_probe.fit_softmax}


def features(root, info, batch=32, log=print):
    """{sha256: float32[1280]} for every pool and test photo of the dataset, from
    ROOT/NAME/features.npz or computed (and then saved there)."""
    name = info["name"]
    cache = os.path.join(root, name, "features.npz")
    have = {}
    if os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as z:
            have = dict(zip(z["sha256"].tolist(), z["features"]))
    want = {}
    for part in ("pool", "test"):
        for label, rows in info["files"][part].items():
            for r in rows:
                want[r["sha256"]] = os.path.join(root, name, part, label, r["file"])
    todo = [h for h in sorted(want) if h not in have]
    if todo:
        import keras

        from tftl.runtime import data

        t0 = time.time()
        net = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False,
                                             weights=linear_probe.WEIGHTS, pooling="avg")
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            x = np.stack([data.load_image(want[h], 224) for h in chunk]) / 127.5 - 1.0
            for h, f in zip(chunk, np.asarray(net(x, training=False))):
                have[h] = f.astype(np.float32)
        keys = sorted(have)
        np.savez(cache + ".tmp.npz", sha256=np.array(keys), features=np.stack([have[k] for k in keys]))
        os.replace(cache + ".tmp.npz", cache)
        log(f"{name}: features of {len(todo)} photos in {time.time() - t0:.0f} s -> {cache}")
    return have


NEAR = 0.95  # cosine similarity of pooled features above which a test/pool pair is listed


def near_duplicates(info, feats, threshold=NEAR):
    """Test photos whose pooled features are nearly those of a pool photo (cosine >= threshold):
    exact copies are removed by the builder; this lists re-encodes, crops and bursts it cannot
    see by hash, for a person to look at. Returns {count, threshold, pairs: [...] (at most 20)}."""
    def rows(part):
        out = [(c, r) for c, rs in sorted(info["files"][part].items()) for r in rs]
        x = np.stack([feats[r["sha256"]] for _, r in out]).astype(np.float64)
        return out, x / np.linalg.norm(x, axis=1, keepdims=True)

    test, xt = rows("test")
    pool, xp = rows("pool")
    sim = xt @ xp.T
    best = sim.argmax(1)
    pairs = [dict(test=f"{test[i][0]}/{test[i][1]['file']}", pool=f"{pool[j][0]}/{pool[j][1]['file']}",
                  cosine=round(float(sim[i, j]), 4), same_class=test[i][0] == pool[j][0])
             for i, j in enumerate(best) if sim[i, j] >= threshold]
    pairs.sort(key=lambda d: -d["cosine"])
    return dict(threshold=threshold, count=len(pairs), pairs=pairs[:20])


def probe_dataset(root, info, log=print, solver=fit_softmax_gram):
    feats = features(root, info, log=log)
    labels = sorted(info["files"]["test"])
    k = len(labels)
    sha = {part: {label: {r["file"]: r["sha256"] for r in rows} for label, rows in info["files"][part].items()}
           for part in ("pool", "test")}
    xte = np.stack([feats[r["sha256"]] for c in labels for r in info["files"]["test"][c]])
    yte = np.array([i for i, c in enumerate(labels) for _ in info["files"]["test"][c]])
    rows = []
    for regime, by_class in sorted(info["train"].items(), key=lambda kv: (int(kv[0].split("-")[1][1:]), kv[0])):
        per_class, seed = int(regime.split("-")[1][1:]), int(regime.split("-")[2][1:])
        xtr = np.stack([feats[sha["pool"][c][f]] for c in labels for f in by_class[c]])
        ytr = np.array([i for i, c in enumerate(labels) for _ in by_class[c]])
        l2, cv = linear_probe.choose_l2(xtr, ytr, k, solver=solver)
        tr, te = linear_probe._standardise(xtr, xte)
        w, b = solver(tr, ytr, k, l2)
        acc = float(((te @ w + b).argmax(1) == yte).mean())
        rows.append(dict(dataset=info["name"], regime=regime, per_class=per_class, seed=seed,
                         train_images=len(ytr), test_images=len(yte), l2=l2,
                         train_accuracy=float(((tr @ w + b).argmax(1) == ytr).mean()), test_accuracy=acc))
        log(json.dumps({key: rows[-1][key] for key in ("dataset", "regime", "l2", "test_accuracy")}))
    return rows


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def summarise(rows):
    """Per (dataset, K): mean, min, max and sample std over the seeds, the half-width of the 95%
    t-interval of the mean over seeds (seed spread only: the test part is the same photos for
    every seed) and the binomial standard error of one accuracy on that test part."""
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        for k in sorted({r["per_class"] for r in rows if r["dataset"] == ds}):
            accs = [r["test_accuracy"] for r in rows if r["dataset"] == ds and r["per_class"] == k]
            first = next(r for r in rows if r["dataset"] == ds)
            mean = statistics.mean(accs)
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            n_test = first["test_images"]
            out.append(dict(dataset=ds, per_class=k, seeds=len(accs), mean=mean, min=min(accs), max=max(accs),
                            std=std, ci95_seeds=T975.get(len(accs) - 1, 1.96) * std / len(accs) ** 0.5,
                            binomial_se=(mean * (1 - mean) / n_test) ** 0.5, test_images=n_test))
    return out


def table(summary, classes):
    """Markdown: per dataset and K, mean ± sample std over the seeds (min–max)."""
    lines = ["| dataset | classes | test photos | n10 | n20 | n40 |", "|---|---|---|---|---|---|"]
    for ds in sorted({s["dataset"] for s in summary}):
        cells = {s["per_class"]: s for s in summary if s["dataset"] == ds}
        test = next(iter(cells.values()))["test_images"]
        row = [f"{cells[k]['mean']:.3f} ± {cells[k]['std']:.3f} ({cells[k]['min']:.3f}–{cells[k]['max']:.3f})"
               if k in cells else "—" for k in (10, 20, 40)]
        lines.append(f"| {ds} | {classes.get(ds, '?')} | {test} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=datasets.DEFAULT_ROOT)
    p.add_argument("--only", nargs="+", choices=sorted(datasets.BY_NAME))
    p.add_argument("--out", default=os.path.join(HERE, "probe.json"))
    p.add_argument("--table", action="store_true", help="only recompute the summary and table of --out's rows")
    p.add_argument("--solver", choices=sorted(SOLVERS), default="gram",
                   help="gram (default): bench/linear_probe.py's fit computed on the n x n Gram matrix, the same "
                        "result d/n times faster; primal: bench/linear_probe.py's fit_softmax itself")
    a = p.parse_args(argv)
    names = a.only or [d.name for d in datasets.REGISTRY]
    out = {"rows": []}
    if os.path.exists(a.out):  # rows of datasets not probed now are kept
        with open(a.out) as f:
            out = json.load(f)
    if a.table:
        names = []
        for name in sorted({r["dataset"] for r in out["rows"]}):  # near duplicates from the cached features
            with open(os.path.join(a.root, name, "SOURCE.json")) as f:
                info = json.load(f)
            out.setdefault("near_duplicates", {})[name] = near_duplicates(info, features(a.root, info))
    for name in names:
        path = os.path.join(a.root, name, "SOURCE.json")
        if not os.path.exists(path):
            print(f"{name}: not built ({path}); run bench/accuracy/datasets.py build first", file=sys.stderr)
            return 2
        with open(path) as f:
            info = json.load(f)
        t0 = time.time()
        rows = probe_dataset(a.root, info, solver=SOLVERS[a.solver])
        out.setdefault("near_duplicates", {})[name] = near_duplicates(info, features(a.root, info))
        for r in rows:
            r["commit"] = info["commit"]
        out["rows"] = [r for r in out["rows"] if r["dataset"] != name] + rows
        _write(a, out)  # after every dataset: a stopped run keeps what it finished
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    _write(a, out)
    print("\n".join(out["table"]))
    return 0


def _write(a, out):
    classes = {}
    for name in sorted({r["dataset"] for r in out["rows"]}):
        src = os.path.join(a.root, name, "SOURCE.json")
        if os.path.exists(src):
            with open(src) as f:
                classes[name] = len(json.load(f)["counts"])
    out.update(weights=os.path.basename(linear_probe.WEIGHTS),
               features="keras MobileNetV2 include_top=False pooling=avg, eval crop 224 (bench/linear_probe.py)",
               probe="bench/linear_probe.py: softmax regression, standardised features, L2 by 3-fold CV on the "
                     "training part only", l2_grid=list(linear_probe.L2_GRID), solver=a.solver,
               command="python bench/accuracy/probe.py", summary=summarise(out["rows"]))
    out["table"] = table(out["summary"], classes).splitlines()
    with open(a.out + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    if os.path.abspath(a.out) == os.path.join(HERE, "probe.json"):
        write_readme_table(out)


README = os.path.join(HERE, "README.md")


def write_readme_table(out, path=README):
    """Put probe.json's table between the README's probe-table markers."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read()
    start, end = "<!-- probe table -->", "<!-- /probe table -->"
    if start not in text or end not in text:
        return
    body = ("Test accuracy of the linear probe, mean ± sample std over seeds 0, 1, 2 (min–max); "
            f"`{out['command']}`, {out['weights']}:\n\n" + "\n".join(out["table"]))
    text = text[:text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
