"""tftl.runtime.modelfile and .interpreter on a tiny real TFLite model (y = 2x).

TensorFlow is used here only to make the model; the runtime itself must not import it.
"""

import hashlib
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tftl.runtime import interpreter as rt
from tftl.runtime import modelfile as mf

REPO = pathlib.Path(__file__).resolve().parents[1]
LABELS = ["daisy", "dandelion", "roses"]
# The smallest metadata the tftl-2 contract accepts (the Doubler graph has no tftl signatures).
META = {"format": "tftl-2", "model": "doubler", "scheme": "ft_last", "image_size": 224, "batch": 1}


@pytest.fixture(scope="module")
def flatbuffer():
    tf = pytest.importorskip("tensorflow")

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def infer(self, x):
            return {"y": x * 2.0}

    module = Doubler()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.infer.get_concrete_function()], module)
    return converter.convert()


@pytest.fixture
def model_path(tmp_path, flatbuffer):
    path = tmp_path / "m.tftl"
    mf.write_model(path, flatbuffer, META, LABELS)
    return path


def run_double(content):
    interp = rt.load_interpreter(content, threads=1)
    (name,) = interp.get_signature_list()
    runner = rt.signature_runner(interp, name)
    return runner(x=np.arange(4, dtype=np.float32)[None])["y"]


def test_round_trip(model_path, flatbuffer):
    model = mf.read_model(model_path)
    assert model.flatbuffer == flatbuffer
    assert model.labels == LABELS
    assert model.path == str(model_path)
    assert model.metadata == {
        **META,
        "content_hash": hashlib.sha256(flatbuffer).hexdigest(),
        "num_labels": 3,
    }
    with zipfile.ZipFile(model_path) as archive:
        assert archive.namelist() == ["tftl.json", "labels.txt"]
        assert archive.read("labels.txt") == b"daisy\ndandelion\nroses\n"
    assert os.listdir(model_path.parent) == ["m.tftl"]  # no temp file left behind


def test_write_is_reproducible_and_does_not_touch_metadata(tmp_path, flatbuffer):
    meta = {"scheme": "ft_last"}
    written = mf.write_model(tmp_path / "a.tftl", flatbuffer, meta, LABELS)
    mf.write_model(tmp_path / "b.tftl", flatbuffer, meta, LABELS)
    assert meta == {"scheme": "ft_last"} and written["num_labels"] == 3
    assert (tmp_path / "a.tftl").read_bytes() == (tmp_path / "b.tftl").read_bytes()


def test_zip_is_streamed_with_offsets_relative_to_its_start(tmp_path, flatbuffer):
    """write_model streams the ZIP into the file; the bytes must equal a ZIP built apart and
    appended (Java's and JS's readers slice the ZIP off at the flatbuffer's end)."""
    state = io.BytesIO()
    np.savez(state, w=np.arange(50_000, dtype=np.float32))
    written = mf.write_model(tmp_path / "s.tftl", flatbuffer, META, LABELS, extra_files={"state.npz": state.getvalue()})
    apart = io.BytesIO()
    with zipfile.ZipFile(apart, "w") as archive:
        mf._zip_member(archive, mf.METADATA_NAME, json.dumps(written, indent=2, sort_keys=True).encode("utf-8"))
        mf._zip_member(archive, mf.LABELS_NAME, b"daisy\ndandelion\nroses\n")
        mf._zip_member(archive, "state.npz", state.getvalue())
    data = (tmp_path / "s.tftl").read_bytes()
    assert data == bytes(flatbuffer) + apart.getvalue()
    with zipfile.ZipFile(io.BytesIO(data[len(flatbuffer):])) as archive:  # the ZIP alone opens too
        assert archive.read("state.npz") == state.getvalue()


def test_interpreter_accepts_the_whole_file_with_appended_zip(model_path, flatbuffer):
    """The appended ZIP is invisible to the interpreter: whole file and bare flatbuffer agree."""
    whole = model_path.read_bytes()
    assert len(whole) > len(flatbuffer)
    np.testing.assert_array_equal(run_double(whole), [[0, 2, 4, 6]])
    np.testing.assert_array_equal(run_double(mf.read_model(model_path).flatbuffer), [[0, 2, 4, 6]])


def test_signature_runner_names_the_available_signatures(flatbuffer):
    interp = rt.load_interpreter(flatbuffer)
    with pytest.raises(ValueError, match=r"no signature 'train' \(it has: serving_default\)"):
        rt.signature_runner(interp, "train")


def test_runtime_selection(monkeypatch):
    monkeypatch.delenv("TFTL_RUNTIME", raising=False)
    assert rt.runtime_name() in rt.RUNTIMES
    monkeypatch.setenv("TFTL_RUNTIME", "ai_edge_litert")
    assert rt.runtime_name() == "ai_edge_litert"
    monkeypatch.setenv("TFTL_RUNTIME", "tensorflow")
    with pytest.raises(RuntimeError, match="TFTL_RUNTIME=tensorflow is not a TFLite runtime"):
        rt.runtime_name()
    monkeypatch.setenv("TFTL_RUNTIME", "tflite_runtime")
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)  # simulate "not installed"
    with pytest.raises(RuntimeError, match="pip install tflite-runtime"):
        rt.runtime_name()


@pytest.mark.parametrize("keep", [0.99, 0.9, 0.5])
def test_truncated_model_is_refused(model_path, keep):
    data = model_path.read_bytes()
    model_path.write_bytes(data[: int(len(data) * keep)])
    expected = rf"^model file {re.escape(str(model_path))} is truncated or corrupted — export it again$"
    with pytest.raises(mf.ModelFileError, match=expected):
        mf.read_model(model_path)


def test_corrupted_flatbuffer_is_refused(model_path):
    data = bytearray(model_path.read_bytes())
    data[100] ^= 0xFF
    model_path.write_bytes(bytes(data))
    with pytest.raises(mf.ModelFileError, match="truncated or corrupted"):
        mf.read_model(model_path)


def test_plain_tflite_and_other_files_are_refused(tmp_path, flatbuffer):
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(flatbuffer)
    with pytest.raises(
        mf.ModelFileError,
        match=rf"^{re.escape(str(plain))} is not a tftl model \(no tftl metadata\) — export it again with "
        r"python -m converters.export$",
    ):
        mf.read_model(plain)
    with pytest.raises(mf.ModelFileError, match="does not exist"):
        mf.read_model(tmp_path / "missing.tftl")
    text = tmp_path / "labels.txt"
    text.write_text("daisy\nroses\n")
    with pytest.raises(mf.ModelFileError, match="is not a TFLite model"):
        mf.read_model(text)
    with pytest.raises(ValueError, match="not a TFLite model"):
        mf.write_model(tmp_path / "x.tftl", b"not a model at all", {}, LABELS)


def test_bad_labels_are_refused(tmp_path, flatbuffer):
    for labels in ([], ["a", "a"], ["a\nb"], [" a"], [""]):
        with pytest.raises(ValueError):
            mf.write_model(tmp_path / "x.tftl", flatbuffer, {}, labels)
    assert not list(tmp_path.iterdir())


def test_runtime_imports_no_tensorflow():
    code = (
        "import sys\n"
        "import tftl.runtime, tftl.runtime.data, tftl.runtime.checkpoint, tftl.runtime.modelfile\n"
        "import tftl.runtime.interpreter, tftl.runtime.progress\n"
        "tftl.runtime.interpreter.runtime_name()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_cut_of_a_model_is_reported_as_truncated(model_path, flatbuffer):
    """Cutting anywhere (into the archive or into the flatbuffer) must not look like a plain .tflite.

    The one exception is a cut exactly at the end of the flatbuffer: that file IS a plain
    .tflite, and is refused as one.
    """
    assert mf._flatbuffer_complete(flatbuffer)
    data = model_path.read_bytes()
    cut_path = model_path.parent / "cut.tftl"
    for cut in range(8, len(data)):
        cut_path.write_bytes(data[:cut])
        expected = "not a tftl model" if cut == len(flatbuffer) else "truncated or corrupted"
        with pytest.raises(mf.ModelFileError, match=expected):
            mf.read_model(cut_path)


def test_signature_tensors_reads_the_declared_shapes(flatbuffer):
    sigs = mf.signature_tensors(flatbuffer)
    (entry,) = sigs.values()
    assert entry == {"inputs": {"x": ((1, 4), mf.FLOAT32)}, "outputs": {"y": ((1, 4), mf.FLOAT32)}}


def test_labels_txt_with_bom_and_crlf_reads_clean_labels(model_path):
    model = mf.read_model(model_path)
    path = model_path.parent / "bom.tftl"
    with open(path, "wb") as f:
        f.write(model.flatbuffer)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("tftl.json", json.dumps(model.metadata))
            archive.writestr("labels.txt", "\ufeffdaisy\r\ndandelion\r\nroses".encode())
        f.write(buf.getvalue())
    assert mf.read_model(path).labels == LABELS


def test_model_without_state_has_no_state(model_path):
    assert mf.read_state(model_path) == (None, None)
