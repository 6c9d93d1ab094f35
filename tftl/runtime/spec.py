"""The model-file specification as data, generated from `contract.py`: `contract/` at the repo root.

    python -m tftl.runtime.spec --write [DIR]     # regenerate contract/ (tests/test_spec.py fails on drift)

Files (plain JSON, readable by any language; a new reader starts here):
  tftl.schema.json       JSON Schema (2020-12) of `tftl.json`: every field, type and range.
  rules.json             what a schema cannot say: the label rule as regular expressions (Java /
                         JavaScript `u` syntax) plus a length in code points, how labels.txt
                         splits, the size caps, the signature and state-name conventions, and
                         the format history.
  vectors/labels.json    labels.txt texts with the labels every reader must give, or null where
                         it must refuse (Python's `contract.parse_labels` decides; the Java core
                         and the browser are tested against this file).
  vectors/metadata.json  tftl.json variants, accepted or refused by `ModelMetadata.from_dict`;
                         the schema agrees on each (tests/test_spec.py) except the cases marked
                         `beyond_schema`, which say what a reader must check in code.
"""

import argparse
import json
import os
import sys

from tftl.runtime import contract, modelfile
from tftl.runtime.files import atomic_write

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "contract")

# The label rule in regular-expression form (Java and JavaScript with the `u` flag), equal to
# contract.label_problem: a label is refused if it holds a character of REFUSED, if it starts
# or ends with one of SPACE (Python's str.isspace), if it is "." or "..", or if it has more
# than MAX_LABEL_CHARS code points.
LABEL_REFUSED = "[\\p{Cc}\\p{Cs}\\p{Zl}\\p{Zp}\\uFEFF/\\\\]"
LABEL_SPACE = "[\\t\\n\\u000B\\f\\r\\u001C-\\u001F\\u0085\\p{Zs}\\u2028\\u2029]"

LABEL_TEXTS = [
    "daisy\nroses\n", "daisy\r\nroses\r\n", "\ufeffdaisy\nroses", "daisy\n\n  \nroses\n",
    "daisy\rroses\n", "daisy\u2028roses\n", "daisy\x1croses\n", "da\x00isy\n", "a/b\n", "a\\b\n",
    " daisy\n", "daisy\u00a0\n", "\u3000daisy\n", "dai\u00a0sy\n", "..\n", ".\n",
    "x" * 256 + "\n", "x" * 257 + "\n", "\U0001F33C" * 200 + "\n", "\U0001F33C" * 257 + "\n",
    "daisy\ndaisy\n", "Daisy\ndaisy\n", "straße\n日本\nçà\n", "a\ufeffb\n", "zero\u200bwidth\n",
    "tab\there\n", "nel\x85x\n", "\n\n", "",
]


# tftl.json cases: the good metadata of a small tftl-3 model, then one field changed per case.
GOOD_METADATA = {"format": contract.FORMAT, "model": "mbv3_small", "scheme": "mobiletl", "blocks": 2,
                 "image_size": 96, "batch": 8, "num_labels": 5, "feature_shape": [3, 3, 96],
                 "trunk_end": "block_9_add", "state_names": ["a__kernel", "b__moving_mean", "opt_step"],
                 "state_groups": {"trainable": ["a__kernel"], "bn_statistics": ["b__moving_mean"],
                                  "optimizer": ["opt_step"]},
                 "content_hash": "0" * 64, "trained_state": False, "bn_momentum": 0.99}
METADATA_CHANGES = [
    {}, {"format": "tftl-2"}, {"format": "tftl-9"}, {"format": None}, {"image_size": "96"}, {"image_size": 7},
    {"image_size": contract.MAX_IMAGE_SIZE + 1}, {"batch": True}, {"batch": 0}, {"num_labels": 2.5},
    {"feature_shape": [3, -3]}, {"feature_shape": "3x3"}, {"feature_shape": [1, 1, 1, 1, 1]},
    {"state_names": [1, 2]}, {"trunk_end": 5}, {"trunk_end": None}, {"model": ""},
    {"content_hash": "0" * 63}, {"content_hash": "A" * 64}, {"trained_state": "yes"}, {"bn_momentum": 1.0},
    {"bn_momentum": "0.99"}, {"bn_momentum": True}, {"bn_momentum": 0}, {"signatures": "infer"},
    {"state_groups": {"trainable": ["a__kernel"]}}, {"preprocessing": {"input": 3}},
]
# What JSON Schema cannot express; these cases are refused by the readers' own code.
BEYOND_SCHEMA = [
    ({"feature_shape": [1 << 20, 1 << 20, 3]}, f"feature_shape's product is at most {contract.MAX_FEATURE_ELEMENTS}"),
    ({"state_groups": {"trainable": [], "bn_statistics": [], "optimizer": []}},
     "state_groups must partition state_names"),
]


def _int_field(lo, hi):
    return {"type": "integer", "minimum": lo, "maximum": hi}


def schema() -> dict:
    """JSON Schema of tftl.json, with the bounds contract.ModelMetadata.from_dict enforces."""
    names = {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": contract.MAX_STATE_TENSORS}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tftl.json (tftl model-file metadata)",
        "type": "object",
        "required": ["format", "model", "scheme", "image_size", "batch", "num_labels", "content_hash"],
        "properties": {
            "format": {"enum": list(contract.FORMATS), "description": f"written: {contract.FORMAT}"},
            "model": {"type": "string", "minLength": 1},
            "scheme": {"type": "string", "minLength": 1},
            "blocks": {**_int_field(0, 1000), "default": 0},
            "image_size": _int_field(8, contract.MAX_IMAGE_SIZE),
            "batch": _int_field(1, contract.MAX_BATCH),
            "num_labels": {**_int_field(1, contract.MAX_LABELS), "description": "equals the lines of labels.txt"},
            "feature_shape": {"type": "array", "minItems": 1, "maxItems": 4, "items": _int_field(1, 1 << 20),
                              "description": f"product at most {contract.MAX_FEATURE_ELEMENTS}; "
                                             "absent: [image_size, image_size, 3]"},
            "trunk_end": {"type": ["string", "null"]},
            "state_names": {**names, "description": "the restore signature's inputs"},
            "state_groups": {"type": "object", "required": list(contract.GROUPS), "additionalProperties": False,
                             "properties": {g: names for g in contract.GROUPS},
                             "description": "a partition of state_names; absent (tftl-1): grouped by name"},
            "content_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                             "description": "sha256 of the flatbuffer (the bytes before the ZIP)"},
            "trained_state": {"type": "boolean", "default": False},
            "preprocessing": {"type": "object", "additionalProperties": {"type": "string"}},
            "bn_momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                            "default": contract.DEFAULT_BN_MOMENTUM},
            "signatures": {"type": "array", "items": {"type": "string"}},
        },
    }


def rules() -> dict:
    """Everything else a reader must do alike, from the constants the Python reader uses."""
    return {
        "format": contract.FORMAT,
        "formats": {"tftl-1": "save() has no input; scalar opt_step", "tftl-2": "save(token f32[1]); state rank >= 1; "
                    "scalar learning_rate and loss", "tftl-3": "no signature tensor is a scalar"},
        "file": {"layout": "TFLite flatbuffer, then a ZIP (offsets relative to the ZIP's start) holding "
                           f"{modelfile.METADATA_NAME}, {modelfile.LABELS_NAME} and, once fine-tuned, "
                           f"{modelfile.STATE_NAME}", "identifier": modelfile.TFLITE_IDENTIFIER.decode()},
        "caps_bytes": {"model": modelfile.MAX_MODEL_BYTES, "metadata": modelfile.MAX_METADATA_BYTES,
                       "labels": modelfile.MAX_LABELS_BYTES, "state": modelfile.MAX_STATE_BYTES},
        "labels_txt": {"encoding": "utf-8", "bom": "one leading U+FEFF is dropped",
                       "split": "at \\n only; one trailing \\r per line is dropped; lines that are empty "
                                "after stripping `label.space` are dropped", "unique": True},
        "label": {"refused_character": LABEL_REFUSED, "space": LABEL_SPACE,
                  "outer_space": "refused", "refused_names": [".", ".."],
                  "max_code_points": contract.MAX_LABEL_CHARS, "text": contract.LABEL_RULE},
        "signatures": {"names": list(contract.SIGNATURES), "train": list(contract.TRAIN_SIGNATURES),
                       "save_input": contract.SAVE_INPUT, "restore_output": contract.RESTORE_OUTPUT,
                       "learning_rate": "f32[1] (f32[] before tftl-3)", "loss": "f32[1] (f32[] before tftl-3)"},
        "state": {"groups": list(contract.GROUPS), "optimizer": [contract.OPT_STEP, "opt_m__*", "opt_v__*"],
                  "bn_statistics_suffixes": [contract.BN_MEAN_SUFFIX, contract.BN_VARIANCE_SUFFIX],
                  "max_tensors": contract.MAX_STATE_TENSORS, "max_elements": contract.MAX_STATE_ELEMENTS},
    }


def label_vectors() -> dict:
    """{"rule", "cases": [{"text", "labels": [...] or null}]} with contract.parse_labels's verdicts."""
    cases = []
    for text in LABEL_TEXTS:
        try:
            labels = contract.parse_labels(text)
        except contract.ContractError:
            labels = None
        cases.append({"text": text, "labels": labels})
    return {"rule": contract.LABEL_RULE, "cases": cases}


def metadata_vectors() -> dict:
    """{"good", "cases": [{"change", "accepted", "beyond_schema"}]} with ModelMetadata.from_dict's verdicts:
    each case is `good` with `change` applied (a key set to null is set to JSON null)."""
    cases = []
    for change, why in [(c, None) for c in METADATA_CHANGES] + BEYOND_SCHEMA:
        try:
            contract.ModelMetadata.from_dict({**GOOD_METADATA, **change})
            accepted = True
        except contract.ContractError:
            accepted = False
        cases.append({"change": change, "accepted": accepted, **({"beyond_schema": why} if why else {})})
    return {"good": GOOD_METADATA, "cases": cases}


def files() -> dict:
    """{relative path: text} of the whole contract/ folder."""
    dump = lambda obj: json.dumps(obj, indent=1, ensure_ascii=True) + "\n"  # noqa: E731
    return {"tftl.schema.json": dump(schema()), "rules.json": dump(rules()),
            os.path.join("vectors", "labels.json"): dump(label_vectors()),
            os.path.join("vectors", "metadata.json"): dump(metadata_vectors())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tftl.runtime.spec", description=__doc__.splitlines()[0])
    p.add_argument("--write", nargs="?", const=DEFAULT_DIR, metavar="DIR", help=f"default {DEFAULT_DIR}")
    a = p.parse_args(argv)
    if not a.write:
        p.print_help()
        return 2
    for rel, text in files().items():
        path = os.path.join(a.write, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            f.write(text.encode("utf-8"))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
