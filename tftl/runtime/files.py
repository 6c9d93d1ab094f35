"""File-system guards shared by the readers and writers of the device runtime.

  printable          a path or message with its control characters escaped (one line, always).
  open_regular       open for reading only a regular file: a FIFO named `x.jpg` would block
                     `open()` forever, a device (`/dev/zero`) never ends, a folder is a
                     usage mistake. Checked with os.stat before the open, opened with
                     O_NONBLOCK (so even a FIFO swapped in between cannot block) and checked
                     again with fstat on the descriptor.
  output_mode        the mode a new output file gets from the umask (mkstemp makes 0600).
  atomic_write       write a file so that it is either the old one or the whole new one.
  clean_stale_temps  remove the `.<name>.*.tmp` files a crash during an atomic write left.
  preallocate        reserve a file's blocks with posix_fallocate, so a full disk is an
                     OSError at creation instead of SIGBUS when a memmap page is first touched.
"""

import contextlib
import errno
import glob
import os
import re
import stat
import tempfile


def printable(text) -> str:
    """`text` (a path, or a message holding paths) for a one-line message: every character
    that is not printable (newline, tab, ESC, U+2028, a surrogate from an undecodable file
    name byte, ...) escaped as Python writes it (\\n, \\x1b, \\u2028, \\udcff); the rest as is.
    A file named "a\\nb.jpg" then prints as one entry on one line, and cannot forge another."""
    text = os.fsdecode(text) if isinstance(text, (bytes, os.PathLike)) else str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


class FileProblem(ValueError):
    """A path that cannot be read as a regular file; `reason` is a short phrase."""

    def __init__(self, path, reason):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path} {reason}")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def open_regular(path, *, limit=None):
    """A binary file object for the regular file `path`; FileProblem otherwise.

    limit: refuse files larger than this many bytes (checked on the open descriptor).
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileProblem(path, "does not exist") from None
    except OSError as e:
        raise FileProblem(path, f"cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(path, _kind(st.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FileProblem(path, f"cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(path, _kind(st.st_mode))
        if limit is not None and st.st_size > limit:
            raise FileProblem(path, f"is {st.st_size / 2**20:.0f} MiB, larger than the "
                                    f"{limit / 2**20:.0f} MiB this reader accepts")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_rest(f, limit) -> bytes:
    """The rest of the open regular file `f`, at most limit + 1 bytes (one more than allowed,
    so that a file that grew is seen), sized by fstat: `BufferedReader.read(n)` allocates n
    bytes up front, which a 32-bit process cannot do for a 4 GiB cap (armhf: OverflowError)."""
    size = os.fstat(f.fileno()).st_size - f.tell()
    return f.read(max(0, min(limit, size)) + 1)


def read_regular(path, *, limit=None) -> bytes:
    """All bytes of the regular file `path` (see open_regular); FileProblem otherwise."""
    with open_regular(path, limit=limit) as f:
        try:
            data = f.read() if limit is None else read_rest(f, limit)
        except OSError as e:
            raise FileProblem(path, f"cannot be read ({e.strerror or e})") from None
    if limit is not None and len(data) > limit:
        raise FileProblem(path, f"grew past {limit} bytes while it was read")
    return data


def output_mode() -> int:
    """0o666 less the process umask: the mode `open(path, "w")` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


TEMP_MARK = "tftl"


def temp_pattern(path) -> str:
    """The glob of the temp files atomic_write makes for `path` (`.<name>.*.tmp`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(glob.escape(directory), "." + glob.escape(os.path.basename(path)) + ".*.tmp")


def temp_prefix(path) -> str:
    """mkstemp prefix for a temp file of `path` (`.<name>.tftl<pid>-`): it names the writing
    process for a person looking at the folder; a cleanup judges by the file's lock."""
    return f".{os.path.basename(os.fspath(path))}.{TEMP_MARK}{os.getpid()}-"


def _lock(fd, shared=False) -> bool:
    """Try to flock `fd` without waiting: True when locked (or no flock on this platform)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _writer_alive(tmp: str, path) -> bool:
    """Whether a writer still holds temp file `tmp`: atomic_write keeps an exclusive flock on
    its temp file until the rename, and the kernel drops it when the writer dies (kill -9, a
    zombie, a recycled pid or a container's pid 1 all read the same). Without flock (Windows)
    a writer is judged alive while the pid in the name runs."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        rest = os.path.basename(tmp)[len(os.path.basename(os.fspath(path))) + 2:]
        match = re.match(re.escape(TEMP_MARK) + r"(\d+)-", rest)
        try:
            return bool(match) and os.kill(int(match.group(1)), 0) is None
        except (ProcessLookupError, OverflowError, ValueError):
            return False
        except PermissionError:
            return True
    try:
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return True  # cannot judge it: leave it
    try:
        return not _lock(fd)
    finally:
        os.close(fd)


def clean_stale_temps(path) -> list:
    """Remove the temp files a crashed atomic write of `path` left; returns what was removed.

    Only regular files matching this target's own pattern (`.<name>.*.tmp`) are touched, and
    never the temp file of a writer that is still running (it holds a lock on it).
    """
    removed = []
    for tmp in glob.glob(temp_pattern(path)):
        try:
            if stat.S_ISREG(os.lstat(tmp).st_mode) and not _writer_alive(tmp, path):
                os.unlink(tmp)
                removed.append(tmp)
        except OSError:
            pass
    return removed


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
    """Yield a binary file object; on success it replaces `path` atomically, else vanishes.

    A temp file in the same folder, fsync, rename, fsync the folder: a device that loses
    power mid-write keeps the previous file instead of a half-written one. The temp files
    an earlier crash left for the same target are removed first, and the file gets the
    umask's mode (not mkstemp's 0600)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=directory)
    _lock(fd)  # held (through `hold`, the same open file) until the rename: the writer is alive
    hold = os.dup(fd)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), output_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if e.filename is None:  # a failed write (ENOSPC) names no file: name the one being written
            raise OSError(e.errno, e.strerror or str(e), path) from e
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(hold)
    _fsync_dir(directory)


def create_problem(path):
    """None when a file can be created next to `path` (a probe temp file of atomic_write's own
    naming is made and removed), else the reason. os.access is not enough: root passes it on
    /proc and read-only mounts, where the write fails only at the end of the work."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def write_problem(e: OSError, path=None, fix="choose another folder") -> str:
    """One line for an OSError met while writing `path` (default e.filename): the file, the
    cause and the fix; a full disk (ENOSPC, EDQUOT) says so and asks for space."""
    path = e.filename if path is None else path
    where = f" {printable(path)}" if path else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"cannot write{where}: the disk is full ({e.strerror or e}) — free some space, or {fix} on a disk "
                "with room")
    return f"cannot write{where} ({e.strerror or e}) — {fix}"


def preallocate(fd_or_file, size: int) -> None:
    """Reserve `size` bytes of disk for a new, open file, so a memmap over it cannot SIGBUS.

    A sparse file (what np.memmap "w+" makes) gets its blocks only when a page is first
    written; on a full disk that write is a SIGBUS ("Bus error") that kills the process.
    posix_fallocate asks for the blocks now and raises OSError(ENOSPC) instead. Where
    the file system cannot allocate (EOPNOTSUPP/EINVAL, e.g. some FUSE mounts) it falls
    back to writing zeros over the first `size` bytes, which fails the same clean way.
    Use: open the cache file "wb", preallocate(f, nbytes), then np.memmap(path, mode="r+").

    Raises:
        OSError: errno.ENOSPC (or EDQUOT) when the disk cannot hold `size` bytes.
    """
    fd = fd_or_file if isinstance(fd_or_file, int) else fd_or_file.fileno()
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:
        pass
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    chunk = b"\0" * (1 << 20)
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left:
        left -= os.write(fd, chunk[:min(left, len(chunk))])
    os.fsync(fd)
