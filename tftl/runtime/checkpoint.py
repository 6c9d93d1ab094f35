"""Training checkpoints: a plain .npz of named arrays plus JSON metadata, written atomically.

Written with files.atomic_write, so a device that loses power mid-save keeps the previous
checkpoint instead of a half-written one. No pickles: metadata is JSON stored
as a uint8 array under `__meta__`, and arrays are read with safezip.read_npz (headers and
declared sizes checked before anything is allocated), so a checkpoint file can never run
code or make the reader allocate more than it holds.
"""

import contextlib
import dataclasses
import json
import math
import os
import zipfile
from typing import Optional

import numpy as np

from tftl.runtime import contract, files, safezip
from tftl.runtime.errors import InputError

META_KEY = "__meta__"
TRAIN_FORMAT = "tftl-train-1"  # tftl-train's checkpoints (TrainState)
CHECKPOINT_NAME = "checkpoint.npz"  # in the checkpoint folder of a tftl-train run
MAX_CHECKPOINT_BYTES = contract.MAX_STATE_ELEMENTS * 4 + (256 << 20)
MAX_META_BYTES = 64 << 20


class CheckpointError(InputError):
    """A checkpoint that is missing, damaged, foreign or written for another model; `kind` is
    one of contract.CHECKPOINT_CLASSES (contract/vectors/checkpoints.json)."""

    def __init__(self, message, kind=contract.DAMAGED):
        super().__init__(message)
        self.kind = kind


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Write `arrays` (name -> numeric array) and JSON-able `meta` to `path` atomically."""
    with checkpoint_writer(path, meta) as add:
        for name, value in arrays.items():
            add(name, value)


@contextlib.contextmanager
def checkpoint_writer(path, meta: dict):
    """Yield add(name, array): a checkpoint written one array at a time, as np.savez lays it
    out, then `meta`. The caller can drop each array once added (a trainer reads the state
    out of its interpreter a tensor at a time: Session.iter_state). Atomic: an exception in
    the block leaves `path` as it was."""
    path = os.fspath(path)
    try:
        encoded = json.dumps(meta, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint metadata for {path} is not JSON-serialisable ({e}) — pass plain values") from e
    with files.atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        yield lambda name, value: _write_member(archive, name, value)
        _write_member(archive, META_KEY, np.frombuffer(encoded, dtype=np.uint8), reserved=False)


def _write_member(archive, name, value, *, reserved=True) -> None:
    """One array as the member `name`.npy (what np.savez writes)."""
    if reserved and name == META_KEY:
        raise ValueError(f"array name {META_KEY!r} is reserved for checkpoint metadata — rename that array")
    array = np.asanyarray(value)
    if array.dtype.hasobject:
        raise ValueError(f"checkpoint array {name!r} has dtype object — store numeric arrays only")
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)


def _nonneg(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


PARTIAL_RULES = {"loss_sum": _number, "correct": _nonneg, "seen": _nonneg, "train_seconds": _number,
                 "skipped": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}


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


META_RULES = {
    "model_hash": lambda v: isinstance(v, str),
    "labels": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "epoch": _nonneg, "position": _nonneg, "global_step": _nonneg,
    "rng_state": _valid_rng_state,
    "partial": lambda v: isinstance(v, dict) and all(ok(v[k]) for k, ok in PARTIAL_RULES.items() if k in v),
    "settings": lambda v: isinstance(v, dict),
    "history": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
    "skipped": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
}
# Required in a tftl-train checkpoint; the rest are optional (the Android app cannot write
# numpy's PCG64 state; the trainer re-seeds without it) but typed when present and not null.
TRAIN_REQUIRED = ("model_hash", "labels", "epoch", "position", "global_step")


def meta_error(meta: dict):
    """The first key of checkpoint metadata that is missing or has a wrong type, or None: the
    one set of rules every checkpoint reader applies (load_checkpoint, TrainState.from_meta)."""
    required = TRAIN_REQUIRED if meta.get("format") == TRAIN_FORMAT else ()
    for key, ok in META_RULES.items():
        value = meta.get(key)
        if (key in required or value is not None) and not (key in meta and ok(value)):
            return key
    return None


@dataclasses.dataclass
class TrainState:
    """Where a tftl-train run stands: finished epochs, batch position in the next, steps, RNG,
    history. Stored as the metadata of a TRAIN_FORMAT checkpoint (`to_meta`, `from_meta`)."""

    epoch: int = 0
    position: int = 0
    global_step: int = 0
    rng_state: Optional[dict] = None  # numpy bit_generator.state at the start of `epoch`
    partial: dict = dataclasses.field(default_factory=dict)  # sums of the epoch in progress (PARTIAL_RULES)
    history: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)  # sample name -> reason
    settings: Optional[dict] = None

    def generator(self, seed) -> np.random.Generator:
        """The run's Generator at the start of `epoch`. Without a saved state (a fresh run, or a
        checkpoint written by a host that cannot store numpy's PCG64 state) it is seeded from
        the run seed, and from the epoch when resuming."""
        if self.rng_state is not None:
            rng = np.random.default_rng()
            rng.bit_generator.state = self.rng_state
            return rng
        return np.random.default_rng(seed if self.epoch == 0 else [seed, self.epoch])

    def to_meta(self, model_hash: str, labels) -> dict:
        return {"format": TRAIN_FORMAT, "model_hash": model_hash, "labels": list(labels),
                "epoch": self.epoch, "position": self.position, "global_step": self.global_step,
                "rng_state": self.rng_state, "partial": self.partial, "settings": self.settings,
                "history": self.history, "skipped": self.skipped}

    @classmethod
    def from_meta(cls, meta: dict, where="checkpoint") -> "TrainState":
        """The state of TRAIN_FORMAT metadata (checked by meta_error); CheckpointError otherwise."""
        if meta.get("format") != TRAIN_FORMAT:
            raise CheckpointError(f"{where} is not a tftl-train checkpoint — remove it or pass a different "
                                  "--checkpoint-dir", contract.FOREIGN)
        bad = meta_error(meta)
        if bad is not None:
            raise CheckpointError(_damaged(where, bad))
        return cls(epoch=meta["epoch"], position=meta["position"], global_step=meta["global_step"],
                   rng_state=meta.get("rng_state"), partial=dict(meta.get("partial") or {}),
                   history=list(meta.get("history") or []), skipped=dict(meta.get("skipped") or {}),
                   settings=meta.get("settings"))


def _damaged(where, key) -> str:
    return (f"{where} has damaged metadata (field {key!r} is missing or has the wrong type) — delete it or "
            "pass --overwrite to start over")


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
    except safezip.Mismatch as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({e}) — it belongs to another model; "
                              "delete it or pass --overwrite", contract.STATE_REFUSED) from None
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
    bad = meta_error(meta)
    if bad is not None:
        raise CheckpointError(_damaged(f"checkpoint {path}", bad))
    if shapes is not None:
        try:
            arrays = contract.check_state(arrays, shapes, where=f"checkpoint {path}")
        except contract.ContractError as e:
            raise CheckpointError(str(e), contract.STATE_REFUSED) from None
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
            f"{where} was written for another model (hash {saved_hash}, not {model_hash}) — {hint}", contract.FOREIGN
        )
    saved_labels = list(meta.get("labels") or [])
    if saved_labels != list(labels):
        raise CheckpointError(
            f"{where} was written for labels {saved_labels} but the images have {list(labels)} — {hint}",
            contract.FOREIGN)


def load_for_resume(path, *, shapes, model_hash: str, labels):
    """(arrays, TrainState) of the checkpoint a run on this model and label set resumes from,
    checked in the one order every resume uses: the file and its arrays (load_checkpoint), the
    trainer format (TrainState.from_meta), then the model and labels (check_compatible)."""
    arrays, meta = load_checkpoint(path, shapes=shapes)
    state = TrainState.from_meta(meta, where=f"checkpoint {os.fspath(path)}")
    check_compatible(meta, model_hash=model_hash, labels=labels, path=path)
    return arrays, state
