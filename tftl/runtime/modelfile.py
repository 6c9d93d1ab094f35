"""The tftl model container: a TFLite flatbuffer with a ZIP archive appended.

Like TFLite Support's associated files, the ZIP sits after the flatbuffer: the
interpreter ignores the trailing bytes (checked with ai-edge-litert 2.3, which loads the
whole file unchanged), and zipfile finds the archive from the end of the file. The
archive holds `tftl.json` (metadata: scheme, input size, content hash, ...) and
`labels.txt` (one label per line), so one file carries everything the device trainer needs.
`content_hash` (sha256 of the flatbuffer bytes) catches truncated or edited files and ties
checkpoints to the exact model they were trained from.
"""

import dataclasses
import hashlib
import io
import json
import os
import struct
import zipfile

from tftl.runtime import contract
from tftl.runtime.checkpoint import atomic_write

METADATA_NAME = "tftl.json"
LABELS_NAME = "labels.txt"
TFLITE_IDENTIFIER = b"TFL3"
EXPORT_HINT = "export it with python -m converters.export"
# Fixed timestamps make the same model export to the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ModelFileError(ValueError):
    """A model file that is missing, damaged, or not a tftl model."""


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A parsed tftl model. `flatbuffer` is what the TFLite interpreter loads."""

    flatbuffer: bytes
    metadata: dict
    labels: list
    path: str
    meta: contract.ModelMetadata = None  # the typed, validated view of `metadata`


def content_hash(flatbuffer: bytes) -> str:
    """sha256 hex of the flatbuffer bytes: the model's identity for checkpoints."""
    return hashlib.sha256(flatbuffer).hexdigest()


def _table_fields(data: bytes, table: int):
    """(field offsets, vtable field count) of the flatbuffer table at `table`, bounds-checked."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vtable_len, table_len = struct.unpack_from("<HH", data, vtable)
    if vtable < 0 or vtable + vtable_len > len(data) or table + table_len > len(data) or vtable_len < 4:
        raise ValueError("table out of bounds")
    return struct.unpack_from(f"<{(vtable_len - 4) // 2}H", data, vtable + 4)


def _vector(data: bytes, table: int, fields, index: int, elem_size: int):
    """(start, length) of the vector in field `index` of a table, or None when absent."""
    if index >= len(fields) or not fields[index]:
        return None
    pos = table + fields[index]
    start = pos + struct.unpack_from("<I", data, pos)[0]
    length = struct.unpack_from("<I", data, start)[0]
    if start + 4 + length * elem_size > len(data):
        raise ValueError("vector out of bounds")
    return start + 4, length


def _flatbuffer_complete(data: bytes) -> bool:
    """Whether a TFLite Model flatbuffer's top-level vectors and buffer data lie inside `data`.

    Not a full verifier: enough to tell a cut-off file from an intact plain .tflite.
    """
    try:
        root = struct.unpack_from("<I", data, 0)[0]
        fields = _table_fields(data, root)
        # Model: 1 operator_codes, 2 subgraphs, 4 buffers, 6 metadata, 7 signature_defs
        # (vectors of tables); 3 description (string); 5 metadata_buffer ([int]).
        _vector(data, root, fields, 3, 1)
        _vector(data, root, fields, 5, 4)
        for index in (1, 2, 4, 6, 7):
            vec = _vector(data, root, fields, index, 4)
            if vec is None:
                continue
            start, length = vec
            for k in range(length):
                pos = start + 4 * k
                table = pos + struct.unpack_from("<I", data, pos)[0]
                table_fields = _table_fields(data, table)
                if index == 4:
                    _vector(data, table, table_fields, 0, 1)  # Buffer.data
    except (struct.error, ValueError):
        return False
    return True


def _archive_started(data: bytes) -> bool:
    """Whether `data` holds the start of an appended tftl archive (its first local header).

    Errs towards True (a plain .tflite whose last bytes happen to look like a header start),
    which only changes the message, not the refusal.
    """
    if METADATA_NAME.encode() in data:
        return True
    sig = b"PK\x03\x04"
    header_end = data.rfind(sig) + 30 + len(METADATA_NAME)
    if data.rfind(sig) >= 0 and header_end > len(data):
        return True
    return any(data.endswith(sig[:k]) for k in (1, 2, 3))


def _check_labels(labels) -> list:
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("a tftl model needs at least one label — pass the class names")
    for label in labels:
        if not label.strip() or "\n" in label or "\r" in label or label != label.strip():
            raise ValueError(f"label {label!r} must be non-empty, one line, without outer spaces — rename it")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels {labels} contain duplicates — each label must be unique")
    return labels


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    archive.writestr(info, data)


def write_model(path, flatbuffer: bytes, metadata: dict, labels, extra_files=None) -> dict:
    """Write flatbuffer + metadata + labels to `path` atomically; returns the metadata written.

    Adds metadata["content_hash"] and metadata["num_labels"] (the input dict is not changed).
    extra_files: {zip member name: bytes} stored beside them (e.g. a fine-tuned state.npz).
    """
    path = os.fspath(path)
    flatbuffer = bytes(flatbuffer)
    if flatbuffer[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(f"cannot write {path}: the flatbuffer is not a TFLite model (no {TFLITE_IDENTIFIER!r} tag)")
    labels = _check_labels(labels)
    meta = dict(metadata)
    meta["content_hash"] = content_hash(flatbuffer)
    meta["num_labels"] = len(labels)
    try:
        meta_bytes = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata for {path} is not JSON-serialisable ({e}) — pass plain values") from e
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        _zip_member(archive, METADATA_NAME, meta_bytes)
        _zip_member(archive, LABELS_NAME, ("\n".join(labels) + "\n").encode("utf-8"))
        for name, data in sorted((extra_files or {}).items()):
            _zip_member(archive, name, data)
    with atomic_write(path) as f:
        f.write(flatbuffer)
        f.write(buf.getvalue())
    return meta


def read_model(path) -> ModelFile:
    """Parse and verify a tftl model file; ModelFileError with the fix otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path} does not exist — {EXPORT_HINT}")
    with open(path, "rb") as f:
        data = f.read()
    damaged = f"model file {path} is truncated or corrupted — export it again"
    not_tftl = f"{path} is not a tftl model (no tftl metadata) — {EXPORT_HINT}"
    if len(data) < 8:
        raise ModelFileError(damaged)
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER!r} identifier) — {EXPORT_HINT}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        # A cut-off tftl file holds the start of its archive or a cut flatbuffer; an intact
        # plain .tflite holds neither.
        intact_plain = not _archive_started(data) and _flatbuffer_complete(data)
        raise ModelFileError(not_tftl if intact_plain else damaged) from None
    with archive:
        names = set(archive.namelist())
        if METADATA_NAME not in names:
            raise ModelFileError(not_tftl)
        if LABELS_NAME not in names:
            raise ModelFileError(damaged)
        try:
            meta = json.loads(archive.read(METADATA_NAME).decode("utf-8"))
            labels_text = archive.read(LABELS_NAME).decode("utf-8")
        except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as e:
            raise ModelFileError(f"{damaged} ({e})") from e
        # zipfile shifts offsets by any bytes prepended to the archive, so the first
        # member's header offset is where the flatbuffer ends.
        start = min(info.header_offset for info in archive.infolist())
    flatbuffer = data[:start]
    if not isinstance(meta, dict) or meta.get("content_hash") != content_hash(flatbuffer):
        raise ModelFileError(damaged)
    labels = labels_text.splitlines()
    if meta.get("num_labels") != len(labels):
        raise ModelFileError(damaged)
    try:
        typed = contract.ModelMetadata.from_dict(meta, where=f"model file {path}")
    except contract.ContractError as e:
        raise ModelFileError(str(e)) from None
    return ModelFile(flatbuffer=flatbuffer, metadata=meta, labels=labels, path=path, meta=typed)
