"""bench/memory.png and bench/pareto.png from results.json (matplotlib)."""

import json
import os

import common
from fmt import MB, dig, lite, tfp

MEMORY_PNG = os.path.join(common.BENCH, "memory.png")
PARETO_PNG = os.path.join(common.BENCH, "pareto.png")
KERAS_REF = os.path.join(common.BENCH, "keras_schemes.json")


def plot_memory(res, path=MEMORY_PNG):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = dig(res, "memory", "rows") or {}
    models = sorted({r["model"] for r in rows.values()}, key=lambda m: common.MODELS.index(m)
                    if m in common.MODELS else 9)
    if not models:
        return False
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in rows.values() if r["model"] == model and "error" not in r and lite(r)]
        x = list(range(len(rs)))
        base = [lite(r)["rss_loaded"] / MB for r in rs]
        arena = [lite(r)["arena"]["extent_bytes"] / MB for r in rs]
        var = [lite(r).get("variables_bytes", 0) / MB for r in rs]
        peak = [lite(r)["peak_rss"] / MB for r in rs]
        other = [p - b - a - v for p, b, a, v in zip(peak, base, arena, var)]
        w = 0.38
        ax.bar([i - w / 2 for i in x], base, w, label="RSS after load (Python, LiteRT, model)",
               color="#c7c7c7")
        bottom = base
        for vals, lab, col in ((arena, "interpreter arena (measured)", "#4c72b0"),
                               (var, "variables (weights + Adam + BN stats)", "#55a868"),
                               (other, "other step memory (XNNPACK, scratch, allocator)", "#8fb0de")):
            ax.bar([i - w / 2 for i in x], vals, w, bottom=bottom, label=lab, color=col)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ana = [r["analytical"]["peak_bytes"] / MB for r in rs]
        ax.bar([i + w / 2 for i in x], ana, w, label="analytical peak (profiler)", color="#dd8452")
        tf = [max([t["peak_rss"] for t in (tfp(r, 1), tfp(r, 2)) if t] or [0]) / MB for r in rs]
        if any(tf):
            ax.scatter([i for i, v in zip(x, tf) if v], [v for v in tf if v], marker="v",
                       color="#c44e52", zorder=5, label="TensorFlow peak RSS")
        ax.set_xticks(x)
        ax.set_xticklabels([r["scheme"] for r in rs], rotation=25)
        ax.set_ylabel("MB (10^6 bytes)")
        ax.set_title(f"{model}, batch 8, 224 px: training-step memory")
    h, lab = axes[0][0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pareto_points(res):
    """(points, source) for the Pareto plot: accuracy vs measured memory, FLOPs as size."""
    acc = dig(res, "train_cli", "accuracy") or []
    pts = []
    for r in acc:
        if r.get("val_accuracy_mean") is None or not r.get("peak_rss"):
            continue
        pts.append(dict(model=r["model"], scheme=r["scheme"], acc=r["val_accuracy_mean"],
                        std=r.get("val_accuracy_std", 0.0), mem=r["peak_rss"],
                        flops=r["train_flops"], n=len(r["runs"])))
    if pts:
        return pts, "tftl-train (LiteRT) on flowers5, mean over seeds; memory = peak RSS of a " \
                    "fresh LiteRT train-step process on the same file"
    # Fallback: the Keras reference accuracies (bench/keras_schemes.json) with measured mbv2
    # LiteRT memory: clearly not tftl-train accuracy.
    rows = dig(res, "memory", "rows") or {}
    if os.path.exists(KERAS_REF):
        with open(KERAS_REF) as f:
            ref = json.load(f)
        for r in ref:
            label = r["scheme"] + (f"-{r['blocks']}" if r["scheme"] in ("ft_blocks", "mobiletl") else "")
            row = rows.get(f"{r['model']}/{label}")
            if row and lite(row):
                an = row["analytical"]
                pts.append(dict(model=r["model"], scheme=label, acc=r["val_accuracy"], std=0.0,
                                mem=lite(row)["peak_rss"],
                                flops=an["forward_flops"] + an["backward_flops"], n=1))
    return pts, ("FALLBACK: Keras reference accuracy (bench/keras_schemes.json, "
                 "not tftl-train) vs measured LiteRT peak RSS")


def plot_pareto(res, path=PARETO_PNG):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts, source = pareto_points(res)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if not pts:
        ax.text(0.5, 0.5, "no accuracy measured yet\n(python bench/run.py --part train)",
                ha="center", va="center", transform=ax.transAxes)
    colors = {"mbv2": "#4c72b0", "efficientnet_lite0": "#dd8452", "mbv3_small": "#55a868"}
    fmax = max([p["flops"] for p in pts] or [1])
    for model in sorted({p["model"] for p in pts}):
        ps = [p for p in pts if p["model"] == model]
        ax.scatter([p["mem"] / MB for p in ps], [100 * p["acc"] for p in ps],
                   s=[40 + 900 * p["flops"] / fmax for p in ps], alpha=0.6,
                   color=colors.get(model, "#8172b2"), label=model, edgecolors="k")
        for p in ps:
            if p["std"]:
                ax.errorbar(p["mem"] / MB, 100 * p["acc"], yerr=100 * p["std"], color="k",
                            lw=0.8, capsize=2)
            ax.annotate(p["scheme"], (p["mem"] / MB, 100 * p["acc"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        # Pareto front: best accuracy at no more memory
        front, best = [], -1
        for p in sorted(ps, key=lambda p: p["mem"]):
            if p["acc"] > best:
                front.append(p)
                best = p["acc"]
        if len(front) > 1:
            ax.plot([p["mem"] / MB for p in front], [100 * p["acc"] for p in front], "--",
                    color=colors.get(model, "#8172b2"), lw=1)
    ax.set_xlabel("measured peak training memory, MB (peak RSS of a LiteRT train-step process)")
    ax.set_ylabel("flowers5 val accuracy, %")
    acc = dig(res, "train_cli") or {}
    ax.set_title("accuracy vs memory (marker area ~ training FLOPs per step)"
                 + (f"; {acc.get('epochs')} epoch(s), seeds {acc.get('seeds')}" if pts and acc.get("epochs") else ""),
                 fontsize=10)
    ax.text(0.01, 0.01, source, transform=ax.transAxes, fontsize=6.5, va="bottom")
    if pts:
        ax.legend(fontsize=8, loc="center left", markerscale=0.35)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pts, source
