"""Pixel buffers that fall back to disk: 100-megapixel 16-bit images should not need their size in RAM."""

from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path

import numpy as np

DISK_THRESHOLD = 256 << 20  # bytes; larger buffers are memory-mapped temp files
# what mmap fails with where the file system cannot map a file (some FUSE and network mounts, /proc-like files):
# readers then read the source instead; any other OSError (EIO, a vanished file) is a real failure
_UNMAPPABLE = frozenset({errno.ENODEV, errno.EACCES, errno.EINVAL})


def unmappable(e: OSError) -> bool:
    """Did mapping a source fail only because its file system cannot map it (so a plain read may work)?"""
    return e.errno in _UNMAPPABLE


def allocate(shape: tuple[int, ...], dtype, tmp_dir: str | Path | None = None,
             threshold: int | None = None) -> np.ndarray:
    """Uninitialised array of `shape`/`dtype`: a plain ndarray up to `threshold` bytes (default
    DISK_THRESHOLD), else a np.memmap on an already-unlinked temp file in `tmp_dir` (default: the system
    temp folder), freed with the array.

    Disk space is reserved up front (posix_fallocate), so a full disk raises OSError here instead of a
    SIGBUS while pixels are written.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes <= (DISK_THRESHOLD if threshold is None else threshold):
        return np.empty(shape, dtype)
    folder = str(tmp_dir) if tmp_dir is not None else tempfile.gettempdir()
    with tempfile.TemporaryFile(dir=folder, prefix=".oldphoto-buffer-") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise OSError(e.errno, f"cannot reserve {nbytes} bytes for a pixel buffer in {folder}: "
                                       f"{e.strerror}") from e
            f.truncate(nbytes)  # file system without fallocate: sparse file
        # the mapping keeps its own reference to the file, so closing (and so deleting) it here is safe
        return np.memmap(f, dtype=dtype, mode="w+", shape=tuple(shape))
