"""bench/results.json -> bench/RESULTS.md, bench/memory.png, bench/pareto.png.

All numbers in the report are read from results.json; the narrative that explains the
differences quotes them, so a rerun regenerates a consistent report.
"""

import json
import os
import statistics

import common

MB = common.MB
MD = os.path.join(common.BENCH, "RESULTS.md")
MEMORY_PNG = os.path.join(common.BENCH, "memory.png")
PARETO_PNG = os.path.join(common.BENCH, "pareto.png")
KERAS_REF = os.path.join(common.BENCH, "keras_schemes.json")

T_MEM_RATIO = 3.0
T_SPEED_RATIO = 2.0
T_SAVED_REDUCTION = 0.40
T_TF_MEM_RATIO = 3.0
T_CACHE_SPEEDUP = 5.0


def _mb(x, nd=1):
    return "—" if x is None else f"{x / MB:.{nd}f}"


def _ms(x):
    return "—" if x is None else (f"{x:.0f}" if x >= 10 else f"{x:.1f}")


def _step(r):
    """'wall (cpu)' median ms of a probe result, or '—'."""
    if not r or r.get("median_ms") is None:
        return "—"
    cpu = r.get("median_cpu_ms")
    return _ms(r["median_ms"]) + (f" ({_ms(cpu)})" if cpu is not None else "")


def _cpu(r):
    """The step time verdicts use: median process CPU ms at 1 thread (robust to other jobs
    on the shared 2-core machine, which stretch wall time), else median wall ms."""
    return r.get("median_cpu_ms") or r["median_ms"]


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ok(r):
    return isinstance(r, dict) and "error" not in r


def _lite(row, t="1"):
    r = _get(row, "litert", str(t))
    return r if _ok(r) else None


def _tf(row, t="1"):
    r = _get(row, "tf", str(t))
    return r if _ok(r) else None


def _verdict(ok):
    return "PASS" if ok else "MISS"


# ----------------------------------------------------------------------------- targets

def targets(res, section="memory"):
    """[(name, PASS/MISS/N/A, detail)] of the four target families."""
    rows = _get(res, section, "rows") or {}
    out = []
    m = "mbv3_small"
    a, b, c = rows.get(f"{m}/ft_all"), rows.get(f"{m}/mobiletl-3"), rows.get(f"{m}/ft_blocks-3")
    # T1 memory
    if a and b and _lite(a) and _lite(b):
        la, lb = _lite(a), _lite(b)
        ratio = la["peak_rss"] / lb["peak_rss"]
        inc = (la["peak_rss"] - la["rss_loaded"]) / max(lb["peak_rss"] - lb["rss_loaded"], 1)
        arena = ((la["arena"]["extent_bytes"] + la.get("variables_bytes", 0))
                 / max(lb["arena"]["extent_bytes"] + lb.get("variables_bytes", 0), 1))
        ana = a["analytical"]["peak_bytes"] / b["analytical"]["peak_bytes"]
        out.append(("T1a mbv3_small peak training memory, ft_all / mobiletl-3 >= 3x (LiteRT, peak RSS)",
                    _verdict(ratio >= T_MEM_RATIO),
                    f"peak RSS {_mb(la['peak_rss'], 0)} / {_mb(lb['peak_rss'], 0)} MB = {ratio:.2f}x; "
                    f"step increment over the loaded baseline {inc:.2f}x; arena+variables "
                    f"{arena:.2f}x; analytical {ana:.2f}x"))
    else:
        out.append(("T1a mbv3_small peak memory ft_all / mobiletl-3 >= 3x", "N/A", "not measured"))
    # T1 speed (1 thread, CPU time; 2 threads for information)
    if a and b and _lite(a) and _lite(b):
        la, lb = _lite(a), _lite(b)
        r = _cpu(la) / _cpu(lb)
        extra = ""
        if _lite(a, 2) and _lite(b, 2):
            extra = (f"; 2 threads, wall: {_ms(_lite(a, 2)['median_ms'])} / "
                     f"{_ms(_lite(b, 2)['median_ms'])} ms")
        out.append(("T1b mbv3_small step time, ft_all / mobiletl-3 >= 2x (LiteRT, same run)",
                    _verdict(r >= T_SPEED_RATIO),
                    f"1 thread, CPU time: {_ms(_cpu(la))} / {_ms(_cpu(lb))} ms = {r:.2f}x (wall "
                    f"{_ms(la['median_ms'])} / {_ms(lb['median_ms'])} ms){extra}"))
    # T2 saved activations
    if b and c and "graph" in b and "graph" in c:
        sb, sc = b["graph"]["saved_trained_blocks"], c["graph"]["saved_trained_blocks"]
        red = 1 - sb / sc if sc else 0.0
        pb, pc = b["analytical"]["saved_trained_blocks"], c["analytical"]["saved_trained_blocks"]
        tot = 1 - b["graph"]["saved_bytes"] / c["graph"]["saved_bytes"]
        out.append(("T2 mbv3_small saved activations of the trained blocks, mobiletl-3 vs "
                    "ft_blocks-3 >= 40% smaller (measured: per-tensor accounting of the "
                    "converted train graph)", _verdict(red >= T_SAVED_REDUCTION),
                    f"measured {_mb(sb, 2)} vs {_mb(sc, 2)} MB = {100 * red:.1f}% smaller "
                    f"(with the head: {_mb(b['graph']['saved_bytes'], 2)} vs "
                    f"{_mb(c['graph']['saved_bytes'], 2)} MB, {100 * tot:.1f}%); predicted "
                    f"{_mb(pb, 2)} vs {_mb(pc, 2)} MB = {100 * (1 - pb / pc):.1f}%"))
    # T3 LiteRT vs TF, per scheme with TF data: 1 thread, CPU time and peak RSS
    for key, row in rows.items():
        lt, tt = _lite(row), _tf(row)
        if not (lt and tt):
            continue
        faster = _cpu(lt) < _cpu(tt)
        ratio = tt["peak_rss"] / lt["peak_rss"]
        out.append((f"T3 {key} LiteRT vs TensorFlow: faster step and >= 3x less peak memory",
                    _verdict(faster and ratio >= T_TF_MEM_RATIO),
                    f"speed {_verdict(faster)} (1 thread, CPU {_ms(_cpu(lt))} vs {_ms(_cpu(tt))} ms; "
                    f"wall {_ms(lt['median_ms'])} vs {_ms(tt['median_ms'])} ms); memory "
                    f"{_verdict(ratio >= T_TF_MEM_RATIO)} ({_mb(lt['peak_rss'], 0)} vs "
                    f"{_mb(tt['peak_rss'], 0)} MB = {ratio:.2f}x)"))
    if section == "memory":
        out += train_targets(res)
    return out


def _speedup(et):
    """(no-cache epoch s, cached epoch s after the first) of one epoch_seconds row, or None."""
    rc, rn = (et or {}).get("cache") or {}, (et or {}).get("no_cache") or {}
    if not (rc.get("epoch_seconds") and rn.get("epoch_seconds")):
        return None
    return (statistics.median(rn["epoch_seconds"]),
            statistics.median(rc["epoch_seconds"][1:] or rc["epoch_seconds"]))


def train_targets(res):
    """T4 feature cache >= 5x, per measured scheme, with the FLOP bound of the speed-up;
    T5 accuracy: mobiletl-3 within 1 point of ft_blocks-3 and above ft_last, per model."""
    out = []
    for et in _get(res, "cache_epochs", "rows") or [_get(res, "train_cli", "epoch_time")]:
        sp = _speedup(et)
        if not sp:
            continue
        bound = ""
        if et.get("trained_flops"):
            b = (et["trunk_forward_flops"] + et["trained_flops"]) / et["trained_flops"]
            bound = (f"; FLOP bound (trunk forward + trained fwd/bwd over trained) "
                     f"{b:.1f}x" if b < 1000 else "; FLOP bound: none (nothing but the head trains)")
        out.append((f"T4 feature cache: epochs after the first >= {T_CACHE_SPEEDUP:.0f}x faster "
                    f"({et['model']} {et['scheme']}, tftl-train)",
                    _verdict(sp[0] / sp[1] >= T_CACHE_SPEEDUP),
                    f"epoch {sp[0]:.1f} s without the cache vs {sp[1]:.1f} s with it = "
                    f"{sp[0] / sp[1]:.2f}x{bound}"))
    acc = {(r["model"], r["scheme"]): r for r in _get(res, "train_cli", "accuracy") or []
           if r.get("val_accuracy_mean") is not None}
    for model in sorted({m for m, _ in acc}):
        m, b, l_ = (acc.get((model, k)) for k in ("mobiletl-3", "ft_blocks-3", "ft_last"))
        if not (m and b and l_):
            continue
        gap = 100 * (b["val_accuracy_mean"] - m["val_accuracy_mean"])
        ok = gap <= 1.0 and m["val_accuracy_mean"] > l_["val_accuracy_mean"]
        out.append((f"T5 {model} accuracy: mobiletl-3 within 1 point of ft_blocks-3, above ft_last",
                    _verdict(ok),
                    f"mobiletl-3 {m['val_accuracy_mean']:.3f}, ft_blocks-3 "
                    f"{b['val_accuracy_mean']:.3f} ({gap:+.1f} points), ft_last "
                    f"{l_['val_accuracy_mean']:.3f} (flowers5 val, mean of {len(m['runs'])} seeds)"))
    return out


def headline(res):
    """The README's table: one row per measured model / scheme."""
    rows = _get(res, "memory", "rows") or {}
    acc = {(r["model"], r["scheme"]): r for r in _get(res, "train_cli", "accuracy") or []
           if r.get("val_accuracy_mean") is not None}
    L = ["| model | scheme | analytical peak MB | LiteRT peak RSS MB | LiteRT step CPU ms | "
         "TensorFlow step CPU ms | TensorFlow peak RSS MB |",
         "|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        l1, t1 = _lite(row, 1), _tf(row, 1)
        if not l1 or "analytical" not in row:
            continue
        L.append(f"| {row['model']} | {row['scheme']} | {_mb(row['analytical']['peak_bytes'])} "
                 f"| {_mb(l1['peak_rss'], 0)} | {_ms(_cpu(l1))} "
                 f"| {_ms(_cpu(t1)) if t1 else '—'} | {_mb(t1['peak_rss'], 0) if t1 else '—'} |")
    if acc:
        models = sorted({m for m, _ in acc})
        L += ["", "| scheme | " + " | ".join(f"{m} flowers5 val acc" for m in models) + " |",
              "|---|" + "---|" * len(models)]
        for scheme in common.SCHEME_LABELS:
            cells = []
            for m in models:
                r = acc.get((m, scheme))
                n = len([x for x in r["runs"] if x.get("val_accuracy") is not None]) if r else 0
                cells.append("—" if not r else
                             f"{r['val_accuracy_mean']:.3f} (1 seed)" if n == 1 else
                             f"{r['val_accuracy_mean']:.3f} ± {r.get('val_accuracy_std', 0):.3f} ({n} seeds)")
            L.append(f"| {scheme} | " + " | ".join(cells) + " |")
    return L


README = os.path.join(common.ROOT, "README.md")
BEGIN, END = "<!-- bench:headline -->", "<!-- /bench:headline -->"


def update_readme(res, path=README):
    """Replace the README's headline block (between the markers) with this run's numbers."""
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        return False
    mem, t = res.get("memory") or {}, res.get("train_cli") or {}
    block = [BEGIN,
             f"Measured by `python bench/run.py` on this project's 2-core x86 machine (shared; "
             f"memory/latency {mem.get('finished', '?')}, trainer "
             f"{t.get('finished') or 'run started ' + str(t.get('started')) + ', not finished: rows missing below were not measured'}): "
             "batch 8, 224 px, Adam, 1 thread, medians; step time is process CPU time per step "
             "(other jobs shared the 2 cores, which stretches wall time; wall is in RESULTS.md). "
             "Peak RSS is the whole fresh process. "
             "Details, causes and fixes: `bench/RESULTS.md`.", ""]
    block += headline(res) + ["", "```"]
    for name, v, detail in targets(res):
        block += [f"{v:4s}  {name}", f"      {detail}"]
    block += ["```", "", "![accuracy vs memory](bench/pareto.png)", END]
    a, b = text.index(BEGIN), text.index(END) + len(END)
    with open(path, "w") as f:
        f.write(text[:a] + "\n".join(block) + text[b:])
    return True


# ----------------------------------------------------------------------------- tables

def memory_table(res, model):
    rows = _get(res, "memory", "rows") or {}
    hdr = ("| scheme | analytical peak MB (act peak) | graph saved act MB | graph ideal arena MB "
           "| measured arena MB | variables MB | RSS loaded MB | peak RSS MB | step incr. MB "
           "| LiteRT ms 1t | LiteRT ms 2t | TF ms 1t | TF ms 2t | TF peak RSS MB |")
    lines = [hdr, "|" + "|".join(["---"] * 14) + "|"]
    for key, row in rows.items():
        if row.get("model") != model:
            continue
        if "error" in row:
            lines.append(f"| {row['scheme']} | error: {row['error'][:80]} |" + " |" * 12)
            continue
        an, g = row["analytical"], row["graph"]
        l1, l2 = _lite(row, 1), _lite(row, 2)
        t1, t2 = _tf(row, 1), _tf(row, 2)
        tf_rss = max([t["peak_rss"] for t in (t1, t2) if t] or [0]) or None
        lines.append(
            f"| {row['scheme']} | {_mb(an['peak_bytes'])} ({_mb(an['peak_activation_bytes'])}) "
            f"| {_mb(g['saved_bytes'])} | {_mb(g['ideal_peak_bytes'])} "
            f"| {_mb(l1['arena']['extent_bytes']) if l1 else '—'} "
            f"| {_mb(l1.get('variables_bytes')) if l1 else '—'} "
            f"| {_mb(l1['rss_loaded'], 0) if l1 else '—'} | {_mb(l1['peak_rss'], 0) if l1 else '—'} "
            f"| {_mb(l1['peak_rss'] - l1['rss_loaded'], 0) if l1 else '—'} "
            f"| {_step(l1)} | {_step(l2)} | {_step(t1)} | {_step(t2)} "
            f"| {_mb(tf_rss, 0) if tf_rss else '—'} |")
    return lines


def rss_breakdown(res, model):
    """Peak RSS = loaded baseline + arena + variables + inputs + other, per scheme."""
    rows = _get(res, "memory", "rows") or {}
    lines = ["| scheme | loaded baseline | arena | variables | other (XNNPACK packing/workspace, "
             "allocator) | = peak RSS | analytical: act peak + params + "
             "optimizer | no-XNNPACK peak RSS / step ms |",
             "|---|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        if row.get("model") != model or "error" in row:
            continue
        l1 = _lite(row, 1)
        if not l1:
            continue
        an = row["analytical"]
        inputs = l1.get("rss_inputs", l1["rss_loaded"]) - l1["rss_loaded"]
        other = (l1["peak_rss"] - l1["rss_loaded"] - l1["arena"]["extent_bytes"]
                 - l1.get("variables_bytes", 0) - inputs)
        nd = row.get("no_delegates")
        nd_s = (f"{_mb(nd['peak_rss'], 0)} MB / {_ms(nd.get('median_ms'))} ms"
                if _ok(nd) else "—")
        lines.append(
            f"| {row['scheme']} | {_mb(l1['rss_loaded'], 0)} | {_mb(l1['arena']['extent_bytes'])} "
            f"| {_mb(l1.get('variables_bytes'))} | {_mb(other)} (+{_mb(inputs)} inputs) "
            f"| {_mb(l1['peak_rss'], 0)} | {_mb(an['peak_activation_bytes'])} + "
            f"{_mb(an['trainable_param_bytes'] + an['frozen_param_bytes'])} + "
            f"{_mb(an['optimizer_state_bytes'])} = {_mb(an['peak_bytes'])} | {nd_s} |")
    return lines


def saved_table(res, model):
    rows = _get(res, "memory", "rows") or {}
    lines = ["| scheme | predicted saved (profiler) MB | measured saved (graph) MB | of which bool masks "
             "| trained blocks predicted / measured MB | head predicted / measured MB "
             "| weight-derived tensors held across MB | READ_VARIABLE copies (sum) MB |",
             "|---|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        if row.get("model") != model or "error" in row:
            continue
        an, g = row["analytical"], row["graph"]
        lines.append(
            f"| {row['scheme']} | {_mb(an['activation_bytes'], 2)} | {_mb(g['saved_bytes'], 2)} "
            f"| {_mb(g['saved_bool_bytes'], 2)} "
            f"| {_mb(an['saved_trained_blocks'], 2)} / {_mb(g['saved_trained_blocks'], 2)} "
            f"| {_mb(an['saved_by_block'].get('head', 0), 2)} / "
            f"{_mb(g['saved_by_block'].get('head', 0), 2)} "
            f"| {_mb(g['saved_weight_derived_bytes'], 2)} | {_mb(g['weight_copy_bytes'], 1)} |")
    return lines


def per_tensor(res, key, n=8):
    row = (_get(res, "memory", "rows") or {}).get(key)
    if not row or "graph" not in row:
        return []
    g = row["graph"]
    l1 = _lite(row, 1)
    out = [f"**{key}** — train signature: {g['ops']} ops ({g['backward_ops']} backward), "
           f"{g['tensors']} tensors; sum of all non-constant tensors {_mb(g['sum_nonconst_bytes'])} MB "
           f"(no-reuse upper bound); ideal arena for this op order {_mb(g['ideal_peak_bytes'])} MB at op "
           f"{g['peak_op']} ({g['peak_op_name']}, {g['peak_phase']} phase)"
           + (f"; measured arena {_mb(l1['arena']['extent_bytes'])} MB ({l1['arena']['tensors']} "
              f"allocated tensors, {_mb(l1['arena']['temporaries_bytes'])} MB of it unnamed op "
              f"temporaries, largest {_mb(l1['arena']['largest_temporary_bytes'], 2)} MB)" if l1 else ""),
           "",
           "Live at the peak, by kind: " + ", ".join(
               f"{k} {_mb(v, 2)} MB" for k, v in sorted(g["live_at_peak_by_kind"].items(),
                                                      key=lambda kv: -kv[1])),
           "",
           "| largest tensors alive at the peak | MB | shape | kind | layer | producer |",
           "|---|---|---|---|---|---|"]
    for t in g["largest_at_peak"][:n]:
        out.append(f"| `{t['name'][:60]}` | {_mb(t['bytes'], 2)} | {t['shape']} | {t['kind']} "
                   f"| {t['layer'] or '?'} | {t['producer']} |")
    out += ["", "| largest saved activations | MB | shape | layer | producer | live ops |",
            "|---|---|---|---|---|---|"]
    for t in g["largest_saved"][:n]:
        out.append(f"| `{t['name'][:60]}` | {_mb(t['bytes'], 2)} | {t['shape']} | {t['layer'] or '?'} "
                   f"| {t['producer']} | {t['live'][0]}–{t['live'][1]} |")
    return out


def pad_overhead(row):
    """Saved bytes produced by PAD ops in trained blocks (the hoisted padded copies)."""
    g = row["graph"]
    pads = [t for t in g["largest_saved"] if t["producer"] == "PAD"]
    return sum(t["bytes"] for t in pads), pads


def decompose_table(res):
    rows = _get(res, "memory", "rows") or {}
    lines = ["| model / scheme | train ms | infer (full forward) ms | extract (frozen trunk) ms "
             "| train_features (trainable part fwd+bwd+Adam) ms | train ms without XNNPACK "
             "| peak RSS without XNNPACK MB |", "|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        d = row.get("decompose")
        if not _ok(d):
            continue
        dm = d.get("decompose_ms", {})
        nd = row.get("no_delegates")
        dc = d.get("decompose_cpu_ms", {})

        def cell(k):
            return _ms(dm.get(k)) + (f" ({_ms(dc[k])})" if k in dc else "")
        lines.append(f"| {key} | {cell('train')} | {cell('infer')} "
                     f"| {cell('extract')} | {cell('train_features')} "
                     f"| {_step(nd) if _ok(nd) else '—'} "
                     f"| {_mb(nd['peak_rss'], 0) if _ok(nd) else '—'} |")
    return lines


def op_profile_table(res):
    rows = _get(res, "memory", "rows") or {}
    lines = ["| model / scheme | train step CPU ms (measured) | sum of one-op CPU ms | forward ms "
             "| backward + Adam ms | top op types (CPU ms, count) |", "|---|---|---|---|---|---|"]
    for key, row in rows.items():
        op = row.get("op_profile")
        if not _ok(op):
            continue
        l1 = _lite(row, 1)
        ph = op.get("by_phase", {})
        top = ", ".join(f"{k} {v['ms']:.0f} ({v['count']})" for k, v in list(op["by_type"].items())[:7])
        lines.append(f"| {key} | {_ms(l1.get('median_cpu_ms')) if l1 else '—'} "
                     f"| {_ms(op['total_ms'])} | {_ms(_get(ph, 'forward', 'total_ms'))} "
                     f"| {_ms(_get(ph, 'backward', 'total_ms'))} | {top} |")
    return lines


def top_ops(res, key, n=10):
    op = _get(res, "memory", "rows", key, "op_profile")
    if not _ok(op):
        return []
    out = [f"Slowest single ops of **{key}** (CPU ms, 1 thread):", "",
           "| # | op | phase | CPU ms | output | shape |", "|---|---|---|---|---|---|"]
    for r in op["top"][:n]:
        out.append(f"| {r['index']} | {r['op']} | {r.get('phase', '')} | {r['ms']:.2f} "
                   f"| `{r['output'][:60]}` | {r['shape']} |")
    return out


def op_mix(res, key):
    row = (_get(res, "memory", "rows") or {}).get(key)
    if not row or "graph" not in row:
        return ""
    oc = row["graph"]["op_counts"]
    return ", ".join(f"{k} {v}" for k, v in list(oc.items())[:14])


# ----------------------------------------------------------------------------- plots

def plot_memory(res, path=MEMORY_PNG):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = _get(res, "memory", "rows") or {}
    models = sorted({r["model"] for r in rows.values()}, key=lambda m: common.MODELS.index(m)
                    if m in common.MODELS else 9)
    if not models:
        return False
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in rows.values() if r["model"] == model and "error" not in r and _lite(r)]
        x = list(range(len(rs)))
        base = [_lite(r)["rss_loaded"] / MB for r in rs]
        arena = [_lite(r)["arena"]["extent_bytes"] / MB for r in rs]
        var = [_lite(r).get("variables_bytes", 0) / MB for r in rs]
        peak = [_lite(r)["peak_rss"] / MB for r in rs]
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
        tf = [max([t["peak_rss"] for t in (_tf(r, 1), _tf(r, 2)) if t] or [0]) / MB for r in rs]
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
    acc = _get(res, "train_cli", "accuracy") or []
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
    rows = _get(res, "memory", "rows") or {}
    if os.path.exists(KERAS_REF):
        with open(KERAS_REF) as f:
            ref = json.load(f)
        for r in ref:
            label = r["scheme"] + (f"-{r['blocks']}" if r["scheme"] in ("ft_blocks", "mobiletl") else "")
            row = rows.get(f"{r['model']}/{label}")
            if row and _lite(row):
                an = row["analytical"]
                pts.append(dict(model=r["model"], scheme=label, acc=r["val_accuracy"], std=0.0,
                                mem=_lite(row)["peak_rss"],
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
    acc = _get(res, "train_cli") or {}
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


# ----------------------------------------------------------------------------- narrative

def explain(res):
    """Why analytical and measured differ, with this run's numbers."""
    rows = _get(res, "memory", "rows") or {}
    b = rows.get("mbv3_small/mobiletl-3")
    a = rows.get("mbv3_small/ft_all")
    out = []
    if not (b and _lite(b)):
        return out
    lb, an, g = _lite(b), b["analytical"], b["graph"]
    out += [
        "The profiler counts an idealised step: saved activations + the live forward tensors at "
        "the worst layer, fp32 trainable weights, int8 frozen kernels and Adam slots. The process "
        "measures everything else too. For mbv3_small / mobiletl-3 (1 thread):",
        "",
        f"* **Fixed baseline, {_mb(lb['rss_loaded'], 0)} MB before the first step**: CPython, numpy "
        f"and the LiteRT library ({_mb(lb['rss_start'], 0)} MB after the imports; measured "
        "separately: CPython ~10 MB, + numpy ~17 MB, + ai_edge_litert ~9 MB, + tftl/zipfile "
        f"~6 MB), the model file bytes ({_mb(b['file_bytes'])} MB, held in memory "
        "because the interpreter reads constants in place) and the interpreter's structures. The "
        "profiler has no such term; it is the same for every scheme, so it compresses every "
        "ratio between schemes measured as peak RSS.",
        f"* **Arena, {_mb(lb['arena']['extent_bytes'])} MB measured** (address extent of the "
        "train subgraph's tensors, read from the live interpreter) vs "
        f"{_mb(an['peak_activation_bytes'])} MB predicted peak activations. The converted graph's "
        f"own ideal (perfect reuse, same op order) is already {_mb(g['ideal_peak_bytes'])} MB: "
        "it holds backward tensors and optimizer temporaries alongside the saved activations "
        "(Adam's `b1*m`, `b2*v` and update terms, computed per variable while gradients are "
        "alive), fp32 READ_VARIABLE copies of each trainable weight an op reads (builtin kernels "
        "cannot read a resource variable in place) and transposed copies of trained conv "
        "kernels (CONV_2D wants OHWI, the variable is HWIO). The converter's op order is not "
        "memory-aware either: backward helpers that depend only on forward tensors are hoisted "
        "into the forward pass and keep their inputs or outputs alive. With XNNPACK, tensors "
        "inside a delegated partition live in XNNPACK's own workspace instead of the arena, so "
        "the TFLite arena can be *below* the graph ideal; the no-XNNPACK arena ("
        f"{_mb(_get(b, 'no_delegates', 'arena', 'extent_bytes'))} MB here) is the whole plan.",
        f"* **Saved activations: {_mb(g['saved_bytes'], 2)} MB in the graph vs "
        f"{_mb(an['activation_bytes'], 2)} MB predicted** — see the per-block table below.",
        f"* **Variables, {_mb(lb.get('variables_bytes'))} MB** = trainable weights + 2 Adam slots "
        "+ BN running statistics: the profiler's trainable + optimizer terms, matching to within "
        "the BN statistics.",
        f"* **Other step memory, {_mb(_other(lb))} MB** (peak minus baseline, arena, variables "
        "and the input arrays): mostly XNNPACK — the default delegate packs the weights of the "
        "ops it takes into its own layout (the frozen weights, dequantized from int8 once) and "
        "keeps a workspace for the tensors inside its partitions — plus malloc's retained "
        "heap. Without XNNPACK the same step peaks at "
        f"{_mb(_get(b, 'no_delegates', 'peak_rss'), 0)} MB (but runs ~3x slower).",
    ]
    if a and _lite(a):
        la = _lite(a)
        out += ["",
                f"For ft_all the same terms are {_mb(la['rss_loaded'], 0)} MB baseline + "
                f"{_mb(la['arena']['extent_bytes'])} MB arena + {_mb(la.get('variables_bytes'))} MB "
                f"variables → {_mb(la['peak_rss'], 0)} MB peak RSS, vs "
                f"{_mb(a['analytical']['peak_bytes'])} MB analytical."]
    return out


# ----------------------------------------------------------------------------- main

def write(res, path=MD):
    mem = res.get("memory", {})
    tg = targets(res)
    L = ["# tftl benchmark results", "",
         "Generated by `python bench/run.py` (see *Reproduce*) from `bench/results.json`; do not "
         "edit by hand. MB = 10^6 bytes (the profiler's unit).", ""]
    for run in res.get("runs", [])[-3:]:
        L.append(f"* run: `{run['command']}` finished {run['finished']} ({run['seconds']} s)")
    if mem:
        env = mem.get("environment", {})
        L += ["",
              f"Memory / latency section: **{mem.get('mode')}** mode, {mem.get('steps')} timed steps "
              f"after {mem.get('warmup')} warm-up (median reported), batch 8, 224 px, 10 classes, "
              f"random weights, int8 frozen constants, Adam. Machine: {env.get('cpus')} CPUs "
              f"shared with other jobs (load average {env.get('load_avg_start', ['?'])[0]:.1f} at "
              f"the start; each probe records its own), ai-edge-litert {env.get('ai-edge-litert')}, "
              f"TensorFlow {env.get('tensorflow-cpu') or env.get('tensorflow')}. Every number "
              "comes from a fresh process per measurement, run one at a time under `nice -n 5`."]
    L += ["", "## Targets", "", "```"]
    for name, v, detail in tg:
        L.append(f"{v:4s}  {name}")
        L.append(f"      {detail}")
    L += ["```", ""]
    if res.get("memory_quick", {}).get("rows"):
        mq = res["memory_quick"]
        L += [f"A later `--quick` check ({mq.get('started')}, {mq.get('steps')} steps) of the same "
              "code is kept in `results.json['memory_quick']`; its verdicts: "
              + ", ".join(f"{n.split()[0]}{' ' + n.split()[1] if n.startswith('T3') else ''} {v}"
                          for n, v, _ in targets(res, "memory_quick")) + ".", ""]
    for model in common.MODELS:
        if not any(r.get("model") == model for r in (mem.get("rows") or {}).values()):
            continue
        L += [f"## {model}: analytical vs measured memory, step time", ""]
        L += memory_table(res, model)
        L += ["", "Where the peak RSS goes (1 thread):", ""]
        L += rss_breakdown(res, model)
        L += ["", "Saved activations (image-dependent tensors the converted graph holds across the "
              "forward/backward boundary), predicted vs measured:", ""]
        L += saved_table(res, model)
        L.append("")
    L += ["Columns: *analytical* = `tftl.profile.profile(...)['peak_bytes']` (peak activations in "
          "brackets); *graph saved act* = image-dependent tensors of the exported train graph "
          "produced before the first loss-gradient op and read after it (per-tensor accounting "
          "over the file's op order, `bench/tflite_graph.py`); *graph ideal "
          "arena* = max live non-constant bytes over the op order with perfect reuse; *measured "
          "arena* = address extent of the train subgraph's arena tensors in the live "
          "interpreter; *variables* = resource variables (trainable weights, Adam m/v, BN "
          "statistics); *RSS loaded* = RSS after creating the interpreter, before the first "
          "step; *peak RSS* = `ru_maxrss` of the fresh process (1 thread); *step incr.* = "
          "peak − loaded; LiteRT/TF ms = median wall time per step (median process CPU time in "
          "brackets: robust to other jobs preempting the probe); TF = `tf.function` of "
          "`tftl.training.train_step` on the Keras model (intra-op threads = 1/2, inter-op 1), "
          "its peak RSS the max over its runs.", ""]
    if mem.get("rows"):
        L += ["## Analytical vs measured: why they differ", ""] + explain(res) + [""]
        L += ["## Digging: per-tensor memory of the train signature", ""]
        for key in ("mbv3_small/mobiletl-3", "mbv3_small/ft_blocks-3", "mbv3_small/ft_all"):
            pt = per_tensor(res, key)
            if pt:
                L += pt + [""]
                L.append(f"Op mix: {op_mix(res, key)}")
                L.append("")
        dt = decompose_table(res)
        if len(dt) > 2:
            L += ["## Digging: where the step time goes", "",
                  "ai_edge_litert 2.3's Python API has no op profiler (no `experimental_profiler`; "
                  "the benchmark binary is not shipped), so the step is split by timing the other "
                  "signatures of the same file, and XNNPACK's share by disabling the default "
                  "delegates (`experimental_op_resolver_type=BUILTIN_WITHOUT_DEFAULT_DELEGATES`). "
                  "1 thread, medians, wall (CPU) ms:", ""] + dt + [""]
        ot = op_profile_table(res)
        if len(ot) > 2:
            L += ["Op level: each operator of the train signature cut out into a one-op "
                  "model and timed alone (`bench/op_profile.py`, process CPU time, so other "
                  "jobs on the machine do not inflate it; resource-variable ops untimed):", ""]
            L += ot + [""]
            for key in ("mbv3_small/mobiletl-3", "mbv3_small/ft_all"):
                L += top_ops(res, key) + [""]
        L += findings(res)
    L += ["## Trainer CLI (tftl-train): epoch time and accuracy", ""]
    L += train_section(res)
    L += cache_section(res) + int8_section()
    L += ["", "## Plots", "", "* `bench/memory.png` — per scheme: measured peak RSS split into "
          "loaded baseline / arena / variables / other, next to the analytical peak; TensorFlow's "
          "peak RSS as triangles.",
          "* `bench/pareto.png` — flowers5 val accuracy vs measured memory, marker area ~ training "
          "FLOPs per step, dashed line = Pareto front per model.", "",
          "## Reproduce", "", "```",
          "python bench/run.py                  # everything (memory+latency full, accuracy 3 seeds x 5 epochs x 7 schemes: hours)",
          "python bench/run.py --quick          # ~5 min with a warm export cache; 13 min here with 6 accuracy exports cold (+~15 min if the 14 benchmark exports are cold too)",
          "python bench/run.py --part memory    # memory + latency only (the core): 26 min here, 14 exports included",
          "python bench/run.py --part train [--quick] [--epochs N --seeds 0,1,2 --acc-schemes ...]",
          "python bench/run.py --part cache [--cache-schemes ft_last,mobiletl-3 --epochs N]   # feature-cache speed-up",
          "python bench/run.py --part memory --resume [--threads 1 --tf-threads 1 --dig-models mbv3_small]   # continue an interrupted run",
          "python bench/int8_accuracy.py [--model mbv2 --seeds 0,1,2 --epochs 10]   # int8 vs float trunk accuracy and size",
          "python bench/run.py --report-only [--regraph]   # RESULTS.md + plots from results.json",
          "python bench/op_profile.py bench/.cache/<file>.tflite   # op-level CPU time of the train signature",
          "python bench/probe_litert.py bench/.cache/<file>.tflite --threads 1 --steps 20   # one probe",
          "python bench/probe_tf.py --model mbv3_small --scheme mobiletl --blocks 3 --threads 2",
          "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    lines = [f"{v:4s}  {n}\n      {d}" for n, v, d in tg]
    if res.get("memory_quick", {}).get("rows"):
        lines.append("quick check (results.json['memory_quick']):")
        lines += [f"{v:4s}  {n}\n      {d}" for n, v, d in targets(res, "memory_quick")]
    try:
        plot_memory(res)
        plot_pareto(res)
    except Exception as e:  # plots are a convenience
        lines.append(f"(plots failed: {type(e).__name__}: {e})")
    if update_readme(res):
        lines.append("updated README.md's headline block")
    lines.append(f"wrote {os.path.relpath(path, common.ROOT)}, bench/memory.png, bench/pareto.png")
    return lines


def cache_section(res):
    """Feature-cache speed-up per scheme (--part cache) with its FLOP bound."""
    rows = _get(res, "cache_epochs", "rows") or []
    if not rows:
        return []
    L = ["", f"Feature cache, mbv2 (ImageNet weights), tftl-train {res['cache_epochs'].get('epochs')} "
         "epochs, seconds per epoch (median; the cached run's first epoch excluded, its cache "
         "build reported apart):", "",
         "| scheme | no cache s/epoch | cached s/epoch | speed-up | cache build s | trunk fwd GFLOPs "
         "| trained fwd+bwd GFLOPs | FLOP bound |", "|---|---|---|---|---|---|---|---|"]
    for et in rows:
        sp = _speedup(et)
        if not sp:
            L.append(f"| {et.get('scheme')} | error |" + " |" * 6)
            continue
        tr = et.get("trained_flops") or 0
        bound = (et["trunk_forward_flops"] + tr) / tr if tr else None
        L.append(f"| {et['scheme']} | {sp[0]:.1f} | {sp[1]:.2f} | {sp[0] / max(sp[1], 1e-9):.1f}x "
                 f"| {(et['cache'].get('feature_cache') or {}).get('seconds')} "
                 f"| {et.get('trunk_forward_flops', 0) / 1e9:.2f} | {tr / 1e9:.2f} "
                 f"| {f'{bound:.1f}x' if bound and bound < 1000 else 'none'} |")
    return L


def int8_section():
    """bench/int8_accuracy.json: accuracy and size of the int8 trunk vs float."""
    path = os.path.join(common.BENCH, "int8_accuracy.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        r = json.load(f)
    L = ["", f"## int8 vs float frozen trunk (`{r.get('command')}`)", "",
         f"{r['model']} {r['scheme']}, flowers5 val (200 images), tftl-train {r['epochs']} epochs:", "",
         "| weights | file MB | val acc mean | runs |", "|---|---|---|---|"]
    for row in r["rows"]:
        L.append(f"| {row['variant']} | {row['file_bytes'] / 1e6:.2f} | {row['mean']:.3f} "
                 f"| {row['val_accuracy']} |")
    return L + ["", "(File sizes before zero initial values moved to FILL ops, which takes "
                "3.5 MB more off every variant.)"]


def train_section(res):
    t = res.get("train_cli")
    if not t:
        return ["Not run yet: `python bench/run.py --part train` (or `--quick`)."]
    if t.get("skipped"):
        return [f"SKIPPED: {t['skipped']}"]
    st = next((x.get("settings") for r in (t.get("accuracy") or []) for x in r.get("runs", [])
               if x.get("settings")), None) or {}
    L = [f"Mode **{t.get('mode')}**: {t.get('epochs')} epoch(s), seeds {t.get('seeds')}, "
         "tftl-train's default settings otherwise"
         + (f" (as recorded in its history: lr {st.get('lr')} with warm-up {st.get('warmup_steps')} "
            f"steps then cosine, Adam, augmentation {'on' if st.get('augment') else 'off'}, "
            f"{st.get('cache_views')} cached views, batch {st.get('batch')})" if st else "")
         + f"; flowers5 ({st.get('train_images', 400)} train / {st.get('val_images', 200)} val "
         "images) read in place. Each run is a fresh, niced process; peak RSS from `os.wait4`. "
         "One export per model/scheme is shared by the seeds (the seed drives shuffling, "
         "augmentation and the cached views; the classifier init comes from the export).", ""]
    et = t.get("epoch_time") or {}
    if et and "error" not in et:
        L += [f"Seconds per epoch, {et['model']} {et['scheme']} (ImageNet weights), "
              f"{et['epochs']} epoch(s):", "",
              "| | feature cache build s | epoch s (train + val) | epoch train s | img/s | total wall s "
              "| wall s / epoch incl. cache | peak RSS MB | val acc |",
              "|---|---|---|---|---|---|---|---|---|"]
        for k, name in (("cache", "--cache-features"), ("no_cache", "--no-cache-features")):
            r = et.get(k)
            if not r:
                continue
            if "error" in r:
                L.append(f"| {name} | error: {r['error'][:100]} |" + " |" * 7)
                continue
            fc = r.get("feature_cache") or {}
            eps = [e for e in r.get("epoch_seconds") or [] if e is not None]
            tr = [e for e in r.get("epoch_train_seconds") or [] if e is not None]
            L.append(f"| {name} | {fc.get('seconds', 0) if fc.get('enabled') else '—'} "
                     f"| {statistics.mean(eps):.1f} | {statistics.mean(tr):.1f} "
                     f"| {statistics.mean(r['images_per_second']):.0f} | {r['wall_s']:.0f} "
                     f"| {r['wall_s'] / max(r['epochs'], 1):.0f} | {_mb(r['peak_rss'], 0)} "
                     f"| {r.get('val_accuracy')} |")
        rc, rn = et.get("cache") or {}, et.get("no_cache") or {}
        if rc.get("epoch_seconds") and rn.get("epoch_seconds"):
            build = (rc.get("feature_cache") or {}).get("seconds") or 0
            gain = statistics.mean(rn["epoch_seconds"]) - statistics.mean(rc["epoch_seconds"])
            if gain > 0:
                L += ["", f"The cache costs {build:.0f} s once (trunk forward of every training "
                      f"image x views + validation) and saves {gain:.1f} s per epoch, so it pays "
                      f"off from {build / gain:.1f} epochs on (augmentation then comes from the "
                      f"cached views only)."]
        L.append("")
    elif et:
        L.append(f"epoch timing failed: {et.get('error')}")
    acc = t.get("accuracy") or []
    if acc:
        L += ["Accuracy on flowers5 val (same budget for every scheme):", "",
              "| model | scheme | val acc mean ± std | runs | measured peak RSS MB (train step) "
              "| step ms (1t) | analytical MB | train GFLOPs/step | tftl-train peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in acc:
            if "error" in r:
                L.append(f"| {r['model']} | {r['scheme']} | error: {r['error'][:80]} |" + " |" * 6)
                continue
            accs = [x.get("val_accuracy") for x in r["runs"]]
            errs = [x["error"] for x in r["runs"] if "error" in x]
            m = r.get("val_accuracy_mean")
            L.append(f"| {r['model']} | {r['scheme']} | "
                     + (f"{m:.3f} ± {r.get('val_accuracy_std', 0):.3f}" if m is not None else "—")
                     + f" | {accs} | {_mb(r.get('peak_rss'), 0)} | {_ms(r.get('step_ms'))} "
                     f"| {_mb(r.get('analytical_peak_bytes'))} | {r['train_flops'] / 1e9:.2f} "
                     f"| {_mb(max([x.get('peak_rss', 0) for x in r['runs']] or [0]), 0)} |"
                     + (f" errors: {errs[0][:100]}" if errs else ""))
    pts, source = pareto_points(res)
    L += ["", f"Pareto plot source: {source}."]
    return L


def _row(res, key, section="memory"):
    return (_get(res, section, "rows") or {}).get(key) or {}


def _other(l1):
    inputs = l1.get("rss_inputs", l1["rss_loaded"]) - l1["rss_loaded"]
    return (l1["peak_rss"] - l1["rss_loaded"] - l1["arena"]["extent_bytes"]
            - l1.get("variables_bytes", 0) - inputs)


def _opms(row, op, field="ms"):
    return _get(row, "op_profile", "by_type", op, field) or 0


def findings(res):
    """Causes of the missed targets and the fixes, quoting this run's numbers."""
    L = ["## Findings: causes and fixes", "",
         "Landed in this revision (measured before → after in the previous run of this "
         "benchmark, same machine): frozen weights stored int8 behind DEQUANTIZE instead of "
         "the converter's hybrid dynamic-range kernels (mbv2 depthwise convs 83 → 18 ms; "
         "`converters/quantize.py`); the depthwise/stem weight-gradient pad and the full BN's "
         "x_hat anchored on dy and the k*k taps chained (mbv3_small trained-block saved "
         "activations 14.1 → 10.6 MB for mobiletl-3); the global-pool backward as a "
         "broadcasting MUL instead of BROADCAST_TO (22 ms of ft_all's step); `train_features` "
         "returning the step's probabilities, so the cached epoch runs one signature per "
         "batch instead of two.", ""]
    a, b, c = (_row(res, "mbv3_small/ft_all"), _row(res, "mbv3_small/mobiletl-3"),
               _row(res, "mbv3_small/ft_blocks-3"))
    la, lb = _lite(a), _lite(b)
    if la and lb:
        ta, tb_ = a["analytical"]["trainable_params"], b["analytical"]["trainable_params"]
        step_a = la["arena"]["extent_bytes"] + la.get("variables_bytes", 0)
        step_b = lb["arena"]["extent_bytes"] + lb.get("variables_bytes", 0)
        ratio = la["peak_rss"] / lb["peak_rss"]
        L += [f"### T1a: ft_all / mobiletl-3 peak memory: {ratio:.2f}x on the process, "
              f"{step_a / step_b:.2f}x on the step", "",
              f"* Measured ratios: peak RSS {ratio:.2f}x, step increment "
              f"{(la['peak_rss'] - la['rss_loaded']) / (lb['peak_rss'] - lb['rss_loaded']):.2f}x, "
              f"arena + variables {step_a / step_b:.2f}x, arena alone "
              f"{la['arena']['extent_bytes'] / lb['arena']['extent_bytes']:.1f}x; analytical "
              f"{a['analytical']['peak_bytes'] / b['analytical']['peak_bytes']:.2f}x.",
              f"* Only the activations shrink. The terms that do not: the loaded baseline "
              f"({_mb(lb['rss_loaded'], 0)} vs {_mb(la['rss_loaded'], 0)} MB: CPython, numpy, the "
              f"LiteRT library, the model bytes), the variables ({_mb(lb['variables_bytes'])} vs "
              f"{_mb(la['variables_bytes'])} MB — on mbv3_small the top 3 blocks + head hold "
              f"{100 * tb_ / ta:.0f}% of the parameters, so mobiletl-3 keeps almost all of "
              f"ft_all's weights and Adam slots), and XNNPACK's packed weights and workspace "
              f"({_mb(_other(lb))} vs {_mb(_other(la))} MB). 3x on the process would need "
              f"mobiletl-3 at <= {_mb(la['peak_rss'] / 3, 0)} MB, i.e. "
              f"{_mb(la['peak_rss'] / 3 - lb['rss_loaded'], 0)} MB above the loaded process for "
              f"arena, variables and XNNPACK together.",
              "* Fix (not in reach here): a C/C++ trainer removes most of the Python floor; "
              "SGD instead of Adam drops two thirds of the variables (`--optimizer sgd`); "
              "running the frozen trunk through `extract` once (the trainer's feature cache) "
              "keeps its activations out of the training step entirely.", ""]
    if b.get("graph") and c.get("graph"):
        pb = b["analytical"]["saved_trained_blocks"]
        pc = c["analytical"]["saved_trained_blocks"]
        sb, sc = b["graph"]["saved_trained_blocks"], c["graph"]["saved_trained_blocks"]
        L += ["### T2: measured reduction vs predicted", "",
              f"* Trained blocks: measured {_mb(sb, 2)} (mobiletl-3) vs {_mb(sc, 2)} MB "
              f"(ft_blocks-3) = {100 * (1 - sb / sc):.1f}% smaller; predicted {_mb(pb, 2)} vs "
              f"{_mb(pc, 2)} MB = {100 * (1 - pb / pc):.1f}%. Before the anchoring fix the graph "
              "kept each trained depthwise conv's padded input instead of its input and a full "
              "BN's centred input beside x (14.13 vs 24.41 MB, 42.1%).", ""]
    t3 = [(n, v, d) for n, v, d in targets(res) if n.startswith("T3")]
    if t3:
        slow = [n.split()[1] for n, v, d in t3 if "speed MISS" in d]
        mem = [n.split()[1] for n, v, d in t3 if "memory MISS" in d]
        L += ["### T3: LiteRT vs TensorFlow", "",
              f"* Speed misses on {len(slow)} of {len(t3)} scheme/model pairs"
              + (f" ({', '.join(slow)})" if slow else "") + "; memory misses on "
              f"{len(mem)}" + (f" ({', '.join(mem)})" if mem else "") + ". Wall and CPU time "
              "are both in the tables; the machine's 2 cores are shared, so single verdicts near "
              "parity can flip between runs."]
        if a.get("op_profile"):
            top = list(a["op_profile"]["by_type"].items())[:6]
            L.append("* Where ft_all's step goes (mbv3_small, op-level CPU ms): "
                     + ", ".join(f"{k} {v['ms']:.0f} ms in {v['count']} ops" for k, v in top)
                     + ". The backward is written as compositions of builtins (per-tap MUL + SUM "
                     "for depthwise weight gradients, 3 element-wise ops per exact ReLU6 mask, "
                     "~10 per variable for Adam); TensorFlow runs fused Eigen/oneDNN kernels "
                     "for the same maths.")
        L.append("* **Trained convs read their kernels from resource variables**, so XNNPACK "
                 "cannot pre-pack them: they run on the builtin kernels and are re-transposed "
                 "every step (TRANSPOSE in the op mix). The frozen trunk does run on XNNPACK "
                 "(float, dequantized once from int8).")
        L.append("* Fixes in reach next: keep trained conv kernels in the layout CONV_2D reads "
                 "(OHWI) so no TRANSPOSE runs per step; one depthwise weight-gradient op per "
                 "layer as a VALID depthwise conv of x with dy as the filter (per sample, "
                 "batched through the channel axis); Adam's update as fewer, larger element-wise "
                 "ops over concatenated variables.")
        if mem:
            L.append("* Memory misses are the big-activation schemes: LiteRT plans one static "
                     "arena over the converter's op order, which is not memory-aware, while "
                     "TensorFlow frees each tensor after its last reader; above TensorFlow's "
                     "~600 MB runtime floor the margin shrinks as activations grow.")
        L.append("")
    fb, fn = _lite(_row(res, "mbv3_small/ft_bias")), _lite(_row(res, "mbv3_small/ft_norm"))
    if fb and fn:
        L += ["### Regression: schemes that backpropagate through the frozen trunk use more memory",
              "",
              f"* mbv3_small ft_bias peaks at {_mb(fb['peak_rss'], 0)} MB and ft_norm at "
              f"{_mb(fn['peak_rss'], 0)} MB (arena {_mb(fb['arena']['extent_bytes'])} / "
              f"{_mb(fn['arena']['extent_bytes'])} MB), against 159 / 216 MB (arena 57.3 / 98.8 MB) "
              "with the previous hybrid int8 trunk; their steps got faster (112 → "
              f"{_ms(_cpu(fb))} ms and 141 → {_ms(_cpu(fn))} ms CPU).",
              "* Cause: the frozen convs now run in float, so XNNPACK takes them, and in these "
              "schemes they sit between backward builtins: many small delegate partitions, each "
              "with its own tensors, and an arena split around them. Measured on the same "
              "ft_bias file without the default delegates "
              "(`bench/probe_litert.py <file> --resolver no_delegates`): 162 MB peak, 88.4 MB "
              "arena, 116 ms CPU.",
              "* Fix: choose the delegate by scheme at load time (XNNPACK when the backward stays "
              "in the trained top, the builtin kernels when it crosses the trunk), or let "
              "XNNPACK take only the `extract` signature. mobiletl-3 and ft_blocks-3 got both "
              "faster and smaller with the new trunk.", ""]
    fb2 = _row(res, "mbv2/ft_bias")
    if fb2.get("graph"):
        L += ["### Profiler: masks counted as stored", "",
              "The analytical columns count exact ReLU / ReLU6 masks at 8 bits "
              "(`tftl.profile.profile(..., bool_masks=True)`), as the graph stores them (a TFLite "
              "bool per element); TinyTL's 1-bit rule (the profiler's default, used to reproduce "
              f"the papers' tables) predicts {_mb(fb2['analytical'].get('peak_bytes_1bit_masks'))} "
              f"MB peak for mbv2 ft_bias instead of {_mb(fb2['analytical']['peak_bytes'])} MB; "
              f"the graph saves {_mb(fb2['graph']['saved_bool_bytes'], 2)} MB of bool masks there. "
              "Bit-packing them (as the `packed` backward does for MobileTL's sign masks) would "
              "cost a PACK/UNPACK pass per activation.", ""]
    return L
