"""tftl-check: does this reader accept a model file? One line, `ok` or `refused: <reason>`.

    tftl-check FILE                 # exit 0 accepted, 2 refused
    tftl-check --vectors DIR        # every file of DIR/manifest.json (tftl.runtime.vectors):
                                    # one JSON list [{"file", "verdict"|"class", "message"}]

Reads the file as `tftl-train` would before any work: the archive, tftl.json, labels.txt, the
graph's signatures and a fine-tuned file's state.npz (`modelfile.read_model` and `read_state`).
The Java core (`android_demo/tools/check`) and the browser's reader
(`node web_demo/tools/check.mjs`) print the same lines, and all three are tested against
contract/vectors/files.json.
"""

import json
import os
import sys

from tftl.runtime import modelfile

EXIT_OK, EXIT_REFUSED = 0, 2


def verdict(path: str) -> tuple:
    """("accepted", "") or (refusal class, one-line message) for the model file at `path`."""
    try:
        modelfile.read_model_and_state(path)
    except modelfile.ModelFileError as e:
        return e.kind, str(e)
    return "accepted", ""


def _vectors(folder: str) -> list:
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    out = []
    for case in manifest:
        kind, message = verdict(os.path.join(folder, case["file"]))
        out.append({"file": case["file"], "verdict": kind, "message": message})
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--vectors":
        print(json.dumps(_vectors(argv[1])))
        return EXIT_OK
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: tftl-check FILE | tftl-check --vectors DIR", file=sys.stderr)
        return EXIT_REFUSED
    kind, message = verdict(argv[0])
    print("ok" if kind == "accepted" else f"refused: {message}")
    return EXIT_OK if kind == "accepted" else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
