"""Training checkpoints: a plain .npz of named arrays plus JSON metadata, written atomically.

Atomic (temp file in the same folder, fsync, rename, fsync the folder) so a device that
loses power mid-save keeps the previous checkpoint instead of a half-written one; the
temp files an earlier crash left for the same target are removed on the next write, and
the file gets the umask's mode (not mkstemp's 0600). No pickles: metadata is JSON stored
as a uint8 array under `__meta__`, and arrays are read with safezip.read_npz (headers and
declared sizes checked before anything is allocated), so a checkpoint file can never run
code or make the reader allocate more than it holds.
"""

import contextlib
import json
import os
import tempfile

import numpy as np

from tftl.runtime import contract, files, safezip

META_KEY = "__meta__"
TRAIN_FORMAT = "tftl-train-1"      # tftl-train's checkpoints (trainer.CHECKPOINT_FORMAT)
MAX_CHECKPOINT_BYTES = contract.MAX_STATE_ELEMENTS * 4 + (256 << 20)
MAX_META_BYTES = 64 << 20


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, foreign or written for another model."""


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file object; on success it replaces `path` atomically, else vanishes."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    files.clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=files.temp_prefix(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), files.output_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Write `arrays` (name -> numeric array) and JSON-able `meta` to `path` atomically."""
    path = os.fspath(path)
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved for checkpoint metadata — rename that array")
    out = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"checkpoint array {name!r} has dtype object — store numeric arrays only")
        out[name] = array
    try:
        encoded = json.dumps(meta, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint metadata for {path} is not JSON-serialisable ({e}) — pass plain values") from e
    out[META_KEY] = np.frombuffer(encoded, dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **out)


def _types_error(meta: dict):
    """The first key of tftl-train checkpoint metadata with a wrong type, or None."""
    def nonneg(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    rules = {
        "model_hash": lambda v: isinstance(v, str),
        "labels": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "epoch": nonneg, "position": nonneg, "global_step": nonneg,
        "rng_state": _valid_rng_state,
        "partial": lambda v: isinstance(v, dict),
        "settings": lambda v: isinstance(v, dict),
        "history": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
        "skipped": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    }
    # Required in a tftl-train checkpoint; the rest are optional (the Android app cannot
    # write numpy's PCG64 state; tftl.runtime.loop re-seeds without it) but typed if present.
    required = {"model_hash", "labels", "epoch", "position", "global_step"} if meta.get("format") == TRAIN_FORMAT else set()
    for key, ok in rules.items():
        if key in meta or key in required:
            if key not in meta or not ok(meta[key]):
                return key
    return None


def _valid_rng_state(value) -> bool:
    """Whether numpy accepts `value` as a bit generator state (tried on a fresh one)."""
    if not isinstance(value, dict) or not isinstance(value.get("bit_generator"), str):
        return False
    generator = getattr(np.random, value["bit_generator"], None)
    if not (isinstance(generator, type) and issubclass(generator, np.random.BitGenerator)):
        return False
    try:
        generator().state = value
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


def load_checkpoint(path, *, shapes=None):
    """(arrays, meta) from a file written by save_checkpoint; CheckpointError otherwise.

    shapes: optional {name: shape} of the model's state (Session.state_shapes()); when
    given, the array names and .npy header shapes must match before anything is allocated,
    and the values must be finite. Without it every array is still size-checked. The
    metadata of a tftl-train checkpoint is type-checked key by key.
    """
    path = os.fspath(path)
    damaged = f"checkpoint {path} is truncated or not a tftl checkpoint — delete it and train again"
    try:
        with files.open_regular(path, limit=MAX_CHECKPOINT_BYTES) as f:
            declared = None if shapes is None else {**shapes, META_KEY: None}
            arrays = safezip.read_npz(f, limit=MAX_CHECKPOINT_BYTES, caps={META_KEY: MAX_META_BYTES},
                                      declared=declared)
    except files.FileProblem as e:
        fix = "check the path or start without it" if e.reason == "does not exist" else "pass the checkpoint file"
        raise CheckpointError(f"checkpoint {path} {e.reason} — {fix}") from None
    except safezip.ArchiveError as e:
        raise CheckpointError(f"{damaged} ({e})") from None
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(damaged)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{damaged} (bad metadata: {type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(damaged)
    bad = _types_error(meta)
    if bad is not None:
        raise CheckpointError(f"{damaged} (metadata field {bad!r} is missing or has the wrong type)")
    if shapes is not None:
        try:
            arrays = contract.check_state(arrays, shapes, where=f"checkpoint {path}")
        except contract.ContractError as e:
            raise CheckpointError(str(e)) from None
    return arrays, meta


def check_compatible(meta: dict, *, model_hash: str, labels, path=None) -> None:
    """Refuse to resume from a checkpoint of another model or another label set.

    `meta` must carry "model_hash" (the model file's content hash) and "labels" (the label
    names the checkpoint was trained on). `path` only names the file in the message.
    """
    where = "checkpoint" if path is None else f"checkpoint {os.fspath(path)}"
    hint = "remove it or pass a different --checkpoint-dir"
    saved_hash = meta.get("model_hash")
    if saved_hash != model_hash:
        raise CheckpointError(
            f"{where} was written for another model (hash {saved_hash}, not {model_hash}) — {hint}"
        )
    saved_labels = list(meta.get("labels") or [])
    if saved_labels != list(labels):
        raise CheckpointError(
            f"{where} was written for labels {saved_labels} but the images have {list(labels)} — {hint}"
        )
