"""The issue-13 accuracy check as a markdown table: per split, the linear probe, MobileTL-3 and
ft_blocks-3 (mbv2, ImageNet, 224 px, default tftl-train recipe) and PASS/MISS.

    python bench/accuracy_table.py [--probe bench/linear_probe.json] [--recipe bench/recipe.json]

PASS needs MobileTL-3 >= the probe, and MobileTL-3 >= ft_blocks-3 - 1 point. A split without
a run says "not run".
"""

import argparse
import json
import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))


def table(probe, recipe, tag="default"):
    probes = {r["split"]: r["test_accuracy"] for r in probe["rows"]}
    runs = {}
    for r in recipe:
        if r.get("tag") == tag and r.get("test_accuracy") is not None:
            runs[(r["split"], r["scheme"])] = r["test_accuracy"]
    lines = ["| split | linear probe | MobileTL-3 | ft_blocks-3 | MobileTL-3 >= probe | within 1 pt of ft_blocks-3 |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v: "not run" if v is None else f"{v:.3f}"  # noqa: E731
    for split, p in probes.items():
        m, f = runs.get((split, "mobiletl-3")), runs.get((split, "ft_blocks-3"))
        beat = "not run" if m is None else ("PASS" if m >= p else "MISS")
        near = "not run" if m is None or f is None else ("PASS" if m >= f - 0.01 else "MISS")
        lines.append(f"| {split} | {p:.3f} | {fmt(m)} | {fmt(f)} | {beat} | {near} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--probe", default=os.path.join(BENCH, "linear_probe.json"))
    p.add_argument("--recipe", default=os.path.join(BENCH, "recipe.json"))
    p.add_argument("--tag", default="default")
    a = p.parse_args(argv)
    with open(a.probe) as f:
        probe = json.load(f)
    recipe = []
    if os.path.exists(a.recipe):
        with open(a.recipe) as f:
            recipe = json.load(f)
    print(table(probe, recipe, a.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
