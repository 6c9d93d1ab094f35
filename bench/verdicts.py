"""Targets and their verdicts (PASS / MISS / N/A), computed from results.json only."""

import statistics

import common
from fmt import cpu_ms, dig, lite, mb, ms, tfp, verdict

T_MEM_RATIO = 3.0
T_SPEED_RATIO = 2.0
T_SAVED_REDUCTION = 0.40
T_TF_MEM_RATIO = 3.0
T_CACHE_SPEEDUP = 5.0



def targets(res, section="memory"):
    """[(name, PASS/MISS/N/A, detail)] of the four target families."""
    rows = dig(res, section, "rows") or {}
    out = []
    m = "mbv3_small"
    a, b, c = rows.get(f"{m}/ft_all"), rows.get(f"{m}/mobiletl-3"), rows.get(f"{m}/ft_blocks-3")
    # T1 memory
    if a and b and lite(a) and lite(b):
        la, lb = lite(a), lite(b)
        ratio = la["peak_rss"] / lb["peak_rss"]
        inc = (la["peak_rss"] - la["rss_loaded"]) / max(lb["peak_rss"] - lb["rss_loaded"], 1)
        arena = ((la["arena"]["extent_bytes"] + la.get("variables_bytes", 0))
                 / max(lb["arena"]["extent_bytes"] + lb.get("variables_bytes", 0), 1))
        ana = a["analytical"]["peak_bytes"] / b["analytical"]["peak_bytes"]
        out.append(("T1a mbv3_small peak training memory, ft_all / mobiletl-3 >= 3x (LiteRT, peak RSS)",
                    verdict(ratio >= T_MEM_RATIO),
                    f"peak RSS {mb(la['peak_rss'], 0)} / {mb(lb['peak_rss'], 0)} MB = {ratio:.2f}x; "
                    f"step increment over the loaded baseline {inc:.2f}x; arena+variables "
                    f"{arena:.2f}x; analytical {ana:.2f}x"))
    else:
        out.append(("T1a mbv3_small peak memory ft_all / mobiletl-3 >= 3x", "N/A", "not measured"))
    # T1 speed (1 thread, CPU time; 2 threads for information)
    if a and b and lite(a) and lite(b):
        la, lb = lite(a), lite(b)
        r = cpu_ms(la) / cpu_ms(lb)
        extra = ""
        if lite(a, 2) and lite(b, 2):
            extra = (f"; 2 threads, wall: {ms(lite(a, 2)['median_ms'])} / "
                     f"{ms(lite(b, 2)['median_ms'])} ms")
        out.append(("T1b mbv3_small step time, ft_all / mobiletl-3 >= 2x (LiteRT, same run)",
                    verdict(r >= T_SPEED_RATIO),
                    f"1 thread, CPU time: {ms(cpu_ms(la))} / {ms(cpu_ms(lb))} ms = {r:.2f}x (wall "
                    f"{ms(la['median_ms'])} / {ms(lb['median_ms'])} ms){extra}"))
    # T2 saved activations
    if b and c and "graph" in b and "graph" in c:
        sb, sc = b["graph"]["saved_trained_blocks"], c["graph"]["saved_trained_blocks"]
        red = 1 - sb / sc if sc else 0.0
        pb, pc = b["analytical"]["saved_trained_blocks"], c["analytical"]["saved_trained_blocks"]
        tot = 1 - b["graph"]["saved_bytes"] / c["graph"]["saved_bytes"]
        out.append(("T2 mbv3_small saved activations of the trained blocks, mobiletl-3 vs "
                    "ft_blocks-3 >= 40% smaller (measured: per-tensor accounting of the "
                    "converted train graph)", verdict(red >= T_SAVED_REDUCTION),
                    f"measured {mb(sb, 2)} vs {mb(sc, 2)} MB = {100 * red:.1f}% smaller "
                    f"(with the head: {mb(b['graph']['saved_bytes'], 2)} vs "
                    f"{mb(c['graph']['saved_bytes'], 2)} MB, {100 * tot:.1f}%); predicted "
                    f"{mb(pb, 2)} vs {mb(pc, 2)} MB = {100 * (1 - pb / pc):.1f}%"))
    # T3 LiteRT vs TF, per scheme with TF data: 1 thread, CPU time and peak RSS
    for key, row in rows.items():
        lt, tt = lite(row), tfp(row)
        if not (lt and tt):
            continue
        faster = cpu_ms(lt) < cpu_ms(tt)
        ratio = tt["peak_rss"] / lt["peak_rss"]
        out.append((f"T3 {key} LiteRT vs TensorFlow: faster step and >= 3x less peak memory",
                    verdict(faster and ratio >= T_TF_MEM_RATIO),
                    f"speed {verdict(faster)} (1 thread, CPU {ms(cpu_ms(lt))} vs {ms(cpu_ms(tt))} ms; "
                    f"wall {ms(lt['median_ms'])} vs {ms(tt['median_ms'])} ms); memory "
                    f"{verdict(ratio >= T_TF_MEM_RATIO)} ({mb(lt['peak_rss'], 0)} vs "
                    f"{mb(tt['peak_rss'], 0)} MB = {ratio:.2f}x)"))
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
    for et in dig(res, "cache_epochs", "rows") or [dig(res, "train_cli", "epoch_time")]:
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
                    verdict(sp[0] / sp[1] >= T_CACHE_SPEEDUP),
                    f"epoch {sp[0]:.1f} s without the cache vs {sp[1]:.1f} s with it = "
                    f"{sp[0] / sp[1]:.2f}x{bound}"))
    acc = {(r["model"], r["scheme"]): r for r in dig(res, "train_cli", "accuracy") or []
           if r.get("val_accuracy_mean") is not None}
    for model in sorted({m for m, _ in acc}):
        m, b, l_ = (acc.get((model, k)) for k in ("mobiletl-3", "ft_blocks-3", "ft_last"))
        if not (m and b and l_):
            continue
        gap = 100 * (b["val_accuracy_mean"] - m["val_accuracy_mean"])
        ok = gap <= 1.0 and m["val_accuracy_mean"] > l_["val_accuracy_mean"]
        out.append((f"T5 {model} accuracy: mobiletl-3 within 1 point of ft_blocks-3, above ft_last",
                    verdict(ok),
                    f"mobiletl-3 {m['val_accuracy_mean']:.3f}, ft_blocks-3 "
                    f"{b['val_accuracy_mean']:.3f} ({gap:+.1f} points), ft_last "
                    f"{l_['val_accuracy_mean']:.3f} (flowers5 val, mean of {len(m['runs'])} seeds)"))
    return out


def headline(res):
    """The README's table: one row per measured model / scheme."""
    rows = dig(res, "memory", "rows") or {}
    acc = {(r["model"], r["scheme"]): r for r in dig(res, "train_cli", "accuracy") or []
           if r.get("val_accuracy_mean") is not None}
    L = ["| model | scheme | analytical peak MB | LiteRT peak RSS MB | LiteRT step CPU ms | "
         "TensorFlow step CPU ms | TensorFlow peak RSS MB |",
         "|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        l1, t1 = lite(row, 1), tfp(row, 1)
        if not l1 or "analytical" not in row:
            continue
        L.append(f"| {row['model']} | {row['scheme']} | {mb(row['analytical']['peak_bytes'])} "
                 f"| {mb(l1['peak_rss'], 0)} | {ms(cpu_ms(l1))} "
                 f"| {ms(cpu_ms(t1)) if t1 else '—'} | {mb(t1['peak_rss'], 0) if t1 else '—'} |")
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
