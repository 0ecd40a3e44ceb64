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


class Staging:
    """The outputs of one source, written as a set: each is complete and fsynced under its temp name, and none
    replaces its path until commit() (then all do), so a failure on the last leaves every earlier path as it
    was. discard() removes what is staged; a staging is used once."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temp, path)

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


@contextmanager
def atomic_output(path: str | Path, staging: Staging | None = None) -> Iterator[FdStream]:
    """Yield a stream for the new content of `path`; on normal exit it replaces `path` atomically, or, with a
    staging, is kept complete under its temp name until staging.commit().

    Raises OSError (cannot create, write, fsync or rename); the caller names the file in its error.
    """
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
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
                pass
