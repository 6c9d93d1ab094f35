"""tftl against the peers a user would pick instead, side by side in one run.

    bash bench/peers/setup.sh                      # the peers' own venv (torch, ONNX Runtime training)
    python bench/peers/run_peers.py [--models mbv3_small mbv2] [--schemes mobiletl-3 ft_all ...]
    python bench/peers/run_peers.py --report-only

Every case is a fresh process: tftl's exported file in LiteRT (`bench/probe_litert.py`, this
interpreter) on its real path (`--streamed`: `extract_micro` at the micro-batch into a feature
buffer, interpreter freed, then `train_features`) and on the monolithic `train` signature
(`tftl_mono`, reported beside it), PyTorch eager and ONNX Runtime training (`probe_peer.py`,
the peers' interpreter: $TFTL_PEERS_PYTHON, default bench/peers/.venv/bin/python; the ORT
process never imports torch) and, as a reference only, TensorFlow `tf.function` of tftl's own
Keras layers (`bench/probe_tf.py`; not a peer: it is tftl's code). Batch 8, 224 px, Adam,
1 thread, 3 warm-up + 20 timed steps on one random batch, all timed by `bench/probe_common.py`.
Peers train exactly tftl's parameter set for the scheme (`torch_net.py`), with their own autodiff.

Training memory = peak RSS - RSS right after importing the runtime (weights, optimizer
state, arenas, activations, the step): what a device must find beyond the library.

Writes bench/peers/results.json (rows kept per case, so a run can be resumed or extended)
and bench/peers/RESULTS.md with the issue-20 targets as PASS/MISS against the best of
PyTorch and ONNX Runtime:
  T1 mobiletl-3: training memory <= 0.6x, step CPU <= 0.7x, process peak RSS <= 0.8x
  T2 every other scheme: step CPU <= 1.0x and training memory <= 1.0x
and tftl's training memory as a multiple of the physical limit (`tftl.profile.physical_limit`).
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)

import common  # noqa: E402

RESULTS = os.path.join(HERE, "results.json")
REPORT = os.path.join(HERE, "RESULTS.md")
PEERS_PY = os.environ.get("TFTL_PEERS_PYTHON") or os.path.join(HERE, ".venv", "bin", "python")
PEERS = ("torch", "ort")  # the peers the targets compare against
REFERENCES = ("tftl_mono", "tf")  # measured beside, never a peer
SCHEMES = ("mobiletl-3", "ft_all", "ft_blocks-3", "ft_bias", "ft_norm", "tinytl")  # issue 13's
PEER_NAMES = {"torch": "PyTorch eager", "ort": "ONNX Runtime training",
              "tf": "TF tf.function of tftl's Keras layers (reference)",
              "tftl_mono": "tftl monolithic `train` (reference)", "tftl": "tftl"}
T1 = {"train_mem": 0.6, "step_cpu_ms": 0.7, "peak_rss": 0.8}
T2 = {"step_cpu_ms": 1.0, "train_mem": 1.0}
KEEP = ("rss_start", "step_cpu_ms", "step_wall_ms", "rss_before_step", "rss_loaded", "rss_after_first", "peak_rss",
        "step_mem", "trainable_params", "version", "loss", "load_avg_start", "load_avg_end",
        "first_step_ms", "arena_bytes", "variables_bytes", "timed_steps", "warmup_steps", "first_loss",
        "train_mem", "precision", "torch_imported", "extract_phase", "train_phase", "micro_batch",
        "rss_after_extract")


def _run(python, args, timeout=3600):
    old = common.PY
    common.PY = python
    try:
        return common.run_json(args, timeout=timeout)
    finally:
        common.PY = old


def _keep(res, err=None):
    """The fields of one probe's JSON line the report uses (bench/probe_common.py names)."""
    if res is None:
        return {"error": err or "no output"}
    res = dict(res, step_cpu_ms=res.get("median_cpu_ms"), step_wall_ms=res.get("median_ms"))
    if res.get("rss_start") and res.get("peak_rss"):
        res["train_mem"] = res["peak_rss"] - res["rss_start"]
    if "arena" in res:
        res["arena_bytes"] = res["arena"]["extent_bytes"]
    return {k: res[k] for k in KEEP if res.get(k) is not None}


def measure_tftl(model, label, steps, warmup, streamed=True):
    path, _, err = common.ensure_export(model, label)
    if err:
        return {"error": err}
    res, err, _ = common.run_json([os.path.join(BENCH, "probe_litert.py"), path, "--threads", "1",
                                   "--steps", str(steps), "--warmup", str(warmup)]
                                  + (["--streamed"] if streamed else []))
    out = _keep(res, err)
    if "error" not in out:
        out["limit"] = physical_limit(model, label, out.get("micro_batch") or 8)
    return out


def physical_limit(model, label, micro_batch, batch=8):
    """`tftl.profile.physical_limit` of the row (bytes, by part)."""
    sys.path.insert(0, os.path.dirname(BENCH))
    from tftl import profile
    from tftl.plan import ModelPlan
    scheme, blocks = common.parse_label(label)
    plan = ModelPlan.build(model, scheme=scheme, blocks=blocks, image_size=224, num_classes=10)
    return profile.physical_limit(plan, batch, micro_batch)


def measure_peer(peer, model, label, steps, warmup):
    scheme, blocks = common.parse_label(label)
    job = ["--model", model, "--scheme", scheme, "--blocks", str(blocks), "--threads", "1",
           "--steps", str(steps), "--warmup", str(warmup)]
    probe = os.path.join(HERE, "probe_peer.py")
    if peer == "tf":  # TensorFlow lives in the product's venv (this interpreter)
        res, err, _ = common.run_json([os.path.join(BENCH, "probe_tf.py"), *job])
    elif peer == "ort":
        folder = os.path.join(common.CACHE, f"ort_{model}_{label}")
        res, err, _ = _run(PEERS_PY, [probe, "prepare-ort", *job, "--dir", folder])
        if res is not None:
            res, err, _ = _run(PEERS_PY, [probe, "ort", "--dir", folder, *job[-6:]])
    else:
        res, err, _ = _run(PEERS_PY, [probe, "torch", *job])
    return _keep(res, err)


def _ok(r):
    return bool(r) and "error" not in r and r.get("step_cpu_ms") is not None


def ratios(row, targets):
    """{metric: (tftl / best peer, best peer's name)} over the peers that measured the metric."""
    tftl = row.get("tftl")
    if not _ok(tftl):
        return {}
    out = {}
    for metric in targets:
        peers = {p: row[p][metric] for p in PEERS if _ok(row.get(p)) and row[p].get(metric) is not None}
        if not peers or tftl.get(metric) is None:
            return {}
        best = min(peers, key=peers.get)
        out[metric] = (tftl[metric] / peers[best], best)
    return out


def targets_for(label):
    return ("T1", T1) if label == "mobiletl-3" else ("T2", T2)


def verdicts(rows):
    """PASS/MISS lines per (model, scheme) against the best peer of each metric."""
    out = []
    for key, row in sorted(rows.items()):
        name, targets = targets_for(key.split("/")[1])
        r = ratios(row, targets)
        if not r:
            out.append(f"n/a   {name} {key}: tftl or every peer missing")
            continue
        ok = all(r[m][0] <= bound for m, bound in targets.items())
        parts = [f"{m} {r[m][0]:.2f}x of {r[m][1]} ({'ok' if r[m][0] <= b else 'MISS'}: <= {b})"
                 for m, b in targets.items()]
        missing = [PEER_NAMES[p] for p in PEERS if not _ok(row.get(p))]
        tail = f" [not measured: {', '.join(missing)}]" if missing else ""
        out.append(f"{'PASS' if ok else 'MISS'}  {name} {key}: " + "; ".join(parts) + tail)
    return out


def params_cell(row):
    """tftl's trainable parameter count, and whether every peer trains the same number."""
    counts = {fw: row[fw]["trainable_params"] for fw in ("tftl", *PEERS)
              if row.get(fw) and row[fw].get("trainable_params") is not None}
    if not counts:
        return "?"
    ref = counts.get("tftl", next(iter(counts.values())))
    odd = [f"{fw} {n:,}" for fw, n in counts.items() if n != ref]
    others = [fw for fw in counts if fw != "tftl"]
    return f"{ref:,} " + (f"(MISMATCH: {', '.join(odd)})" if odd else
                          f"(= {', '.join(others)})" if others else "(no peer yet)")


FWS = ("tftl", "tftl_mono", *PEERS, "tf")


def _cell(r):
    if not r:
        return "—"
    if "error" in r:
        return "failed (see below)"
    mem = f"{r['train_mem'] / 1e6:.0f}" if r.get("train_mem") is not None else "?"
    return f"{r['step_cpu_ms']:.0f} / {mem} / {r['step_mem'] / 1e6:.0f} / {r['peak_rss'] / 1e6:.0f}"


def table(rows):
    lines = ["| model / scheme | trainable params | " + " | ".join(PEER_NAMES[f] for f in FWS)
             + " | load avg (min–max) |", "|---|---|" + "---|" * len(FWS) + "---|"]
    for key, row in sorted(rows.items()):
        loads = [v for r in row.values() if isinstance(r, dict)
                 for v in (r.get("load_avg_start"), r.get("load_avg_end")) if v is not None]
        load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
        lines.append(f"| {key} | {params_cell(row)} | " + " | ".join(_cell(row.get(f)) for f in FWS)
                     + f" | {load} |")
    return lines


def losses(rows):
    """First losses: torch and ORT run the same computation (same seed, same weights)."""
    lines = ["| model / scheme | PyTorch first loss | ONNX Runtime first loss | |torch − ORT| | same (≤ 1e-4) "
             "| tftl first / last loss (streamed) | tftl monolithic first / last |", "|---|---|---|---|---|---|---|"]
    for key, row in sorted(rows.items()):
        t, o = (row.get(p) or {} for p in ("torch", "ort"))
        lt, lo = t.get("first_loss"), o.get("first_loss")
        d = abs(lt - lo) if lt is not None and lo is not None else None

        def fl(r):
            r = r or {}
            return (f"{r['first_loss']:.5f} / {r['loss']:.5f}" if r.get("first_loss") is not None else "—")
        lines.append(f"| {key} | {lt if lt is not None else '—'} | {lo if lo is not None else '—'} | "
                     + (f"{d:.2e} | {'yes' if d <= 1e-4 else 'NO'}" if d is not None else "— | —")
                     + f" | {fl(row.get('tftl'))} | {fl(row.get('tftl_mono'))} |")
    return lines


def headline(rows):
    """The README's table: tftl against the best peer per row, as ratios (< 1: tftl wins)."""
    lines = ["| model / scheme | step CPU time | training memory | process peak RSS | physical-limit multiple "
             "| verdict |", "|---|---|---|---|---|---|"]
    for key, row in sorted(rows.items()):
        name, targets = targets_for(key.split("/")[1])
        r = ratios(row, {"step_cpu_ms": 0, "train_mem": 0, "peak_rss": 0})
        if not r:
            continue
        ok = all(r[m][0] <= b for m, b in targets.items())
        cells = [f"{r[m][0]:.2f}x ({r[m][1]})" for m in ("step_cpu_ms", "train_mem", "peak_rss")]
        missing = [p for p in PEERS if not _ok(row.get(p))]
        partial = f" (without {', '.join(missing)})" if missing else ""
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {limit_multiple(row.get('tftl'))} | "
                     f"{name} {'PASS' if ok else 'MISS'}{partial} |")
    return lines


def limit_multiple(t):
    if not (_ok(t) and t.get("limit") and t.get("train_mem")):
        return "—"
    return f"{t['train_mem'] / t['limit']['total']:.2f}x of {t['limit']['total'] / 1e6:.1f} MB"


def tftl_memory(rows):
    """tftl's streamed path, by phase, against the physical limit's parts."""
    lines = ["| model / scheme | micro-batch | extract phase: CPU ms / peak − import MB | train_features phase: "
             "CPU ms / peak − import MB | training memory MB | physical limit MB (weights + optimizer + saved "
             "activations + trunk pair) | multiple |", "|---|---|---|---|---|---|---|"]
    for key, row in sorted(rows.items()):
        t = row.get("tftl")
        if not (_ok(t) and t.get("extract_phase")):
            continue
        ex, tr, lim = t["extract_phase"], t["train_phase"], t.get("limit") or {}
        parts = " + ".join(f"{lim[k] / 1e6:.1f}" for k in ("weights", "optimizer_state", "saved_activations",
                                                             "trunk_pair") if k in lim)
        lines.append(f"| {key} | {t.get('micro_batch')} | {ex['median_cpu_ms']:.0f} / "
                     f"{(ex['peak_rss'] - t['rss_start']) / 1e6:.0f} | {tr['median_cpu_ms']:.0f} / "
                     f"{(tr['peak_rss'] - t['rss_start']) / 1e6:.0f} | {t['train_mem'] / 1e6:.0f} | "
                     f"{lim.get('total', 0) / 1e6:.1f} = {parts} | {limit_multiple(t)} |")
    return lines


def errors(rows):
    out = []
    for key, row in sorted(rows.items()):
        for fw in FWS:
            err = (row.get(fw) or {}).get("error")
            if err:
                last = [x for x in err.strip().splitlines() if x.strip()][-1:] or ["?"]
                out.append(f"* {key} {PEER_NAMES.get(fw, fw)}: `{last[0].strip()[:300]}`")
            if fw == "ort" and (row.get(fw) or {}).get("torch_imported"):
                out.append(f"* {key} ONNX Runtime: its process imported torch (its RSS is not an app's)")
    return out


def report(results):
    rows = results.get("rows", {})
    err = errors(rows)
    text = ["# tftl against the peers (issue 20)", "",
            f"Generated by `python bench/peers/run_peers.py` from `bench/peers/results.json` "
            f"({results.get('when', '?')}; {results.get('machine', '')}); do not edit by hand. "
            "Batch 8, 224 px, 10 classes, random weights, Adam (ORT: AdamW artifacts), 1 thread (inter-op 1), "
            "a fresh niced process per case, median of the timed steps after the warm-ups "
            "(`bench/probe_common.py`, shared by every probe). Cells: **step CPU ms** (process CPU "
            "time per step: robust to the other jobs on this shared machine) / **training memory MB** "
            "(peak RSS minus the RSS right after importing the runtime) / **step memory MB** (peak "
            "RSS minus the RSS just before the first step) / **peak MB** (the whole process's peak RSS).", "",
            "tftl's step on raw images is its real path (`probe_litert.py --streamed`): the batch's images "
            "streamed through `extract_micro` at the micro-batch into a float32 feature buffer, that "
            "interpreter freed, then `train_features` on its own interpreter; the monolithic `train` "
            "signature is beside it as a reference. Precisions: tftl's frozen weights are stored int8 "
            "(per-channel, DEQUANTIZE at load), its trained weights and optimizer state fp32; PyTorch and "
            "ONNX Runtime hold every weight fp32. The ONNX Runtime process imports onnxruntime and numpy "
            "only (never torch). The TF column runs tftl's own Keras layers, so it is a reference, not a "
            "peer. Peers train tftl's exact parameter set (`torch_net.py`, from tftl's plan).", "",
            *table(rows), "",
            "## Targets (ratio = tftl / the best of PyTorch and ONNX Runtime for that metric)",
            "", "```", *verdicts(rows), "```", "",
            "## tftl against the best peer (< 1.00x: tftl uses less)", "", *headline(rows), "",
            "## Same computation: first losses", "", *losses(rows), "",
            "tftl's weights come from its own Keras initialisers, so its losses are recorded, not compared.", "",
            "## tftl's streamed path by phase, and the physical limit (`tftl.profile.physical_limit`)", "",
            *tftl_memory(rows), ""]
    if err:
        text += ["## Cases a peer could not run", "", *err, ""]
    text += ["Causes of each MISS and the next fix: `bench/peers/CAUSES.md`.", ""]
    with open(REPORT + ".tmp", "w") as f:
        f.write("\n".join(text))
    os.replace(REPORT + ".tmp", REPORT)


def load():
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            return json.load(f)
    return {"rows": {}}


def save_case(key, fw, case, results):
    """Write one measured case into results.json, keeping every other case as it is on disk
    (two runs, e.g. the peers and tftl, can go on at the same time). Returns the merged results."""
    disk = load()
    disk.update({k: v for k, v in results.items() if k != "rows"})
    disk.setdefault("rows", {}).setdefault(key, {})[fw] = case
    with open(RESULTS + f".tmp{os.getpid()}", "w") as f:
        json.dump(disk, f, indent=1, sort_keys=True)
    os.replace(RESULTS + f".tmp{os.getpid()}", RESULTS)
    results["rows"] = disk["rows"]
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(common.MODELS))
    p.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    p.add_argument("--frameworks", nargs="+", default=["tftl", "tftl_mono", *PEERS], choices=FWS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--skip-done", action="store_true",
                   help="skip cases results.json already holds from this probe code (lets two "
                        "workers share a list, or an interrupted run resume)")
    a = p.parse_args()
    results = load()
    if not a.report_only:
        results["when"] = time.strftime("%Y-%m-%d %H:%M")
        results["machine"] = (f"{os.cpu_count()} cores shared with other jobs, load "
                              f"{os.getloadavg()[0]:.1f} at the start; each case's load is in the table")
        for model in a.models:
            for label in a.schemes:
                row = results["rows"].setdefault(f"{model}/{label}", {})
                for fw in a.frameworks:
                    done = load()["rows"].get(f"{model}/{label}", {}).get(fw) or {}
                    if a.skip_done and (done.get("rss_before_step") or "error" in done):
                        continue  # measured by this code (another worker, an earlier run)
                    common.log(f"{model} {label} {fw}")
                    row[fw] = (measure_tftl(model, label, a.steps, a.warmup, streamed=fw == "tftl")
                               if fw.startswith("tftl") else measure_peer(fw, model, label, a.steps, a.warmup))
                    results = save_case(f"{model}/{label}", fw, row[fw], results)
    report(results)
    print("\n".join(verdicts(results["rows"])))


if __name__ == "__main__":
    main()
