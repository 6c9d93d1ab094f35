"""tftl against the peers a user would pick instead, side by side in one run.

    bash bench/peers/setup.sh                      # the peers' own venv (torch, ONNX Runtime training)
    python bench/peers/run_peers.py [--models mbv3_small mbv2] [--schemes mobiletl-3 ft_all ...]
    python bench/peers/run_peers.py --report-only

Every case is a fresh process: tftl's exported file in LiteRT (`bench/probe_litert.py`,
this interpreter), PyTorch eager and ONNX Runtime training (`probe_peer.py`, the peers'
interpreter: $TFTL_PEERS_PYTHON, default bench/peers/.venv/bin/python) and TensorFlow
`tf.function` (`bench/probe_tf.py`, this interpreter). Batch 8, 224 px, Adam, 1 thread,
3 warm-up + 20 timed steps on one random batch, all timed by `bench/probe_common.py`.
Peers train exactly tftl's parameter set for the scheme (`torch_net.py`; TF: tftl's Keras
model), with their own autodiff; each reports its trainable parameter count.

Writes bench/peers/results.json (rows kept per case, so a run can be resumed or extended)
and bench/peers/RESULTS.md with the issue-13 targets as PASS/MISS:
  T1 mobiletl-3 vs the best peer: step memory <= 0.6x, step CPU <= 0.7x, process peak RSS <= 0.8x
  T2 every other scheme vs the best peer: step CPU <= 1.0x and step memory <= 1.0x
and a headline table of tftl / best peer ratios per row (the README's).
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
PEERS = ("torch", "ort", "tf")
SCHEMES = ("mobiletl-3", "ft_all", "ft_blocks-3", "ft_bias", "ft_norm", "tinytl")  # issue 13's
PEER_NAMES = {"torch": "PyTorch eager", "ort": "ONNX Runtime training", "tf": "TF tf.function"}
T1 = {"step_mem": 0.6, "step_cpu_ms": 0.7, "peak_rss": 0.8}
T2 = {"step_cpu_ms": 1.0, "step_mem": 1.0}
KEEP = ("rss_start", "step_cpu_ms", "step_wall_ms", "rss_before_step", "rss_loaded", "rss_after_first", "peak_rss",
        "step_mem", "trainable_params", "version", "loss", "load_avg_start", "load_avg_end",
        "first_step_ms", "arena_bytes", "variables_bytes", "timed_steps", "warmup_steps")


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
    if "arena" in res:
        res["arena_bytes"] = res["arena"]["extent_bytes"]
    return {k: res[k] for k in KEEP if res.get(k) is not None}


def measure_tftl(model, label, steps, warmup):
    path, _, err = common.ensure_export(model, label)
    if err:
        return {"error": err}
    res, err, _ = common.run_json([os.path.join(BENCH, "probe_litert.py"), path, "--threads", "1",
                                   "--steps", str(steps), "--warmup", str(warmup)])
    out = _keep(res, err)
    if "error" not in out:
        out["graph"] = graph_terms(model, label, path)
    return out


def graph_terms(model, label, path):
    """Where tftl's step memory goes, from the file alone (`bench/tflite_graph.py`): the
    activations saved for the backward pass, the ideal arena of the converter's op order
    (perfect reuse) and what is live at its peak, by kind."""
    import run as bench_run  # bench/run.py: the per-tensor accounting of the train signature
    g = bench_run.graph_row(model, label, path)
    keep = ("saved_bytes", "ideal_peak_bytes", "peak_op_name", "peak_phase", "live_at_peak_by_kind",
            "weight_copy_bytes", "saved_bool_bytes")
    return {k: g[k] for k in keep if k in g}


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
    """{metric: (tftl / best peer, best peer's name)} over the peers measured in a row."""
    tftl = row.get("tftl")
    peers = {p: row[p] for p in PEERS if _ok(row.get(p))}
    if not (_ok(tftl) and peers):
        return {}
    out = {}
    for metric in targets:
        best = min(peers, key=lambda p: peers[p][metric])
        out[metric] = (tftl[metric] / peers[best][metric], best)
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


def _cell(r):
    if not r:
        return "—"
    if "error" in r:
        return "failed (see below)"
    old = "" if r.get("rss_before_step") else " ‡"
    return f"{r['step_cpu_ms']:.0f} / {r['step_mem'] / 1e6:.0f} / {r['peak_rss'] / 1e6:.0f}{old}"


def table(rows):
    lines = ["| model / scheme | trainable params | tftl | " + " | ".join(PEER_NAMES[p] for p in PEERS)
             + " | load avg (min–max) |", "|---|---|---|" + "---|" * len(PEERS) + "---|"]
    for key, row in sorted(rows.items()):
        loads = [v for r in row.values() if isinstance(r, dict)
                 for v in (r.get("load_avg_start"), r.get("load_avg_end")) if v is not None]
        load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
        lines.append(f"| {key} | {params_cell(row)} | {_cell(row.get('tftl'))} | "
                     + " | ".join(_cell(row.get(p)) for p in PEERS) + f" | {load} |")
    return lines


def headline(rows):
    """The README's table: tftl against the best peer per row, as ratios (< 1: tftl wins)."""
    lines = ["| model / scheme | step CPU time | step memory | process peak RSS | verdict |",
             "|---|---|---|---|---|"]
    for key, row in sorted(rows.items()):
        name, targets = targets_for(key.split("/")[1])
        r = ratios(row, {"step_cpu_ms": 0, "step_mem": 0, "peak_rss": 0})
        if not r:
            continue
        ok = all(r[m][0] <= b for m, b in targets.items())
        cells = [f"{r[m][0]:.2f}x ({r[m][1]})" for m in ("step_cpu_ms", "step_mem", "peak_rss")]
        stale = "" if row["tftl"].get("rss_before_step") else " ‡ (tftl: earlier run)"
        missing = [p for p in PEERS if not _ok(row.get(p))]
        partial = f" (without {', '.join(missing)})" if missing else ""
        lines.append(f"| {key} | " + " | ".join(cells)
                     + f" | {name} {'PASS' if ok else 'MISS'}{partial}{stale} |")
    return lines


def tftl_memory(rows):
    """tftl's step memory split: state variables (weights + Adam slots + BN statistics,
    created by the first step), the train signature's arena (measured extent), the rest
    (XNNPACK's packed weights and workspace, allocator); beside the file's own ideal arena
    and saved activations, and the best peer's whole step memory. ONNX Runtime and TF create
    their Adam slots (and hold the weights) before the first step, so the last column is
    tftl's step without its variables against them."""
    lines = ["| model / scheme | tftl step mem | = variables | + arena (graph ideal; saved act) "
             "| + other (XNNPACK, allocator) | best peer step mem | tftl without its variables "
             "/ best peer |", "|---|---|---|---|---|---|---|"]
    for key, row in sorted(rows.items()):
        t = row.get("tftl")
        if not (_ok(t) and "arena_bytes" in t):
            continue
        g = t.get("graph") or {}
        var, arena = t.get("variables_bytes", 0), t["arena_bytes"]
        peers = {p: row[p] for p in PEERS if _ok(row.get(p))}
        best = min(peers, key=lambda p: peers[p]["step_mem"]) if peers else None
        ideal = (f" ({g['ideal_peak_bytes'] / 1e6:.1f}; {g['saved_bytes'] / 1e6:.1f})"
                 if "ideal_peak_bytes" in g else "")
        lines.append(f"| {key} | {t['step_mem'] / 1e6:.1f} | {var / 1e6:.1f} | {arena / 1e6:.1f}{ideal} "
                     f"| {(t['step_mem'] - var - arena) / 1e6:.1f} | "
                     + (f"{peers[best]['step_mem'] / 1e6:.1f} ({best}) | "
                        f"{(t['step_mem'] - var) / peers[best]['step_mem']:.2f}x |" if best else "— | — |"))
    return lines


def job_memory(rows):
    """Peak RSS minus the RSS once the framework is imported, before the model exists:
    weights, training state and the step together. Not a target; it shows where each
    framework allocates its state (before the first step or during it), which moves
    memory in and out of "step mem"."""
    lines = ["| model / scheme | tftl | " + " | ".join(PEER_NAMES[p] for p in PEERS) + " |",
             "|---|---|" + "---|" * len(PEERS)]
    for key, row in sorted(rows.items()):
        cells = [f"{(r['peak_rss'] - r['rss_start']) / 1e6:.0f}" if _ok(r) and r.get("rss_start")
                 else "—" for r in (row.get(fw) for fw in ("tftl", *PEERS))]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def errors(rows):
    out = []
    for key, row in sorted(rows.items()):
        for fw in ("tftl", *PEERS):
            err = (row.get(fw) or {}).get("error")
            if err:
                last = [x for x in err.strip().splitlines() if x.strip()][-1:] or ["?"]
                out.append(f"* {key} {PEER_NAMES.get(fw, fw)}: `{last[0].strip()[:300]}`")
    return out


def report(results):
    rows = results.get("rows", {})
    err = errors(rows)
    text = ["# tftl against the peers (issue 13)", "",
            f"Generated by `python bench/peers/run_peers.py` from `bench/peers/results.json` "
            f"({results.get('when', '?')}; {results.get('machine', '')}); do not edit by hand. "
            "Batch 8, 224 px, 10 classes, random weights, Adam, 1 thread (inter-op 1), a fresh "
            "niced process per case, median of 20 steps after 3 warm-ups "
            "(`bench/probe_common.py`, shared by every probe). Cells: **step CPU ms** (process "
            "CPU time per step: robust to the other jobs on this shared machine) / **step mem MB** "
            "(peak RSS minus the RSS just before the first step) / **peak MB** (the whole "
            "process's peak RSS). Peers train tftl's exact parameter set per scheme: PyTorch "
            "eager and ONNX Runtime training (`torch_net.py`, built from tftl's plan; ORT from "
            "its ONNX export + `generate_artifacts`, AdamW), TensorFlow `tf.function` of "
            "tftl's reference train step on the Keras model (`bench/probe_tf.py`).", "",
            *table(rows), "",
            "‡ measured by the previous run of this benchmark (earlier code; its step mem "
            "counted the input arrays too): not yet remeasured.", "",
            "## Targets (ratio = tftl / the best peer of that metric; T1: mobiletl-3, T2: the rest)",
            "", "```", *verdicts(rows), "```", "",
            "## tftl against the best peer (< 1.00x: tftl uses less)", "", *headline(rows), "",
            "## Where tftl's step memory goes (MB)", "", *tftl_memory(rows), "",
            "## Job memory: peak RSS minus RSS after the imports (MB; not a target)", "",
            *job_memory(rows), ""]
    if err:
        text += ["## Cases a peer could not run", "", *err, ""]
    text += ["Causes of each MISS and the next fix: `bench/NOTES.md`, section *Issue 13*.", ""]
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
    p.add_argument("--frameworks", nargs="+", default=["tftl", *PEERS])
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
                    row[fw] = (measure_tftl(model, label, a.steps, a.warmup) if fw == "tftl"
                               else measure_peer(fw, model, label, a.steps, a.warmup))
                    results = save_case(f"{model}/{label}", fw, row[fw], results)
    report(results)
    print("\n".join(verdicts(results["rows"])))


if __name__ == "__main__":
    main()
