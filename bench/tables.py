"""Markdown tables of bench/RESULTS.md, each built from results.json only."""

import json
import os
import statistics

import common
from fmt import dig, is_ok, lite, mb, ms, step_ms, tfp
from verdicts import cache_stats
from plots import pareto_points


def memory_table(res, model):
    rows = dig(res, "memory", "rows") or {}
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
        l1, l2 = lite(row, 1), lite(row, 2)
        t1, t2 = tfp(row, 1), tfp(row, 2)
        tf_rss = max([t["peak_rss"] for t in (t1, t2) if t] or [0]) or None
        lines.append(
            f"| {row['scheme']} | {mb(an['peak_bytes'])} ({mb(an['peak_activation_bytes'])}) "
            f"| {mb(g['saved_bytes'])} | {mb(g['ideal_peak_bytes'])} "
            f"| {mb(l1['arena']['extent_bytes']) if l1 else '—'} "
            f"| {mb(l1.get('variables_bytes')) if l1 else '—'} "
            f"| {mb(l1['rss_loaded'], 0) if l1 else '—'} | {mb(l1['peak_rss'], 0) if l1 else '—'} "
            f"| {mb(l1['peak_rss'] - l1['rss_loaded'], 0) if l1 else '—'} "
            f"| {step_ms(l1)} | {step_ms(l2)} | {step_ms(t1)} | {step_ms(t2)} "
            f"| {mb(tf_rss, 0) if tf_rss else '—'} |")
    return lines


def rss_breakdown(res, model):
    """Peak RSS = loaded baseline + arena + variables + inputs + other, per scheme."""
    rows = dig(res, "memory", "rows") or {}
    lines = ["| scheme | loaded baseline | arena | variables | other (XNNPACK packing/workspace, "
             "allocator) | = peak RSS | analytical: act peak + params + "
             "optimizer | no-XNNPACK peak RSS / step ms |",
             "|---|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        if row.get("model") != model or "error" in row:
            continue
        l1 = lite(row, 1)
        if not l1:
            continue
        an = row["analytical"]
        inputs = l1.get("rss_inputs", l1["rss_loaded"]) - l1["rss_loaded"]
        other = (l1["peak_rss"] - l1["rss_loaded"] - l1["arena"]["extent_bytes"]
                 - l1.get("variables_bytes", 0) - inputs)
        nd = row.get("no_delegates")
        nd_s = (f"{mb(nd['peak_rss'], 0)} MB / {ms(nd.get('median_ms'))} ms"
                if is_ok(nd) else "—")
        lines.append(
            f"| {row['scheme']} | {mb(l1['rss_loaded'], 0)} | {mb(l1['arena']['extent_bytes'])} "
            f"| {mb(l1.get('variables_bytes'))} | {mb(other)} (+{mb(inputs)} inputs) "
            f"| {mb(l1['peak_rss'], 0)} | {mb(an['peak_activation_bytes'])} + "
            f"{mb(an['trainable_param_bytes'] + an['frozen_param_bytes'])} + "
            f"{mb(an['optimizer_state_bytes'])} = {mb(an['peak_bytes'])} | {nd_s} |")
    return lines


def saved_table(res, model):
    rows = dig(res, "memory", "rows") or {}
    lines = ["| scheme | predicted saved (profiler) MB | measured saved (graph) MB | of which bool masks "
             "| trained blocks predicted / measured MB | head predicted / measured MB "
             "| weight-derived tensors held across MB | READ_VARIABLE copies (sum) MB |",
             "|---|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        if row.get("model") != model or "error" in row:
            continue
        an, g = row["analytical"], row["graph"]
        lines.append(
            f"| {row['scheme']} | {mb(an['activation_bytes'], 2)} | {mb(g['saved_bytes'], 2)} "
            f"| {mb(g['saved_bool_bytes'], 2)} "
            f"| {mb(an['saved_trained_blocks'], 2)} / {mb(g['saved_trained_blocks'], 2)} "
            f"| {mb(an['saved_by_block'].get('head', 0), 2)} / "
            f"{mb(g['saved_by_block'].get('head', 0), 2)} "
            f"| {mb(g['saved_weight_derived_bytes'], 2)} | {mb(g['weight_copy_bytes'], 1)} |")
    return lines


def per_tensor(res, key, n=8):
    row = (dig(res, "memory", "rows") or {}).get(key)
    if not row or "graph" not in row:
        return []
    g = row["graph"]
    l1 = lite(row, 1)
    out = [f"**{key}** — train signature: {g['ops']} ops ({g['backward_ops']} backward), "
           f"{g['tensors']} tensors; sum of all non-constant tensors {mb(g['sum_nonconst_bytes'])} MB "
           f"(no-reuse upper bound); ideal arena for this op order {mb(g['ideal_peak_bytes'])} MB at op "
           f"{g['peak_op']} ({g['peak_op_name']}, {g['peak_phase']} phase)"
           + (f"; measured arena {mb(l1['arena']['extent_bytes'])} MB ({l1['arena']['tensors']} "
              f"allocated tensors, {mb(l1['arena']['temporaries_bytes'])} MB of it unnamed op "
              f"temporaries, largest {mb(l1['arena']['largest_temporary_bytes'], 2)} MB)" if l1 else ""),
           "",
           "Live at the peak, by kind: " + ", ".join(
               f"{k} {mb(v, 2)} MB" for k, v in sorted(g["live_at_peak_by_kind"].items(),
                                                      key=lambda kv: -kv[1])),
           "",
           "| largest tensors alive at the peak | MB | shape | kind | layer | producer |",
           "|---|---|---|---|---|---|"]
    for t in g["largest_at_peak"][:n]:
        out.append(f"| `{t['name'][:60]}` | {mb(t['bytes'], 2)} | {t['shape']} | {t['kind']} "
                   f"| {t['layer'] or '?'} | {t['producer']} |")
    out += ["", "| largest saved activations | MB | shape | layer | producer | live ops |",
            "|---|---|---|---|---|---|"]
    for t in g["largest_saved"][:n]:
        out.append(f"| `{t['name'][:60]}` | {mb(t['bytes'], 2)} | {t['shape']} | {t['layer'] or '?'} "
                   f"| {t['producer']} | {t['live'][0]}–{t['live'][1]} |")
    return out


def pad_overhead(row):
    """Saved bytes produced by PAD ops in trained blocks (the hoisted padded copies)."""
    g = row["graph"]
    pads = [t for t in g["largest_saved"] if t["producer"] == "PAD"]
    return sum(t["bytes"] for t in pads), pads


def decompose_table(res):
    rows = dig(res, "memory", "rows") or {}
    lines = ["| model / scheme | train ms | infer (full forward) ms | extract (frozen trunk) ms "
             "| train_features (trainable part fwd+bwd+Adam) ms | train ms without XNNPACK "
             "| peak RSS without XNNPACK MB |", "|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        d = row.get("decompose")
        if not is_ok(d):
            continue
        dm = d.get("decompose_ms", {})
        nd = row.get("no_delegates")
        dc = d.get("decompose_cpu_ms", {})

        def cell(k):
            return ms(dm.get(k)) + (f" ({ms(dc[k])})" if k in dc else "")
        lines.append(f"| {key} | {cell('train')} | {cell('infer')} "
                     f"| {cell('extract')} | {cell('train_features')} "
                     f"| {step_ms(nd) if is_ok(nd) else '—'} "
                     f"| {mb(nd['peak_rss'], 0) if is_ok(nd) else '—'} |")
    return lines


def op_profile_table(res):
    rows = dig(res, "memory", "rows") or {}
    lines = ["| model / scheme | train step CPU ms (measured) | sum of one-op CPU ms | forward ms "
             "| backward + Adam ms | top op types (CPU ms, count) |", "|---|---|---|---|---|---|"]
    for key, row in rows.items():
        op = row.get("op_profile")
        if not is_ok(op):
            continue
        l1 = lite(row, 1)
        ph = op.get("by_phase", {})
        top = ", ".join(f"{k} {v['ms']:.0f} ({v['count']})" for k, v in list(op["by_type"].items())[:7])
        lines.append(f"| {key} | {ms(l1.get('median_cpu_ms')) if l1 else '—'} "
                     f"| {ms(op['total_ms'])} | {ms(dig(ph, 'forward', 'total_ms'))} "
                     f"| {ms(dig(ph, 'backward', 'total_ms'))} | {top} |")
    return lines


def top_ops(res, key, n=10):
    op = dig(res, "memory", "rows", key, "op_profile")
    if not is_ok(op):
        return []
    out = [f"Slowest single ops of **{key}** (CPU ms, 1 thread):", "",
           "| # | op | phase | CPU ms | output | shape |", "|---|---|---|---|---|---|"]
    for r in op["top"][:n]:
        out.append(f"| {r['index']} | {r['op']} | {r.get('phase', '')} | {r['ms']:.2f} "
                   f"| `{r['output'][:60]}` | {r['shape']} |")
    return out


def op_mix(res, key):
    row = (dig(res, "memory", "rows") or {}).get(key)
    if not row or "graph" not in row:
        return ""
    oc = row["graph"]["op_counts"]
    return ", ".join(f"{k} {v}" for k, v in list(oc.items())[:14])


def cache_section(res):
    """Feature-cache speed-up per scheme (--part cache) against its FLOP and step bounds."""
    sec = res.get("cache_epochs") or {}
    rows = sec.get("rows") or []
    if not rows:
        return []
    data = (f"the first {sec['per_class']} training photos per class of flowers5"
            if sec.get("per_class") else "flowers5")
    L = ["", f"Feature cache, mbv2 ({sec.get('weights') or 'imagenet'} weights), tftl-train "
         f"{sec.get('epochs')} epochs on {data}: training part of an epoch (median; the cached "
         "run's first epoch excluded, its cache build reported apart), process CPU seconds where "
         "recorded. *Step bound* = the same file's `train` / `train_features` step CPU time "
         "(`probe_litert.py --decompose`): what the kernels allow; below it, the trainer loses "
         "the rest.", "",
         "| scheme | no cache s/epoch | cached s/epoch | speed-up | FLOP bound | of the bound "
         "| step bound | cache build s | trunk fwd GFLOPs | trained fwd+bwd GFLOPs |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for et in rows:
        st = cache_stats(et)
        if not st:
            L.append(f"| {et.get('scheme')} | error |" + " |" * 8)
            continue
        fb, ob, sb = st.get("flop_bound"), st.get("of_bound"), st.get("step_bound")
        build = st.get("cache_build_s") if st.get("cache_enabled", True) else "no cache"
        L.append(f"| {et['scheme']} | {st['no_cache_s']:.2f} | {st['cached_s']:.2f} "
                 f"| {st['speedup']:.2f}x ({st['basis']}) | {f'{fb:.2f}x' if fb else 'none'} "
                 f"| {f'{ob:.2f}' if ob else '—'} | {f'{sb:.2f}x' if sb else '—'} | {build} "
                 f"| {et.get('trunk_forward_flops', 0) / 1e9:.2f} "
                 f"| {(et.get('trained_flops') or 0) / 1e9:.2f} |")
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
    return L


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
    L += _epoch_time_table(t.get("epoch_time") or {})
    L += _accuracy_table(t.get("accuracy") or [])
    pts, source = pareto_points(res)
    L += ["", f"Pareto plot source: {source}."]
    return L


def _epoch_time_table(et):
    """Seconds per epoch with and without the feature cache (train_cli.epoch_time)."""
    L = []
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
                     f"| {r['wall_s'] / max(r['epochs'], 1):.0f} | {mb(r['peak_rss'], 0)} "
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
    return L


def _accuracy_table(acc):
    """Accuracy of every scheme on flowers5 val (train_cli.accuracy)."""
    L = []
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
                     + f" | {accs} | {mb(r.get('peak_rss'), 0)} | {ms(r.get('step_ms'))} "
                     f"| {mb(r.get('analytical_peak_bytes'))} | {r['train_flops'] / 1e9:.2f} "
                     f"| {mb(max([x.get('peak_rss', 0) for x in r['runs']] or [0]), 0)} |"
                     + (f" errors: {errs[0][:100]}" if errs else ""))
    return L
