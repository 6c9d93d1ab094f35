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

import numpy as np

from tftl.runtime import contract, files, safezip
from tftl.runtime.errors import InputError

METADATA_NAME = "tftl.json"
LABELS_NAME = "labels.txt"
TFLITE_IDENTIFIER = b"TFL3"
STATE_NAME = "state.npz"
STATE_DTYPE = "<f4"  # every state.npz member: little-endian float32 in C order (the writers' only form)
# Caps on what a model file may make a reader allocate (flatbuffers end at 2 GiB).
MAX_MODEL_BYTES = 1 << 30   # one cap for every reader (contract/rules.json); Java arrays end at 2 GiB
MAX_METADATA_BYTES = 16 << 20
MAX_LABELS_BYTES = 16 << 20
MAX_STATE_BYTES = contract.MAX_STATE_ELEMENTS * 4
# TFLite TensorType codes used by the contract.
FLOAT32, INT32 = 0, 2
# Fixed timestamps make the same model export to the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ModelFileError(InputError):
    """A model file that is missing, damaged, or not a tftl model.

    `kind` is the refusal class of contract/rules.json (contract.REFUSAL_CLASSES), which the
    Java and JavaScript readers report alike for the same file (contract/vectors/files.json).
    """

    def __init__(self, message, kind=contract.DAMAGED):
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A parsed tftl model. `flatbuffer` is what the TFLite interpreter loads; None once a
    session has released it (`released()`): `flatbuffer_of` then reads it again from `path`."""

    flatbuffer: bytes
    metadata: dict
    labels: list
    path: str
    meta: contract.ModelMetadata = None  # the typed, validated view of `metadata`
    signatures: dict = None  # {signature: {"inputs"/"outputs": {name: (shape, type)}}}
    flatbuffer_size: int = None  # len(flatbuffer), kept when the bytes are released

    def state_shapes(self) -> dict:
        """{state name: shape} as the flatbuffer's `restore` signature declares them, or None."""
        restore = (self.signatures or {}).get(contract.RESTORE)
        return None if restore is None else {n: s for n, (s, _) in restore["inputs"].items()}

    def released(self) -> "ModelFile":
        """This model without its flatbuffer bytes in memory (read again on demand: flatbuffer_of)."""
        if self.flatbuffer is None:
            return self
        return dataclasses.replace(self, flatbuffer=None, flatbuffer_size=len(self.flatbuffer))


def flatbuffer_of(model: ModelFile) -> bytes:
    """`model.flatbuffer`, or where it was released, the flatbuffer read again from `model.path`
    and checked against the content hash it was first read with; ModelFileError if the file
    changed meanwhile."""
    if model.flatbuffer is not None:
        return model.flatbuffer
    out = io.BytesIO()
    _copy_released(model, out)
    return out.getvalue()


def _changed(model: ModelFile) -> "ModelFileError":
    return ModelFileError(f"model file {model.path} changed while it was in use — put the file that was "
                          "loaded back (a checkpoint resumes with --resume), or start again")


def _copy_released(model: ModelFile, out, chunk=1 << 20) -> None:
    """Copy a released model's flatbuffer from its file into `out` a chunk at a time (never
    whole in memory), checked against its content hash (ModelFileError if it changed)."""
    digest, left = hashlib.sha256(), model.flatbuffer_size
    try:
        with open(model.path, "rb") as f:
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    break
                digest.update(data)
                out.write(data)
                left -= len(data)
    except OSError as e:
        raise ModelFileError(f"model file {model.path} cannot be read again ({e.strerror or e}) — "
                             "put it back (a checkpoint resumes with --resume)") from None
    if left or digest.hexdigest() != model.metadata.get("content_hash"):
        raise _changed(model)


def content_hash(flatbuffer: bytes) -> str:
    """sha256 hex of the flatbuffer bytes: the model's identity for checkpoints."""
    return hashlib.sha256(flatbuffer).hexdigest()


def model_hash(model: "ModelFile", raw_state) -> str:
    """The identity checkpoints are tied to: the content hash, plus, for a fine-tuned file, "+"
    and the first 16 hex digits of sha256 of its state.npz bytes (Java: ModelFile.modelHash)."""
    trunk = model.metadata.get("content_hash") or content_hash(flatbuffer_of(model))
    return trunk if raw_state is None else trunk + "+" + hashlib.sha256(raw_state).hexdigest()[:16]


def _table_fields(data: bytes, table: int):
    """(field offsets, vtable field count) of the flatbuffer table at `table`, bounds-checked."""
    if not 0 <= table <= len(data) - 4:
        raise ValueError("table out of bounds")
    vtable = table - struct.unpack_from("<i", data, table)[0]
    if not 0 <= vtable <= len(data) - 4:
        raise ValueError("vtable out of bounds")
    vtable_len, table_len = struct.unpack_from("<HH", data, vtable)
    if vtable + vtable_len > len(data) or table + table_len > len(data) or vtable_len < 4:
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


def _child(data: bytes, pos: int):
    """(table, fields) of the table referenced by the uoffset stored at `pos`."""
    table = pos + struct.unpack_from("<I", data, pos)[0]
    return table, _table_fields(data, table)


def _elements(data, table, fields, index, elem_size=4):
    """Positions of the elements of the vector in field `index` (empty when absent)."""
    vec = _vector(data, table, fields, index, elem_size)
    return [] if vec is None else [vec[0] + k * elem_size for k in range(vec[1])]


def _string(data, table, fields, index) -> str:
    vec = _vector(data, table, fields, index, 1)
    return "" if vec is None else data[vec[0]:vec[0] + vec[1]].decode("utf-8")


def _scalar(data, table, fields, index, fmt):
    if index >= len(fields) or not fields[index]:
        return 0
    return struct.unpack_from(fmt, data, table + fields[index])[0]


def signature_tensors(data: bytes) -> dict:
    """{signature: {"inputs"/"outputs": {name: (shape, TensorType code)}}} of a TFLite model.

    Read straight from the flatbuffer (Model.signature_defs -> SignatureDef.inputs/outputs
    -> TensorMap.tensor_index -> SubGraph.tensors[i].shape/type), so a reader can check the
    metadata and any state against the graph before an interpreter or an array exists.

    Raises:
        ValueError: an offset, index or string outside the buffer (a damaged flatbuffer).
    """
    try:
        root = struct.unpack_from("<I", data, 0)[0]
        fields = _table_fields(data, root)
        subgraphs = _elements(data, root, fields, 2)
        out = {}
        for pos in _elements(data, root, fields, 7):
            sig, sig_fields = _child(data, pos)
            index = _scalar(data, sig, sig_fields, 4, "<I")
            if index >= len(subgraphs):
                raise ValueError("signature subgraph index out of range")
            graph, graph_fields = _child(data, subgraphs[index])
            tensors = _elements(data, graph, graph_fields, 0)
            entry = {}
            for side, field in (("inputs", 0), ("outputs", 1)):
                entry[side] = {}
                for mpos in _elements(data, sig, sig_fields, field):
                    tmap, tmap_fields = _child(data, mpos)
                    t = _scalar(data, tmap, tmap_fields, 1, "<I")
                    if t >= len(tensors):
                        raise ValueError("signature tensor index out of range")
                    tensor, tensor_fields = _child(data, tensors[t])
                    shape = tuple(struct.unpack_from("<i", data, p)[0]
                                  for p in _elements(data, tensor, tensor_fields, 0))
                    entry[side][_string(data, tmap, tmap_fields, 0)] = (
                        shape, _scalar(data, tensor, tensor_fields, 1, "<b"))
            out[_string(data, sig, sig_fields, 2)] = entry
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"damaged flatbuffer ({e})") from None
    return out


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


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    archive.writestr(info, data)


def write_model(path, flatbuffer, metadata: dict, labels, extra_files=None) -> dict:
    """Write flatbuffer + metadata + labels to `path` atomically; returns the metadata written.

    flatbuffer: the bytes, or a ModelFile whose bytes were released (`ModelFile.released`):
    they are then copied from its file a chunk at a time and checked against its content hash.
    Adds metadata["content_hash"] and metadata["num_labels"] (the input dict is not changed).
    extra_files: {zip member name: bytes} stored beside them (e.g. a fine-tuned state.npz).
    """
    path = os.fspath(path)
    source = flatbuffer if isinstance(flatbuffer, ModelFile) else None
    if source is None:
        flatbuffer = bytes(flatbuffer)
        if flatbuffer[4:8] != TFLITE_IDENTIFIER:
            raise ValueError(f"cannot write {path}: the flatbuffer is not a TFLite model (no {TFLITE_IDENTIFIER!r} tag)")
    labels = contract.check_labels([str(label) for label in labels], where=f"labels for {path}")
    meta = dict(metadata)
    meta["content_hash"] = content_hash(flatbuffer) if source is None else source.metadata["content_hash"]
    meta["num_labels"] = len(labels)
    try:
        meta_bytes = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata for {path} is not JSON-serialisable ({e}) — pass plain values") from e
    with files.atomic_write(path) as f:
        if source is None:
            f.write(flatbuffer)
        else:
            _copy_released(source, f)
        with zipfile.ZipFile(_AppendedZip(f), "w") as archive:
            _zip_member(archive, METADATA_NAME, meta_bytes)
            _zip_member(archive, LABELS_NAME, ("\n".join(labels) + "\n").encode("utf-8"))
            for name, data in sorted((extra_files or {}).items()):
                _zip_member(archive, name, data)
    return meta


def state_npz_bytes(state: dict, *, consume: bool = False) -> memoryview:
    """`state` as .npz bytes (float32, sorted names, fixed timestamps: same state, same bytes).

    Each array is written straight into its ZIP member and the archive's buffer is returned
    as a view, not copied: the state is the largest thing a trainer writes, and every copy
    counts in its peak memory (the bytes are the same as writing each member from bytes).
    consume: pop each array from `state` once written, so a caller that holds no other
    reference frees the arrays one by one while the buffer grows (the state is then never
    held twice).
    """
    npz = StateNpz()
    for name in sorted(state):
        npz.add(name, state.pop(name) if consume else state[name])
    return npz.close()


class StateNpz:
    """A state.npz built one array at a time: add() in sorted name order gives state_npz_bytes'
    bytes. A trainer adds each tensor as it copies it out of the interpreter
    (Session.iter_state), so the state is never held twice."""

    def __init__(self):
        self._buffer = io.BytesIO()
        self._archive = zipfile.ZipFile(self._buffer, "w")

    def add(self, name: str, value) -> None:
        info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_STORED
        with self._archive.open(info, "w") as member:
            np.lib.format.write_array(member, np.asarray(value, dtype=np.float32, order="C"), allow_pickle=False)

    def close(self) -> memoryview:
        """The archive's bytes (a view of its buffer, not a copy)."""
        self._archive.close()
        return self._buffer.getbuffer()


def save_model(path, model_file, labels, state, metadata_updates=None) -> dict:
    """Write a self-contained fine-tuned model (what `tftl-train --output` writes): the same
    flatbuffer, new labels and metadata, and `state` as the ZIP member state.npz. Atomic;
    returns the metadata written.

    state: the state dict (its optimizer group is left out: `deployable`), or the
    `state_npz_bytes` of a deployable state (a trainer passes the bytes so the arrays are freed
    before the file is assembled: one copy of the state less at its peak).
    """
    meta = dict(model_file.metadata)
    meta.update(metadata_updates or {})
    meta["trained_state"] = True
    npz = state_npz_bytes(deployable(model_file, state)) if isinstance(state, dict) else state
    flatbuffer = model_file if model_file.flatbuffer is None else model_file.flatbuffer  # released: streamed
    meta = write_model(path, flatbuffer, meta, labels, extra_files={STATE_NAME: npz})
    return meta


def deployable(model_file, state: dict, *, consume=False) -> dict:
    """`state` without its optimizer group (Adam's slots and step): what a fine-tuned model
    file ships. The slots double the state and no reader of a model needs them; the
    checkpoint keeps them for --resume, and a host that trains the file further starts its
    own optimizer state (contract/rules.json state_npy.names). consume: drop them from
    `state` itself (a trainer frees them before the file is assembled)."""
    optimizer = set(model_file.meta.state_groups[contract.OPTIMIZER]) if model_file.meta else set()
    if consume:
        for name in optimizer:
            state.pop(name, None)
        return state
    return {name: value for name, value in state.items() if name not in optimizer}


class _AppendedZip:
    """The output file as zipfile sees it: positions count from where the ZIP starts.

    The ZIP goes straight into the file after the flatbuffer, so a fine-tuned model's
    state is never held twice more in memory (a ZIP buffer plus its copy). Offsets stay
    relative to the ZIP's start, as when it was built apart and appended: the file's
    bytes are the same, and every reader (Python, Java, JS) reads it unchanged.
    """

    def __init__(self, f):
        self._f = f
        self._base = f.tell()

    def write(self, data):
        return self._f.write(data)

    def tell(self):
        return self._f.tell() - self._base

    def seek(self, offset, whence=os.SEEK_SET):
        if whence == os.SEEK_SET:
            offset += self._base
        return self._f.seek(offset, whence) - self._base

    def flush(self):
        self._f.flush()


def _read_bytes(path: str) -> bytes:
    """The whole model file, refusing folders, FIFOs, devices, files over the cap and (from
    their first 8 bytes, before the rest is read) files that are not TFLite models."""
    try:
        with files.open_regular(path, limit=MAX_MODEL_BYTES) as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFileError(f"model file {path} is truncated or corrupted — export it again")
            if head[4:8] != TFLITE_IDENTIFIER:
                raise ModelFileError(f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER!r} identifier) "
                                     f"— {contract.EXPORT_HINT}", contract.NOT_TFLITE)
            return head + files.read_rest(f, MAX_MODEL_BYTES)
    except files.FileProblem as e:
        fix = "check the path" if e.reason != "does not exist" else contract.EXPORT_HINT
        raise ModelFileError(f"model file {path} {e.reason} — {fix}") from None
    except OSError as e:
        raise ModelFileError(f"model file {path} cannot be read ({e.strerror or e}) — check the file") from None


def _archive_members(path: str, data: bytes, with_state=False):
    """(metadata dict, labels text, flatbuffer, state.npz bytes or None) from the appended
    archive, sizes capped; the state member is read only `with_state`."""
    damaged = f"model file {path} is truncated or corrupted — export it again"
    not_tftl = f"{path} is not a tftl model (no tftl metadata) — {contract.EXPORT_HINT}"
    try:
        archive = safezip.open_archive(data)
    except safezip.NotZip:
        # A cut-off tftl file holds the start of its archive or a cut flatbuffer; an intact
        # plain .tflite holds neither.
        intact_plain = not _archive_started(data) and _flatbuffer_complete(data)
        raise (ModelFileError(not_tftl, contract.NOT_TFTL) if intact_plain else ModelFileError(damaged)) from None
    except safezip.ArchiveError as e:
        raise ModelFileError(f"model file {path} has a damaged archive ({e}) — export it again") from None
    with archive:
        names = set(archive.namelist())
        if METADATA_NAME not in names:
            raise ModelFileError(not_tftl, contract.NOT_TFTL)
        if LABELS_NAME not in names:
            raise ModelFileError(damaged)
        try:
            meta_bytes = safezip.read_member(archive, METADATA_NAME, MAX_METADATA_BYTES)
            labels_bytes = safezip.read_member(archive, LABELS_NAME, MAX_LABELS_BYTES)
        except safezip.ArchiveError as e:
            raise ModelFileError(f"model file {path} has a damaged archive ({e}) — export it again") from None
        raw_state = _state_member(path, archive) if with_state else None
        # zipfile shifts offsets by any bytes prepended to the archive, so the first
        # member's header offset is where the flatbuffer ends.
        start = min(info.header_offset for info in archive.infolist())
    flatbuffer = data[:start]
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelFileError(f"model file {path} is truncated or corrupted (unreadable tftl.json: "
                             f"{type(e).__name__}) — export it again") from None
    if not isinstance(meta, dict) or meta.get("content_hash") != content_hash(flatbuffer):
        raise ModelFileError(damaged)
    return meta, labels_bytes, flatbuffer, raw_state


def scalar_tensor(tensors: dict):
    """The name of the first 0-d tensor in {name: (shape, type)} (one side of signature_tensors), or None."""
    return next((name for name, (shape, _) in tensors.items() if not shape), None)


def _check_graph(path: str, meta: contract.ModelMetadata, sigs: dict) -> None:
    """Refuse metadata that disagrees with the shapes the graph's signatures declare."""
    b, r, k = meta.batch, meta.image_size, meta.num_labels
    feats = (b, *meta.feature_shape)
    expected = {
        contract.IMAGES: ((b, r, r, 3), FLOAT32, "batch and image_size"),
        contract.PROBABILITIES: ((b, k), FLOAT32, "batch and num_labels (the number of labels)"),
        contract.FEATURES: (feats, FLOAT32, "batch and feature_shape"),
    }
    if meta.micro_batch is not None:
        m = meta.micro_batch
        expected[contract.MICRO_IMAGES] = ((m, r, r, 3), FLOAT32, "micro_batch and image_size")
        expected[contract.MICRO_FEATURES] = ((m, *meta.feature_shape), FLOAT32, "micro_batch and feature_shape")
    for sig, entry in sigs.items():
        for side in ("inputs", "outputs"):
            for name, (shape, ttype) in entry[side].items():
                want = expected.get(name)
                if want is not None and (shape, ttype) != want[:2]:
                    raise ModelFileError(
                        f"model file {path}: the {sig} signature's {name} tensor is {list(shape)}, but "
                        f"tftl.json's {want[2]} make {list(want[0])} — {contract.EXPORT_HINT}", contract.METADATA_REFUSED)
    if contract.FORMATS.index(meta.format) >= contract.FORMATS.index(contract.SCALAR_FREE):
        for sig, entry in sigs.items():
            for side in ("inputs", "outputs"):
                scalar = scalar_tensor(entry[side])
                if scalar is not None:
                    raise ModelFileError(
                        f"model file {path}: the {sig} signature's {scalar} tensor is a scalar, which format "
                        f"{meta.format} forbids (aarch64 LiteRT crashes on it) — {contract.EXPORT_HINT}", contract.METADATA_REFUSED)
    restore = sigs.get(contract.RESTORE)
    if restore is not None and meta.state_names and set(restore["inputs"]) != set(meta.state_names):
        raise ModelFileError(f"model file {path}: tftl.json 'state_names' differ from the restore "
                             f"signature's inputs — {contract.EXPORT_HINT}", contract.METADATA_REFUSED)


def _load(path, with_state=False):
    """(ModelFile, state.npz bytes or None): read_model's work, the file read once.

    Checked before anything is built from it: the file is a regular file under
    MAX_MODEL_BYTES, every archive member's declared size is under its cap before it is
    inflated, the flatbuffer matches `content_hash`, `tftl.json` passes the typed
    contract, labels.txt follows the label rule and has `num_labels` lines, and batch,
    image_size, num_labels and feature_shape agree with the graph's signature tensors.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    damaged = f"model file {path} is truncated or corrupted — export it again"
    meta, labels_bytes, flatbuffer, raw_state = _archive_members(path, data, with_state)
    del data
    where = f"model file {path}"
    try:
        typed = contract.ModelMetadata.from_dict(meta, where=where)
        try:
            labels_text = labels_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise contract.ContractError(f"{where}: labels.txt is not UTF-8 text — {contract.EXPORT_HINT}",
                                         contract.LABELS_REFUSED) from None
        labels = contract.parse_labels(labels_text, where=f"{where}: labels.txt")
    except contract.ContractError as e:
        raise ModelFileError(str(e), e.kind) from None
    if len(labels) != typed.num_labels:
        raise ModelFileError(f"{where} has {len(labels)} labels in labels.txt but tftl.json declares "
                             f"num_labels {typed.num_labels} — {contract.EXPORT_HINT}", contract.LABELS_REFUSED)
    try:
        sigs = signature_tensors(flatbuffer)
    except ValueError:
        raise ModelFileError(damaged) from None
    _check_graph(path, typed, sigs)
    return ModelFile(flatbuffer=flatbuffer, metadata=meta, labels=labels, path=path, meta=typed,
                     signatures=sigs), raw_state


def read_model(path) -> ModelFile:
    """Parse and verify a tftl model file; ModelFileError (one line, with the fix) otherwise
    (what is checked: _load)."""
    return _load(path)[0]


def read_model_and_state(path):
    """(ModelFile, state or None, state.npz bytes or None) of a model file, read once: what a
    Session loads. The state is checked as read_state checks it."""
    model, raw = _load(path, with_state=True)
    return model, _parse_state(model, raw), raw


def _state_member(path, archive):
    """The raw bytes of the archive's state.npz member (size-capped), or None."""
    if STATE_NAME not in archive.namelist():
        return None
    try:
        return safezip.read_member(archive, STATE_NAME, MAX_STATE_BYTES)
    except safezip.ArchiveError as e:
        raise ModelFileError(f"model file {path} has a damaged {STATE_NAME} ({e}) — train it again") from None


def _state_names_present(model, raw):
    """The restore signature's {name: shape} that `raw` must hold: all of them, or all but the
    optimizer group when not one optimizer tensor is there (a deployable file); None without
    a restore signature."""
    shapes = model.state_shapes()
    optimizer = set(model.meta.state_groups[contract.OPTIMIZER]) if model.meta else set()
    if shapes is None or not optimizer:
        return shapes
    try:
        with safezip.open_archive(raw) as archive:
            names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
    except safezip.ArchiveError:
        return shapes  # read_npz reports it
    return {n: s for n, s in shapes.items() if n not in optimizer} if not names & optimizer else shapes


def _parse_state(model, raw):
    """The arrays of state.npz bytes `raw` (None: None), names and shapes compared with the
    `restore` signature from the .npy headers before any array is allocated, values finite."""
    if raw is None:
        return None
    shapes = _state_names_present(model, raw)
    where = f"{STATE_NAME} of model file {model.path}"
    try:
        state = safezip.read_npz(raw, limit=MAX_STATE_BYTES, declared=shapes, only=STATE_DTYPE)
        if shapes is not None:
            state = contract.check_state(state, shapes, where=where)
    except safezip.ArchiveError as e:
        raise ModelFileError(f"{where} is damaged ({e}) — train it again", contract.STATE_REFUSED) from None
    except contract.ContractError as e:
        raise ModelFileError(str(e), e.kind) from None
    return state


def read_state(model):
    """(state, raw bytes) of a fine-tuned model's `state.npz`, or (None, None) without one.

    model: a path (read once, with read_model_and_state) or a ModelFile (its file is read
    again for the state). Every member's name and shape is compared with the `restore`
    signature's inputs from the .npy headers, before any array is allocated, and the values
    must be finite (contract.check_state).

    Raises:
        ModelFileError: one line naming the file, the bad member and the fix.
    """
    if not isinstance(model, ModelFile):
        return read_model_and_state(model)[1:]
    path = model.path
    try:
        archive = safezip.open_archive(_read_bytes(path))
    except safezip.ArchiveError as e:
        raise ModelFileError(f"model file {path} has a damaged archive ({e}) — export it again") from None
    with archive:
        raw = _state_member(path, archive)
    return _parse_state(model, raw), raw
