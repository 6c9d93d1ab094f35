"""Property-based fuzzing (hypothesis) of every reader a file can reach on the device.

For any bytes (mutations, truncations and insertions of valid files, and type confusions of
their JSON), each reader ends in exactly one of two ways: a valid result, or its own error
class with a one-line message. Nothing else (no other exception type, no hang, no
unbounded allocation) is allowed.

Bounded for CI: derandomized (the same examples every run), no example database, and
TFTL_FUZZ_EXAMPLES examples per property (default 60; about 40 s for the file, plus the
tiny model's conversion when the adversarial suite has not done it in the same run).
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from hardening_util import LABELS, META, STATE_SHAPES, good_state, model_bytes, tiny_flatbuffer  # noqa: E402
from tftl.runtime import checkpoint as ckpt  # noqa: E402
from tftl.runtime import contract, data, modelfile, safezip  # noqa: E402

EXAMPLES = int(os.environ.get("TFTL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fb(tmp_path_factory):
    return tiny_flatbuffer(tmp_path_factory)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def mutated(seed: bytes):
    """Strategy: `seed` with random byte flips, a truncation, or an inserted run of bytes."""
    n = len(seed)
    flips = st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 255)), min_size=1, max_size=8)

    def flip(changes):
        out = bytearray(seed)
        for pos, xor in changes:
            out[pos] ^= xor
        return bytes(out)

    return st.one_of(
        flips.map(flip),
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(lambda t: seed[:t[0]] + t[1] + seed[t[0]:]),
        st.tuples(st.integers(0, n - 1), st.integers(1, 64)).map(lambda t: seed[:t[0]] + seed[t[0] + t[1]:]),
    )


def assert_one_line(exc):
    assert "\n" not in str(exc) and str(exc), repr(exc)


# --- images ----------------------------------------------------------------------------

def _seed_images():
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    seeds = {}
    for fmt, kwargs in (("JPEG", {"exif": exif.tobytes()}), ("PNG", {}), ("BMP", {}), ("WEBP", {})):
        buf = io.BytesIO()
        pixels.save(buf, fmt, **kwargs)
        seeds[fmt] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray((rng.integers(0, 65536, (16, 16))).astype(np.uint16)).save(buf, "PNG")
    seeds["PNG16"] = buf.getvalue()
    return seeds


IMAGES = _seed_images()


def _check_image(work, content, augment):
    path = work / "fuzz.jpg"
    path.write_bytes(content)
    try:
        out = data.load_image(path, 8, augment=np.random.default_rng(0) if augment else None)
    except data.ImageError as e:
        assert e.path == str(path)
        assert_one_line(e)
        return
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255


@FUZZ
@given(content=st.sampled_from(sorted(IMAGES)).flatmap(lambda k: mutated(IMAGES[k])), augment=st.booleans())
def test_fuzz_load_image_mutations(work, content, augment):
    _check_image(work, content, augment)


@FUZZ
@given(content=st.binary(max_size=2048))
def test_fuzz_load_image_random_bytes(work, content):
    _check_image(work, content, False)


@FUZZ
@given(prefix=st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
       rest=st.binary(max_size=512))
def test_fuzz_load_image_valid_magic_garbage_body(work, prefix, rest):
    _check_image(work, prefix + rest, False)


# --- labels ----------------------------------------------------------------------------

@FUZZ
@given(text=st.text(max_size=200))
def test_fuzz_parse_labels_every_label_is_valid_and_splits_the_same_everywhere(text):
    try:
        labels = contract.parse_labels(text)
    except contract.ContractError as e:
        assert_one_line(e)
        return
    assert all(contract.label_problem(label) == "" for label in labels)
    joined = "\n".join(labels) + "\n"
    assert joined.splitlines() == labels       # Python's str.splitlines (the old reader)
    assert joined.split("\n")[:-1] == labels   # Java/JS split("\n")
    assert contract.parse_labels(joined) == labels


@FUZZ
@given(labels=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5))
def test_fuzz_write_then_read_round_trips_labels_or_refuses_before_writing(fb, work, labels):
    path = work / "labels_model.tflite"
    if path.exists():
        path.unlink()
    meta = dict(META)
    try:
        modelfile.write_model(path, fb, meta, labels)
    except ValueError as e:
        assert_one_line(e)
        assert not path.exists()
        return
    if len(labels) != 3:  # the tiny graph has 3 outputs: any other count must be refused
        with pytest.raises(modelfile.ModelFileError, match="signature"):
            modelfile.read_model(path)
        return
    assert modelfile.read_model(path).labels == labels


# --- tftl.json type confusions ---------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
KEYS = sorted(set(META) | {"num_labels", "content_hash", "state_groups", "blocks", "trained_state", "signatures"})


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(KEYS), JSON, min_size=1, max_size=4))
def test_fuzz_metadata_type_confusion(changes):
    meta = dict(META, content_hash="0" * 64, num_labels=3)
    meta.update(changes)
    try:
        typed = contract.ModelMetadata.from_dict(meta, where="m.tflite")
    except contract.ContractError as e:
        assert_one_line(e)
        return
    assert 1 <= typed.batch <= contract.MAX_BATCH and 8 <= typed.image_size <= contract.MAX_IMAGE_SIZE
    assert int(np.prod(typed.feature_shape)) <= contract.MAX_FEATURE_ELEMENTS


@FUZZ
@given(value=JSON)
def test_fuzz_metadata_any_json_value(value):
    try:
        contract.ModelMetadata.from_dict(value, where="m.tflite")
    except contract.ContractError as e:
        assert_one_line(e)


# --- model files -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_seed(fb):
    state = io.BytesIO()
    with zipfile.ZipFile(state, "w") as z:
        for name, value in good_state().items():
            member = io.BytesIO()
            np.lib.format.write_array(member, value)
            z.writestr(f"{name}.npy", member.getvalue())
    return model_bytes(fb, extra={"state.npz": state.getvalue()})


@FUZZ
@given(data_=st.data())
def test_fuzz_read_model_and_state_mutations(work, model_seed, data_):
    content = data_.draw(mutated(model_seed))
    path = work / "fuzz.tflite"
    path.write_bytes(content)
    try:
        model = modelfile.read_model(path)
        state, _ = modelfile.read_state(model)
    except modelfile.ModelFileError as e:
        assert_one_line(e)
        return
    assert model.labels == LABELS
    assert state is None or set(state) == set(STATE_SHAPES)


@FUZZ
@given(data_=st.data())
def test_fuzz_read_model_archive_mutations(work, model_seed, fb, data_):
    """Mutations aimed at the appended ZIP (headers, sizes, names), where zipfile is weakest."""
    archive = model_seed[len(fb):]
    content = fb + data_.draw(mutated(archive))
    path = work / "fuzz_zip.tflite"
    path.write_bytes(content)
    try:
        model = modelfile.read_model(path)
        modelfile.read_state(model)
    except modelfile.ModelFileError as e:
        assert_one_line(e)


# --- checkpoints and npz ---------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_seed(work):
    path = work / "seed.npz"
    meta = {"format": ckpt.TRAIN_FORMAT, "model_hash": "h", "labels": ["a"], "epoch": 1, "position": 0,
            "global_step": 2, "rng_state": np.random.default_rng(0).bit_generator.state, "partial": {},
            "settings": {}, "history": [], "skipped": {}}
    ckpt.save_checkpoint(path, good_state(), meta)
    return path.read_bytes(), meta


@FUZZ
@given(data_=st.data(), with_shapes=st.booleans())
def test_fuzz_load_checkpoint_mutations(work, checkpoint_seed, data_, with_shapes):
    content = data_.draw(mutated(checkpoint_seed[0]))
    path = work / "fuzz_ckpt.npz"
    path.write_bytes(content)
    try:
        arrays, meta = ckpt.load_checkpoint(path, shapes=STATE_SHAPES if with_shapes else None)
    except ckpt.CheckpointError as e:
        assert_one_line(e)
        return
    assert isinstance(meta, dict) and all(isinstance(a, np.ndarray) for a in arrays.values())


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["epoch", "position", "global_step", "labels", "model_hash",
                                                 "rng_state", "partial", "settings", "history", "skipped"]),
                               JSON, min_size=1, max_size=3))
def test_fuzz_checkpoint_metadata_type_confusion(work, checkpoint_seed, changes):
    meta = dict(checkpoint_seed[1], **changes)
    path = work / "fuzz_meta.npz"
    try:
        ckpt.save_checkpoint(path, good_state(), meta)
    except ValueError:
        return  # NaN/inf floats are not JSON: refused at save, nothing to read
    try:
        _, loaded = ckpt.load_checkpoint(path)
        state = ckpt.TrainState.from_meta(loaded)
    except ckpt.CheckpointError as e:
        assert_one_line(e)
        return
    state.generator(0).random()  # what the trainer does next must work (a null rng_state: re-seeded)
    assert all(isinstance(loaded[k], int) and loaded[k] >= 0 for k in ("epoch", "position", "global_step"))


@FUZZ
@given(content=st.binary(max_size=1024))
def test_fuzz_read_npz_random_bytes(content):
    try:
        safezip.read_npz(content, limit=1 << 20)
    except safezip.ArchiveError as e:
        assert_one_line(e)


@FUZZ
@given(header=st.text(max_size=120), payload=st.binary(max_size=64))
def test_fuzz_npy_header_text(header, payload):
    raw = header.encode("utf-8", "surrogatepass")
    npy = b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + payload
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.npy", npy)
    try:
        arrays = safezip.read_npz(archive.getvalue(), limit=1 << 20)
    except safezip.ArchiveError as e:
        assert_one_line(e)
        return
    assert arrays["x"].nbytes <= len(payload) and arrays["x"].dtype.kind in safezip.NUMERIC_KINDS


def test_fuzz_budget_is_bounded():
    """The settings every property here runs with (what keeps CI time bounded)."""
    assert FUZZ.max_examples == EXAMPLES and FUZZ.deadline is None and FUZZ.derandomize
    assert json.dumps(EXAMPLES)
