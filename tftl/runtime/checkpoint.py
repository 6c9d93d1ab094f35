"""Training checkpoints: a plain .npz of named arrays plus JSON metadata, written atomically.

Atomic (temp file in the same folder, fsync, rename, fsync the folder) so a device that
loses power mid-save keeps the previous checkpoint instead of a half-written one. No
pickles: metadata is JSON stored as a uint8 array under `__meta__`, and loading uses
allow_pickle=False, so a checkpoint file can never run code.
"""

import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

META_KEY = "__meta__"


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


def _follow_umask(fd) -> None:
    """mkstemp creates 0600; give the file the mode open() would (0666 minus the umask)."""
    if not hasattr(os, "fchmod"):
        return
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file object; on success it replaces `path` atomically, else vanishes."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        _follow_umask(fd)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
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


def load_checkpoint(path):
    """(arrays, meta) from a file written by save_checkpoint; CheckpointError otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist — check the path or start without it")
    damaged = f"checkpoint {path} is truncated or not a tftl checkpoint — delete it and train again"
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CheckpointError(damaged)  # a bare .npy array
        with npz:
            arrays = {name: npz[name] for name in npz.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise CheckpointError(f"{damaged} ({e})") from e
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(damaged)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{damaged} (bad metadata: {e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(damaged)
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
