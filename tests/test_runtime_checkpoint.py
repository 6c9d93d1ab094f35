"""tftl.runtime.checkpoint: round trip, atomic writes, refusal of damaged or foreign files."""

import json
import os
import re

import numpy as np
import pytest

from tftl.runtime import checkpoint as ckpt
from tftl.runtime import files

META = {"model_hash": "ab" * 32, "labels": ["daisy", "roses"], "epoch": 3, "step": 120, "lr": 0.01}


def arrays():
    rng = np.random.default_rng(0)
    return {
        "dense/kernel": rng.standard_normal((8, 2)).astype(np.float32),
        "dense/bias": np.zeros(2, np.float32),
        "bn/moving_mean": rng.standard_normal(8).astype(np.float16),
        "optimizer/step": np.asarray(120, np.int64),
        "mask": np.array([True, False]),
    }


def test_round_trip(tmp_path):
    path = tmp_path / "ckpt.npz"
    ckpt.save_checkpoint(path, arrays(), META)
    loaded, meta = ckpt.load_checkpoint(path)
    assert meta == META
    assert sorted(loaded) == sorted(arrays())
    for name, value in arrays().items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape
        np.testing.assert_array_equal(loaded[name], value)
    # A plain npz any numpy can read, with JSON metadata.
    with np.load(path, allow_pickle=False) as npz:
        assert json.loads(npz["__meta__"].tobytes()) == META


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.npz"
    ckpt.save_checkpoint(path, arrays(), META)
    ckpt.save_checkpoint(str(path), {"w": np.ones(3, np.float32)}, {**META, "epoch": 4})
    loaded, meta = ckpt.load_checkpoint(path)
    assert list(loaded) == ["w"] and meta["epoch"] == 4
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    ckpt.save_checkpoint(path, arrays(), META)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="dtype object"):
        ckpt.save_checkpoint(path, {"bad": np.array([{"a": 1}], dtype=object)}, META)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        ckpt.save_checkpoint(path, arrays(), {"x": object()})
    with pytest.raises(ValueError, match="reserved"):
        ckpt.save_checkpoint(path, {"__meta__": np.zeros(1)}, META)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with files.atomic_write(path) as f:
            f.write(b"half")
            raise Boom()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


@pytest.mark.parametrize("cut", [0, 10, 200, -30])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    path = tmp_path / "ckpt.npz"
    ckpt.save_checkpoint(path, arrays(), META)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    expected = rf"^checkpoint {re.escape(str(path))} is truncated or not a tftl checkpoint"
    with pytest.raises(ckpt.CheckpointError, match=expected):
        ckpt.load_checkpoint(path)


def test_foreign_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "none.npz")
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(2))  # no metadata
    npy = tmp_path / "arr.npy"
    np.save(npy, np.ones(2))
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, w=np.array([None], dtype=object))
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    for path in (plain, npy, pickled, text):
        with pytest.raises(ckpt.CheckpointError, match=re.escape(str(path))) as info:
            ckpt.load_checkpoint(path)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_check_compatible():
    ckpt.check_compatible(META, model_hash="ab" * 32, labels=["daisy", "roses"])
    another = r"checkpoint /x/c.npz was written for another model \(hash abab.*--checkpoint-dir"
    with pytest.raises(ckpt.CheckpointError, match=another):
        ckpt.check_compatible(META, model_hash="cd" * 32, labels=["daisy", "roses"], path="/x/c.npz")
    with pytest.raises(
        ckpt.CheckpointError,
        match=r"for labels \['daisy', 'roses'\] but the images have \['daisy', 'tulips'\] — remove it",
    ):
        ckpt.check_compatible(META, model_hash="ab" * 32, labels=["daisy", "tulips"])
    with pytest.raises(ckpt.CheckpointError, match="another model"):
        ckpt.check_compatible({}, model_hash="ab" * 32, labels=["daisy", "roses"])
