"""Bounded reading of the ZIP archives and .npy arrays inside tftl files.

A model file's appended ZIP, its `state.npz` and a training checkpoint are all ZIPs of
`.npy` members that a damaged or hostile file controls completely. The standard readers
trust them: `zipfile` inflates whatever a member holds (a 400 KB member can inflate to
400 MB), and `numpy.load` allocates whatever shape a `.npy` header declares before it
reads a byte of data. This module checks every declared size before anything is inflated
or allocated:

  * archive: at most MAX_MEMBERS members, unique names, no encryption, only STORED or
    DEFLATED (bzip2/lzma bombs are refused outright);
  * member: declared uncompressed size under the caller's cap, and a compression ratio
    under MAX_RATIO for anything bigger than RATIO_FREE bytes (zipfile stops at the
    declared size and then fails the CRC, so a member lying about its size cannot inflate
    past the cap either);
  * `.npy`: format 1.0 or 2.0, a plain numeric dtype (no object, structured or sub-array
    dtypes), at most MAX_NDIM dimensions, and shape x itemsize equal to the member's
    declared size, so the allocation is exactly the bytes the archive says it holds.

Every failure is an ArchiveError (a ValueError) whose message is one short reason; the
callers (modelfile, checkpoint) put the file name and the fix around it.
"""

import io
import lzma
import math
import struct
import tokenize
import zipfile
import zlib

import numpy as np

MAX_MEMBERS = 100_016          # contract.MAX_STATE_TENSORS plus the metadata members
MAX_RATIO = 100                # deflate of real weights is ~1.1; of all-zero slots, ~1000
RATIO_FREE = 1 << 20           # members below 1 MiB may compress as well as they like
MAX_NDIM = 8
NUMERIC_KINDS = "biuf"         # bool, signed, unsigned, float
_ALLOWED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

# What zipfile, zlib and numpy raise for damaged bytes (zipfile is not careful about it).
ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, ValueError,
          OSError, EOFError, zlib.error, lzma.LZMAError, struct.error, IndexError, KeyError,
          OverflowError, UnicodeDecodeError, TypeError, SyntaxError, MemoryError,
          tokenize.TokenError)  # numpy parses the .npy header dict with tokenize + literal_eval


class ArchiveError(ValueError):
    """An archive or array whose declared structure is damaged or exceeds a cap.

    The message is always one line (whitespace from wrapped library errors is collapsed).
    """

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class NotZip(ArchiveError):
    """The bytes hold no ZIP archive at all (no end-of-central-directory record)."""


class Mismatch(ArchiveError):
    """Arrays whose names or header shapes differ from the ones declared (another model's)."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def open_archive(source) -> zipfile.ZipFile:
    """A ZipFile over `source` (bytes, a path or a binary file) after structural checks.

    Raises:
        ArchiveError: not a ZIP, too many members, duplicate names, encryption or an
            unsupported compression method.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        archive = zipfile.ZipFile(source)
    except ERRORS as e:
        raise NotZip(f"not a readable ZIP archive ({type(e).__name__}: {e})") from None
    try:
        infos = archive.infolist()
        # zipfile stops reading the central directory at its declared size, so an entry whose
        # name length runs past it hides the entries after it; the end record's count must agree
        # (as the Java and JavaScript readers require).
        declared = _declared_members(archive.fp)
        if declared is not None and declared != len(infos):
            raise ArchiveError(f"the central directory holds {len(infos)} members, its end record says {declared}")
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"{len(infos)} archive members (at most {MAX_MEMBERS})")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise ArchiveError("duplicate archive member names")
        for info in infos:
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {info.filename!r} is encrypted")
            if info.compress_type not in _ALLOWED_METHODS:
                raise ArchiveError(f"member {info.filename!r} uses compression method "
                                   f"{info.compress_type} (only stored or deflated)")
    except ArchiveError:
        archive.close()
        raise
    return archive


def _declared_members(fp):
    """The member count the end-of-central-directory record declares (None when unreadable)."""
    try:
        endrec = zipfile._EndRecData(fp)  # the record zipfile itself decodes
    except ERRORS:
        return None
    return None if not endrec else endrec[zipfile._ECD_ENTRIES_TOTAL]


def check_member(info: zipfile.ZipInfo, limit: int) -> None:
    """Refuse a member whose declared size or compression ratio is over the caps."""
    if info.file_size > limit:
        raise ArchiveError(f"member {info.filename!r} declares {_mib(info.file_size)} "
                           f"(at most {_mib(limit)})")
    if info.file_size > RATIO_FREE and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ArchiveError(f"member {info.filename!r} inflates {info.file_size // max(info.compress_size, 1)}x "
                           f"(at most {MAX_RATIO}x)")


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """The bytes of member `name`, read only after check_member; ArchiveError otherwise."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ArchiveError(f"no member {name!r}") from None
    check_member(info, limit)
    try:
        with archive.open(info) as f:
            data = f.read(limit + 1)
    except ERRORS as e:
        raise ArchiveError(f"member {name!r} is damaged ({type(e).__name__}: {e})") from None
    if len(data) != info.file_size:
        raise ArchiveError(f"member {name!r} is damaged (size {len(data)}, declared {info.file_size})")
    return data


def _npy_header(f):
    """(shape, fortran_order, dtype, header bytes) of the .npy stream `f`, checked."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10_000)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10_000)
    else:
        raise ArchiveError(f".npy format {version} (only 1.0 and 2.0)")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in NUMERIC_KINDS:
        raise ArchiveError(f"dtype {dtype} is not a plain numeric type")
    if len(shape) > MAX_NDIM or any(not isinstance(d, int) or d < 0 for d in shape):
        raise ArchiveError(f"shape {shape} is not a valid array shape")
    return shape, fortran, dtype


def read_npy(f, size: int, name: str, only=None) -> np.ndarray:
    """One .npy array from binary stream `f` of `size` bytes; allocates only what it declares.

    Raises:
        ArchiveError: bad magic or header, refused dtype, or a shape whose bytes differ
            from `size` minus the header (the check that stops huge declared shapes).
    """
    try:
        shape, fortran, dtype = _npy_header(f)
        header = f.tell() if f.seekable() else None
    except ArchiveError as e:
        raise ArchiveError(f"array {name!r}: {e}") from None
    except ERRORS as e:
        raise ArchiveError(f"array {name!r} has a damaged .npy header ({e})") from None
    if header is None:
        raise ArchiveError(f"array {name!r}: stream is not seekable")
    if only is not None and (dtype.str != only or fortran):
        raise ArchiveError(f"array {name!r} holds {dtype.str}{' in Fortran order' if fortran else ''}, "
                           f"not {only} in C order")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != size - header:
        raise ArchiveError(f"array {name!r} declares shape {shape} {dtype} ({_mib(nbytes)}) "
                           f"but holds {_mib(max(size - header, 0))}")
    array = np.empty(math.prod(shape), dtype=dtype)
    try:
        got = f.readinto(memoryview(array).cast("B")) if nbytes else 0
        extra = f.read(1)  # reaching the end makes zipfile check the CRC
    except ERRORS as e:
        raise ArchiveError(f"array {name!r} is damaged ({type(e).__name__}: {e})") from None
    if got != nbytes or extra:
        raise ArchiveError(f"array {name!r} is damaged (short or long data)")
    return array.reshape(shape, order="F" if fortran else "C")


def read_npz(source, *, limit: int, declared=None, caps=None, only=None) -> dict:
    """{name: array} of an .npz (bytes, path or binary file), every member checked first.

    limit: cap on the total declared uncompressed size. declared: optional {name: shape};
    when given, the member names must be exactly these names and every header's shape
    (unless declared None) must match (compared before any array is allocated; a declared (1,) accepts ()).
    caps: optional {name: byte limit} for single members (e.g. a metadata array).
    only: a dtype string ("<f4") every member must hold, in C order, or None for any numeric one.

    Raises:
        ArchiveError: anything refused, with the member named.
    """
    archive = open_archive(source)
    with archive:
        infos = archive.infolist()
        total = sum(i.file_size for i in infos)
        if total > limit:
            raise ArchiveError(f"arrays declare {_mib(total)} in all (at most {_mib(limit)})")
        names = []
        for info in infos:
            if not info.filename.endswith(".npy") or info.filename == ".npy":
                raise ArchiveError(f"member {info.filename!r} is not a .npy array")
            names.append(info.filename[:-4])
            check_member(info, (caps or {}).get(names[-1], limit))
        if declared is not None:
            _check_names(names, declared)
        arrays = {}
        for info, name in zip(infos, names):
            try:
                f = archive.open(info)
            except ERRORS as e:
                raise ArchiveError(f"member {info.filename!r} is damaged ({type(e).__name__}: {e})") from None
            with f:
                if declared is not None and declared[name] is not None:
                    _check_shape(f, name, declared[name])
                arrays[name] = read_npy(f, info.file_size, name, only)
    return arrays


def _check_names(names, declared) -> None:
    """Mismatch for arrays of another model; ArchiveError when a member declared with shape None
    (the file's own structure, such as a checkpoint's metadata) is missing."""
    missing = sorted(set(declared) - set(names))
    extra = sorted(set(names) - set(declared))
    structural = [n for n in missing if declared[n] is None]
    if structural:
        raise ArchiveError(f"no {structural[0]!r} member")
    if missing or extra:
        raise Mismatch(f"arrays do not match the model: missing {missing[:3]}"
                       f"{'...' if len(missing) > 3 else ''}, unknown {extra[:3]}"
                       f"{'...' if len(extra) > 3 else ''}")


def _check_shape(f, name, want) -> None:
    """Peek at the header of `f` and compare its shape with `want`, then rewind."""
    try:
        shape, _, _ = _npy_header(f)
    except ArchiveError as e:
        raise ArchiveError(f"array {name!r}: {e}") from None
    except ERRORS as e:
        raise ArchiveError(f"array {name!r} has a damaged .npy header ({e})") from None
    want = tuple(want)
    if tuple(shape) != want and not (tuple(shape) == () and want == (1,)):
        raise Mismatch(f"array {name!r} has shape {tuple(shape)}, the model declares {want}")
    f.seek(0)
