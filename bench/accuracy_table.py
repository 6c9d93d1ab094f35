"""The issue-13 accuracy check as markdown tables: per split, the linear probe, MobileTL-3 and
ft_blocks-3 (mbv2, ImageNet, 224 px, tftl-train's recipe) and PASS/MISS.

    python bench/accuracy_table.py [--probe bench/linear_probe.json] [--recipe bench/recipe.json]
        [--write bench/ACCURACY.md]

--write replaces the text between the `<!-- tables -->` and `<!-- /tables -->` lines of that
file with the tables (so the document's figures are regenerated, never hand-copied).

One table per epoch rule: `fixed10` (10 epochs on every split: the default before issue 13)
and `steps500` (max(10, ceil(500 / steps per epoch)): `tftl.runtime.loop.default_epochs`).
A run of bench/recipe.json counts for a rule when the settings tftl-train recorded match it
(epochs, lr 5e-4, 2 cached views, augmentation, the default warm-up), whatever its tag, so a
10-epoch run on a 400-photo split counts for both rules. Cells are the mean over the seeds
run, with the per-seed values. PASS needs mean MobileTL-3 >= the probe, and mean MobileTL-3
>= mean ft_blocks-3 - 1 point. A split without a run says "not run".
"""

import argparse
import json
import os
import statistics
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import splits  # noqa: E402
from tftl.runtime.files import atomic_write  # noqa: E402

BATCH = 8
RULES = {"fixed10": lambda n: 10}
SCHEMES = ("mobiletl-3", "ft_blocks-3")


def _steps500(n):
    from tftl.runtime import loop

    return loop.default_epochs(n, BATCH, min_steps=500)


RULES["steps500"] = _steps500
RULE_TEXT = {"fixed10": "10 epochs on every split (tftl-train's default before issue 13)",
             "steps500": "max(10, ceil(500 / steps per epoch)) epochs (tftl-train's default now)"}


def matches(row, epochs):
    """True when `row` ran the default recipe with `epochs` epochs."""
    s = row.get("settings") or {}
    total = s.get("total_steps") or 0
    return (row.get("rc") == 0 and row.get("test_accuracy") is not None and s.get("epochs") == epochs
            and s.get("lr") == 5e-4 and s.get("cache_views") == 2 and s.get("augment") is True
            and s.get("warmup_steps") == min(50, total // 10))


def cells(recipe, split, rule):
    """{scheme: {seed: test accuracy}} of the runs of `split` that match `rule` (last row per seed wins)."""
    epochs = RULES[rule](len(splits.split(split)[0]))
    out = {s: {} for s in SCHEMES}
    for r in recipe:
        if r["split"] == split and r.get("scheme") in out and matches(r, epochs):
            out[r["scheme"]][r["seed"]] = r["test_accuracy"]
    return epochs, out


def _fmt(runs):
    if not runs:
        return "not run"
    vals = [runs[s] for s in sorted(runs)]
    per = ", ".join(f"{v:.3f}" for v in vals)
    return f"**{statistics.mean(vals):.3f}** ({per})" if len(vals) > 1 else f"{vals[0]:.3f}"


def table(probe, recipe, rule):
    """Markdown table of `rule` over the probed splits; returns (text, {split: (beat, near)})."""
    lines = ["| split | train photos | epochs (steps) | linear probe | MobileTL-3 (seeds) | ft_blocks-3 (seeds) "
             "| MobileTL-3 >= probe | within 1 pt of ft_blocks-3 |", "|---|---|---|---|---|---|---|---|"]
    verdicts = {}
    for row in probe["rows"]:
        split, p = row["split"], row["test_accuracy"]
        n = len(splits.split(split)[0])
        epochs, runs = cells(recipe, split, rule)
        m, f = runs["mobiletl-3"], runs["ft_blocks-3"]
        mm = statistics.mean(m.values()) if m else None
        fm = statistics.mean(f.values()) if f else None
        beat = "not run" if mm is None else f"{'PASS' if mm >= p else 'MISS'} ({100 * (mm - p):+.1f} pts)"
        near = ("not run" if mm is None or fm is None else
                f"{'PASS' if mm >= fm - 0.01 - 1e-9 else 'MISS'} ({100 * (mm - fm):+.1f} pts)")
        verdicts[split] = (beat, near)
        steps = epochs * -(-n // BATCH)
        lines.append(f"| {split} | {n} | {epochs} ({steps}) | {p:.3f} | {_fmt(m)} | {_fmt(f)} | {beat} | {near} |")
    return "\n".join(lines), verdicts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--probe", default=os.path.join(BENCH, "linear_probe.json"))
    p.add_argument("--recipe", default=os.path.join(BENCH, "recipe.json"))
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--write", metavar="MD", help="put the tables between the markers of this file")
    a = p.parse_args(argv)
    with open(a.probe) as f:
        probe = json.load(f)
    recipe = []
    if os.path.exists(a.recipe):
        with open(a.recipe) as f:
            recipe = json.load(f)
    text = "\n\n".join(f"`{rule}`: {RULE_TEXT[rule]}\n\n{table(probe, recipe, rule)[0]}" for rule in a.rules)
    print(text)
    if a.write:
        write_between_markers(a.write, text)
    return 0


def write_between_markers(path, text, start="<!-- tables -->", end="<!-- /tables -->"):
    """Replace what lies between the `start` and `end` lines of `path` with `text` (atomically)."""
    with open(path) as f:
        doc = f.read()
    i, j = doc.find(start), doc.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: no {start} ... {end} lines to write the tables between")
    doc = doc[:i + len(start)] + "\n" + text + "\n" + doc[j:]
    with atomic_write(path) as f:
        f.write(doc.encode("utf-8"))


if __name__ == "__main__":
    sys.exit(main())
