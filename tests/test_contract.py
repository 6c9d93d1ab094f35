"""The model-file contract (tftl-3) through both LiteRT Python front ends.

A real export (mbv2 on its ImageNet weights, 96 px, MobileTL-2) is driven through the
classic `Interpreter` and through `CompiledModel` (the API of LiteRT's C library, the
Kotlin/Java CompiledModel and LiteRT.js): train, save twice, restore, infer, extract and
train_features, on flowers5 photos, with the two front ends compared step by step.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FLOWERS, MBV2_WEIGHTS, PI_MODEL, REPO, need
from tftl.runtime import compiled, contract, data, interpreter, modelfile
from tftl.runtime.session import Session, SessionError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
pytestmark = pytest.mark.skipif(not compiled.available(), reason="ai_edge_litert CompiledModel missing")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """mbv2 96 px MobileTL-2, batch 4, the 5 flowers5 labels: exported in a subprocess."""
    out = tmp_path_factory.mktemp("contract") / "mbv2_96.tflite"
    labels = out.with_name("labels.txt")
    labels.write_text("\n".join(sorted(os.listdir(need(os.path.join(FLOWERS, "train"))))) + "\n")
    cmd = [sys.executable, "-m", "converters.export", "--model", "mbv2", "--weights", need(MBV2_WEIGHTS),
           "--blocks", "2", "--image-size", "96", "--batch", "4", "--labels", str(labels), "--output", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def photos():
    """Two batches of 4 real flowers5 photos (one per class, then the next) at 96 px."""
    folder = data.ImageFolder(need(os.path.join(FLOWERS, "train")))
    picked = [next(s for s in folder.samples if s[1] == c) for c in range(4)]
    picked += [[s for s in folder.samples if s[1] == c][1] for c in (4, 3, 2, 1)]
    images = np.stack([data.load_image(p, 96) for p, _ in picked])
    labels = np.array([c for _, c in picked], np.int32)
    return images, labels


class InterpreterRunner:
    """The classic Interpreter behind the same `run(name, **inputs)` call as CompiledRunner."""

    def __init__(self, flatbuffer):
        self.interpreter = interpreter.load_interpreter(flatbuffer, 1)

    def run(self, name, **inputs):
        out = self.interpreter.get_signature_runner(name)(**inputs)
        return {k: np.array(v) for k, v in out.items()}


TOKEN = {contract.SAVE_INPUT: np.zeros(1, np.float32)}


def session_script(runner, images, labels):
    """The calls an app makes, in order; returns everything observable."""
    lr = np.full(1, 1e-3, np.float32)
    seen = {"initial": runner.run(contract.SAVE, **TOKEN)}
    seen["train_loss"] = [contract.first(runner.run(contract.TRAIN, images=images[i:i + 4], labels=labels[i:i + 4],
                                           learning_rate=lr)[contract.LOSS]) for i in (0, 0, 0, 4)]
    seen["save1"] = runner.run(contract.SAVE, **TOKEN)
    seen["save2"] = runner.run(contract.SAVE, **TOKEN)
    seen["infer_trained"] = runner.run(contract.INFER, images=images[:4])[contract.PROBABILITIES]
    seen["restore_ok"] = runner.run(contract.RESTORE, **seen["initial"])[contract.RESTORE_OUTPUT]
    seen["save3"] = runner.run(contract.SAVE, **TOKEN)
    seen["infer_initial"] = runner.run(contract.INFER, images=images[:4])[contract.PROBABILITIES]
    feats = runner.run(contract.EXTRACT, images=images[:4])[contract.FEATURES]
    seen["features"] = feats
    seen["feature_loss"] = [contract.first(runner.run(
        contract.TRAIN_FEATURES, features=feats, labels=labels[:4], sample_weight=np.array([1, 1, 1, 0], np.float32),
        learning_rate=lr)[contract.LOSS]) for _ in range(3)]
    seen["restore_again"] = runner.run(contract.RESTORE, **seen["save1"])[contract.RESTORE_OUTPUT]
    seen["save4"] = runner.run(contract.SAVE, **TOKEN)
    return seen


@pytest.fixture(scope="module")
def both(model_path, photos):
    mf = modelfile.read_model(model_path)
    images, labels = photos
    return (session_script(InterpreterRunner(mf.flatbuffer), images, labels),
            session_script(compiled.CompiledRunner(mf.flatbuffer, 1), images, labels))


def test_file_declares_the_tftl3_contract(model_path):
    mf = modelfile.read_model(model_path)
    assert mf.meta.format == contract.FORMAT == "tftl-3"
    interp = interpreter.load_interpreter(mf.flatbuffer)
    sigs = interp.get_signature_list()
    for name in sigs:  # no 0-d tensor anywhere: aarch64 LiteRT crashes resizing one (tftl-3)
        runner = interp.get_signature_runner(name)
        for side in (runner.get_input_details(), runner.get_output_details()):
            assert all(len(d["shape"]) >= 1 for d in side.values()), (name, side)
    assert [int(d) for d in interp.get_signature_runner(contract.TRAIN).get_input_details()[
        contract.LEARNING_RATE]["shape"]] == [1]
    assert sorted(sigs) == sorted(contract.SIGNATURES)
    assert sigs[contract.SAVE]["inputs"] == [contract.SAVE_INPUT]
    assert sigs[contract.RESTORE]["outputs"] == [contract.RESTORE_OUTPUT]
    groups = mf.meta.state_groups
    assert sorted(sum(map(list, groups.values()), [])) == sorted(mf.meta.state_names)
    assert contract.OPT_STEP in groups[contract.OPTIMIZER]
    assert all(n.endswith(("moving_mean", "moving_variance")) for n in groups[contract.BN_STATISTICS])
    assert len(groups[contract.OPTIMIZER]) == 2 * len(groups[contract.TRAINABLE]) + 1  # Adam m, v + step
    cm = compiled.CompiledRunner(mf.flatbuffer)
    details = cm.model.get_output_tensor_details(contract.SAVE)
    assert all(len(d["shape"]) >= 1 for d in details.values()), "a scalar state output breaks CompiledModel"


@pytest.mark.parametrize("front_end", [0, 1], ids=["Interpreter", "CompiledModel"])
def test_every_signature_works_repeatedly(both, front_end):
    seen = both[front_end]
    loss = seen["train_loss"]
    assert loss[2] < loss[1] < loss[0], loss  # the same batch, after each update
    assert float(seen["save1"][contract.OPT_STEP][0]) == 4.0
    for name, value in seen["save1"].items():
        np.testing.assert_array_equal(seen["save2"][name], value, err_msg=f"second save differs: {name}")
        np.testing.assert_array_equal(seen["save3"][name], seen["initial"][name], err_msg=f"restore: {name}")
        np.testing.assert_array_equal(seen["save4"][name], value, err_msg=f"restore again: {name}")
    assert seen["restore_ok"].tolist() == [1.0] and seen["restore_again"].tolist() == [1.0]
    assert seen["feature_loss"][2] < seen["feature_loss"][0]
    assert not np.allclose(seen["infer_trained"], seen["infer_initial"])


def test_interpreter_and_compiled_model_agree(both):
    a, b = both
    # The same kernels run under both APIs: equal to float32 rounding, in practice bitwise.
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(a["feature_loss"], b["feature_loss"], rtol=1e-6)
    for key in ("infer_trained", "infer_initial", "features"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for name in a["save1"]:
        np.testing.assert_allclose(a["save1"][name], b["save1"][name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_restore_reports_non_finite_state(model_path):
    mf = modelfile.read_model(model_path)
    cm = compiled.CompiledRunner(mf.flatbuffer)
    state = cm.run(contract.SAVE, **TOKEN)
    bad = dict(state)
    name = mf.meta.state_groups[contract.TRAINABLE][0]
    bad[name] = bad[name].copy()
    bad[name].flat[0] = np.nan
    assert cm.run(contract.RESTORE, **bad)[contract.RESTORE_OUTPUT].tolist() == [0.0]
    with pytest.raises(SessionError, match="NaN or infinite"):
        Session(model_path).restore_state(bad)


def test_session_grouped_state_and_partial_restore(model_path, photos):
    images, labels = photos
    s = Session(model_path, threads=1)
    fresh = s.state()
    assert set(s.state([contract.TRAINABLE])) == set(s.meta.state_groups[contract.TRAINABLE])
    for i in (0, 4):
        s.train_step(images[i:i + 4], labels[i:i + 4], 1e-3)
    trained = s.state()
    # weights only, optimizer reset: restore the fresh optimizer group over the trained model
    s.restore_state({n: fresh[n] for n in s.meta.state_groups[contract.OPTIMIZER]}, partial=True)
    now = s.state()
    for n in s.meta.state_groups[contract.TRAINABLE]:
        np.testing.assert_array_equal(now[n], trained[n])
    assert now[contract.OPT_STEP].tolist() == [0.0] and trained[contract.OPT_STEP].tolist() == [2.0]
    with pytest.raises(SessionError, match="missing"):
        s.restore_state({contract.OPT_STEP: np.zeros(1, np.float32)})
    # a tftl-1 checkpoint stored opt_step as a scalar
    s.restore_state({**trained, contract.OPT_STEP: np.float32(7.0)})
    assert s.state()[contract.OPT_STEP].tolist() == [7.0]


def good_meta():
    return {"format": "tftl-2", "model": "mbv2", "scheme": "mobiletl", "blocks": 3, "image_size": 96,
            "batch": 4, "num_labels": 5, "feature_shape": [3, 3, 96], "trunk_end": "block_13_add",
            "state_names": ["a__kernel", "b__moving_mean", "opt_step", "opt_m__a__kernel"],
            "content_hash": "0" * 64}


@pytest.mark.parametrize("key,value", [
    ("format", "tftl-9"), ("format", None), ("image_size", "96"), ("image_size", 0), ("image_size", 10 ** 9),
    ("batch", True), ("batch", -1), ("num_labels", 2.5), ("feature_shape", [1 << 20, 1 << 20, 3]),
    ("feature_shape", "3x3"), ("feature_shape", [3, -3]), ("state_names", [1, 2]), ("trunk_end", 5),
    ("state_groups", {"trainable": ["a__kernel"]}), ("model", ""), ("content_hash", None),
    ("trained_state", "yes"), ("bn_momentum", 1.0), ("bn_momentum", "0.99"), ("bn_momentum", True),
])
def test_bad_metadata_is_one_line_with_the_fix(key, value):
    meta = {**good_meta(), key: value}
    with pytest.raises(contract.ContractError) as e:
        contract.ModelMetadata.from_dict(meta, where="model file m.tflite")
    msg = str(e.value)
    assert "\n" not in msg and "m.tflite" in msg and "export" in msg, msg


def test_bn_momentum_is_read_and_defaults_to_the_exporters_old_value():
    assert contract.ModelMetadata.from_dict({**good_meta(), "bn_momentum": 0.9}).bn_momentum == 0.9
    assert contract.ModelMetadata.from_dict(good_meta()).bn_momentum == contract.DEFAULT_BN_MOMENTUM == 0.99


def test_metadata_groups_tftl1_files_by_name():
    meta = contract.ModelMetadata.from_dict({**good_meta(), "format": "tftl-1"})
    assert meta.state_groups == {"trainable": ("a__kernel",), "bn_statistics": ("b__moving_mean",),
                                 "optimizer": ("opt_step", "opt_m__a__kernel")}
    assert json.loads(json.dumps(meta.raw)) == {**good_meta(), "format": "tftl-1"}


# --------------------------------------------------------------------- tftl-2 files (issue 18)

def test_a_tftl2_file_trains_exactly_like_tftl3(exported, photos):
    """The previous format (scalar learning_rate) still trains on a safe runtime, with the same
    losses bit for bit: tftl-3 changed the ranks of two tensors, not the math."""
    new, old = exported(**PI_MODEL), exported(**PI_MODEL, legacy=True)
    assert modelfile.read_model(old).meta.format == "tftl-2"
    sigs = modelfile.read_model(old).signatures
    assert sigs[contract.TRAIN]["inputs"][contract.LEARNING_RATE][0] == ()
    images, labels = photos  # 8 flowers5 photos at 96 px: PI_MODEL's batch and size
    losses = []
    for path in (new, old):
        s = Session(path, threads=1)
        steps = [s.train_step(images, labels, 1e-3) for _ in range(3)]
        feats = s.extract(images)
        steps += [s.train_features_step(feats, labels, 1e-3) for _ in range(2)]
        losses.append(steps)
    assert losses[0] == losses[1], losses
    assert losses[0] == sorted(losses[0], reverse=True) and losses[0][-1] < losses[0][0], losses


def test_a_tftl2_file_is_refused_before_work_where_a_scalar_input_crashes(exported, photos, monkeypatch, tmp_path,
                                                                          capsys):
    """On aarch64 with ai-edge-litert (faked here; really run by tests/test_raspberry_pi.py) a tftl-2
    file's training is one line with the fix and exit 2, found before any photo is read;
    its inference still runs, and a tftl-3 file trains."""
    new, old = exported(**PI_MODEL), exported(**PI_MODEL, legacy=True)
    monkeypatch.setattr(interpreter, "scalar_inputs_crash", lambda: True)
    with pytest.raises(SessionError, match=r"tftl-2 file whose train signature takes a scalar learning_rate.*"
                                           r"export it again"):
        Session(old).require(*contract.TRAIN_SIGNATURES, purpose="training")
    assert Session(old).predict(photos[0]).shape == (8, 5)
    Session(new).require(*contract.TRAIN_SIGNATURES, purpose="training")
    from tftl.runtime import cli
    photos = tmp_path / "photos"
    for label in modelfile.read_model(old).labels:
        (photos / label).mkdir(parents=True)  # empty classes: the model must be refused first
    capsys.readouterr()
    code = cli.train_main([str(old), str(photos), "--output", str(tmp_path / "out.tflite")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "scalar learning_rate" in err[0], err
    assert not (tmp_path / "out.tflite").exists()


def test_a_tftl3_file_with_a_scalar_tensor_is_refused(exported, tmp_path):
    """tftl-3 promises no 0-d tensor; a file that says tftl-3 but has one is refused on read."""
    mf = modelfile.read_model(exported(**PI_MODEL, legacy=True))
    bad = tmp_path / "bad.tflite"
    modelfile.write_model(bad, mf.flatbuffer, {**mf.metadata, "format": "tftl-3"}, mf.labels)
    with pytest.raises(modelfile.ModelFileError, match="learning_rate tensor is a scalar, which format tftl-3 forbids"):
        modelfile.read_model(bad)
