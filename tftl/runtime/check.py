"""tftl-check: does this reader accept a model file? One line, `ok` or `refused: <reason>`.

    tftl-check FILE                 # exit 0 accepted, 2 refused
    tftl-check MODEL --checkpoint CHECKPOINT   # could tftl-train --resume MODEL continue from it?
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

from tftl.runtime import checkpoint, modelfile

EXIT_OK, EXIT_REFUSED = 0, 2


def verdict(path: str) -> tuple:
    """("accepted", "") or (refusal class, one-line message) for the model file at `path`."""
    try:
        modelfile.read_model_and_state(path)
    except modelfile.ModelFileError as e:
        return e.kind, str(e)
    return "accepted", ""


def checkpoint_verdict(model: str, path: str) -> tuple:
    """("accepted", "") or (contract.CHECKPOINT_CLASSES class, message): whether `tftl-train
    --resume` on `model` could continue from the checkpoint at `path` (the same checks, in
    the same order, before any work)."""
    try:
        mf, _, raw = modelfile.read_model_and_state(model)
        checkpoint.load_for_resume(path, shapes=mf.state_shapes(), model_hash=modelfile.model_hash(mf, raw),
                                   labels=mf.labels)
    except modelfile.ModelFileError as e:
        return "model " + e.kind, str(e)
    except checkpoint.CheckpointError as e:
        return e.kind, str(e)
    return "accepted", ""


def _vectors(folder: str) -> list:
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    out = []
    for case in manifest:
        path = os.path.join(folder, case["file"])
        kind, message = (checkpoint_verdict(os.path.join(folder, case["model"]), path) if "model" in case
                         else verdict(path))
        out.append({"file": case["file"], "verdict": kind, "message": message})
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--vectors":
        print(json.dumps(_vectors(argv[1])))
        return EXIT_OK
    if len(argv) == 3 and argv[1] == "--checkpoint":
        kind, message = checkpoint_verdict(argv[0], argv[2])
    elif len(argv) != 1 or argv[0].startswith("-"):
        print("usage: tftl-check FILE | tftl-check MODEL --checkpoint CHECKPOINT | tftl-check --vectors DIR",
              file=sys.stderr)
        return EXIT_REFUSED
    else:
        kind, message = verdict(argv[0])
    print("ok" if kind == "accepted" else f"refused: {message}")
    return EXIT_OK if kind == "accepted" else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
