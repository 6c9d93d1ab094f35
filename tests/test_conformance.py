"""contract/vectors/files.json: the same model files, the same verdicts, from every reader.

The vectors are edits of a small real export (tftl.runtime.vectors, built once per run by the
`file_vectors` fixture): good files, tftl-1 and unknown formats, every tftl.json vector of
vectors/metadata.json, metadata that disagrees with the graph, labels.txt rule breaks, CRLF and
duplicate labels, ZIP bombs, truncations, bad CRCs, and state.npz members of the wrong dtype or
shape, missing, extra or NaN. Python (`tftl-check`) and the browser's reader under Node
(`web_demo/tools/check.mjs`) are run here; the Java core runs the same folder in JUnit
(android_demo ConformanceTest, through tests/test_android.py).
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import PI_MODEL, REPO, require_java
from tftl.runtime import check, contract, spec


def _manifest(folder):
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def _expected(case, host):
    return case.get("hosts", {}).get(host, case["verdict"])


def _node():
    if not shutil.which("node"):
        if os.environ.get("CI"):
            pytest.fail("node is missing (tests/run_all.sh installs it through web_demo/install_test_deps.sh)")
        pytest.skip("node is not installed")


def _agree(manifest, answers, host):
    """Every verdict as the manifest expects; the browser reads no checkpoints ("model" rows)."""
    wrong = [(c["file"], _expected(c, host), a["verdict"], a["message"])
             for c, a in zip(manifest, answers, strict=True)
             if a["verdict"] != ("not_read" if host == "javascript" and "model" in c else _expected(c, host))]
    assert not wrong, wrong
    for a in answers:
        assert "\n" not in a["message"] and "\r" not in a["message"], a


def test_the_checkpoint_vectors_cover_every_class_and_every_metadata_rule():
    from tftl.runtime import checkpoint

    cases = spec.checkpoint_vectors()["cases"]
    assert {c["verdict"] for c in cases} == {"accepted", *contract.CHECKPOINT_CLASSES}
    refused = {k for c in cases if c["verdict"] != "accepted" for k in {**c["edit"].get("meta", {}),
                                                                           **dict.fromkeys(c["edit"].get("drop_meta", []))}}
    assert set(checkpoint.META_RULES) - {"rng_state"} <= refused, set(checkpoint.META_RULES) - refused


def test_tftl_check_resume_command(file_vectors):
    model = os.path.join(file_vectors, "fresh.tflite")
    for ckpt, want in (("ckpt_good.npz", 0), ("ckpt_other_labels.npz", 2)):
        out = subprocess.run([sys.executable, "-m", "tftl.runtime.check", model, "--checkpoint",
                              os.path.join(file_vectors, ckpt)], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == want and len(out.stdout.splitlines()) == 1, out.stdout


def test_the_vectors_cover_every_class_and_every_schema_field():
    cases = spec.file_vectors()["cases"]
    assert {c["verdict"] for c in cases} == {"accepted", *contract.REFUSAL_CLASSES}
    assert len(cases) >= 70 and sum(c["verdict"] == "accepted" for c in cases) >= 6
    schema = spec.schema()
    refused_fields = {k for c in cases if c["verdict"] != "accepted" for k in c["edit"].get("meta", {})}
    assert set(schema["properties"]) <= refused_fields, set(schema["properties"]) - refused_fields


def test_python_reader_gives_every_verdict(file_vectors):
    manifest = _manifest(file_vectors)
    answers = check._vectors(file_vectors)
    _agree(manifest, answers, "python")


def test_browser_reader_gives_every_verdict(file_vectors):
    _node()
    out = subprocess.run(["node", os.path.join(REPO, "web_demo", "tools", "check.mjs"), "--vectors", file_vectors],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    _agree(_manifest(file_vectors), json.loads(out.stdout), "javascript")


@pytest.mark.parametrize("case", ["trained", "state_nan", "labels_crlf", "not_tflite"])
def test_check_commands_print_one_line_and_exit_by_verdict(file_vectors, case):
    _node()
    path = os.path.join(file_vectors, f"{case}.tflite")
    want = next(c for c in _manifest(file_vectors) if c["file"] == f"{case}.tflite")["verdict"]
    for cmd in ([sys.executable, "-m", "tftl.runtime.check", path],
                ["node", os.path.join(REPO, "web_demo", "tools", "check.mjs"), path]):
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = out.stdout.splitlines()
        assert len(lines) == 1, (cmd, out.stdout, out.stderr[-2000:])
        if want == "accepted":
            assert (out.returncode, lines[0]) == (0, "ok"), (cmd, out.stdout)
        else:
            assert out.returncode == 2 and lines[0].startswith("refused: "), (cmd, out.stdout)


def test_tftl_check_console_script_is_installed():
    exe = shutil.which("tftl-check")
    assert exe, "pip install -e . installs tftl-check"
    out = subprocess.run([exe, os.path.join(REPO, "README.md")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout.startswith("refused: ") and "not a TFLite model" in out.stdout


def _mutants(base: bytes, folder: str, count: int, seed: int = 0) -> list:
    """Seeded mutations of the archive part of a real file: byte flips anywhere after the
    flatbuffer (members, central directory, end record), cuts and insertions."""
    rng = np.random.default_rng(seed)
    start = base.index(b"PK\x03\x04")
    manifest = []
    for i in range(count):
        data = bytearray(base)
        how = ("flip", "tail_flip", "cut", "insert")[i % 4]
        if how in ("flip", "tail_flip"):
            lo = start if how == "flip" else len(data) - 300
            for pos in rng.integers(lo, len(data), size=int(rng.integers(1, 4))):
                data[pos] ^= 1 << int(rng.integers(0, 8))
        elif how == "cut":
            data = data[:int(rng.integers(start, len(data)))]
        else:
            pos = int(rng.integers(start, len(data)))
            data[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        name = f"mutant_{i:03d}_{how}.tflite"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(bytes(data))
        manifest.append({"file": name})
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return manifest


def test_three_readers_agree_on_mutated_files(file_vectors, tmp_path):
    """Random damage to a real file's archive: Python, the browser and Java give the same class
    for every mutant, each a class of the contract (no crash, no other exception)."""
    _node()
    require_java()
    java = [os.path.join(REPO, "android_demo", "tools", "check")]
    with open(os.path.join(file_vectors, "fresh.tflite"), "rb") as f:
        manifest = _mutants(f.read(), str(tmp_path), int(os.environ.get("TFTL_FUZZ_EXAMPLES", "60")))
    answers = {"python": check._vectors(str(tmp_path))}
    for host, cmd in (("javascript", ["node", os.path.join(REPO, "web_demo", "tools", "check.mjs")]),
                      ("java", java)):
        out = subprocess.run(cmd + ["--vectors", str(tmp_path)], capture_output=True, text=True)
        assert out.returncode == 0, (host, out.stderr[-3000:])
        answers[host] = json.loads(out.stdout)
    classes = {"accepted", *contract.REFUSAL_CLASSES}
    wrong = []
    for k, case in enumerate(manifest):
        got = {host: a[k]["verdict"] for host, a in answers.items()}
        assert set(got.values()) <= classes, (case, got)
        if len(set(got.values())) != 1:
            wrong.append((case["file"], got, {h: a[k]["message"][:160] for h, a in answers.items()}))
    assert not wrong, wrong
    for case in manifest:
        os.remove(os.path.join(tmp_path, case["file"]))


def test_a_fine_tuned_file_ships_without_its_optimizer_state(exported, tmp_path):
    """save_model (tftl-train --output, the fleet, the examples) writes a deployable file: weights
    and BN statistics, no Adam slots. It is smaller, predicts exactly as the session that wrote
    it, and trains on from a fresh optimizer state; a file with the whole state still reads."""
    from tftl.runtime import modelfile
    from tftl.runtime.session import Session

    path = str(exported(**PI_MODEL))
    s = Session(path, threads=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (s.batch, s.image_size, s.image_size, 3)).astype(np.float32)
    labels = np.arange(s.batch, dtype=np.int32) % len(s.labels)
    s.train_step(images, labels, 1e-3)
    state = s.state()
    slim, full = str(tmp_path / "slim.tflite"), str(tmp_path / "full.tflite")
    modelfile.save_model(slim, s.model_file, s.labels, state)
    modelfile.save_model(full, s.model_file, s.labels, modelfile.state_npz_bytes(state))
    optimizer = set(s.meta.state_groups["optimizer"])
    assert optimizer and os.path.getsize(slim) < os.path.getsize(full)
    _, embedded, _ = modelfile.read_model_and_state(slim)
    assert set(embedded) == set(state) - optimizer
    for p in (slim, full):
        np.testing.assert_array_equal(Session(p, threads=1).predict(images), s.predict(images))
    again = Session(slim, threads=1)
    assert float(again.state(("optimizer",))["opt_step"][0]) == 0.0
    assert np.isfinite(again.train_step(images, labels, 1e-3))
    assert float(again.state(("optimizer",))["opt_step"][0]) == 1.0


def _host_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, (cmd, out.stderr[-3000:])
    return json.loads(out.stdout)


def _host_commands():
    return {"javascript": ["node", os.path.join(REPO, "web_demo", "test", "probe.mjs")],
            "java": [os.path.join(REPO, "android_demo", "tools", "check")]}


def test_every_host_fits_the_same_linear_probe_and_resolves_the_same_recipe():
    """contract/vectors/probe.json (Python's probe.fit_head and resolved recipes): the browser
    (src/probe.js) and the Java core (Probe.java) choose the same L2 with the same CV accuracies,
    fit the same kernel and bias within 1e-4 of the largest weight, and resolve every recipe alike."""
    _node()
    require_java()
    path = os.path.join(REPO, "contract", "vectors", "probe.json")
    with open(path, encoding="utf-8") as f:
        want = json.load(f)
    assert want == json.loads(json.dumps(spec.probe_vectors()))  # test_spec checks the whole folder too
    for host, cmd in _host_commands().items():
        got = _host_json(cmd + ["--probe", path] if host == "java" else cmd + [path])
        assert got["recipes"] == [r["resolved"] for r in want["recipes"]], host
        for g, w in zip(got["probes"], want["probes"], strict=True):
            assert g["l2"] == w["l2"], (host, g["l2"], w["l2"])
            np.testing.assert_allclose(g["cv_accuracy"], list(w["cv_accuracy"].values()), atol=1e-4, err_msg=host)
            for key in ("kernel", "bias"):
                expected = np.asarray(w[key], np.float64).reshape(-1)
                np.testing.assert_allclose(g[key], expected, rtol=0, atol=1e-4 * np.abs(expected).max(), err_msg=host)


def test_every_host_trains_a_real_export_with_its_recipe(file_vectors):
    """The recipe of a real export (converters.export.RECIPE: a probe head) resolves to the same lr,
    epochs, warm-up, views and head_init for N photos in Python (contract.Recipe.resolved,
    as loop's Trainer), the browser and the Java core."""
    _node()
    require_java()
    from tftl.runtime import modelfile

    path = os.path.join(file_vectors, "fresh.tflite")
    meta = modelfile.read_model(path).meta
    assert meta.recipe.head_init == "probe" and len(meta.recipe.classifier) == 2, meta.recipe
    for images in (37, 400):
        want = meta.recipe.resolved(images, meta.batch)
        for host, cmd in _host_commands().items():
            assert _host_json(cmd + [path, "--recipe", str(images)]) == want, (host, images)
        # As used, not just as read: the settings Java's Trainer records for the cache the app builds,
        # against tftl-train's defaults (--augment on; features.open_sources caches cache_views views
        # when augmenting, else 1). The real Java run's settings are checked in tests/test_android.py.
        used = _host_json(_host_commands()["java"] + [path, "--settings", str(images)])
        assert {k: used[k] for k in _USED} == _python_settings(meta, images), images


_USED = ("augment", "cache_views", "epochs", "lr", "warmup_steps", "head_init", "train_images", "batch")


def _python_settings(meta, images) -> dict:
    """tftl-train's recorded settings (loop.Trainer._prepare) for `images` photos with every default."""
    from tftl.runtime import config

    defaults = {f.name: f.default for f in dataclasses.fields(config.TrainConfig)}
    recipe = meta.recipe  # no flags: TrainConfig.recipe lays nothing over it
    resolved = recipe.resolved(images, meta.batch)
    return {"augment": defaults["augment"], "cache_views": recipe.cache_views if defaults["augment"] else 1,
            "epochs": resolved["epochs"], "lr": recipe.lr, "warmup_steps": resolved["warmup_steps"],
            "head_init": recipe.head_init, "train_images": images, "batch": meta.batch}
