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
  vectors/probe.json     the recipe's arithmetic every host repeats: linear probes fitted by
                         `tftl.runtime.probe.fit_head` on small fixed embedding sets (the chosen
                         L2, CV accuracies, kernel and bias; hosts agree within 1e-4), and
                         recipes resolved for a training set (epochs, warm-up, views, head_init).
"""

import argparse
import json
import os
import sys

import numpy as np

from tftl.runtime import contract, modelfile, probe, safezip
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
    {"state_groups": {"trainable": ["a__kernel"]}}, {"preprocessing": {"input": 3}}, {"scheme": 3},
    {"blocks": -1}, {"blocks": 1001}, {"num_labels": None}, {"trained_state": None}, {"state_names": None},
    {"micro_batch": 0}, {"micro_batch": 1.5}, {"micro_batch": None},
    {"recipe": {"lr": 1e-4, "epochs": 10, "min_steps": 0, "warmup_steps": None, "cache_views": 8,
                "head_init": "none", "classifier": []}},
    {"recipe": {}}, {"recipe": {"lr": 3e-4, "warmup_steps": 5, "head_init": "none", "classifier": []}},
    {"recipe": "fast"}, {"recipe": {"lr": 0}}, {"recipe": {"lr": 1.5}}, {"recipe": {"lr": "1e-4"}},
    {"recipe": {"epochs": 0}}, {"recipe": {"epochs": 2.5}}, {"recipe": {"min_steps": -1}},
    {"recipe": {"warmup_steps": -1}}, {"recipe": {"cache_views": 0}}, {"recipe": {"cache_views": contract.MAX_VIEWS + 1}},
    {"recipe": {"head_init": "zero"}}, {"recipe": {"classifier": "a__kernel"}},
    {"recipe": {"lr": True}}, {"recipe": None}, {"recipe": {"lr": None}}, {"recipe": {"epochs": None}},
    {"recipe": {"head_init": None}}, {"recipe": {"classifier": None}}, {"recipe": {"warmup_steps": None}},
    {"recipe": {"lr": 1}}, {"recipe": {"lr": 1e-300}}, {"recipe": {"cache_views": 64}},
    {"recipe": {"min_steps": 10_000_001}}, {"recipe": {"head_init": "Probe"}},
    {"recipe": {"unknown_key": 1}}, {"recipe": []}, {"recipe": {"classifier": [["a__kernel"], "b__moving_mean"]}},
]
# What JSON Schema cannot express; these cases are refused by the readers' own code.
BEYOND_SCHEMA = [
    ({"feature_shape": [1 << 20, 1 << 20, 3]}, f"feature_shape's product is at most {contract.MAX_FEATURE_ELEMENTS}"),
    ({"state_groups": {"trainable": [], "bn_statistics": [], "optimizer": []}},
     "state_groups must partition state_names"),
    ({"recipe": {"head_init": "probe"}}, "recipe.classifier is required when head_init is probe"),
    ({"recipe": {"classifier": ["a__kernel", "x__bias"]}}, "recipe.classifier names two of state_names"),
    ({"recipe": {"classifier": ["a__kernel"]}}, "recipe.classifier names two of state_names"),
    ({"recipe": {"classifier": ["a__kernel", "a__kernel"]}}, "recipe.classifier names two distinct state_names"),

]


# Model-file vectors (vectors/files.json): each case is an edit of a small real export, "fresh"
# (as exported) or "trained" (with state.npz), and the refusal class every reader must report,
# or "accepted". tftl/runtime/vectors.py builds the files from the edits at test time.
FIVE = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
_L = lambda *labels: {"labels_text": "\n".join(labels) + "\n"}  # noqa: E731
FILE_CASES = [
    ("fresh", "fresh", {}, "accepted"),
    ("trained", "trained", {}, "accepted"),
    ("format_tftl1", "fresh", {"meta": {"format": "tftl-1"}}, "accepted",
     {"java": "format", "javascript": "format"}),
    ("graph_batch", "fresh", {"meta": {"batch": 4}}, "metadata"),
    ("micro_batch_0", "fresh", {"meta": {"micro_batch": 0}}, "metadata"),
    ("micro_batch_over_batch", "fresh", {"meta": {"micro_batch": 9}}, "metadata"),
    ("graph_image_size", "fresh", {"meta": {"image_size": 64}}, "metadata"),
    ("graph_feature_shape", "fresh", {"meta": {"feature_shape": [1, 1, 1]}}, "metadata"),
    ("graph_state_names", "fresh", {"rename_state": True}, "metadata"),
    ("num_labels_6", "fresh", {"meta": {"num_labels": 6}}, "labels"),
    ("meta_not_object", "fresh", {"member_text": {"tftl.json": "[1, 2]"}}, "damaged"),
    ("meta_not_json", "fresh", {"member_text": {"tftl.json": "{\"format\": "}}, "damaged"),
    ("meta_not_utf8", "fresh", {"member_hex": {"tftl.json": "7bff7d"}}, "damaged"),
    ("labels_crlf", "fresh", {"labels_text": "\r\n".join(FIVE) + "\r\n"}, "accepted"),
    ("labels_bom_blank_lines", "fresh", {"labels_text": "\ufeff" + "\n\n \n".join(FIVE)}, "accepted"),
    ("labels_duplicate", "fresh", _L("daisy", "daisy", "roses", "sunflowers", "tulips"), "labels"),
    ("labels_control", "fresh", _L("da\x01isy", *FIVE[1:]), "labels"),
    ("labels_stray_cr", "fresh", _L("daisy\rx", *FIVE[1:]), "labels"),
    ("labels_line_separator", "fresh", _L("daisy\u2028x", *FIVE[1:]), "labels"),
    ("labels_slash", "fresh", _L("a/b", *FIVE[1:]), "labels"),
    ("labels_outer_space", "fresh", _L("daisy\u00a0", *FIVE[1:]), "labels"),
    ("labels_257", "fresh", _L("x" * 257, *FIVE[1:]), "labels"),
    ("labels_256_astral", "fresh", _L("\U0001F33C" * 256, *FIVE[1:]), "accepted"),
    ("labels_dot", "fresh", _L("..", *FIVE[1:]), "labels"),
    ("labels_four", "fresh", _L(*FIVE[:4]), "labels"),
    ("labels_empty", "fresh", {"labels_text": "\n \n"}, "labels"),
    ("labels_not_utf8", "fresh", {"member_hex": {"labels.txt": "6461ff73790a"}}, "labels"),
    ("empty_file", "fresh", {"whole_hex": ""}, "damaged"),
    ("not_tflite", "fresh", {"whole_hex": "68656c6c6f20776f726c640a"}, "not_tflite"),
    ("flatbuffer_only", "fresh", {"flatbuffer_only": True}, "not_tftl"),
    ("truncated_100", "fresh", {"truncate": 100}, "damaged"),
    ("truncated_half", "trained", {"truncate": 0.5}, "damaged"),
    ("flatbuffer_byte_flipped", "fresh", {"flip": 1000}, "damaged"),
    ("no_labels_member", "fresh", {"drop": ["labels.txt"]}, "damaged"),
    ("no_metadata_member", "fresh", {"drop": ["tftl.json"]}, "not_tftl"),
    ("duplicate_member", "fresh", {"duplicate": "labels.txt"}, "damaged"),
    ("labels_crc_mismatch", "fresh", {"crc": ["labels.txt"]}, "damaged"),
    ("unsupported_method", "fresh", {"method": {"labels.txt": 12}}, "damaged"),
    ("labels_over_cap", "fresh", {"bomb": {"labels.txt": 32 << 20}}, "damaged"),
    ("labels_ratio_bomb", "fresh", {"bomb": {"labels.txt": 8 << 20}}, "damaged"),
    ("state_declares_over_cap", "trained", {"declare": {"state.npz": (1 << 31) - 1}}, "damaged"),
    ("state_without_optimizer", "trained", {"state": {"drop_prefix": ["opt_"]}}, "accepted"),
    ("state_without_adam_slots", "trained", {"state": {"drop_prefix": ["opt_m__", "opt_v__"]}}, "state"),
    ("state_nan", "trained", {"state": {"nan": True}}, "state"),
    ("state_float64", "trained", {"state": {"dtype": "<f8"}}, "state"),
    ("state_big_endian", "trained", {"state": {"dtype": ">f4"}}, "state"),
    ("state_fortran_order", "trained", {"state": {"fortran": True}}, "state"),
    ("state_wrong_shape", "trained", {"state": {"flatten": True}}, "state"),
    ("state_missing_member", "trained", {"state": {"drop": True}}, "state"),
    ("state_extra_member", "trained", {"state": {"extra": "stray__kernel"}}, "state"),
    ("state_header_lies", "trained", {"state": {"header_shape": [1 << 40]}}, "state"),
    ("state_npy_truncated", "trained", {"state": {"cut": 4}}, "state"),
    ("state_not_npy", "trained", {"state": {"rename_member": "notes.txt"}}, "state"),
    ("state_not_zip", "trained", {"member_hex": {"state.npz": "6e6f742061207a6970"}}, "state"),
]


# Checkpoint vectors (vectors/checkpoints.json): edits of a tftl-train checkpoint of the fresh
# export (its whole state, epoch 1), each with the class a reader resuming it must give.
CHECKPOINT_CASES = [
    ("ckpt_good", {}, "accepted"),
    ("ckpt_float64_arrays", {"arrays": {"dtype": "<f8"}}, "accepted"),
    ("ckpt_other_trainer", {"meta": {"format": "tftl-train-0"}}, "foreign"),
    ("ckpt_other_model", {"meta": {"model_hash": "0" * 64}}, "foreign"),
    ("ckpt_other_labels", {"meta": {"labels": FIVE[::-1]}}, "foreign"),
    ("ckpt_epoch_text", {"meta": {"epoch": "1"}}, "damaged"),
    ("ckpt_epoch_negative", {"meta": {"epoch": -1}}, "damaged"),
    ("ckpt_epoch_fraction", {"meta": {"epoch": 1.5}}, "damaged"),
    ("ckpt_no_global_step", {"drop_meta": ["global_step"]}, "damaged"),
    ("ckpt_position_null", {"meta": {"position": None}}, "damaged"),
    ("ckpt_labels_text", {"meta": {"labels": "daisy"}}, "damaged"),
    ("ckpt_model_hash_number", {"meta": {"model_hash": 5}}, "damaged"),
    ("ckpt_history_object", {"meta": {"history": {}}}, "damaged"),
    ("ckpt_skipped_list", {"meta": {"skipped": ["a.jpg"]}}, "damaged"),
    ("ckpt_partial_negative", {"meta": {"partial": {"seen": -3}}}, "damaged"),
    ("ckpt_settings_list", {"meta": {"settings": [1]}}, "damaged"),
    ("ckpt_null_optional", {"meta": {"rng_state": None, "settings": None, "partial": None}}, "accepted"),
    ("ckpt_nan", {"arrays": {"nan": True}}, "state"),
    ("ckpt_wrong_shape", {"arrays": {"flatten": True}}, "state"),
    ("ckpt_missing_array", {"arrays": {"drop": True}}, "state"),
    ("ckpt_without_optimizer", {"arrays": {"drop_prefix": ["opt_"]}}, "state"),
    ("ckpt_extra_array", {"arrays": {"extra": "stray__kernel"}}, "state"),
    ("ckpt_no_meta", {"no_meta": True}, "damaged"),
    ("ckpt_meta_not_json", {"meta_bytes_hex": "7b2265"}, "damaged"),
    ("ckpt_meta_not_object", {"meta_bytes_hex": "5b315d"}, "damaged"),
    ("ckpt_meta_float32", {"meta_float": True}, "damaged"),
    ("ckpt_truncated", {"truncate": 200}, "damaged"),
    ("ckpt_not_zip", {"whole_hex": "6e6f74206120636865636b706f696e74"}, "damaged"),
    ("ckpt_array_over_ratio", {"bomb_array": 8 << 20}, "damaged"),
]


def checkpoint_vectors() -> dict:
    """{"classes", "cases": [{"name", "edit", "verdict"}]}: what resuming each checkpoint gives."""
    return {"classes": list(contract.CHECKPOINT_CLASSES),
            "order": ["damaged: not a ZIP of .npy arrays, caps, the __meta__ uint8 array is missing or not "
                      "a UTF-8 JSON object, a metadata field missing or of the wrong type",
                      "state: array names or header shapes differ from the restore signature's inputs "
                      "(every input: a checkpoint keeps the optimizer state), or NaN / infinity",
                      "foreign: format is not tftl-train-1, model_hash or labels differ from the model's"],
            "cases": [{"name": n, "edit": e, "verdict": v} for n, e, v in CHECKPOINT_CASES]}


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
            "micro_batch": {**_int_field(1, contract.MAX_BATCH), "type": ["integer", "null"],
                            "description": f"at most batch; the batch of the optional {contract.EXTRACT_MICRO} "
                                           f"signature ({contract.MICRO_IMAGES} -> {contract.MICRO_FEATURES}); "
                                           "absent: the file has none"},
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
            "recipe": _recipe_schema(),
        },
    }


def _recipe_schema() -> dict:
    legacy = contract.LEGACY_RECIPE.to_dict()
    return {"type": ["object", "null"], "default": legacy, "additionalProperties": True,
            "description": "how every host fine-tunes the file unless told otherwise (contract.Recipe); absent or "
                           "null: the default shown; a missing key takes its value from the default",
            "properties": {
                "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                       "description": "peak learning rate: linear warm-up, then cosine decay to 0"},
                "epochs": _int_field(1, 100_000),
                "min_steps": {**_int_field(0, 10_000_000), "description": "a run takes max(epochs, "
                              "ceil(min_steps / steps per epoch)) epochs"},
                "warmup_steps": {"type": ["integer", "null"], "minimum": 0, "maximum": 10_000_000,
                                 "description": "null: min(50, total steps / 10)"},
                "cache_views": _int_field(1, contract.MAX_VIEWS),
                "head_init": {"enum": list(contract.HEAD_INITS), "description": "probe: before the first step, "
                              "fit the classifier as an L2 softmax regression on each photo's mean embed_features "
                              "over its cached views (tftl.runtime.probe), then fine-tune"},
                "classifier": {"type": "array", "items": {"type": "string"}, "maxItems": 2,
                               "description": "[kernel, bias] among state_names, or []; required by head_init probe"},
            }}


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
        "zip": {"methods": [0, 8], "max_members": safezip.MAX_MEMBERS, "max_ratio": safezip.MAX_RATIO,
                "ratio_free_bytes": safezip.RATIO_FREE, "unique_names": True, "encrypted": "refused"},
        "state_npy": {"descr": "<f4", "fortran_order": False, "versions": ["1.0", "2.0"],
                      "shape": "the restore signature's input shape ((1,) also accepts ())",
                      "names": "every restore input, or every one but the optimizer group (a deployable "
                               "fine-tuned file: the host keeps its own optimizer state)"},
        "refusal_classes": list(contract.REFUSAL_CLASSES),
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


# (rows, dims, classes) of the probe vectors: rows > dims runs fit_softmax, rows < dims its Gram form.
PROBE_SHAPES = [(30, 6, 3), (12, 20, 4)]
# (recipe, training images) resolved at GOOD_METADATA's batch.
RECIPE_CASES = [(None, 400), ({}, 37), ({"lr": 1e-4, "epochs": 10, "min_steps": 0, "cache_views": 8}, 400),
                ({"epochs": 3, "min_steps": 500, "warmup_steps": 7}, 45), ({"epochs": 2, "min_steps": 0}, 1),
                ({"head_init": "probe", "classifier": ["a__kernel", "b__moving_mean"], "lr": 0.25}, 8)]


def probe_vectors() -> dict:
    """{"folds", "fold_rule", "grid", "steps", "probes": [...], "recipes": [...]}: tftl.runtime.probe's
    fits and loop's resolved recipes, for the hosts to reproduce."""
    rng = np.random.default_rng(19)
    probes = []
    for n, d, k in PROBE_SHAPES:
        y = rng.permutation(np.arange(n) % k)
        centres = rng.normal(size=(k, d))
        x = np.round(centres[y] + 2.0 * rng.normal(size=(n, d)) + 3.0, 4)
        kernel, bias, info = probe.fit_head(x, y, k)
        probes.append({"x": x.tolist(), "y": y.tolist(), "classes": k, "l2": info["l2"],
                       "cv_accuracy": info["cv_accuracy"], "kernel": kernel.astype(float).tolist(),
                       "bias": bias.astype(float).tolist()})
    recipes = []
    for raw, images in RECIPE_CASES:
        meta = contract.ModelMetadata.from_dict({**GOOD_METADATA, "recipe": raw})
        recipes.append({"recipe": raw, "state_names": list(meta.state_names), "images": images, "batch": meta.batch,
                        "resolved": meta.recipe.resolved(images, meta.batch)})
    return {"folds": probe.FOLDS, "fold_rule": probe.FOLD_RULE, "grid": list(probe.L2_GRID), "steps": probe.STEPS,
            "probes": probes, "recipes": recipes}


def _refusal(change) -> str:
    """The class Python gives tftl.json `GOOD_METADATA + change` in a file whose hash is right."""
    if "content_hash" in change:
        return contract.DAMAGED  # the hash is compared with the flatbuffer before any field
    try:
        contract.ModelMetadata.from_dict({**GOOD_METADATA, **change})
    except contract.ContractError as e:
        return e.kind
    return "accepted"


def file_vectors() -> dict:
    """{"classes", "order", "cases": [{"name", "base", "edit", "verdict", "hosts"?}]}: every tftl.json
    vector of metadata.json applied to a real export, then FILE_CASES."""
    cases = []
    for i, (change, _) in enumerate([(c, None) for c in METADATA_CHANGES] + BEYOND_SCHEMA):
        cases.append({"name": f"metadata_{i:02d}", "base": "fresh", "edit": {"meta": change},
                      "verdict": _refusal(change)})
    for name, base, edit, verdict, *hosts in FILE_CASES:
        cases.append({"name": name, "base": base, "edit": edit, "verdict": verdict,
                      **({"hosts": hosts[0]} if hosts else {})})
    return {"classes": list(contract.REFUSAL_CLASSES), "order": REFUSAL_ORDER, "cases": cases}


# The order a reader checks in; the first failing step decides the refusal class.
REFUSAL_ORDER = [
    "not_tflite: fewer than 8 bytes is damaged; bytes 4-8 are not TFL3",
    "not_tftl / damaged: no ZIP end record (not_tftl when the flatbuffer is intact and no archive "
    "started), no tftl.json member (not_tftl); any other archive problem is damaged: labels.txt "
    "missing, duplicate member names, encryption, a method other than stored (0) or deflated (8), a "
    "member over its cap or inflating more than max_ratio x above ratio_free bytes, a bad CRC or size",
    "damaged: tftl.json is not UTF-8 JSON holding an object, or its content_hash is not the sha256 of "
    "the bytes before the ZIP's first member",
    "format: tftl.json format is not one the reader runs",
    "metadata: a field breaks tftl.schema.json or beyond_schema",
    "labels: labels.txt is not UTF-8, breaks the labels_txt / label rule, or its count is not num_labels",
    "metadata: batch, image_size, num_labels, feature_shape disagree with the graph's signature "
    "tensors (images, probabilities, features), a tftl-3 signature tensor is 0-d, or state_names "
    "differ from the restore signature's inputs",
    "damaged: state.npz over its cap; state: state.npz is not a ZIP of .npy members, a member is "
    "not <f4 C-order, the names are not the restore signature's inputs (all, or all but the "
    "optimizer group), a shape differs from the graph's, or it holds "
    "NaN or infinity",
]


def files() -> dict:
    """{relative path: text} of the whole contract/ folder."""
    dump = lambda obj: json.dumps(obj, indent=1, ensure_ascii=True) + "\n"  # noqa: E731
    return {"tftl.schema.json": dump(schema()), "rules.json": dump(rules()),
            os.path.join("vectors", "labels.json"): dump(label_vectors()),
            os.path.join("vectors", "metadata.json"): dump(metadata_vectors()),
            os.path.join("vectors", "files.json"): dump(file_vectors()),
            os.path.join("vectors", "checkpoints.json"): dump(checkpoint_vectors()),
            os.path.join("vectors", "probe.json"): dump(probe_vectors())}


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
