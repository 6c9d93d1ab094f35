"""Build the model-file conformance vectors of contract/vectors/files.json from two real files.

    python -m tftl.runtime.vectors FRESH.tflite TRAINED.tflite OUT_DIR

FRESH is a small tftl export with the five flowers labels (daisy ... tulips) and TRAINED the
same model with a state.npz (`tftl-train --output`, or `modelfile.save_model`). OUT_DIR receives
one `<name>.tflite` per case of vectors/files.json, one `<name>.npz` per checkpoint case of
vectors/checkpoints.json (to resume on fresh.tflite), and `manifest.json` ([{"file", "verdict",
"model"? (a checkpoint's model), "hosts"?}]):
the list pytest, JUnit (tests/test_android.py) and node (web_demo/tools/check.mjs) all read.
Nothing large is checked in; the files are made at test time in a few seconds.
"""

import io
import json
import os
import struct
import sys
import warnings
import zipfile

import numpy as np

from tftl.runtime import modelfile, spec

_DATE = (1980, 1, 1, 0, 0, 0)


def _split(data: bytes):
    """(flatbuffer, [(name, bytes)]) of a tftl file, members in archive order."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    start = min(i.header_offset for i in archive.infolist())
    return data[:start], [(i.filename, archive.read(i)) for i in archive.infolist()]


def _zip(members, *, compress=None, method=None, duplicate=None) -> bytes:
    """A ZIP of [(name, bytes)], stored unless named in `compress`; `method` patches the
    method field of a member, `duplicate` writes that member twice."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the duplicate member is the point
        for name, data in members:
            for _ in range(2 if name == duplicate else 1):
                info = zipfile.ZipInfo(name, date_time=_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED if name in (compress or ()) else zipfile.ZIP_STORED
                z.writestr(info, data)
    out = bytearray(buf.getvalue())
    for name, code in (method or {}).items():
        _patch(out, name, 10, struct.pack("<H", code), local_offset=8)
    return bytes(out)


def _patch(buf: bytearray, name: str, central_offset: int, value: bytes, local_offset=None) -> None:
    """Overwrite a field of member `name`'s central directory entry (and local header)."""
    key = name.encode()
    pos = buf.find(b"PK\x01\x02")
    while pos >= 0:
        n, m, k = struct.unpack_from("<HHH", buf, pos + 28)
        if bytes(buf[pos + 46:pos + 46 + n]) == key:
            buf[pos + central_offset:pos + central_offset + len(value)] = value
            if local_offset is not None:
                local = struct.unpack_from("<I", buf, pos + 42)[0]
                buf[local + local_offset:local + local_offset + len(value)] = value
        pos = buf.find(b"PK\x01\x02", pos + 46 + n + m + k)


def _flip_data(buf: bytearray, name: str) -> None:
    """Change the first data byte of member `name`, leaving its recorded CRC-32 as it was."""
    local = buf.find(b"PK\x03\x04")
    while local >= 0:
        n, m = struct.unpack_from("<HH", buf, local + 26)
        if bytes(buf[local + 30:local + 30 + n]) == name.encode():
            buf[local + 30 + n + m] ^= 1
            return
        local = buf.find(b"PK\x03\x04", local + 30 + n + m)
    raise ValueError(f"no member {name}")


def _npy(array: np.ndarray, header_shape=None) -> bytes:
    """.npy bytes of `array`; header_shape makes the header declare another shape."""
    header = np.lib.format.header_data_from_array_1_0(array)
    if header_shape is not None:
        header["shape"] = tuple(header_shape)
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    f.write(array.tobytes(order="F" if header["fortran_order"] else "C"))
    return f.getvalue()


def _state_edit(npz: bytes, edit: dict) -> bytes:
    """state.npz with one change to its first member (in sorted order)."""
    archive = zipfile.ZipFile(io.BytesIO(npz))
    members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    name, raw = members[0]
    array = np.load(io.BytesIO(raw), allow_pickle=False)
    if edit.get("nan"):
        array = array.copy()
        array.flat[0] = np.nan
    if "dtype" in edit:
        array = array.astype(edit["dtype"])
    if edit.get("fortran"):
        array = np.asfortranarray(array)
    if edit.get("flatten"):
        array = array.reshape(-1, 1) if array.ndim == 1 else array.reshape(-1)
    data = _npy(array, edit.get("header_shape"))
    if "cut" in edit:
        data = data[:-edit["cut"]]
    members[0] = (edit.get("rename_member", name), data)
    if edit.get("drop"):
        members = members[1:]
    if "drop_prefix" in edit:
        members = [(n, d) for n, d in members if not n.startswith(tuple(edit["drop_prefix"]))]
    if "extra" in edit:
        members.append((edit["extra"] + ".npy", _npy(np.zeros(3, np.float32))))
    return _zip(members)


def _labels_bomb(size: int) -> bytes:
    return ("\n".join(spec.FIVE) + "\n").encode() + b" " * (size - 35)


def _members(members, edit: dict, flatbuffer: bytes):
    """Apply the member-level edits; returns (members, zip options)."""
    members = dict(members)
    meta = json.loads(members["tftl.json"])
    if "meta" in edit or edit.get("rename_state"):
        meta.update(edit.get("meta", {}))
        if edit.get("rename_state"):
            old = meta["state_names"][0]
            meta["state_names"][0] = "renamed__" + old
            for names in meta["state_groups"].values():
                names[:] = ["renamed__" + n if n == old else n for n in names]
        if "content_hash" not in edit.get("meta", {}):
            meta["content_hash"] = modelfile.content_hash(flatbuffer)
        members["tftl.json"] = json.dumps(meta, indent=2, sort_keys=True).encode()
    if "labels_text" in edit:
        members["labels.txt"] = edit["labels_text"].encode("utf-8")
    for name, text in edit.get("member_text", {}).items():
        members[name] = text.encode("utf-8")
    for name, hexed in edit.get("member_hex", {}).items():
        members[name] = bytes.fromhex(hexed)
    for name in edit.get("drop", ()):
        del members[name]
    for name, size in edit.get("bomb", {}).items():
        members[name] = _labels_bomb(size)
    if "state" in edit:
        members["state.npz"] = _state_edit(members["state.npz"], edit["state"])
    options = {"compress": list(edit.get("bomb", {})), "method": edit.get("method"),
               "duplicate": edit.get("duplicate")}
    return list(members.items()), options


def build_case(base: bytes, edit: dict) -> bytes:
    """The bytes of one vector: `base` (a whole tftl file) with `edit` applied."""
    if "whole_hex" in edit:
        return bytes.fromhex(edit["whole_hex"])
    flatbuffer, members = _split(base)
    if edit.get("flatbuffer_only"):
        return flatbuffer
    if edit.get("flip") is not None:
        flatbuffer = bytearray(flatbuffer)
        flatbuffer[edit["flip"]] ^= 1
        flatbuffer = bytes(flatbuffer)
    members, options = _members(members, edit, flatbuffer)
    archive = bytearray(_zip(members, **options))
    for name, size in edit.get("declare", {}).items():
        _patch(archive, name, 24, struct.pack("<I", size))
    for name in edit.get("crc", ()):
        _flip_data(archive, name)
    data = flatbuffer + bytes(archive)
    cut = edit.get("truncate")
    if cut is not None:
        data = data[:int(len(data) * cut)] if isinstance(cut, float) else data[:-cut]
    return data


def _checkpoint(arrays: dict, meta: dict, edit: dict) -> bytes:
    """The bytes of one checkpoint vector: `arrays` and `meta` (as checkpoint.save_checkpoint
    lays them out) with `edit` applied."""
    if "whole_hex" in edit:
        return bytes.fromhex(edit["whole_hex"])
    meta = {**meta, **edit.get("meta", {})}
    for key in edit.get("drop_meta", ()):
        del meta[key]
    members = [(name + ".npy", _npy(np.asarray(value))) for name, value in sorted(arrays.items())]
    npz = _state_edit(_zip(members), edit["arrays"]) if "arrays" in edit else _zip(members)
    members = _split_npz(npz)
    if "meta_bytes_hex" in edit:
        encoded = bytes.fromhex(edit["meta_bytes_hex"])
    else:
        encoded = json.dumps(meta, sort_keys=True).encode("utf-8")
    meta_array = np.frombuffer(encoded, np.uint8)
    if edit.get("meta_float"):
        meta_array = meta_array.astype(np.float32)
    if not edit.get("no_meta"):
        members.append(("__meta__.npy", _npy(meta_array)))
    compress = []
    if "bomb_array" in edit:
        name = members[0][0]
        members[0] = (name, _npy(np.zeros(edit["bomb_array"] // 4, np.float32)))
        compress = [name]
    data = _zip(members, compress=compress)
    return data[:-edit["truncate"]] if "truncate" in edit else data


def _split_npz(npz: bytes) -> list:
    archive = zipfile.ZipFile(io.BytesIO(npz))
    return [(i.filename, archive.read(i)) for i in archive.infolist()]


def build_checkpoints(fresh: str, out_dir: str) -> list:
    """Every case of spec.checkpoint_vectors() for the model `fresh`, in out_dir; manifest rows
    {"file", "model", "verdict"} (the model is fresh's file name, copied into out_dir)."""
    from tftl.runtime.checkpoint import TrainState
    from tftl.runtime.session import Session

    session = Session(fresh, threads=1)
    arrays = session.state()
    meta = TrainState(epoch=1, global_step=10, history=[{"epoch": 1, "loss": 1.0}]).to_meta(
        session.model_hash, session.labels)
    rows = []
    for case in spec.checkpoint_vectors()["cases"]:
        name = case["name"] + ".npz"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(_checkpoint(arrays, meta, case["edit"]))
        rows.append({"file": name, "model": "fresh.tflite", "verdict": case["verdict"]})
    return rows


def build(fresh: str, trained: str, out_dir: str) -> list:
    """Write every case of spec.file_vectors() into out_dir; returns the manifest."""
    bases = {}
    for key, path in (("fresh", fresh), ("trained", trained)):
        with open(path, "rb") as f:
            bases[key] = f.read()
        labels = modelfile.read_model(path).labels
        if labels != spec.FIVE:
            raise ValueError(f"{path} has labels {labels}; the vectors need {spec.FIVE}")
    os.makedirs(out_dir, exist_ok=True)
    manifest = []
    for case in spec.file_vectors()["cases"]:
        name = case["name"] + ".tflite"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(build_case(bases[case["base"]], case["edit"]))
        manifest.append({"file": name, **{k: v for k, v in case.items() if k not in ("edit", "base")}})
    manifest += build_checkpoints(fresh, out_dir)
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    manifest = build(*argv)
    print(f"{len(manifest)} vectors in {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
