"""The walk of a tftl-train run through the runtime: `python tools/flag_walk.py MODEL IMAGES`.

Runs `tftl-train MODEL IMAGES --epochs 1 --threads 1` in this process under sys.setprofile and
follows the calls between tftl.runtime modules. A walk "comes back to a room" when a call enters
a module that is already on the call stack below another module (A -> B -> A: a callback or a
lower layer calling up). Prints the modules visited, the cross-module call edges and every
return edge with its count; `--json` prints the same as one JSON object. Measured on the
runtime before and after issue 21's layering (the README gives both).
"""

import argparse
import collections
import json
import os
import sys
import tempfile

PREFIX = "tftl.runtime."


def walk(argv) -> dict:
    """Run the CLI on argv under the profiler; the edges and returns it took."""
    from tftl.runtime import cli

    stack, edges, returns = [], collections.Counter(), collections.Counter()

    def profile(frame, event, arg):
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(PREFIX):
            return
        module = name[len(PREFIX):]
        if event == "call":
            top = stack[-1] if stack else None
            if top is not None and top != module:
                edges[(top, module)] += 1
                if module in stack:
                    returns[(top, f"{module}.{frame.f_code.co_name}")] += 1
            stack.append(module)
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        code = cli.train_main(argv)
    finally:
        sys.setprofile(None)
    return {"exit": code, "modules": sorted({m for e in edges for m in e}),
            "edges": len(edges), "returns": {f"{a} -> {b}": n for (a, b), n in sorted(returns.items())},
            "return_edges": len(returns)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("images")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = walk([a.model, a.images, "--epochs", "1", "--threads", "1", "--output",
                       os.path.join(tmp, "out.tflite"), "--checkpoint-dir", os.path.join(tmp, "ckpt")])
    if a.json:
        print(json.dumps(result))
    else:
        print(f"exit {result['exit']}; {len(result['modules'])} modules, {result['edges']} call edges, "
              f"{result['return_edges']} edges that come back to a room on the stack")
        for edge, n in result["returns"].items():
            print(f"  {edge}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
