"""An array [views, n, *row] kept in a file and read or written a row at a time, never mapped.

The feature cache's disk storage. A memory map would count every page it has touched in the
process's resident set: one epoch reads every row, so a mapped cache ends up as resident as
one in RAM. Rows read with positioned reads live only as long as the batch that uses them;
the file's pages stay in the OS page cache, which the OS reclaims under pressure.

    rows = RowFile(path, (views, n, 7, 7, 160), np.float16, writable=True)
    rows[view, [3, 4]] = block      # view: an int, or one view per row
    rows[view_per_row, index]       # -> np.ndarray [len(index), 7, 7, 160]

Reads and writes come from one thread at a time (the cache is built and read by the training
loop's thread).
"""

import math
import os

import numpy as np


class RowFile:
    """`shape[:2]` addresses rows of `shape[2:]` elements of `dtype`, stored in C order."""

    def __init__(self, path, shape, dtype, *, writable=False):
        self.path, self.shape, self.dtype = os.fspath(path), tuple(int(d) for d in shape), np.dtype(dtype)
        self.row_shape = self.shape[2:]
        self.row_bytes = self.dtype.itemsize * math.prod(self.row_shape)
        self.nbytes = self.row_bytes * self.shape[0] * self.shape[1]
        size = os.path.getsize(self.path)
        if size != self.nbytes:
            raise ValueError(f"{self.path} holds {size} bytes, not the {self.nbytes} of {self.shape}")
        self._file = open(self.path, "r+b" if writable else "rb", buffering=0)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _rows(self, key):
        """(view, index) -> [(flat row number, position in the batch)]."""
        view, index = key
        index = np.asarray(index, np.int64).reshape(-1)
        views = np.broadcast_to(np.asarray(view, np.int64), index.shape)
        if len(index) and (index.min() < 0 or index.max() >= self.shape[1] or views.min() < 0
                           or views.max() >= self.shape[0]):
            raise IndexError(f"rows {key} out of {self.shape[:2]}")
        return views * self.shape[1] + index

    def __getitem__(self, key) -> np.ndarray:
        rows = self._rows(key)
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        buf = out.reshape(len(rows), -1).view(np.uint8)  # row k: a contiguous, writable buffer
        for k, row in enumerate(rows):
            self._file.seek(int(row) * self.row_bytes)
            if self._file.readinto(buf[k]) != self.row_bytes:
                raise OSError(f"{self.path} is shorter than its {self.shape} rows (truncated while in use?)")
        return out

    def __setitem__(self, key, values):
        rows = self._rows(key)
        values = np.ascontiguousarray(np.broadcast_to(np.asarray(values, self.dtype), (len(rows), *self.row_shape)))
        flat = values.reshape(len(rows), -1).view(np.uint8)
        for k, row in enumerate(rows):
            self._file.seek(int(row) * self.row_bytes)
            if self._file.write(flat[k].data) != self.row_bytes:
                raise OSError(f"{self.path}: short write")

    def __array__(self, dtype=None, copy=None):
        """The whole array in memory (tests and small caches only)."""
        whole = self[np.repeat(np.arange(self.shape[0]), self.shape[1]), np.tile(np.arange(self.shape[1]),
                                                                                  self.shape[0])]
        whole = whole.reshape(self.shape)
        return whole if dtype is None else whole.astype(dtype)

    def flush(self) -> None:
        """The written rows on disk (fsync), as np.memmap.flush would."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
