"""One LiteRT measurement in a FRESH process (no TensorFlow imported): memory and step time.

    python bench/probe_litert.py MODEL.tflite [--threads 1] [--steps 20] [--warmup 3]
        [--signature train] [--resolver auto|no_delegates] [--top 15] [--decompose]

Prints one JSON line. RSS numbers are in bytes:
  rss_start        after importing numpy + ai_edge_litert
  rss_loaded       after reading the file and creating the interpreter + signature runner,
                   before the first step (the baseline the step's increment is measured from)
  rss_after_first  after the first step (the arena is touched, variables initialised)
  rss_end          after all steps
  peak_rss         resource.getrusage(RUSAGE_SELF).ru_maxrss of this process
  step_ms          every timed step; median_ms / min_ms / p90_ms
  arena            per-tensor accounting of the signature's subgraph from the live interpreter
                   (data pointers of every tensor): the arena extent (bytes between the lowest
                   and highest address of the arena tensors: the real arena size), the sum of
                   their sizes (no sharing: the upper bound), the largest tensors
  variables_bytes  resource variables (trainable state + optimizer slots), from `restore`
--streamed measures tftl's real training path instead of one signature: a first interpreter
streams the batch's images through `extract_micro` (at the file's micro_batch; `extract` at
the batch for files without it) into a float32 feature buffer, each interpreter built from
its own signatures only (`tftl.runtime.subset`, as tftl-train does), `--warmup` + `--steps` times;
it is freed (and the heap trimmed), then a second interpreter runs `train_features` on the
buffer. step CPU = extract's + train_features' medians; phases' own figures under `extract_phase`
and `train_phase`; the process peak covers both.
--decompose also times train / infer / extract / train_features / infer_features round-robin
(`--steps` rounds after one untimed round): the frozen trunk's forward (extract) and the
trainable part (train_features) of one train step. Its RSS includes all those arenas.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from probe_common import add_step_args, finish, peak_rss, rss_now, run_steps  # noqa: E402


def make_inputs(runner_details, rng, num_classes, batch):
    import numpy as np
    feeds = {}
    for name, d in runner_details.items():
        shape, dtype = tuple(d["shape"]), d["dtype"]
        if name == "labels":
            feeds[name] = rng.integers(0, num_classes, size=shape).astype(dtype)
        elif name == "learning_rate":
            feeds[name] = np.full(shape, 1e-3, dtype)  # f32[1] (tftl-3) or f32[] (tftl-2)
        elif name == "sample_weight":
            feeds[name] = np.ones(shape, dtype)
        elif name == "images":
            feeds[name] = (rng.random(shape, dtype=np.float32) * 255.0).astype(dtype)
        else:  # features
            feeds[name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def arena_accounting(interp, subgraph, flatbuffer, top=15):
    """Addresses and sizes of every allocated tensor of one subgraph (after an invoke)."""
    import numpy as np
    w = interp._interpreter
    fb_lo = np.frombuffer(flatbuffer, np.uint8).__array_interface__["data"][0]
    fb_hi = fb_lo + len(flatbuffer)
    tensors = []
    for i in range(w.NumTensors(subgraph)):
        try:
            dtype = w.TensorType(i, subgraph)
        except ValueError:  # untyped temporaries
            continue
        if dtype is np.object_:  # resource / variant handles
            continue
        try:
            a = w.tensor(interp, i, subgraph)
        except ValueError:  # no data (never allocated)
            continue
        ptr = a.__array_interface__["data"][0]
        if a.nbytes == 0 or fb_lo <= ptr < fb_hi:  # constants live in the model buffer
            continue
        tensors.append((ptr, int(a.nbytes), i, w.TensorName(i, subgraph), str(a.dtype),
                        [int(x) for x in a.shape]))
        del a
    tensors.sort()
    # Contiguous clusters of addresses: the arena is the one with the largest extent; small
    # clusters are persistent allocations (scalars, small per-op buffers).
    groups, cur, end = [], [], 0
    for t in tensors:
        if cur and t[0] - end > (1 << 16):
            groups.append(cur)
            cur, end = [], 0
        cur.append(t)
        end = max(end, t[0] + t[1])
    if cur:
        groups.append(cur)

    def extent(g):
        return max(t[0] + t[1] for t in g) - g[0][0]

    groups.sort(key=extent, reverse=True)
    arena = groups[0] if groups else []
    others = [t for g in groups[1:] for t in g]
    n_named = len([t for t in arena if t[3]])
    largest = sorted(arena, key=lambda t: -t[1])[:top]
    return dict(
        extent_bytes=extent(arena) if arena else 0,
        tensors=len(arena), named_tensors=n_named,
        sum_bytes=sum(t[1] for t in arena),
        temporaries_bytes=sum(t[1] for t in arena if not t[3]),
        largest_temporary_bytes=max([t[1] for t in arena if not t[3]] or [0]),
        other_allocations_bytes=sum(t[1] for t in others),
        largest=[dict(name=t[3] or f"<temporary #{t[2]}>", bytes=t[1], dtype=t[4], shape=t[5],
                      offset=t[0] - arena[0][0]) for t in largest],
    )


def signature_io(interp, key):
    """{input name: {shape, dtype}} of a signature without allocating it."""
    sig = interp._get_full_signature_list()[key]
    sub = interp._interpreter.GetSubgraphIndexFromSignature(key)
    out = {}
    for name, idx in sig["inputs"].items():
        d = interp._get_tensor_details(idx, sub)
        out[name] = dict(shape=[int(x) for x in d["shape"]], dtype=d["dtype"])
    return out


def _cut(mf, names):
    """The flatbuffer of signatures `names` only, as tftl-train's interpreters load it."""
    from tftl.runtime import interpreter as rt
    from tftl.runtime import subset
    if not subset.available():
        return mf.flatbuffer
    cut = subset.signatures_only(mf.flatbuffer, [n for n in names if n in mf.signatures])
    rt.release_memory()
    return cut


def streamed(a, mf, res):
    """--streamed: micro-batched extract into a feature buffer, interpreter freed, then
    train_features on its own interpreter (what tftl-train does); fills `res`."""
    import numpy as np

    from tftl.runtime import contract, session
    from tftl.runtime import interpreter as rt
    meta = mf.meta
    b, r, m = meta.batch, meta.image_size, meta.micro_batch or meta.batch
    sig, key, out_key = ((contract.EXTRACT_MICRO, contract.MICRO_IMAGES, contract.MICRO_FEATURES)
                         if meta.micro_batch else (contract.EXTRACT, contract.IMAGES, contract.FEATURES))
    rng = np.random.default_rng(a.seed)
    images = (rng.random((b, r, r, 3), dtype=np.float32) * 255.0).astype(np.float32)
    labels = rng.integers(0, meta.num_labels, b).astype(np.int32)
    feats = np.empty((b, *meta.feature_shape), np.float32)  # the feature buffer
    interp = rt.load_interpreter(_cut(mf, [sig]), a.threads)
    run = interp.get_signature_runner(sig)

    def extract():
        for i in range(0, b, m):
            feats[i:i + m] = run(**{key: images[i:i + m]})[out_key]

    ex = run_steps(extract, a.warmup, a.steps, dict(signature=sig, micro_batch=m))
    del run, interp
    rt.release_memory()
    res["rss_after_extract"] = rss_now()
    interp = rt.load_interpreter(_cut(mf, session.TRAINING), a.threads)
    train = interp.get_signature_runner(contract.TRAIN_FEATURES)
    feeds = dict(features=feats, labels=labels, sample_weight=np.ones(b, np.float32),
                 learning_rate=np.full((1,), 1e-3, np.float32))
    tr = {"rss_loaded": rss_now()}

    def step():
        tr["loss"] = float(np.asarray(train(**feeds)["loss"]).reshape(-1)[0])
        tr.setdefault("first_loss", tr["loss"])

    run_steps(step, a.warmup, a.steps, tr)
    keep = ("median_cpu_ms", "median_ms", "rss_before_step", "peak_rss", "step_mem", "rss_end")
    res["extract_phase"] = {k: ex[k] for k in keep + ("signature", "micro_batch")}
    res["train_phase"] = {k: tr[k] for k in keep + ("rss_loaded",)}
    res.update(rss_before_step=ex["rss_before_step"], median_cpu_ms=ex["median_cpu_ms"] + tr["median_cpu_ms"],
               median_ms=ex["median_ms"] + tr["median_ms"], loss=tr["loss"], first_loss=tr["first_loss"],
               rss_end=tr["rss_end"], load_avg_start=ex["load_avg_start"], timed_steps=a.steps,
               warmup_steps=a.warmup, signature="extract_micro+train_features", micro_batch=m)
    finish(res)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    add_step_args(p, job=False)
    p.add_argument("--signature", default="train")
    p.add_argument("--resolver", default="auto", choices=("auto", "no_delegates"))
    p.add_argument("--latest-features", action="store_true",
                   help="experimental_default_delegate_latest_features=True (XNNPACK's newest "
                        "operators, e.g. dynamic-range quantised kernels)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--decompose", action="store_true")
    p.add_argument("--streamed", action="store_true", help="tftl-train's path (module docstring)")
    a = p.parse_args()

    import numpy as np
    from ai_edge_litert import interpreter as litert

    from tftl.runtime import modelfile
    res = dict(model=os.path.basename(a.model), threads=a.threads, signature=a.signature,
               resolver=a.resolver, latest_features=a.latest_features)
    res["rss_start"] = rss_now()
    mf = modelfile.read_model(a.model)
    res["precision"] = f"frozen weights {mf.metadata.get('quantize', '?')}, trained fp32"
    res["trainable_params"] = mf.metadata.get("trainable_params")
    if a.streamed:
        streamed(a, mf, res)
        print(json.dumps(res))
        return
    resolver = (litert.OpResolverType.AUTO if a.resolver == "auto"
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    t = time.perf_counter()
    extra = {"experimental_default_delegate_latest_features": True} if a.latest_features else {}
    interp = litert.Interpreter(model_content=mf.flatbuffer, num_threads=a.threads,
                                experimental_op_resolver_type=resolver, **extra)
    runner = interp.get_signature_runner(a.signature)
    res["load_ms"] = (time.perf_counter() - t) * 1e3
    res["rss_loaded"] = rss_now()
    res["peak_rss_loaded"] = peak_rss()
    rng = np.random.default_rng(a.seed)
    k = int(mf.metadata.get("num_labels", len(mf.labels)))
    batch = int(mf.metadata["batch"])
    io = signature_io(interp, a.signature)
    feeds = make_inputs(io, rng, k, batch)
    res["rss_inputs"] = rss_now()
    res["trainable_params"] = mf.metadata.get("trainable_params")

    out = {}

    def step():
        out.update(runner(**feeds))
        if "loss" in out:
            res["loss"] = float(np.asarray(out["loss"]).reshape(-1)[0])
            res.setdefault("first_loss", res["loss"])

    run_steps(step, a.warmup, a.steps, res)
    first = next(iter(out.values()))
    res["output_finite"] = bool(np.all(np.isfinite(first)))

    sub = interp._interpreter.GetSubgraphIndexFromSignature(a.signature)
    res["arena"] = arena_accounting(interp, sub, mf.flatbuffer, a.top)
    if "restore" in interp.get_signature_list():
        state = signature_io(interp, "restore")
        res["variables_bytes"] = int(sum(np.prod(d["shape"]) * 4 for d in state.values()))
        res["variables_count"] = len(state)

    if a.decompose:
        # Round-robin over the signatures (train included) so that load changes on a shared
        # machine hit all of them alike; medians after one untimed round.
        runs = {"train": (runner, feeds)}
        for key in ("infer", "extract", "train_features", "infer_features"):
            if key in interp.get_signature_list():
                runs[key] = (interp.get_signature_runner(key),
                             make_inputs(signature_io(interp, key), rng, k, batch))
        times = {key: [] for key in runs}
        cpus = {key: [] for key in runs}
        for rep in range(a.steps + 1):
            for key, (r, f) in runs.items():
                c = time.process_time()
                t = time.perf_counter()
                r(**f)
                if rep:
                    times[key].append((time.perf_counter() - t) * 1e3)
                    cpus[key].append((time.process_time() - c) * 1e3)
        res["decompose_ms"] = {key: statistics.median(v) for key, v in times.items()}
        res["decompose_cpu_ms"] = {key: statistics.median(v) for key, v in cpus.items()}
        finish(res)  # the other signatures' arenas count in the peak
    print(json.dumps(res))


if __name__ == "__main__":
    main()
