"""Adversarial suite for the device readers (issue 10): images, labels, model files, state, checkpoints.

Every case is an input a hostile or an unlucky user could produce, and asserts one of: a
one-line error that names the file and the fix, a counted skip, or the correct value.
Test names start with the group:

  test_data_loss_*   a write that fails or is killed never destroys the previous file
  test_crash_*       damaged/hostile bytes or wrong types: one line, no traceback, bounded memory
  test_hang_*        FIFOs, devices and folders where a file is expected: refused at once
  test_silent_*      inputs that used to give a wrong result quietly: now right or refused
  test_late_*        bad names caught before any work, with a message that states the rule

The CLI-level cases of the issue (paths, signals, --threads, existing checkpoints) are
tested with the CLI; this file covers tftl.runtime.{data, modelfile, checkpoint, contract,
safezip, files}.
"""

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from hardening_util import (LABELS, META, STATE_SHAPES, good_state, model_bytes, npy_bytes, one_line,
                            tiny_flatbuffer, zip_bytes)
from tftl.runtime import checkpoint as ckpt
from tftl.runtime import contract, data, files, modelfile, safezip

FAKE_FLATBUFFER = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 56  # enough for write_model's identifier check


@pytest.fixture(scope="module")
def fb(tmp_path_factory):
    return tiny_flatbuffer(tmp_path_factory)


@pytest.fixture
def deadline():
    """Fail (instead of hanging the suite) when a call blocks for more than 10 s."""
    def on_alarm(signum, frame):
        raise TimeoutError("blocked for 10 s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def write(path, content: bytes):
    path.write_bytes(content)
    return path


def read_model_error(tmp_path, content: bytes) -> str:
    path = write(tmp_path / "m.tflite", content)
    with pytest.raises(modelfile.ModelFileError) as info:
        modelfile.read_model(path)
    message = one_line(info.value)
    assert str(path) in message
    return message


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def half_red(width=40, height=30):
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(arr)


def skipped(path, size=16) -> str:
    """load_image's reason for refusing `path` (asserting an ImageError, one line)."""
    with pytest.raises(data.ImageError) as info:
        data.load_image(path, size)
    assert info.value.path == str(path)
    return one_line(info.value, fix=False)


def train_meta(**overrides) -> dict:
    meta = {"format": ckpt.TRAIN_FORMAT, "model_hash": "h", "labels": ["a", "b"], "epoch": 1,
            "position": 0, "global_step": 3, "rng_state": np.random.default_rng(0).bit_generator.state,
            "partial": {}, "settings": {}, "history": [{"epoch": 1}], "skipped": {}}
    meta.update(overrides)
    return meta


def raw_checkpoint(members) -> bytes:
    return zip_bytes({f"{k}.npy": v for k, v in members.items()})


def meta_npy(meta) -> bytes:
    return npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))


# ======================================================================================
# late validation: the label rule, checked before any work
# ======================================================================================

BAD_LABELS = {
    "vt": "a\x0bb", "ff": "a\x0cb", "fs": "a\x1cb", "gs": "a\x1db", "rs": "a\x1eb", "nel": "a\x85b",
    "u2028": "a\u2028b", "u2029": "a\u2029b", "lf": "a\nb", "cr": "a\rb", "tab": "a\tb", "nul": "a\x00b",
    "del": "a\x7fb", "slash": "a/b", "backslash": "a\\b", "bom": "\ufeffdaisy", "dot": ".", "dotdot": "..",
    "lead_space": " daisy", "trail_space": "daisy ", "empty": "", "blank": "   ", "too_long": "x" * 257,
    "surrogate": "a\udcffb", "not_text": 5,
}


@pytest.mark.parametrize("label", list(BAD_LABELS.values()), ids=list(BAD_LABELS))
def test_late_check_labels_states_the_rule(label):
    with pytest.raises(contract.ContractError) as info:
        contract.check_labels(["daisy", label], where="photos")
    message = one_line(info.value)
    assert message.startswith("photos: label ") and "rename it" in message
    assert contract.LABEL_RULE in message or "not text" in message


@pytest.mark.parametrize("label", [v for v in BAD_LABELS.values() if isinstance(v, str)],
                         ids=[k for k, v in BAD_LABELS.items() if isinstance(v, str)])
def test_late_write_model_refuses_bad_label_and_writes_nothing(tmp_path, label):
    with pytest.raises(ValueError) as info:
        modelfile.write_model(tmp_path / "out.tflite", FAKE_FLATBUFFER, META, ["daisy", label])
    one_line(info.value)
    assert os.listdir(tmp_path) == []


FOLDER_NAMES = {k: v for k, v in BAD_LABELS.items()
                if isinstance(v, str) and v.strip() and "/" not in v and "\x00" not in v
                and v not in (".", "..") and len(v) < 200}


@pytest.mark.parametrize("name", list(FOLDER_NAMES.values()), ids=list(FOLDER_NAMES))
def test_late_class_folder_names_refused_before_any_image_is_listed(tmp_path, name, monkeypatch):
    root = tmp_path / "photos"
    for folder in ("daisy", name):
        os.makedirs(os.path.join(os.fsencode(root), os.fsencode(folder)))
        half_red().save(os.path.join(os.fsencode(root), os.fsencode(folder), b"a.png"))
    listed = []
    real = data._list_images
    monkeypatch.setattr(data, "_list_images", lambda folder: listed.append(folder) or real(folder))
    with pytest.raises(ValueError) as info:
        data.ImageFolder(root)
    assert "rename it" in one_line(info.value) and listed == []


def test_late_duplicate_labels():
    with pytest.raises(contract.ContractError, match="appears twice"):
        contract.check_labels(["a", "b", "a"])


@pytest.mark.parametrize("kind", ["missing", "folder", "devnull", "fifo"])
def test_late_model_path_messages_say_what_the_path_is(tmp_path, kind, deadline):
    path = {"missing": tmp_path / "nope.tflite", "folder": tmp_path, "devnull": "/dev/null",
            "fifo": tmp_path / "pipe.tflite"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(modelfile.ModelFileError) as info:
        modelfile.read_model(path)
    expected = {"missing": "does not exist", "folder": "is a folder", "devnull": "is a device",
                "fifo": "is a FIFO"}[kind]
    assert expected in one_line(info.value)


@pytest.mark.parametrize("kind", ["missing", "folder", "devnull"])
def test_late_checkpoint_path_messages(tmp_path, kind):
    path = {"missing": tmp_path / "c.npz", "folder": tmp_path, "devnull": "/dev/null"}[kind]
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert {"missing": "does not exist", "folder": "is a folder", "devnull": "is a device"}[kind] \
        in one_line(info.value)


# ======================================================================================
# crash: tftl.json type confusions and ranges (each refused in one line)
# ======================================================================================

FIELD_CASES = [
    ("batch", "2"), ("batch", 2.0), ("batch", 0), ("batch", -1), ("batch", 10**9), ("batch", True),
    ("batch", None), ("batch", [2]),
    ("image_size", "8"), ("image_size", 0), ("image_size", 4), ("image_size", 10**6), ("image_size", 8.5),
    ("image_size", None),
    ("num_labels", "3"), ("num_labels", 0), ("num_labels", -3), ("num_labels", 10**7), ("num_labels", None),
    ("feature_shape", []), ("feature_shape", [0]), ("feature_shape", [8, 8, 3, 1, 1]),
    ("feature_shape", "8x8x3"), ("feature_shape", [1 << 21]), ("feature_shape", [4096, 4096, 8]),
    ("feature_shape", [8.0, 8, 3]), ("feature_shape", {"a": 1}), ("feature_shape", [True, 8, 3]),
    ("state_names", "dense__kernel"), ("state_names", [1, 2]), ("state_names", [""]),
    ("state_names", {"a": 1}), ("state_names", ["dense__kernel"]),
    ("state_groups", []), ("state_groups", {"trainable": []}),
    ("state_groups", {"trainable": 5, "bn_statistics": [], "optimizer": []}),
    ("trunk_end", 5), ("trunk_end", ["x"]), ("trained_state", "yes"), ("trained_state", 1),
    ("content_hash", 5), ("content_hash", "abc"), ("content_hash", None),
    ("preprocessing", ["RGB"]), ("preprocessing", {"input": 5}), ("preprocessing", "RGB"),
    ("format", "tftl-9"), ("format", None), ("format", 2), ("model", 5), ("model", ""), ("scheme", None),
    ("signatures", "infer"), ("blocks", -1), ("blocks", "2"),
]


@pytest.mark.parametrize("key,value", FIELD_CASES, ids=[f"{k}={v!r}"[:40] for k, v in FIELD_CASES])
def test_crash_metadata_field_type_or_range(tmp_path, fb, key, value):
    meta = dict(META, **{key: value})
    if key == "content_hash":
        meta["content_hash"] = value  # not filled in: a hash that is not the flatbuffer's
    read_model_error(tmp_path, model_bytes(fb, meta=meta))


METADATA_BYTES = {
    "json_list": b"[1, 2]", "json_string": b'"tftl"', "json_null": b"null", "not_json": b"{format: tftl",
    "not_utf8": b"\xff\xfe{}", "deep_nesting": b"[" * 100_000 + b"]" * 100_000, "nan_batch": None,
    "empty": b"",
}


@pytest.mark.parametrize("kind", list(METADATA_BYTES))
def test_crash_metadata_not_an_object(tmp_path, fb, kind):
    raw = METADATA_BYTES[kind]
    if kind == "nan_batch":
        meta = dict(META, content_hash=modelfile.content_hash(fb), num_labels=3)
        raw = json.dumps(meta).replace('"batch": 2', '"batch": NaN').encode()
    read_model_error(tmp_path, model_bytes(fb, meta_raw=raw))


def test_crash_metadata_member_inflating_to_400_mb_is_refused_before_inflating(tmp_path, fb):
    """The issue's 842 MB case: tftl.json deflated from 400 MB (here the header is what counts)."""
    meta = dict(META, content_hash=modelfile.content_hash(fb), num_labels=3)
    body = json.dumps(dict(meta, padding=" " * (20 << 20))).encode()  # 20 MB, over the 16 MiB cap
    archive = zip_bytes({"tftl.json": body, "labels.txt": b"daisy\nroses\ntulips\n"}, zipfile.ZIP_DEFLATED)
    assert len(archive) < 200_000
    assert "declares 20.0 MiB" in read_model_error(tmp_path, fb + archive)


def test_crash_labels_member_with_a_huge_ratio_is_refused(tmp_path, fb):
    archive = zip_bytes({"tftl.json": json.dumps(dict(META, content_hash=modelfile.content_hash(fb),
                                                       num_labels=3)).encode(),
                         "labels.txt": b"a\n" * (4 << 20)}, zipfile.ZIP_DEFLATED)
    assert "inflates" in read_model_error(tmp_path, fb + archive)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_crash_unsupported_compression_refused_before_decompressing(tmp_path, fb, method):
    archive = zip_bytes({"tftl.json": json.dumps(dict(META, content_hash=modelfile.content_hash(fb),
                                                       num_labels=3)).encode(),
                         "labels.txt": b"daisy\nroses\ntulips\n"}, method)
    assert "compression method" in read_model_error(tmp_path, fb + archive)


def test_crash_duplicate_member_names(tmp_path, fb):
    meta = json.dumps(dict(META, content_hash=modelfile.content_hash(fb), num_labels=3)).encode()
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = zip_bytes([("tftl.json", meta), ("labels.txt", b"a\nb\nc\n"), ("labels.txt", b"x\n")])
    assert "duplicate" in read_model_error(tmp_path, fb + archive)


def test_crash_encrypted_member(tmp_path, fb):
    content = bytearray(model_bytes(fb))
    start = len(fb)
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = content.find(sig, start)
        while pos >= 0:
            content[pos + flag_at] |= 1
            pos = content.find(sig, pos + 4)
    assert "encrypted" in read_model_error(tmp_path, bytes(content))


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8, 0.95, 0.999])
def test_crash_truncated_model(tmp_path, fb, keep):
    content = model_bytes(fb)
    assert "truncated or corrupted" in read_model_error(tmp_path, content[: int(len(content) * keep)])


# --- state.npz -------------------------------------------------------------------------

HUGE_HEADER = ("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }").ljust(117) + "\n"


def npy_with_header(header: str, payload=b"\0" * 16, version=b"\x01\x00") -> bytes:
    return b"\x93NUMPY" + version + struct.pack("<H", len(header)) + header.encode() + payload


def state_npz(**members) -> bytes:
    state = {k: npy_bytes(v) for k, v in good_state().items()}
    state.update(members)
    return raw_checkpoint({k: v for k, v in state.items() if v is not None})


STATE_CASES = {
    "huge_shape": (state_npz(dense__bias=npy_with_header(HUGE_HEADER)), "has shape (1099511627776,)"),
    "wrong_shape": (state_npz(dense__bias=npy_bytes(np.zeros(4, np.float32))), "the model declares"),
    "structured": (state_npz(dense__bias=npy_bytes(np.zeros(3, [("a", "<f4")]))), "not a plain numeric"),
    "object": (state_npz(dense__bias=npy_with_header(
        "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }".ljust(117) + "\n")), "not a plain numeric"),
    "complex": (state_npz(dense__bias=npy_bytes(np.zeros(3, np.complex64))), "not a plain numeric"),
    "bare_npy": (npy_bytes(np.zeros(3, np.float32)), "not a readable ZIP"),
    "npy_v3": (state_npz(dense__bias=npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }".ljust(117) + "\n",
        b"\0" * 12, b"\x03\x00")), "format"),
    "missing": (state_npz(dense__bias=None), "missing ['dense__bias']"),
    "unknown": (state_npz(extra=npy_bytes(np.zeros(1, np.float32))), "unknown ['extra']"),
    "not_npy_member": (zip_bytes({"dense__bias.txt": b"1 2 3"}), "is not a .npy array"),
    "short_data": (state_npz(dense__bias=npy_bytes(np.zeros(3, np.float32))[:-4]), "holds"),
    "long_data": (state_npz(dense__bias=npy_bytes(np.zeros(3, np.float32)) + b"\0" * 4), "holds"),
    "garbage_header": (state_npz(dense__bias=b"\x93NUMPY\x01\x00\x10\x00{'descr': ?}   \n"), "header"),
    "not_npy_magic": (state_npz(dense__bias=b"PK\x03\x04" + b"\0" * 40), "header"),
    "nan": (state_npz(dense__bias=npy_bytes(np.array([1, np.nan, 0], np.float32))), "NaN or infinite"),
    "inf": (state_npz(dense__kernel=npy_bytes(np.full((3, 3), np.inf, np.float32))), "NaN or infinite"),
    "all_nan": (state_npz(**{k: npy_bytes(np.full(s, np.nan, np.float32)) for k, s in STATE_SHAPES.items()}),
                "NaN or infinite"),
}


@pytest.mark.parametrize("kind", list(STATE_CASES))
def test_crash_state_npz_checked_before_allocation(tmp_path, fb, kind):
    content, expected = STATE_CASES[kind]
    path = write(tmp_path / "m.tflite", model_bytes(fb, meta=dict(META, trained_state=True),
                                                    extra={"state.npz": content}))
    model = modelfile.read_model(path)
    with pytest.raises(modelfile.ModelFileError) as info:
        modelfile.read_state(model)
    assert expected in one_line(info.value)


def test_crash_state_member_deflate_bomb(tmp_path, fb):
    bomb = zip_bytes({"dense__bias.npy": npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (8388608,), }".ljust(117) + "\n",
        b"\0" * (32 << 20))}, zipfile.ZIP_DEFLATED)
    path = write(tmp_path / "m.tflite", model_bytes(fb, extra={"state.npz": bomb}))
    with pytest.raises(modelfile.ModelFileError, match="inflates") as info:
        modelfile.read_state(path)
    one_line(info.value)


# --- checkpoints -----------------------------------------------------------------------

META_TYPE_CASES = [
    ("epoch", "1"), ("epoch", -1), ("epoch", 1.5), ("epoch", True), ("position", None), ("global_step", [3]),
    ("labels", "ab"), ("labels", [1, 2]), ("labels", None), ("model_hash", 5),
    ("rng_state", "x"), ("rng_state", {"bit_generator": "PCG64"}), ("rng_state", {"bit_generator": "os.system"}),
    ("rng_state", {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}, "has_uint32": 0, "uinteger": 0}),
    ("partial", []), ("settings", 5), ("history", {}), ("history", [1]), ("skipped", []), ("skipped", {"a": 1}),
    ("epoch", "<missing>"), ("model_hash", "<missing>"),
]


@pytest.mark.parametrize("key,value", META_TYPE_CASES, ids=[f"{k}={v!r}"[:40] for k, v in META_TYPE_CASES])
def test_crash_checkpoint_metadata_types(tmp_path, key, value):
    meta = train_meta()
    if value == "<missing>":
        del meta[key]
    else:
        meta[key] = value
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, good_state(), meta)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert f"field {key!r}" in one_line(info.value)


def test_crash_valid_train_checkpoint_loads(tmp_path):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, good_state(), train_meta())
    arrays, meta = ckpt.load_checkpoint(path, shapes=STATE_SHAPES)
    np.testing.assert_array_equal(arrays["dense__kernel"], np.eye(3))
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng_state"]
    assert rng.integers(0, 10**9) == np.random.default_rng(0).integers(0, 10**9)


CHECKPOINT_BYTES = {
    "empty": b"", "garbage": bytes(range(256)) * 8, "bare_npy": npy_bytes(np.zeros(3, np.float32)),
    "meta_uint16": raw_checkpoint({"__meta__": npy_bytes(np.zeros(4, np.uint16))}),
    "meta_2d": raw_checkpoint({"__meta__": npy_bytes(np.zeros((2, 2), np.uint8))}),
    "meta_list": raw_checkpoint({"__meta__": meta_npy([1, 2])}),
    "meta_not_utf8": raw_checkpoint({"__meta__": npy_bytes(np.frombuffer(b"\xff\xfe", np.uint8))}),
    "meta_deep": raw_checkpoint({"__meta__": npy_bytes(np.frombuffer(b"[" * 50_000 + b"]" * 50_000, np.uint8))}),
    "meta_missing": raw_checkpoint({"w": npy_bytes(np.zeros(3, np.float32))}),
    "meta_huge_declared": raw_checkpoint({"__meta__": npy_with_header(
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776,), }".ljust(117) + "\n")}),
    "pickled_object": raw_checkpoint({"__meta__": meta_npy({}), "w": npy_with_header(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + "\n",
        b"\x80\x04\x95" + b"cos\nsystem\n")}),
    "huge_array": raw_checkpoint({"__meta__": meta_npy({}), "w": npy_with_header(HUGE_HEADER)}),
}


@pytest.mark.parametrize("kind", list(CHECKPOINT_BYTES))
def test_crash_damaged_checkpoint_bytes(tmp_path, kind):
    path = write(tmp_path / "checkpoint.npz", CHECKPOINT_BYTES[kind])
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert str(path) in one_line(info.value)


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_crash_truncated_checkpoint(tmp_path, keep):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, good_state(), train_meta())
    content = path.read_bytes()
    write(path, content[: int(len(content) * keep)])
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert "truncated" in one_line(info.value)


# --- images ----------------------------------------------------------------------------

def png_of_size(width, height, bit_depth=1, color=0) -> bytes:
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    comp = zlib.compressobj(9)
    row = b"\0" * ((width * bit_depth * (3 if color == 2 else 1) + 7) // 8 + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def jpeg_with_size(width, height) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG")
    content = bytearray(buf.getvalue())
    sof = content.find(b"\xff\xc0")
    struct.pack_into(">HH", content, sof + 5, height, width)
    return bytes(content)


def bmp_with_size(width, height) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    content = bytearray(buf.getvalue())
    struct.pack_into("<ii", content, 18, width, height)
    return bytes(content)


def other_format(fmt) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, fmt)
    return buf.getvalue()


HOSTILE_IMAGES = {
    "png_13000_1bit": (lambda: png_of_size(13000, 13000), "pixels to decode"),
    "png_9000_rgb": (lambda: png_of_size(9000, 4000, 8, 2), "pixels to decode"),
    "jpeg_header_65000": (lambda: jpeg_with_size(65000, 65000), ""),
    "jpeg_header_20000": (lambda: jpeg_with_size(20000, 20000), ""),
    "bmp_header_60000": (lambda: bmp_with_size(60000, 60000), ""),
    "gif_named_jpg": (lambda: other_format("GIF"), ""),
    "tiff_named_jpg": (lambda: other_format("TIFF"), ""),
    "eps_named_jpg": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", ""),
    "random_bytes": (lambda: np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), ""),
    "empty": (lambda: b"", ""),
    "png_signature_only": (lambda: b"\x89PNG\r\n\x1a\n", ""),
    "jpeg_soi_only": (lambda: b"\xff\xd8\xff", ""),
}


@pytest.mark.parametrize("kind", list(HOSTILE_IMAGES))
def test_crash_hostile_images_are_skipped(tmp_path, kind):
    make, expected = HOSTILE_IMAGES[kind]
    assert expected in skipped(write(tmp_path / "x.jpg", make()))


def exif_jpeg(orientation=6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Phone 12"
    exif[0x0132] = "2026:11:30 10:00:00"
    exif[0x8769] = {0x9003: "2026:11:30 10:00:00", 0x920A: (4.2, 1.0)}
    buf = io.BytesIO()
    half_red(64, 48).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


_EXIF = exif_jpeg()
_APP1 = _EXIF.find(b"\xff\xe1")
_APP1_LEN = struct.unpack(">H", _EXIF[_APP1 + 2:_APP1 + 4])[0]
EXIF_FLIPS = [int(p) for p in np.linspace(_APP1 + 10, _APP1 + 2 + _APP1_LEN - 1, 24)]


@pytest.mark.parametrize("pos", EXIF_FLIPS)
def test_crash_one_bit_exif_corruption_never_crashes(tmp_path, pos):
    content = bytearray(_EXIF)
    content[pos] ^= 1 << (pos % 8)
    path = write(tmp_path / "phone.jpg", bytes(content))
    try:
        out = data.load_image(path, 16)
    except data.ImageError as e:
        one_line(e, fix=False)
    else:
        assert out.shape == (16, 16, 3) and np.isfinite(out).all()


@pytest.mark.parametrize("keep", [0.05, 0.25, 0.5, 0.75, 0.95])
def test_crash_truncated_jpeg_is_skipped(tmp_path, keep):
    assert skipped(write(tmp_path / "cut.jpg", _EXIF[: int(len(_EXIF) * keep)]))


# ======================================================================================
# hang: only regular files are read
# ======================================================================================

@pytest.mark.parametrize("target", ["fifo", "devzero", "devurandom", "folder", "socket"])
def test_hang_image_paths_that_are_not_files(tmp_path, target, deadline):
    path = tmp_path / "x.jpg"
    if target == "fifo":
        os.mkfifo(path)
    elif target == "folder":
        path.mkdir()
    elif target == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    else:
        path = "/dev/zero" if target == "devzero" else "/dev/urandom"
    reason = skipped(path)
    assert "not a regular file" in reason or "folder" in reason


def test_hang_fifo_in_a_class_folder_is_skipped_and_counted(tmp_path, deadline):
    root = tmp_path / "photos"
    (root / "daisy").mkdir(parents=True)
    half_red().save(root / "daisy" / "a.png")
    os.mkfifo(root / "daisy" / "b.jpg")
    folder = data.ImageFolder(root)
    gone = []
    batches = list(data.iterate_batches(folder, 8, 4, skipped=gone))
    assert sum(len(b[1]) for b in batches) == 1
    assert gone == [(str(root / "daisy" / "b.jpg"), "is a FIFO (named pipe), not a regular file")]


@pytest.mark.parametrize("target", ["fifo", "devzero"])
def test_hang_checkpoint_that_is_not_a_file(tmp_path, target, deadline):
    path = tmp_path / "c.npz"
    if target == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert "not a regular file" in one_line(info.value)


def test_hang_devzero_as_model(deadline):
    with pytest.raises(modelfile.ModelFileError, match="is a device"):
        modelfile.read_model("/dev/zero")


# ======================================================================================
# silently wrong: the right value, or a refusal
# ======================================================================================

@pytest.mark.parametrize("value16,expected", [(0, 0), (65535, 255), (257 * 77, 77), (32768, 128), (200, 1)])
def test_silent_16_bit_gray_is_scaled_not_clipped(tmp_path, value16, expected):
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((12, 12), value16, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(data.load_image(path, 4), np.full((4, 4, 3), expected, np.float32))


def test_silent_16_bit_equals_its_8_bit_image(tmp_path):
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "a16.png")
    Image.fromarray(eight).save(tmp_path / "a8.png")
    np.testing.assert_array_equal(data.load_image(tmp_path / "a16.png", 16), data.load_image(tmp_path / "a8.png", 16))


MODE_VALUES = {
    "LA": (Image.new("LA", (8, 8), (90, 10)), [90, 90, 90]),
    "P_transparency": (None, [200, 30, 40]),
    "L": (Image.new("L", (8, 8), 77), [77, 77, 77]),
    "1": (Image.new("1", (8, 8), 1), [255, 255, 255]),
    "RGBA_zero_alpha": (Image.new("RGBA", (8, 8), (12, 34, 56, 0)), [12, 34, 56]),
    "RGB_16_bit": ("rgb16", [77, 128, 255]),
}


def rgb16_png(rgb16, size=8) -> bytes:
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    row = b"\0" + struct.pack(">HHH", *rgb16) * size
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("mode", list(MODE_VALUES))
def test_silent_modes_convert_to_the_right_colour(tmp_path, mode):
    img, expected = MODE_VALUES[mode]
    path = tmp_path / "m.png"
    if img == "rgb16":
        write(path, rgb16_png((77 * 257, 128 * 257 + 100, 65535)))
        np.testing.assert_array_equal(data.load_image(path, 4)[0, 0], expected)
        return
    if img is None:
        img = Image.new("P", (8, 8), 1)
        img.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
        img.info["transparency"] = 1
    img.save(path)
    np.testing.assert_array_equal(data.load_image(path, 4)[0, 0], expected)


def test_silent_cmyk_jpeg(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("RGB", (16, 16), (200, 40, 40)).convert("CMYK").save(path, quality=100)
    np.testing.assert_allclose(data.load_image(path, 4)[0, 0], [200, 40, 40], atol=6)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_silent_exif_orientation_makes_upright(tmp_path, orientation):
    path = write(tmp_path / "o.jpg", exif_jpeg(orientation))
    out = data.load_image(path, 16)
    upright = half_red(64, 48).transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270,
                                          8: Image.Transpose.ROTATE_90}[orientation])
    expected = np.asarray(upright.resize((16, 16), box=data.center_crop_box(*upright.size)), np.float32)
    assert np.abs(out - expected).mean() < 12


def test_silent_labels_with_bom_and_crlf(tmp_path, fb):
    path = write(tmp_path / "m.tflite", model_bytes(fb, labels_text="\ufeffdaisy\r\nroses\r\ntulips\r\n"))
    assert modelfile.read_model(path).labels == LABELS


@pytest.mark.parametrize("labels_text,num_labels", [("daisy\nroses\ntulips\niris\n", 4),
                                                    ("daisy\nroses\n", 2),
                                                    ("daisy\nroses\ntulips\niris\n", 3),
                                                    ("daisy\u2028roses\ntulips\n", 3),
                                                    ("daisy\x1croses\ntulips\niris\n", 4)])
def test_silent_labels_must_match_the_graph(tmp_path, fb, labels_text, num_labels):
    meta = dict(META, num_labels=num_labels)
    read_model_error(tmp_path, model_bytes(fb, meta=meta, labels_text=labels_text))


@pytest.mark.parametrize("key,value", [("image_size", 16), ("batch", 4), ("image_size", 224), ("batch", 1)])
def test_silent_metadata_disagreeing_with_the_graph_is_refused(tmp_path, fb, key, value):
    assert "signature" in read_model_error(tmp_path, model_bytes(fb, meta=dict(META, **{key: value})))


def test_silent_state_tftl1_scalar_opt_step_is_read_as_shape_1(tmp_path, fb):
    kernel = np.arange(9, dtype=np.float32).reshape(3, 3)
    content = state_npz(dense__kernel=npy_bytes(kernel), opt_step=npy_bytes(np.float32(4)))
    path = write(tmp_path / "m.tflite", model_bytes(fb, extra={"state.npz": content}))
    state, raw = modelfile.read_state(path)
    assert raw == content and state["dense__kernel"].dtype == np.float32
    np.testing.assert_array_equal(state["dense__kernel"], kernel)
    np.testing.assert_array_equal(state["opt_step"], [4.0])


@pytest.mark.parametrize("kind", ["big_endian", "fortran", "float64", "int32"])
def test_state_layouts_other_than_little_endian_float32_are_refused(tmp_path, fb, kind):
    """contract/rules.json state_npy: <f4 in C order only, as the Java and browser readers require."""
    kernel = np.arange(9, dtype=np.float32).reshape(3, 3)
    member = {"big_endian": kernel.astype(">f4"), "fortran": np.asfortranarray(kernel),
              "float64": kernel.astype(np.float64), "int32": kernel.astype(np.int32)}[kind]
    content = state_npz(dense__kernel=npy_bytes(member), opt_step=npy_bytes(np.ones(1, np.float32)))
    path = write(tmp_path / "m.tflite", model_bytes(fb, extra={"state.npz": content}))
    with pytest.raises(modelfile.ModelFileError, match="not <f4 in C order") as info:
        modelfile.read_state(path)
    assert info.value.kind == "state"
    one_line(info.value)


def test_silent_checkpoint_with_nan_state_is_refused_when_shapes_are_known(tmp_path):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, good_state(dense__bias=np.array([0, np.nan, 0], np.float32)), train_meta())
    with pytest.raises(ckpt.CheckpointError, match="NaN or infinite") as info:
        ckpt.load_checkpoint(path, shapes=STATE_SHAPES)
    one_line(info.value)


def test_silent_checkpoint_of_another_shape_is_refused_before_allocation(tmp_path):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, good_state(dense__kernel=np.zeros((4, 4), np.float32)), train_meta())
    with pytest.raises(ckpt.CheckpointError, match="the model declares") as info:
        ckpt.load_checkpoint(path, shapes=STATE_SHAPES)
    one_line(info.value)


def test_silent_unlistable_sub_folder_is_counted(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    (root / "daisy" / "private").mkdir(parents=True)
    half_red().save(root / "daisy" / "a.png")
    half_red().save(root / "daisy" / "private" / "b.png")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("private"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    folder = data.ImageFolder(root)
    private = str(root / "daisy" / "private")
    assert folder.unreadable == [(private, "folder cannot be listed (Permission denied)")]
    gone = []
    monkeypatch.setattr(os, "listdir", lambda p: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    list(data.iterate_batches(folder, 8, 4, skipped=gone))
    assert gone == [(private, "folder cannot be listed (Permission denied); the photos in it are not used")]


def test_silent_output_mode_follows_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        modelfile.write_model(tmp_path / "m.tflite", FAKE_FLATBUFFER, META, LABELS)
    finally:
        os.umask(old)
    assert (tmp_path / "m.tflite").stat().st_mode & 0o777 == 0o644


# ======================================================================================
# data loss: a failed or killed write keeps the previous file
# ======================================================================================

@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o000, 0o666)])
def test_data_loss_checkpoint_mode_follows_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        ckpt.save_checkpoint(tmp_path / "c.npz", good_state(), {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("where", ["before_write", "mid_write", "after_write"])
def test_data_loss_failed_atomic_write_keeps_the_old_file(tmp_path, where):
    path = write(tmp_path / "out.bin", b"previous")
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            if where != "before_write":
                f.write(b"new" * 1000)
            if where == "mid_write":
                f.flush()
            raise RuntimeError("disk pulled")
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("label", ["a\u2028b", "a\x1cb", "a/b", ""])
def test_data_loss_refused_write_keeps_an_existing_output(tmp_path, label):
    path = write(tmp_path / "out.tflite", b"the model from yesterday")
    with pytest.raises(ValueError):
        modelfile.write_model(path, FAKE_FLATBUFFER, META, ["daisy", label])
    assert path.read_bytes() == b"the model from yesterday"


def test_data_loss_non_json_checkpoint_meta_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save_checkpoint(path, good_state(), train_meta())
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not JSON"):
        ckpt.save_checkpoint(path, good_state(), {"x": object()})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.npz"]


def test_data_loss_stale_temps_of_the_same_target_are_removed(tmp_path):
    target = tmp_path / "checkpoint.npz"
    stale = [tmp_path / ".checkpoint.npz.abc123.tmp", tmp_path / ".checkpoint.npz.zz.tmp"]
    keep = [tmp_path / ".other.npz.abc.tmp", tmp_path / "checkpoint.npz.bak"]
    for p in stale + keep:
        p.write_bytes(b"x")
    (tmp_path / ".checkpoint.npz.dir.tmp").mkdir()
    ckpt.save_checkpoint(target, good_state(), {"a": 1})
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["checkpoint.npz", ".other.npz.abc.tmp", "checkpoint.npz.bak", ".checkpoint.npz.dir.tmp"])


def test_data_loss_reading_a_damaged_model_never_changes_it(tmp_path, fb):
    content = model_bytes(fb)[:-10]
    path = write(tmp_path / "m.tflite", content)
    before = os.stat(path)
    with pytest.raises(modelfile.ModelFileError):
        modelfile.read_model(path)
    assert path.read_bytes() == content and os.stat(path).st_mtime_ns == before.st_mtime_ns


KILL_WRITER = r"""
import sys, numpy as np
from tftl.runtime import checkpoint as ckpt
path = sys.argv[1]
big = {"w": np.zeros(4 << 20, np.float32)}
i = 1
print("ready", flush=True)
while True:
    big["w"][:] = i
    ckpt.save_checkpoint(path, big, {"version": i})
    i += 1
"""


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.29, 0.41, 0.67])
def test_data_loss_kill_9_during_checkpoint_writes(tmp_path, delay):
    """SIGKILL at an arbitrary moment of a write loop: the checkpoint is always a whole version."""
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, {"w": np.zeros(4 << 20, np.float32)}, {"version": 0})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    arrays, meta = ckpt.load_checkpoint(path)
    assert np.all(arrays["w"] == meta["version"])
    # the next write removes what the killed one left
    ckpt.save_checkpoint(path, arrays, meta)
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_crash_too_many_archive_members_refused_before_reading_them(tmp_path, fb, monkeypatch):
    monkeypatch.setattr(safezip, "MAX_MEMBERS", 10)
    extra = {f"junk{i}.bin": b"" for i in range(12)}
    assert "archive members" in read_model_error(tmp_path, model_bytes(fb, extra=extra))


def test_late_unknown_image_format_says_which_formats_are_read(tmp_path):
    assert "not a JPEG, PNG, BMP or WebP image" in skipped(write(tmp_path / "x.jpg", other_format("GIF")))
