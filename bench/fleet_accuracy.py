"""Federated (tftl-fleet simulate) against centralized (tftl-train) accuracy per round, paired by seed.

    python bench/fleet_accuracy.py MODEL.tflite --work /tmp/fleet224 [--seeds 0 1 2]
        [--modes iid dirichlet central] [--clients 5] [--rounds 8] [--local-epochs 1]
        [--tag NAME] [-- extra tftl-fleet simulate flags]

Every (mode, seed) runs in a fresh process (`nice -n 5`, one interpreter thread, as a client
has) into WORK/<tag>/<mode>-s<seed>/; a run whose result file exists is not run again, so an
interrupted sweep continues. Centralized trains `rounds x local-epochs` epochs with the same
model, peak lr, schedule rule (linear warm-up to the peak, cosine to 0 over the whole run)
and seed. The parent reads each child's wall time, CPU time (user + sys, which the shared
2-core box does not inflate) and peak RSS (os.wait4). Writes WORK/<tag>/summary.json and
prints a markdown table: per round, mean +- sample sd over seeds, and the paired per-seed
difference federated - centralized (200 val photos: one point is two photos).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FLOWERS = os.path.join(os.environ.get("TFTL_SHARED", "/work/shared"), "data", "flowers5")


def _command(mode, seed, a, out):
    train, val = os.path.join(a.data, "train"), os.path.join(a.data, "val")
    if mode == "central":
        return ([sys.executable, "-m", "tftl.runtime.cli", "train", a.model, train, "--val", val,
                 "--epochs", str(a.rounds * a.local_epochs), "--seed", str(seed), "--threads", "1",
                 "--output", os.path.join(out, "central.tflite"), "--history", os.path.join(out, "history.json")]
                + a.central_args)
    shard = ["--shard", "iid"] if mode == "iid" else ["--shard", "dirichlet", "--alpha", str(a.alpha)]
    return ([sys.executable, "-m", "tftl.fleet.cli", "simulate", a.model, train, "--clients", str(a.clients),
             "--rounds", str(a.rounds), "--local-epochs", str(a.local_epochs), "--val", val, "--out", out,
             "--seed", str(seed)] + shard + a.extra)


def _accuracies(mode, out, local_epochs) -> list:
    """Val accuracy after each round (federated) or each `local-epochs` epochs (centralized)."""
    with open(os.path.join(out, "history.json"), encoding="utf-8") as f:
        history = json.load(f)
    if mode == "central":
        return [e["val_accuracy"] for e in history["epochs"]][local_epochs - 1::local_epochs]
    return [r["val_accuracy"] for r in history["rounds"] if r["round"] > 0]


def _run(mode, seed, a, root) -> dict:
    out = os.path.join(root, f"{mode}-s{seed}")
    done = os.path.join(out, "run.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    cmd = ["nice", "-n", "5"] + _command(mode, seed, a, out)
    t0 = time.monotonic()
    with open(os.path.join(out, "log.txt"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{mode} seed {seed} failed — see {out}/log.txt")
    run = {"mode": mode, "seed": seed, "command": " ".join(cmd[3:]), "wall_s": round(time.monotonic() - t0, 1),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "val_accuracy": _accuracies(mode, out, a.local_epochs)}
    if mode != "central":
        with open(os.path.join(out, "history.json"), encoding="utf-8") as f:
            rounds = json.load(f)["rounds"]
        run["bytes_per_client"] = rounds[-1]["bytes_per_client"]
    with open(done, "w", encoding="utf-8") as f:
        json.dump(run, f, indent=1)
    print(f"{mode} seed {seed}: {run['val_accuracy'][-1]:.3f}  wall {run['wall_s']} s  cpu {run['cpu_s']} s  "
          f"rss {run['peak_rss_mb']} MB", flush=True)
    return run


def _mean_sd(values) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(runs, modes, seeds, rounds) -> str:
    """Markdown: per round mean ± sd of each mode, then the paired differences to centralized."""
    acc = {(r["mode"], r["seed"]): r["val_accuracy"] for r in runs}
    lines = ["| round | " + " | ".join(str(i + 1) for i in range(rounds)) + " |",
             "| --- |" + " --- |" * rounds]
    for mode in modes:
        cells = [_mean_sd([acc[mode, s][i] for s in seeds]) for i in range(rounds)]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    if "central" in modes:
        for mode in (m for m in modes if m != "central"):
            diffs = [[100 * (acc[mode, s][i] - acc["central", s][i]) for s in seeds] for i in range(rounds)]
            cells = [f"{statistics.mean(d):+.1f} ({', '.join(f'{x:+.1f}' for x in d)})" for d in diffs]
            lines.append(f"| {mode} − central, points (per seed) | " + " | ".join(cells) + " |")
    lines += ["", "| mode | wall s | CPU s (user + sys) | peak RSS MB |", "| --- | --- | --- | --- |"]
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        lines.append(f"| {mode} | " + " | ".join(
            f"{min(r[k] for r in rs):g} - {max(r[k] for r in rs):g}" for k in ("wall_s", "cpu_s", "peak_rss_mb")) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--work", required=True, help="folder for the runs (outside the repository)")
    p.add_argument("--data", default=FLOWERS, help="folder with train/ and val/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", default=["iid", "dirichlet", "central"],
                   choices=("iid", "dirichlet", "central"))
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--tag", default="default", help="subfolder of --work for this configuration")
    a = p.parse_args(argv)
    a.extra, a.central_args = extra, []
    a.model, a.data = os.path.abspath(a.model), os.path.abspath(a.data)
    root = os.path.join(os.path.abspath(a.work), a.tag)
    runs = [_run(mode, seed, a, root) for seed in a.seeds for mode in a.modes]
    summary = {"model": a.model, "clients": a.clients, "rounds": a.rounds, "local_epochs": a.local_epochs,
               "fleet_flags": extra, "runs": runs}
    with open(os.path.join(root, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(table(runs, a.modes, a.seeds, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
