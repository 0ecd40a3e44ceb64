"""Atomic output files: write to a hidden temp file in the target folder, fsync, then os.replace.

Either the complete new file appears under its name or nothing changes; the temp file is removed on any
error, KeyboardInterrupt included. Every byte goes through os.write, the one place a full disk shows up.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".oldphoto-tmp-"  # temp files are named ".NAME.oldphoto-tmp-<random>"
_TEMP_NAME = re.compile(r"\..+" + re.escape(TEMP_MARK) + r"[0-9a-f]{8}", re.DOTALL)


def temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}"


def leftover_temps(root: Path, lock_name: str) -> list[Path]:
    """Temp files under `root` (links not followed) that a write killed before its rename left behind (SIGKILL, a
    power cut: nothing ran to remove them). Removing them is only safe while no other writer uses `root`: a folder
    below it holding a file `lock_name` is another output folder, which runs of its own may be writing, and is left
    out."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.lexists(os.path.join(folder, d, lock_name))]
        found += [Path(folder) / name for name in files if _TEMP_NAME.fullmatch(name)]
    return sorted(found)


class FdStream(io.RawIOBase):
    """Unbuffered, seekable, readable binary stream over a file descriptor it does not own.

    It has no usable fileno() on purpose: Pillow then writes through write() instead of its C encoder
    writing to the descriptor directly, so every write is seen (and failures are raised) here.
    """

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        return done

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.read(self._fd, len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, io.SEEK_CUR)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[Path, int]:
    tmp = temp_name(path)
    return tmp, os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)


class TempFiles:
    """The temp files of the writes in progress in a run's output folder. close() removes them and refuses any later
    one, so that a run can let go of the folder without waiting for the threads writing there (a second Ctrl-C; a
    thread blocked for good on a hung network share, which will never clean up after itself) and leave no partial
    file behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held while a temp file is made, so that close() never misses one
        self._live: set[Path] = set()
        self._closed = False

    def create(self, path: Path) -> tuple[Path, int]:
        """A new temp file for `path`: (its name, a descriptor open for reading and writing). Raises
        KeyboardInterrupt once closed (as a stop request does: the file is abandoned), OSError."""
        with self._lock:
            if self._closed:
                raise KeyboardInterrupt("the run has let go of the output folder")
            tmp, fd = _create_temp(path)
            if self._closed:  # closed meanwhile by a close() that gave up waiting for this (a folder that hangs)
                os.close(fd)
                os.unlink(tmp)
                raise KeyboardInterrupt("the run has let go of the output folder")
            self._live.add(tmp)
            return tmp, fd

    def forget(self, tmp: Path) -> None:
        """`tmp` was renamed into place or removed."""
        with self._lock:
            self._live.discard(tmp)

    def close(self, timeout: float | None = None) -> list[tuple[Path, OSError]]:
        """Refuse every later temp file and remove those still here; waits up to `timeout` seconds (None: as long as
        it takes) for a temp file being made (one whose making outlasts that is removed by its own thread, should
        the process still be there when the folder answers). Returns the files that could not be removed, with why."""
        locked = self._lock.acquire(timeout=-1 if timeout is None else timeout)
        try:
            self._closed = True  # also without the lock: any later create() sees it
            left = []
            for tmp in sorted(self._live):  # sorted() copies: safe while a thread blocked in create() holds the lock
                try:
                    tmp.unlink(missing_ok=True)  # already renamed into place, or removed by its own thread
                except OSError as e:
                    left.append((tmp, e))
            self._live = {tmp for tmp, _ in left}
            return left
        finally:
            if locked:
                self._lock.release()


class Staging:
    """The outputs of one source, written as a set: each is complete and fsynced under its temp name, and none
    replaces its path until commit() (then all do), so a failure on the last leaves every earlier path as it
    was. discard() removes what is staged; a staging is used once. temps: where its temp files are made and
    tracked while they exist (see TempFiles); None: untracked."""

    def __init__(self, temps: TempFiles | None = None) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temp, path)
        self.temps = temps

    def _gone(self, tmp: Path) -> None:
        if self.temps is not None:
            self.temps.forget(tmp)

    def add(self, tmp: Path, path: Path) -> None:
        self._pending.append((tmp, path))

    def commit(self) -> None:
        """Rename every staged file into place (renames within a folder, which a full disk does not stop)."""
        for _, path in self._pending:  # what would stop a rename halfway through the set: checked first
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
        pending, self._pending = self._pending, []
        folders: set[Path] = set()
        try:
            while pending:
                tmp, path = pending[0]
                os.replace(tmp, path)
                self._gone(tmp)
                folders.add(path.parent)
                pending.pop(0)
        finally:
            self._pending = pending  # what a failed rename left behind: discard() removes it
        for folder in folders:
            _fsync_dir(folder)  # make the renames durable

    def discard(self) -> None:
        pending, self._pending = self._pending, []
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
            self._gone(tmp)


@contextmanager
def atomic_output(path: str | Path, staging: Staging | None = None) -> Iterator[FdStream]:
    """Yield a stream for the new content of `path`; on normal exit it replaces `path` atomically, or, with a
    staging, is kept complete under its temp name until staging.commit().

    Raises OSError (cannot create, write, fsync or rename); the caller names the file in its error.
    """
    path = Path(path)
    temps = staging.temps if staging is not None else None
    tmp, fd = temps.create(path) if temps is not None else _create_temp(path)
    done = False
    try:
        yield FdStream(fd)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if staging is not None:
            staging.add(tmp, path)
            done = True
            return
        os.replace(tmp, path)
        done = True
        _fsync_dir(path.parent)  # make the rename itself durable
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass  # removed by TempFiles.close(): the run has let go of the folder
            if temps is not None:
                temps.forget(tmp)
