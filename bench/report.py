"""bench/results.json -> bench/RESULTS.md, bench/memory.png, bench/pareto.png, README headline.

Every number in the generated files is read from results.json by the modules below, one
per concern; the hand-written analysis that quotes measurements of earlier runs lives in
bench/NOTES.md, which this module never rewrites.
  verdicts.py  targets T1-T5 and the README headline table
  tables.py    the Markdown tables
  plots.py     memory.png and pareto.png
  report.py    the page layout (this file) and the README block
"""

import os

import common
from fmt import dig, lite, mb, other_bytes
from plots import plot_memory, plot_pareto
from tables import (cache_section, decompose_table, int8_section, memory_table,  # noqa: F401 (re-exported)
                    op_mix, op_profile_table, per_tensor, rss_breakdown, saved_table,
                    top_ops, train_section)
from verdicts import headline, targets

MD = os.path.join(common.BENCH, "RESULTS.md")


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


def explain(res):
    """Why analytical and measured differ, with this run's numbers."""
    rows = dig(res, "memory", "rows") or {}
    b = rows.get("mbv3_small/mobiletl-3")
    a = rows.get("mbv3_small/ft_all")
    out = []
    if not (b and lite(b)):
        return out
    lb, an, g = lite(b), b["analytical"], b["graph"]
    out += [
        "The profiler counts an idealised step: saved activations + the live forward tensors at "
        "the worst layer, fp32 trainable weights, int8 frozen kernels and Adam slots. The process "
        "measures everything else too. For mbv3_small / mobiletl-3 (1 thread):",
        "",
        f"* **Fixed baseline, {mb(lb['rss_loaded'], 0)} MB before the first step**: CPython, numpy "
        f"and the LiteRT library ({mb(lb['rss_start'], 0)} MB after the imports; their split "
        f"is in bench/NOTES.md), the model file bytes ({mb(b['file_bytes'])} MB, held in memory "
        "because the interpreter reads constants in place) and the interpreter's structures. The "
        "profiler has no such term; it is the same for every scheme, so it compresses every "
        "ratio between schemes measured as peak RSS.",
        f"* **Arena, {mb(lb['arena']['extent_bytes'])} MB measured** (address extent of the "
        "train subgraph's tensors, read from the live interpreter) vs "
        f"{mb(an['peak_activation_bytes'])} MB predicted peak activations. The converted graph's "
        f"own ideal (perfect reuse, same op order) is already {mb(g['ideal_peak_bytes'])} MB: "
        "it holds backward tensors and optimizer temporaries alongside the saved activations "
        "(Adam's `b1*m`, `b2*v` and update terms, computed per variable while gradients are "
        "alive), fp32 READ_VARIABLE copies of each trainable weight an op reads (builtin kernels "
        "cannot read a resource variable in place) and transposed copies of trained conv "
        "kernels (CONV_2D wants OHWI, the variable is HWIO). The converter's op order is not "
        "memory-aware either: backward helpers that depend only on forward tensors are hoisted "
        "into the forward pass and keep their inputs or outputs alive. With XNNPACK, tensors "
        "inside a delegated partition live in XNNPACK's own workspace instead of the arena, so "
        "the TFLite arena can be *below* the graph ideal; the no-XNNPACK arena ("
        f"{mb(dig(b, 'no_delegates', 'arena', 'extent_bytes'))} MB here) is the whole plan.",
        f"* **Saved activations: {mb(g['saved_bytes'], 2)} MB in the graph vs "
        f"{mb(an['activation_bytes'], 2)} MB predicted** — see the per-block table below.",
        f"* **Variables, {mb(lb.get('variables_bytes'))} MB** = trainable weights + 2 Adam slots "
        "+ BN running statistics: the profiler's trainable + optimizer terms, matching to within "
        "the BN statistics.",
        f"* **Other step memory, {mb(other_bytes(lb))} MB** (peak minus baseline, arena, variables "
        "and the input arrays): mostly XNNPACK — the default delegate packs the weights of the "
        "ops it takes into its own layout (the frozen weights, dequantized from int8 once) and "
        "keeps a workspace for the tensors inside its partitions — plus malloc's retained "
        "heap. Without XNNPACK the same step peaks at "
        f"{mb(dig(b, 'no_delegates', 'peak_rss'), 0)} MB (and runs slower: see the step-time "
        "table).",
    ]
    if a and lite(a):
        la = lite(a)
        out += ["",
                f"For ft_all the same terms are {mb(la['rss_loaded'], 0)} MB baseline + "
                f"{mb(la['arena']['extent_bytes'])} MB arena + {mb(la.get('variables_bytes'))} MB "
                f"variables → {mb(la['peak_rss'], 0)} MB peak RSS, vs "
                f"{mb(a['analytical']['peak_bytes'])} MB analytical."]
    return out


def _header(res, tg):
    """Title, runs, the memory section's settings and the target verdicts."""
    mem = res.get("memory", {})
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
    return L


def _memory_sections(res):
    """Per model: analytical vs measured memory, RSS breakdown, saved activations."""
    mem = res.get("memory", {})
    L = []
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
    return L


def _digging(res):
    """Why analytical and measured differ; per-tensor memory; where the step time goes."""
    if not (res.get("memory") or {}).get("rows"):
        return []
    L = []
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
    L += ["## Findings", "", "Causes of the missed targets and the fixes, with the "
          "measurements of the runs that found them: `bench/NOTES.md` (hand-written).", ""]
    return L


REPRODUCE = [
    "python bench/run.py                  # everything (memory+latency full, accuracy 3 seeds x 5 epochs x 7 schemes: hours)",
    "python bench/run.py --quick          # a few minutes with a warm export cache",
    "python bench/run.py --part memory    # memory + latency only (the core), exports included",
    "python bench/run.py --part train [--quick] [--epochs N --seeds 0,1,2 --acc-schemes ...]",
    "python bench/run.py --part cache [--cache-schemes ft_last,mobiletl-3 --epochs N]   # feature-cache speed-up",
    "python bench/run.py --part memory --resume [--threads 1 --tf-threads 1 --dig-models mbv3_small]   # continue an interrupted run",
    "python bench/int8_accuracy.py [--model mbv2 --seeds 0,1,2 --epochs 10]   # int8 vs float trunk accuracy and size",
    "python bench/run.py --report-only [--regraph]   # RESULTS.md + plots from results.json",
    "python bench/op_profile.py bench/.cache/<file>.tflite   # op-level CPU time of the train signature",
    "python bench/probe_litert.py bench/.cache/<file>.tflite --threads 1 --steps 20   # one probe",
    "python bench/probe_tf.py --model mbv3_small --scheme mobiletl --blocks 3 --threads 2",
]


def write(res, path=MD):
    """Writes RESULTS.md, the plots and the README block; returns the lines to print."""
    tg = targets(res)
    L = _header(res, tg) + _memory_sections(res) + _digging(res)
    L += ["## Trainer CLI (tftl-train): epoch time and accuracy", ""]
    L += train_section(res)
    L += cache_section(res) + int8_section()
    L += ["", "## Plots", "", "* `bench/memory.png` — per scheme: measured peak RSS split into "
          "loaded baseline / arena / variables / other, next to the analytical peak; TensorFlow's "
          "peak RSS as triangles.",
          "* `bench/pareto.png` — flowers5 val accuracy vs measured memory, marker area ~ training "
          "FLOPs per step, dashed line = Pareto front per model.", "",
          "## Reproduce", "", "```", *REPRODUCE, "```", "",
          "Hand-written analysis of these numbers, with the history of each fix: "
          "`bench/NOTES.md`.", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    lines = [f"{v:4s}  {n}\n      {d}" for n, v, d in tg]
    if res.get("memory_quick", {}).get("rows"):
        lines.append("quick check (results.json['memory_quick']):")
        lines += [f"{v:4s}  {n}\n      {d}" for n, v, d in targets(res, "memory_quick")]
    try:
        plot_memory(res)
        plot_pareto(res)
    except ImportError as e:  # plots need matplotlib (the [plot] extra)
        lines.append(f"(plots failed: {type(e).__name__}: {e})")
    if update_readme(res):
        lines.append("updated README.md's headline block")
    lines.append(f"wrote {os.path.relpath(path, common.ROOT)}, bench/memory.png, bench/pareto.png")
    return lines
