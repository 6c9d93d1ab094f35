"""contract/, the model-file specification as data (tftl/runtime/spec.py), against the readers.

- The folder is exactly what `python -m tftl.runtime.spec --write` generates from contract.py
  (a change to the contract that is not regenerated fails here).
- The JSON Schema is valid and agrees with `ModelMetadata.from_dict` on every metadata vector,
  except the cases the vectors mark as beyond a schema; a real export's tftl.json validates.
- A labels.txt reader written in JavaScript from rules.json alone reads every label vector as
  Python does (the Java core and the page's reader are checked against the same vectors in
  tests/test_android.py and tests/test_web.py).
"""

import json
import os
import shutil
import subprocess

import jsonschema
import pytest

from conftest import PI_MODEL, REPO
from tftl.runtime import modelfile, spec

CONTRACT = os.path.join(REPO, "contract")


def _load(rel):
    with open(os.path.join(CONTRACT, rel), encoding="utf-8") as f:
        return json.load(f)


def test_contract_folder_is_generated_from_contract_py():
    for rel, text in spec.files().items():
        with open(os.path.join(CONTRACT, rel), encoding="utf-8") as f:
            assert f.read() == text, f"contract/{rel} is stale: run python -m tftl.runtime.spec --write"


def test_schema_agrees_with_the_python_reader():
    schema = _load("tftl.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    vectors = _load(os.path.join("vectors", "metadata.json"))
    assert sum(not c["accepted"] for c in vectors["cases"]) >= 20
    for case in vectors["cases"]:
        valid = validator.is_valid({**vectors["good"], **case["change"]})
        if case.get("beyond_schema"):
            assert valid and not case["accepted"], case  # what the readers must check in code
        else:
            assert valid == case["accepted"], case


def test_a_real_export_validates(exported):
    meta = modelfile.read_model(exported(**PI_MODEL)).metadata
    jsonschema.Draft202012Validator(_load("tftl.schema.json")).validate(meta)


def test_a_reader_written_from_rules_json_alone_reads_labels_as_python():
    if not shutil.which("node"):
        if os.environ.get("CI"):
            pytest.fail("node is missing (tests/run_all.sh installs it through web_demo/install_test_deps.sh)")
        pytest.skip("node is not installed")
    vectors = os.path.join(CONTRACT, "vectors", "labels.json")
    out = subprocess.run(["node", "test/spec_reader.mjs", os.path.join(CONTRACT, "rules.json"), vectors],
                         cwd=os.path.join(REPO, "web_demo"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    cases = _load(os.path.join("vectors", "labels.json"))["cases"]
    assert sum(c["labels"] is None for c in cases) >= 15
    for case, answer in zip(cases, json.loads(out.stdout), strict=True):
        assert answer.get("labels") == case["labels"], (case, answer)
