"""Pixel buffers that fall back to disk: 100-megapixel 16-bit images should not need their size in RAM; and work done
on such a buffer in place, a band of rows at a time, so that its scratch stays small too."""

from __future__ import annotations

import errno
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from ..errors import ImageError, TempFolderError

DISK_THRESHOLD = 256 << 20  # bytes; larger buffers are memory-mapped temp files
_BAND_BYTES = 16 << 20  # scratch per band of rows worked on in place (bands)
# what mmap fails with where the file system cannot map a file (some FUSE and network mounts): a temp folder there is
# passed over for another; any other OSError (EIO, a full disk) is a real failure. Sources are never mapped.
_UNMAPPABLE = frozenset({errno.ENODEV, errno.EACCES, errno.EINVAL})
# the system's temp folders, as tempfile looks for one when TMPDIR, TEMP and TMP name none (its documented order):
# where a large buffer goes when the temp folder named cannot map files
SYSTEM_TEMP = ("/tmp", "/var/tmp", "/usr/tmp") if os.name == "posix" else ()
# how a note about the temp folder begins: it tells of this run's machine, not of a file's outputs
BUFFER_NOTE = "pixel buffers:"
_NOTES: ContextVar[list[str] | None] = ContextVar("oldphoto_buffer_notes", default=None)
MEMINFO = "/proc/meminfo"  # Linux's account of memory; where it is missing (macOS, Windows) nothing is checked


def unmappable(e: OSError) -> bool:
    """Did mapping a file fail only because its file system cannot map files (so another folder's may)?"""
    return e.errno in _UNMAPPABLE


class _Unmappable(Exception):
    """A temp folder whose file system cannot map files; its message: why (mmap's OSError is the cause)."""


def allocate(shape: tuple[int, ...], dtype, tmp_dir: str | Path | None = None,
             threshold: int | None = None) -> np.ndarray:
    """Uninitialised array of `shape`/`dtype`: a plain ndarray up to `threshold` bytes (default
    DISK_THRESHOLD), else a np.memmap on an already-unlinked temp file in `tmp_dir` (default: the temp
    folder, TMPDIR when set), freed with the array.

    Where that folder's file system cannot map files (mmap fails with ENODEV, EACCES or EINVAL: some FUSE and
    network mounts), the buffer goes to the first system temp folder that can (tempfile.gettempdir(), then
    SYSTEM_TEMP), with a note to the file's file_buffers; never to RAM. TempFolderError when none can.
    Disk space is reserved up front (posix_fallocate), so a full disk raises OSError here instead of a
    SIGBUS while pixels are written.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes <= (DISK_THRESHOLD if threshold is None else threshold):
        return np.empty(shape, dtype)
    why: list[str] = []  # the folders passed over, and why
    for folder in _folders(tmp_dir):
        try:
            buf = _mapped(folder, tuple(shape), dtype, nbytes)
        except _Unmappable as e:
            why.append(f"nor can {folder} ({e})" if why else f"{folder} cannot memory-map files ({e})")
        except OSError as e:
            if not why:  # the folder asked for (full, say): as before, no other is tried
                raise
            why.append(f"{folder} cannot hold it ({os.strerror(e.errno) if e.errno else e})")
        else:
            if why:
                _note(f"{BUFFER_NOTE} {why[0]}; put in {folder} instead")
            return buf
    size = f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes} bytes"
    raise TempFolderError(f"no temp folder can hold a pixel buffer of {size}: {', '.join(why)}; point TMPDIR at a "
                          "folder on a local disk")


def in_ram(nbytes: int) -> int:
    """The bytes of RAM a buffer of `nbytes` that allocate() makes takes: all of them up to DISK_THRESHOLD, none
    above (memory-mapped on disk)."""
    return nbytes if nbytes <= DISK_THRESHOLD else 0


def available_memory(meminfo: str | Path | None = None, root: str | Path = "/") -> int | None:
    """Bytes this process can be given now before the kernel's OOM killer steps in: the smaller of MemAvailable +
    SwapFree of `meminfo` (default MEMINFO) and what the process's cgroup memory limit leaves (_cgroup_available,
    under `root`: a container's OOM killer acts on that limit, which /proc/meminfo does not show), read afresh at
    each call. None where neither says anything (not Linux, a kernel older than 3.14, a sandbox hiding /proc, no
    cgroup limit): the check it serves is advisory, so no scan is refused for want of it."""
    bounds = [b for b in (_meminfo_available(meminfo), _cgroup_available(Path(root))) if b is not None]
    return min(bounds) if bounds else None


def _meminfo_available(meminfo: str | Path | None) -> int | None:
    """MemAvailable + SwapFree of `meminfo` (default MEMINFO), or None where it cannot be read or names no
    MemAvailable."""
    text = _read(meminfo or MEMINFO)
    if text is None:  # missing or unreadable: the guard is skipped rather than every scan failing on it
        return None
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemAvailable" not in fields:
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0)


# a cgroup v1 memory.limit_in_bytes (or memory.memsw.limit_in_bytes) at least this large is no limit (unlimited: 2**63
# less a page)
_CGROUP_V1_NO_LIMIT = 1 << 60
# (mount, the (limit, usage) files each giving a bound, reclaimable page cache in memory.stat: the first found) by
# cgroup version. v1's memory.memsw.* (present where swap is accounted) limit memory + swap: with much of the cgroup
# swapped out, that limit is the nearer one (3 GB used of a limit of 8, 6 GB in swap, 10 GB for both: 1 GB left, not 5)
_CGROUP_FILES = {"v2": ("sys/fs/cgroup", (("memory.max", "memory.current"),), ("inactive_file",)),
                 "v1": ("sys/fs/cgroup/memory", (("memory.limit_in_bytes", "memory.usage_in_bytes"),
                                                 ("memory.memsw.limit_in_bytes", "memory.memsw.usage_in_bytes")),
                        ("total_inactive_file", "inactive_file"))}


def _cgroup_available(root: Path) -> int | None:
    """What the memory limits of this process's cgroup (/proc/self/cgroup under `root`) and of the cgroups above it
    leave: the least over them of limit - usage + inactive_file (page cache the kernel reclaims before an OOM kill),
    cgroup v2 (the "0::PATH" line: memory.max, "max" for none, memory.current) or v1 (the "memory" controller's line:
    memory.limit_in_bytes, a huge value for none, memory.usage_in_bytes; and memory + swap, memory.memsw.limit_in_bytes
    and memory.memsw.usage_in_bytes, where swap is accounted) under /sys/fs/cgroup; in a container the
    hierarchy's root is usually the container's own cgroup, read too. None where no limit is found; a cgroup whose
    files are missing, unreadable or unparsable gives no bound (no scan is refused for want of them)."""
    text = _read(root / "proc/self/cgroup")
    if text is None:
        return None
    bounds = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            version = "v2"
        elif "memory" in parts[1].split(","):
            version = "v1"
        else:
            continue
        mount = root / _CGROUP_FILES[version][0]
        own = Path(parts[2].strip().lstrip("/"))
        for folder in {mount / up for up in (own, *own.parents)}:  # the process's cgroup, those above, the root
            if (bound := _cgroup_bound(folder, version)) is not None:
                bounds.append(bound)
    return min(bounds) if bounds else None


def _cgroup_bound(folder: Path, version: str) -> int | None:
    """The least limit - usage + inactive page cache over the limits of the cgroup `folder` (v1: memory, and memory +
    swap), or None where none gives one (no limit, or its files missing or unparsable)."""
    _, limits, cache_fields = _CGROUP_FILES[version]
    stat = _read(folder / "memory.stat")
    if stat is None:
        return None
    fields = dict(line.split(None, 1) for line in stat.splitlines() if len(line.split()) == 2)
    cache = next((fields[name].strip() for name in cache_fields if name in fields), None)
    if cache is None or not cache.isdigit():
        return None
    bounds = []
    for limit_file, usage_file in limits:
        limit, usage = (_read(folder / name) for name in (limit_file, usage_file))
        if limit is None or usage is None or limit.strip() == "max":
            continue
        try:
            limit_n, usage_n = int(limit), int(usage)
        except ValueError:
            continue
        if version == "v1" and limit_n >= _CGROUP_V1_NO_LIMIT:
            continue
        bounds.append(max(0, limit_n - usage_n + int(cache)))
    return min(bounds) if bounds else None


class MemoryShort(Exception):
    """A decoder's need that the memory available (`available`: bytes, read then) cannot hold, even were every
    reservation held in the process given back (DecoderMemory.reserve)."""

    def __init__(self, available: int) -> None:
        super().__init__(f"{available} bytes available")
        self.available = available


class DecoderMemory:
    """The RAM reserved by the decoders running in this process (read(): from its memory check until its decode
    returns or raises), so that files decoded at once (--jobs, one thread each) do not each count the same free memory
    as theirs. Only the decoders' needs are counted, not what each file's pipeline holds around them.

    A need that fits in available_memory() less what the others hold goes in at once; one that would fit only were
    the others' reservations given back waits for a release (or poll_s seconds: other programs may free memory) and
    is checked afresh; one that would not fit even so is refused (MemoryShort). With nothing else held that is the
    plain check: no file is refused because of another in flight, and none waits unless another decodes. A waiter
    holds no reservation, and a holder's decode asks for no other, so no wait is on a waiter: a wait ends when the
    decodes in flight return. Where one is blocked for good (a hung share), those waiting for it re-read the memory
    every poll_s seconds, and a second Ctrl-C lets go of both alike (runner: Batch.stuck, the CLI's hard exit)."""

    def __init__(self, poll_s: float = 1.0) -> None:
        self.poll_s = poll_s
        self._changed = threading.Condition()
        self._held = 0  # bytes reserved now, by every holder together

    def held(self) -> int:
        """Bytes reserved now."""
        with self._changed:
            return self._held

    @contextmanager
    def reserve(self, need: int) -> Iterator[None]:
        """A context manager that reserves `need` bytes on entry, waiting as the class says, and gives them back when
        its block ends, however. MemoryShort (on entry) when `need` cannot fit. Where available_memory() says
        nothing, the need goes in unchecked (still counted: it may say something to the next)."""
        taken = 0  # bytes this block holds, to give back
        # Made inside the try, and counted in `taken` in the same line (no call between, where a signal's handler
        # could run): a KeyboardInterrupt (a Ctrl-C in the main thread) landing anywhere up to the block's end gives
        # back what was taken, never leaving it held for good.
        try:
            with self._changed:
                while True:
                    # read under the lock: a release in between would otherwise go unseen until the next poll
                    available = available_memory()
                    # What a decode in flight has allocated so far is already out of `available`, and its whole
                    # reservation is taken off again here: counted twice. That only makes a need wait for a release,
                    # never refuses it: the bound for refusing gives every reservation back (the most a release can
                    # free).
                    if available is None or need <= available - self._held:
                        break
                    if need > available + self._held:
                        raise MemoryShort(available)
                    self._changed.wait(self.poll_s)
                self._held, taken = self._held + need, need
            yield
        finally:
            if taken:
                with self._changed:
                    self._held -= taken
                    self._changed.notify_all()


DECODERS = DecoderMemory()  # the process's decoders (reader.read)


def _read(path: str | Path) -> str | None:
    """The text of `path`, or None where it is missing or cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _folders(tmp_dir: str | Path | None) -> list[str]:
    """`tmp_dir` (default: the temp folder), then the other existing system temp folders, each once."""
    named = str(tmp_dir) if tmp_dir is not None else tempfile.gettempdir()
    out, seen = [named], {os.path.realpath(named)}
    for folder in (tempfile.gettempdir(), *SYSTEM_TEMP):
        real = os.path.realpath(folder)
        if real not in seen and os.path.isdir(folder):
            out.append(folder)
            seen.add(real)
    return out


def _mapped(folder: str, shape: tuple[int, ...], dtype: np.dtype, nbytes: int) -> np.memmap:
    """A np.memmap of `nbytes` on an unlinked temp file in `folder`, its space reserved; _Unmappable when the
    folder's file system cannot map files (checked before any space is reserved there)."""
    with tempfile.TemporaryFile(dir=folder, prefix=".oldphoto-buffer-") as f:
        f.truncate(nbytes)  # sparse until reserved below
        try:
            buf = np.memmap(f, dtype=dtype, mode="w+", shape=shape)
        except OSError as e:
            if not unmappable(e):
                raise
            raise _Unmappable(e.strerror or e) from e
        try:
            if hasattr(os, "posix_fallocate"):  # POSIX, not macOS or Windows: there the file stays sparse
                os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise OSError(e.errno, f"cannot reserve {nbytes} bytes for a pixel buffer in {folder}: "
                                       f"{e.strerror}") from e
            # a file system without fallocate: the file stays sparse
        # the mapping keeps its own reference to the file, so closing (and so deleting) it here is safe
        return buf


def _note(note: str) -> None:
    notes = _NOTES.get()
    if notes is not None and note not in notes:
        notes.append(note)


@contextmanager
def file_buffers(path: str | Path) -> Iterator[list[str]]:
    """Around the work on one file in this thread: collects allocate's notes (each once) in the list yielded, and
    turns TempFolderError into that file's ImageError. Outside one, a buffer put in another folder goes unnoted."""
    notes: list[str] = []
    token = _NOTES.set(notes)
    try:
        yield notes
    except TempFolderError as e:
        raise ImageError(path, str(e)) from e
    finally:
        _NOTES.reset(token)


def band_rows(row_bytes: int) -> int:
    """Rows in each of bands()' slices where a row takes `row_bytes` of scratch: about _BAND_BYTES of them."""
    return max(1, _BAND_BYTES // max(1, row_bytes))


def bands(height: int, row_bytes: int) -> Iterator[slice]:
    """Slices of `height` rows, each about _BAND_BYTES of scratch where a row takes `row_bytes` (band_rows)."""
    step = band_rows(row_bytes)
    for y0 in range(0, height, step):
        yield slice(y0, min(height, y0 + step))


def unpremultiply(pixels: np.ndarray, alpha: np.ndarray) -> None:
    """Premultiplied (associated) colour (H, W, C) uint8|uint16 made straight in place: each sample divided by its
    pixel's alpha (H, W), same dtype, scaled to the dtype's full range; 0 where the alpha is 0 (a TIFF's associated
    alpha, a JPEG 2000 premultiplied opacity)."""
    top = float(np.iinfo(pixels.dtype).max)
    for rows in bands(pixels.shape[0], pixels.shape[1] * pixels.shape[2] * 4):  # float32 scratch
        a = alpha[rows].astype(np.float32)[..., None]
        straight = np.where(a > 0, pixels[rows] * (top / np.maximum(a, 1.0)), 0.0)
        pixels[rows] = np.rint(np.clip(straight, 0, top)).astype(pixels.dtype)
