"""The import graph of a package, drawn as floors: `python tools/import_floors.py [PACKAGE_DIR]`.

Parses every `*.py` of the package (default tftl/runtime) with `ast`, collects the imports of
its own modules (top-level and function-local alike: a lazy import is still a dependency),
and prints the number of files, the number of floors (the longest import chain, counted in
modules: a module that imports none of its siblings is on floor 1) and any cycle. `--json`
prints the same as one JSON object. Exit 1 when there is a cycle.
"""

import argparse
import ast
import json
import os
import sys


def _package_name(folder: str) -> str:
    parts = []
    folder = os.path.abspath(folder)
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    return ".".join(parts)


def imports_of(path: str, package: str, modules) -> set:
    """The sibling modules (by short name) that the file at `path` imports, anywhere in it."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    prefix = package + "."
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = package + ("." + base if base else "")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith(prefix):
                short = name[len(prefix):].split(".")[0]
                if short in modules:
                    found.add(short)
    return found


def graph(folder: str) -> dict:
    """{module: set of sibling modules it imports}, for every .py file but __init__.py."""
    package = _package_name(folder)
    modules = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
    return {m: imports_of(os.path.join(folder, m + ".py"), package, modules) - {m} for m in sorted(modules)}


def find_cycle(g: dict):
    """One import cycle as a list [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def floors(g: dict) -> dict:
    """{module: floor}: 1 + the highest floor among its imports (an acyclic graph only)."""
    memo = {}

    def floor(node):
        if node not in memo:
            memo[node] = 1 + max((floor(n) for n in g[node]), default=0)
        return memo[node]

    return {m: floor(m) for m in g}


def report(folder: str) -> dict:
    g = graph(folder)
    cycle = find_cycle(g)
    levels = None if cycle else floors(g)
    return {"files": len(g), "floors": max(levels.values()) if levels else None, "cycle": cycle,
            "by_floor": None if levels is None else
            {str(k): sorted(m for m, v in levels.items() if v == k) for k in sorted(set(levels.values()))},
            "imports": {m: sorted(v) for m, v in g.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "tftl", "runtime"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = report(args.folder)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{r['files']} files, " + (f"{r['floors']} floors" if r["floors"] else "no floors (a cycle)"))
        if r["cycle"]:
            print("cycle: " + " -> ".join(r["cycle"]))
        for k, mods in (r["by_floor"] or {}).items():
            print(f"  floor {k}: {', '.join(mods)}")
    return 1 if r["cycle"] else 0


if __name__ == "__main__":
    sys.exit(main())
