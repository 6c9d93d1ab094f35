"""tftl against the peers a user would pick instead, side by side in one run.

    bash bench/peers/setup.sh                      # the peers' own venv (torch, ONNX Runtime training)
    python bench/peers/run_peers.py [--models mbv3_small mbv2] [--schemes mobiletl-3 ft_all ...]
    python bench/peers/run_peers.py --report-only

Every case is a fresh process: tftl's exported file in LiteRT (`bench/probe_litert.py`,
this interpreter), PyTorch eager and ONNX Runtime training (`probe_peer.py`, the peers'
interpreter: $TFTL_PEERS_PYTHON, default bench/peers/.venv/bin/python). Batch 8, 224 px,
Adam, 1 thread, 3 warm-up + 20 timed steps on one random batch. Peers train exactly tftl's
parameter set for the scheme (`torch_net.py`), with their own autodiff.

Writes bench/peers/results.json (rows kept per case, so a run can be resumed or extended)
and bench/peers/RESULTS.md with the issue-13 targets as PASS/MISS:
  T1 mobiletl-3 vs the best peer: step memory <= 0.6x, step CPU <= 0.7x, process peak RSS <= 0.8x
  T2 every other scheme vs the best peer: step CPU <= 1.0x and step memory <= 1.0x
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
PEERS = ("torch", "ort")
T1 = {"step_mem": 0.6, "step_cpu_ms": 0.7, "peak_rss": 0.8}
T2 = {"step_cpu_ms": 1.0, "step_mem": 1.0}


def _run(python, args, timeout=3600):
    old = common.PY
    common.PY = python
    try:
        return common.run_json(args, timeout=timeout)
    finally:
        common.PY = old


def measure_tftl(model, label, steps, warmup):
    path, _, err = common.ensure_export(model, label)
    if err:
        return {"error": err}
    res, err, _ = common.run_json([os.path.join(BENCH, "probe_litert.py"), path, "--threads", "1",
                                   "--steps", str(steps), "--warmup", str(warmup)])
    if res is None:
        return {"error": err}
    return {"step_cpu_ms": res["median_cpu_ms"], "step_wall_ms": res["median_ms"],
            "rss_loaded": res["rss_loaded"], "peak_rss": res["peak_rss"],
            "step_mem": res["peak_rss"] - res["rss_loaded"], "load_avg": res.get("load_avg_end")}


def measure_peer(peer, model, label, steps, warmup):
    scheme, blocks = common.parse_label(label)
    probe = os.path.join(HERE, "probe_peer.py")
    common_args = ["--model", model, "--scheme", scheme, "--blocks", str(blocks),
                   "--steps", str(steps), "--warmup", str(warmup)]
    if peer == "ort":
        folder = os.path.join(common.CACHE, f"ort_{model}_{label}")
        res, err, _ = _run(PEERS_PY, [probe, "prepare-ort", *common_args, "--dir", folder])
        if res is None:
            return {"error": err}
        res, err, _ = _run(PEERS_PY, [probe, "ort", "--dir", folder, "--steps", str(steps),
                                      "--warmup", str(warmup)])
    else:
        res, err, _ = _run(PEERS_PY, [probe, "torch", *common_args])
    if res is None:
        return {"error": err}
    keep = ("step_cpu_ms", "step_wall_ms", "rss_loaded", "peak_rss", "step_mem", "trainable_params",
            "version", "loss")
    return {k: res[k] for k in keep if k in res}


def verdicts(rows):
    """PASS/MISS lines per (model, scheme) against the best peer of each metric."""
    out = []
    for key, row in sorted(rows.items()):
        model, label = key.split("/")
        tftl = row.get("tftl", {})
        peers = {p: row[p] for p in PEERS if p in row and "error" not in row[p]}
        if "error" in tftl or not tftl or not peers:
            out.append(f"n/a   {key}: tftl or every peer missing")
            continue
        targets = T1 if label == "mobiletl-3" else T2
        parts, ok = [], True
        for metric, bound in targets.items():
            best_peer = min(peers, key=lambda p: peers[p][metric])
            ratio = tftl[metric] / peers[best_peer][metric]
            ok &= ratio <= bound
            parts.append(f"{metric} {ratio:.2f}x of {best_peer} (<= {bound})")
        out.append(f"{'PASS' if ok else 'MISS'}  {'T1' if label == 'mobiletl-3' else 'T2'} {key}: "
                   + "; ".join(parts))
    return out


def table(rows):
    head = ("| model / scheme | trainable params (tftl = peers) | tftl step CPU ms / step mem MB / peak MB "
            "| PyTorch eager | ONNX Runtime training |")
    lines = [head, "|---|---|---|---|---|"]

    def cell(r):
        if not r or "error" in r:
            return "failed" if r else "—"
        return f"{r['step_cpu_ms']:.0f} / {r['step_mem'] / 1e6:.0f} / {r['peak_rss'] / 1e6:.0f}"

    for key, row in sorted(rows.items()):
        params = next((row[p].get("trainable_params") for p in PEERS if p in row and "trainable_params" in row[p]), "?")
        lines.append(f"| {key} | {params:,} | {cell(row.get('tftl'))} | {cell(row.get('torch'))} | "
                     f"{cell(row.get('ort'))} |" if isinstance(params, int) else
                     f"| {key} | ? | {cell(row.get('tftl'))} | {cell(row.get('torch'))} | {cell(row.get('ort'))} |")
    return lines


def report(results):
    rows = results.get("rows", {})
    text = ["# tftl against the peers (issue 13)", "",
            f"Generated by `python bench/peers/run_peers.py` from `bench/peers/results.json` "
            f"({results.get('when', '?')}; {results.get('machine', '')}). Batch 8, 224 px, Adam, 1 thread, "
            "fresh process per case, median of 20 steps after 3 warm-ups; CPU = process CPU time per step; "
            "step mem = peak RSS minus RSS before the first step; peak = the whole process's peak RSS. "
            "Peers train tftl's exact parameter set per scheme.", "",
            *table(rows), "", "```", *verdicts(rows), "```", ""]
    with open(REPORT, "w") as f:
        f.write("\n".join(text))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(common.MODELS))
    p.add_argument("--schemes", nargs="+", default=list(common.SCHEME_LABELS))
    p.add_argument("--frameworks", nargs="+", default=["tftl", *PEERS])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    results = {"rows": {}}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    if not a.report_only:
        results["when"] = time.strftime("%Y-%m-%d %H:%M")
        results["machine"] = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"
        for model in a.models:
            for label in a.schemes:
                row = results["rows"].setdefault(f"{model}/{label}", {})
                for fw in a.frameworks:
                    common.log(f"{model} {label} {fw}")
                    row[fw] = (measure_tftl(model, label, a.steps, a.warmup) if fw == "tftl"
                               else measure_peer(fw, model, label, a.steps, a.warmup))
                    with open(RESULTS + ".tmp", "w") as f:
                        json.dump(results, f, indent=1, sort_keys=True)
                    os.replace(RESULTS + ".tmp", RESULTS)
    report(results)
    print("\n".join(verdicts(results["rows"])))


if __name__ == "__main__":
    main()
