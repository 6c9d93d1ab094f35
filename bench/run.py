"""tftl benchmark: analytical vs measured training memory, LiteRT vs TensorFlow step time,
trainer-CLI epoch time and accuracy; writes bench/results.json, bench/RESULTS.md and plots.

    python bench/run.py                 # everything, full settings (long)
    python bench/run.py --quick         # the same, fewer steps / seeds / epochs (< ~15 min warm)
    python bench/run.py --part memory   # only memory + latency (the core); other sections kept
    python bench/run.py --part train    # only the trainer-CLI hooks (epoch time, accuracy)
    python bench/run.py --report-only   # regenerate RESULTS.md + plots from results.json

Every measurement runs in a fresh, niced subprocess (one at a time): exports
(bench/export_one.py, cached under bench/.cache/ keyed by the graph sources), LiteRT probes
(bench/probe_litert.py: no TensorFlow in the process), TensorFlow probes (bench/probe_tf.py).
Results are saved after every row, so an interrupted run keeps what it measured; a --part
run replaces only its own section of results.json.
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import fmt  # noqa: E402
import report  # noqa: E402

RESULTS = os.path.join(common.BENCH, "results.json")
TARGET_MODEL = "mbv3_small"
DIG_LABELS = ("ft_all", "ft_blocks-3", "mobiletl-3")
QUICK_ACC = ("ft_last", "ft_bias", "ft_blocks-3", "mobiletl-3")  # the fast ones: < 1 min each


def load_results():
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            return json.load(f)
    return {}


OWNED = set()  # the sections of results.json this process measures


def save_results(res):
    """Write this process's sections into results.json, keeping the others as they are on
    disk: a --part memory and a --part train run can go on at the same time."""
    disk = load_results()
    disk.update({k: res[k] for k in OWNED if k in res})
    tmp = RESULTS + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(disk, f, indent=1)
    os.replace(tmp, RESULTS)


def environment():
    import numpy
    env = dict(python=platform.python_version(), machine=platform.machine(),
               cpus=os.cpu_count(), numpy=numpy.__version__,
               started=time.strftime("%Y-%m-%d %H:%M:%S"), load_avg_start=os.getloadavg())
    try:
        from importlib.metadata import version
        for pkg in ("ai-edge-litert", "tensorflow-cpu", "tensorflow", "keras"):
            try:
                env[pkg] = version(pkg)
            except Exception:
                pass
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            env["mem_total_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return env


def layer_blocks(prof):
    return {L["name"]: L["block"] for L in prof["layers"]}


def trained_blocks(model, label):
    from tftl import archs
    scheme, blocks = common.parse_label(label)
    n = archs.num_blocks(model)
    if scheme in ("ft_blocks", "mobiletl"):
        return list(range(n - blocks, n))
    return list(range(n))


def probe_litert(path, threads, steps, warmup, extra=()):
    args = [os.path.join(common.BENCH, "probe_litert.py"), path, "--threads", str(threads),
            "--steps", str(steps), "--warmup", str(warmup)] + list(extra)
    load = os.getloadavg()[0]
    r, err, wall = common.run_json(args)
    if r is None:
        return dict(error=err)
    r["load_avg"] = load
    r["wall_s"] = round(wall, 1)
    return r


def probe_tf(model, label, threads, steps, warmup):
    scheme, blocks = common.parse_label(label)
    args = [os.path.join(common.BENCH, "probe_tf.py"), "--model", model, "--scheme", scheme,
            "--blocks", str(blocks), "--threads", str(threads), "--steps", str(steps),
            "--warmup", str(warmup)]
    load = os.getloadavg()[0]
    r, err, wall = common.run_json(args)
    if r is None:
        return dict(error=err)
    r["load_avg"] = load
    r["wall_s"] = round(wall, 1)
    return r


def _compact_profile(p, model, label):
    keep = ("activation_bytes", "peak_activation_bytes", "peak_layer", "trainable_params",
            "trainable_param_bytes", "frozen_params", "frozen_param_bytes",
            "optimizer_state_bytes", "gradient_bytes", "peak_bytes", "forward_macs",
            "forward_flops", "backward_flops")
    out = {k: p[k] for k in keep}
    tb = set(trained_blocks(model, label))
    out["saved_by_block"] = {}
    for L in p["layers"]:
        key = "head" if L["block"] is None else str(L["block"])
        if L["saved_bytes"]:
            out["saved_by_block"][key] = out["saved_by_block"].get(key, 0) + L["saved_bytes"]
    out["saved_trained_blocks"] = sum(v for k, v in out["saved_by_block"].items()
                                      if k != "head" and int(k) in tb)
    return out


def memory_latency(a, res, src):
    """Part 1-3: analytical vs measured memory, LiteRT (1/2 threads) and TF step time."""
    name = "memory"
    old = res.get("memory") or {}
    if (a.quick and not a.overwrite_full and old.get("mode") == "full"
            and old.get("source_hash") == src):
        # A quick check never replaces full measurements of the same code.
        name = "memory_quick"
        common.log("full memory results of this code exist: quick results go to "
                   "results.json['memory_quick'] (--overwrite-full to replace)")
        old = res.get(name) or {}
    if old.get("source_hash") != src or old.get("mode") != ("quick" if a.quick else "full"):
        old = {}  # other code or settings: start afresh
    section = res[name] = old
    OWNED.add(name)
    section.update(mode="quick" if a.quick else "full", environment=environment(),
                   steps=a.steps, warmup=a.warmup,
                   threads=a.threads, batch=8, image_size=224, num_classes=10,
                   weights="random (weights=None)", quantize="int8", source_hash=src,
                   started=time.strftime("%Y-%m-%d %H:%M:%S"))
    rows = section.setdefault("rows", {})
    t0 = time.time()
    for model in a.models:
        for label in a.schemes:
            key = f"{model}/{label}"
            if a.resume and fmt.lite(rows.get(key) or {}):
                common.log(f"{key}: kept from the interrupted run (--resume)")
                continue
            scheme, blocks = common.parse_label(label)
            path, exp_s, err = common.ensure_export(model, label, src=src)
            row = dict(model=model, scheme=label, file=os.path.relpath(path, common.ROOT)
                       if path else None)
            if err:
                row["error"] = err
                rows[key] = row
                save_results(res)
                continue
            row["file_bytes"] = os.path.getsize(path)
            row["analytical"] = analytical(model, label)
            row["graph"] = graph_row(model, label, path)
            row["litert"] = {}
            for t in a.threads:
                common.log(f"LiteRT {key} threads={t}")
                r = probe_litert(path, t, a.steps, a.warmup)
                row["litert"][str(t)] = r
                _say(r)
            if label in a.tf_schemes and model in a.tf_models:
                row["tf"] = {}
                for t in a.tf_threads:
                    common.log(f"TensorFlow {key} threads={t}")
                    r = probe_tf(model, label, t, a.steps, a.warmup)
                    row["tf"][str(t)] = r
                    _say(r)
            if label in a.dig_schemes and model in a.dig_models:
                common.log(f"LiteRT {key} dig: signatures + no default delegates (1 thread)")
                row["decompose"] = probe_litert(path, 1, a.dig_steps, 2, ["--decompose",
                                                                            "--top", "5"])
                row["no_delegates"] = probe_litert(path, 1, a.dig_steps, 2,
                                                   ["--resolver", "no_delegates", "--top", "5"])
                _say(row["decompose"], "decompose")
                _say(row["no_delegates"], "no delegates")
                common.log(f"LiteRT {key} op-level CPU time (one-op models, 1 thread)")
                op, err, wall = common.run_json([os.path.join(common.BENCH, "op_profile.py"),
                                                 path, "--reps", str(a.op_reps)])
                row["op_profile"] = op if op else dict(error=err)
                if op:
                    common.log(f"  sum {op['total_ms']:.0f} ms: " + ", ".join(
                        f"{k} {v['ms']:.0f}" for k, v in list(op["by_type"].items())[:6]))
            rows[key] = row
            save_results(res)
    section["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    section["seconds"] = round(time.time() - t0)
    save_results(res)


def graph_row(model, label, path):
    """Per-tensor accounting of the train signature of an exported file (static)."""
    from tftl import profile
    from tftl.runtime import modelfile

    import tflite_graph
    scheme, blocks = common.parse_label(label)
    prof = profile.profile(model, scheme, blocks, 8, 224, 10)
    g = tflite_graph.analyse(modelfile.read_model(path).flatbuffer, "train", layer_blocks(prof))
    tb = set(trained_blocks(model, label))
    g["saved_trained_blocks"] = sum(v for k, v in g["saved_by_block"].items()
                                    if k not in ("head", "unattributed") and int(k) in tb)
    return g


def analytical(model, label):
    """The profiler's prediction for a row: masks counted as the graph stores them (bool,
    8 bits; `bool_masks=True`), plus the peak under TinyTL's 1-bit rule for reference."""
    from tftl import profile
    scheme, blocks = common.parse_label(label)
    out = _compact_profile(profile.profile(model, scheme, blocks, 8, 224, 10, bool_masks=True),
                           model, label)
    out["peak_bytes_1bit_masks"] = profile.profile(model, scheme, blocks, 8, 224, 10)["peak_bytes"]
    return out


def regraph(res):
    """Recompute the analytical rows and the static graph accounting (no probes)."""
    for name in ("memory", "memory_quick"):
        for row in (res.get(name) or {}).get("rows", {}).values():
            if row.get("model") and row.get("scheme"):
                row["analytical"] = analytical(row["model"], row["scheme"])
            path = os.path.join(common.ROOT, row.get("file") or "")
            if row.get("file") and os.path.exists(path):
                row["graph"] = graph_row(row["model"], row["scheme"], path)


def _say(r, what=""):
    if "error" in r:
        common.log(f"  {what} ERROR {r['error'].splitlines()[-1] if r['error'] else ''}")
        return
    msg = (f"  {what} peak RSS {r['peak_rss'] / common.MB:.0f} MB (loaded "
           f"{r['rss_loaded'] / common.MB:.0f} MB), median step {r.get('median_ms', 0):.0f} ms")
    if "arena" in r:
        msg += f", arena {r['arena']['extent_bytes'] / common.MB:.1f} MB"
    if "decompose_ms" in r:
        msg += ", " + ", ".join(f"{k} {v:.0f} ms" for k, v in r["decompose_ms"].items())
    common.log(msg)


def train_part(a, res, src):
    """Part 5: the trainer-CLI hooks (skipped with a message when the CLI is missing)."""
    import train_cli
    t0 = time.time()
    ok, why = train_cli.available()
    old = res.get("train_cli") or {}
    if a.quick and not a.overwrite_full and old.get("mode") == "full" and old.get("accuracy") \
            and old.get("source_hash") == src:
        common.log("full trainer-CLI results of this code exist: quick results go to "
                   "results.json['train_cli_quick'] (--overwrite-full to replace)")
        key = "train_cli_quick"
    else:
        key = "train_cli"
    section = dict(source_hash=src, mode="quick" if a.quick else "full", available=ok, environment=environment(),
                   epochs=a.epochs, seeds=a.seeds, schemes=a.acc_schemes, models=a.acc_models,
                   started=time.strftime("%Y-%m-%d %H:%M:%S"))
    res[key] = section
    OWNED.add(key)
    if not ok:
        section["skipped"] = (f"trainer CLI unavailable (python -m tftl.runtime.cli train --help: "
                              f"{why}); rerun bench/run.py --part train when it exists")
        common.log("SKIP " + section["skipped"])
        save_results(res)
        return
    if not os.path.isdir(train_cli.FLOWERS):
        section["skipped"] = f"no flowers5 at {train_cli.FLOWERS}"
        common.log("SKIP " + section["skipped"])
        save_results(res)
        return
    # Same code and budget: keep what an earlier run measured that this one does not
    # (e.g. slow schemes run later with fewer seeds); seeds are recorded per row.
    same = old.get("source_hash") == src and old.get("epochs") == a.epochs and key == "train_cli"
    if same and "error" not in (old.get("epoch_time") or {"error": 1}):
        section["epoch_time"] = old["epoch_time"]
    else:
        section["epoch_time"] = train_cli.epoch_seconds(src, epochs=a.epochs, seed=a.seeds[0])
    save_results(res)
    reuse = {}
    et = section["epoch_time"]
    if "cache" in et and "error" not in et["cache"]:
        reuse[(et["model"], et["scheme"], a.epochs, a.seeds[0])] = et["cache"]
    if same:  # runs of the same code, budget and seed are not repeated
        for r in old.get("accuracy") or []:
            for x in r.get("runs", []):
                if "error" not in x and x.get("seed") is not None:
                    reuse.setdefault((r["model"], r["scheme"], a.epochs, x["seed"]), x)
    measuring = {(m, l) for m in a.acc_models for l in a.acc_schemes}
    kept = [r for r in (old.get("accuracy") or []) if same and (r["model"], r["scheme"]) not in measuring]
    if kept:  # seeds and schemes now differ by row: each row lists its runs
        section["seeds"] = sorted(set(a.seeds) | set(old.get("seeds") or []))
        section["schemes"] = list(dict.fromkeys([r["scheme"] for r in kept] + a.acc_schemes))
        section["seeds_note"] = "seeds per row: see each row's runs"

    def on_row(rows):
        section["accuracy"] = kept + rows
        save_results(res)

    section["accuracy"] = kept + train_cli.accuracy(
        src, models=a.acc_models, labels=a.acc_schemes, seeds=a.seeds, epochs=a.epochs,
        reuse=reuse, on_row=on_row)
    section["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    section["seconds"] = round(time.time() - t0)
    save_results(res)


def cache_part(a, res, src):
    """tftl-train seconds per epoch with and without --cache-features, per scheme (mbv2):
    the speed-up is bounded by the share of the step the cache removes (the trunk). Beside
    the FLOP bound, the same file's `train` and `train_features` signatures are timed in one
    probe (--decompose): their ratio is the bound the kernels allow, so a MISS splits into
    kernels (step bound below the FLOP bound) and trainer (speed-up below the step bound)."""
    import train_cli
    labels = [x for x in a.cache_schemes.split(",") if x]
    settings = dict(source_hash=src, epochs=a.epochs, per_class=a.cache_subset, weights=a.cache_weights)
    old = load_results().get("cache_epochs") or {}
    kept = [r for r in old.get("rows", []) if r.get("scheme") not in labels
            and all(old.get(k) == v for k, v in settings.items())]  # same code and settings
    section = res["cache_epochs"] = dict(settings, started=time.strftime("%Y-%m-%d %H:%M:%S"),
                                         rows=kept)
    OWNED.add("cache_epochs")
    random = a.cache_weights == "random"
    for label in labels:
        row = train_cli.epoch_seconds(src, model="mbv2", label=label, epochs=a.epochs,
                                      seed=a.seeds[0], per_class=a.cache_subset,
                                      random_weights=random)
        row.update(flop_split("mbv2", label, 10 if random else len(train_cli.flowers_labels())))
        path = common.export_path("mbv2", label, src=src) if random else None
        if path and os.path.exists(path):
            common.log(f"LiteRT mbv2/{label}: train vs train_features step (--decompose)")
            d = probe_litert(path, 1, 3, 1, ["--decompose", "--top", "3"])
            row["decompose_cpu_ms"] = d.get("decompose_cpu_ms")
            row["decompose_error"] = d.get("error")
        section["rows"].append(row)
        save_results(res)
    section["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save_results(res)


def flop_split(model, label, classes):
    """FLOPs the cache removes from a step (the frozen trunk's forward: every layer before
    the first one that trains or passes a gradient) and the FLOPs it leaves (the rest,
    forward + backward), from the profiler."""
    from tftl import profile
    scheme, blocks = common.parse_label(label)
    layers = profile.profile(model, scheme, blocks, 8, 224, classes)["layers"]
    first = next(i for i, l in enumerate(layers) if l["trains"] or l["needs_input_grad"])
    return dict(trunk_forward_flops=sum(l["forward_flops"] for l in layers[:first]),
                trained_flops=sum(l["forward_flops"] + l["backward_flops"] for l in layers[first:]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer steps, TF only for the target schemes at 1 thread, 1 seed / "
                        "1 epoch / 4 schemes for accuracy")
    p.add_argument("--part", choices=("all", "memory", "train", "cache"), default="all",
                   help="cache: tftl-train epoch time with/without the feature cache for "
                        "--cache-schemes (part of 'all'; 'train' measures mobiletl-3 only)")
    p.add_argument("--cache-schemes", default=",".join(common.SCHEME_LABELS))
    p.add_argument("--cache-subset", type=int, default=0,
                   help="cache part: first N training photos per class of flowers5 (N/2 for "
                        "validation; 0: all)")
    p.add_argument("--cache-weights", choices=("imagenet", "random"), default="imagenet",
                   help="cache part: random = the step probes' random-weights exports (no new "
                        "export; time only)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="memory part: keep rows an interrupted run of the same code measured")
    p.add_argument("--regraph", action="store_true",
                   help="with --report-only: recompute the static per-tensor accounting of the "
                        "stored rows from the cached .tflite files first")
    p.add_argument("--overwrite-full", action="store_true",
                   help="let --quick replace full-mode memory results of the same code")
    p.add_argument("--models", default=",".join(common.MODELS))
    p.add_argument("--schemes", default=",".join(common.SCHEME_LABELS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--steps", type=int, default=None, help="timed steps (20; quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (3; quick 2)")
    p.add_argument("--tf-schemes", default=None,
                   help="schemes also run in TensorFlow (all; quick: ft_all,ft_blocks-3,mobiletl-3)")
    p.add_argument("--tf-models", default=None, help="(both; quick: mbv3_small)")
    p.add_argument("--tf-threads", default=None, help="(1,2; quick: 1)")
    p.add_argument("--dig-schemes", default=",".join(DIG_LABELS),
                   help="schemes timed per signature and without XNNPACK")
    p.add_argument("--dig-models", default=None, help="(both; quick: mbv3_small)")
    p.add_argument("--seeds", default=None, help="accuracy seeds (0,1,2; quick 0)")
    p.add_argument("--epochs", type=int, default=None, help="tftl-train epochs (5; quick 1)")
    p.add_argument("--acc-models", default="mbv2,efficientnet_lite0")
    p.add_argument("--acc-schemes", default=None,
                   help="accuracy schemes (all 7; quick " + ",".join(QUICK_ACC) + ")")
    a = p.parse_args(argv)
    q = a.quick
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    a.models, a.schemes = split(a.models), split(a.schemes)
    a.threads = [int(x) for x in split(a.threads)]
    a.steps = a.steps if a.steps is not None else (5 if q else 20)
    a.warmup = a.warmup if a.warmup is not None else (2 if q else 3)
    a.dig_steps = 3 if q else 10
    a.op_reps = 3 if q else 5
    a.tf_schemes = split(a.tf_schemes) if a.tf_schemes else (list(DIG_LABELS) if q else
                                                             list(a.schemes))
    a.tf_models = split(a.tf_models or ("mbv3_small" if q else ",".join(a.models)))
    a.tf_threads = [int(x) for x in split(a.tf_threads or ("1" if q else "1,2"))]
    a.dig_schemes = split(a.dig_schemes)
    a.dig_models = split(a.dig_models or ("mbv3_small" if q else ",".join(a.models)))
    a.seeds = [int(x) for x in split(a.seeds or ("0" if q else "0,1,2"))]
    a.epochs = a.epochs or (1 if q else 5)
    a.acc_models = split(a.acc_models)
    a.acc_schemes = split(a.acc_schemes or (",".join(QUICK_ACC) if q else
                                            ",".join(common.SCHEME_LABELS)))

    res = load_results()
    if a.report_only and a.regraph:
        regraph(res)
        OWNED.update(k for k in ("memory", "memory_quick") if k in res)
        save_results(res)
    if not a.report_only:
        t0 = time.time()
        src = common.source_hash()
        if a.part in ("all", "memory"):
            memory_latency(a, res, src)
        if a.part in ("all", "train"):
            train_part(a, res, src)
        if a.part in ("all", "cache"):
            cache_part(a, res, src)
        res["runs"] = load_results().get("runs", []) + [dict(
            command="python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            finished=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.time() - t0))]
        OWNED.add("runs")
        save_results(res)
        res = load_results()  # with the sections another run may have written meanwhile
    lines = report.write(res)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
