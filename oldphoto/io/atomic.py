"""Atomic output files: write to a hidden temp file in the target folder, fsync, then os.replace.

Either the complete new file appears under its name or nothing changes; the temp file is removed on any
error, KeyboardInterrupt included. Every byte goes through os.write, the one place a full disk shows up.
A run's outputs (Staging, TempFiles) can be written through a descriptor held on their folder rather than by name,
so that they stay in that folder whatever becomes of its name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

TEMP_MARK = ".oldphoto-tmp-"  # temp files are named ".NAME.oldphoto-tmp-<random>"
_TEMP_NAME = re.compile(r"\..+" + re.escape(TEMP_MARK) + r"[0-9a-f]{8}", re.DOTALL)


def temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}"


class Leftover(NamedTuple):
    """What remove_leftover_temps() found: a temp file (folder False), removed when error is None, else why not; or a
    folder it could not search (folder True), with why."""
    path: Path
    error: OSError | None
    folder: bool = False


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NOT_A_FOLDER = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # gone, or now a file or a link, since it was listed


def remove_leftover_temps(root: Path, root_fd: int, lock_name: str) -> Iterator[Leftover]:
    """Remove the temp files under `root` that writes killed before their rename left behind (SIGKILL, a power cut:
    nothing ran to remove them), yielding each in path order as it goes, and each folder that could not be searched.
    Everything goes through `root_fd`, a descriptor open on `root` (O_PATH will do: the run's lock holds one), not by
    name: each folder is opened relative to the one above it (O_DIRECTORY | O_NOFOLLOW: links are never followed,
    a link is never a folder) and a file removed relative to its folder, so that the files removed are those of the
    folder held wherever it has gone, and of none made under its name. `root` only names them. A file already gone
    is not yielded, nor a folder gone (or replaced by a file or a link) since it was listed. Removing them is only
    safe while no other writer uses `root`: a folder below it holding a file `lock_name` is another output folder,
    which runs of its own may be writing, and is left out. Every descriptor opened is closed by the time the
    iterator is exhausted or closed (use contextlib.closing when it may be left early)."""
    yield from _remove_in(Path(os.path.abspath(root)), ".", root_fd, lock_name, top=True)


def _remove_in(folder: Path, name: str, parent_fd: int, lock_name: str, top: bool = False) -> Iterator[Leftover]:
    try:
        fd = os.open(name, _FOLDER_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        if top or e.errno not in _NOT_A_FOLDER:
            e.filename, e.filename2 = str(folder), None
            yield Leftover(folder, e, folder=True)
        return
    try:
        try:
            if not top and _lexists(lock_name, fd):
                return  # another output folder
            with os.scandir(fd) as listing:
                entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
        except OSError as e:
            e.filename, e.filename2 = str(folder), None
            yield Leftover(folder, e, folder=True)
            return
        for entry, is_folder in entries:  # by name at each level: the order of the paths
            if is_folder:
                yield from _remove_in(folder / entry, entry, fd, lock_name)
            elif _TEMP_NAME.fullmatch(entry):
                path = folder / entry
                try:
                    os.unlink(entry, dir_fd=fd)
                except FileNotFoundError:
                    continue  # removed by hand meanwhile: the goal holds
                except OSError as e:
                    e.filename, e.filename2 = str(path), None
                    yield Leftover(path, e)
                    continue
                yield Leftover(path, None)
    finally:
        os.close(fd)


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


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


def _fsync_dir(folder: Path | str, dir_fd: int | None = None) -> None:
    fd = os.open(folder, os.O_RDONLY, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)


def _open_new(name: Path | str, dir_fd: int | None = None) -> int:
    """A new file (never an existing one), open for reading and writing."""
    return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=dir_fd)


@contextmanager
def _named(path: Path, other: Path | None = None) -> Iterator[None]:
    """An OSError of a call made with names relative to a held folder names the paths in full, as one by path would."""
    try:
        yield
    except OSError as e:
        e.filename, e.filename2 = str(path), None if other is None else str(other)
        raise


class TempFiles:
    """The temp files of the writes in progress in a run's output folder. close() removes them and refuses any later
    one, so that a run can let go of the folder without waiting for the threads writing there (a second Ctrl-C; a
    thread blocked for good on a hung network share, which will never clean up after itself) and leave no partial
    file behind.

    root, root_fd: the output folder and a descriptor open on it (the run's lock holds one: lock.OutputLock.folder_fd).
    Everything below it is then done through that descriptor rather than by name (folders made, temp files made,
    renamed into place, removed; folders fsynced): it stays in the folder the run holds even after that folder was
    moved away (a moved folder keeps no temp file of the run, and a set of outputs renamed as it moved lands whole),
    and never goes into another folder made under its name (nor makes the folder again). Without them, by name. A
    duplicate of root_fd is kept, closed by close() once no call can still use it."""

    def __init__(self, root: Path | None = None, root_fd: int | None = None) -> None:
        if (root is None) != (root_fd is None):
            raise ValueError("TempFiles needs both the folder and a descriptor open on it, or neither")
        self._lock = threading.Lock()  # held by every call that makes, renames or removes a file (close() included)
        self._live: set[Path] = set()
        self._closed = False
        self._root = Path(os.path.abspath(root)) if root is not None else None
        self._fd = os.dup(root_fd) if root_fd is not None else -1

    def _at(self, path: Path) -> tuple[Path | str, int | None]:
        """(name, dir_fd) for a system call on `path`: relative to the held folder when there is one (ValueError for a
        path outside it)."""
        if self._root is None:
            return path, None
        if self._fd < 0:
            raise RuntimeError(f"{self._root}: the folder's descriptor was closed")
        return str(Path(os.path.abspath(path)).relative_to(self._root)), self._fd

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise KeyboardInterrupt("the run has let go of the output folder")

    def makedirs(self, folder: Path) -> None:
        """Make `folder` and the missing folders above it (an existing folder is fine, a file in the way is not:
        FileExistsError). KeyboardInterrupt once closed, OSError."""
        with self._lock:
            self._refuse_if_closed()
            name, dir_fd = self._at(folder)
            if dir_fd is None:
                Path(folder).mkdir(parents=True, exist_ok=True)
                return
            made = Path()
            with _named(folder):
                for part in Path(name).parts:
                    made /= part
                    try:
                        os.mkdir(made, dir_fd=dir_fd)
                    except FileExistsError:
                        if not stat.S_ISDIR(os.stat(made, dir_fd=dir_fd).st_mode):
                            raise

    def create(self, path: Path) -> tuple[Path, int]:
        """A new temp file for `path`: (its name, a descriptor open for reading and writing). Raises
        KeyboardInterrupt once closed (as a stop request does: the file is abandoned), OSError."""
        with self._lock:
            self._refuse_if_closed()
            tmp = temp_name(path)
            name, dir_fd = self._at(tmp)
            with _named(tmp):
                fd = _open_new(name, dir_fd)
            if self._closed:  # closed meanwhile by a close() that gave up waiting for this (a folder that hangs)
                os.close(fd)
                os.unlink(name, dir_fd=dir_fd)
                raise KeyboardInterrupt("the run has let go of the output folder")
            self._live.add(tmp)
            return tmp, fd

    def replace(self, tmp: Path, path: Path) -> None:
        """Rename `tmp` into place as `path` (in the same folder). KeyboardInterrupt once closed: the run has let go of
        the folder, nothing more goes in; OSError."""
        with self._lock:
            self._refuse_if_closed()
            src, dir_fd = self._at(tmp)
            dst, _ = self._at(path)
            with _named(tmp, path):
                os.replace(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            self._live.discard(tmp)

    def remove(self, tmp: Path) -> None:
        """Remove `tmp` (already gone is fine). Once closed, close() has removed it (or said why it could not)."""
        with self._lock:
            if self._closed:
                return
            self._unlink(tmp)
            self._live.discard(tmp)

    def remove_file(self, path: Path) -> None:
        """Remove `path`, a file that is not a temp file of this run (a stale output: already gone is fine).
        KeyboardInterrupt once closed, as for a write: close() does not remove it, so it is still there; OSError."""
        with self._lock:
            self._refuse_if_closed()
            self._unlink(path)

    def _unlink(self, path: Path) -> None:
        name, dir_fd = self._at(path)
        with _named(path):
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass  # the goal holds

    def is_dir(self, path: Path) -> bool:
        """Whether `path` is a folder (links followed); KeyboardInterrupt once closed."""
        with self._lock:
            self._refuse_if_closed()
            name, dir_fd = self._at(path)
            try:
                return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return False

    def fsync_dir(self, folder: Path) -> None:
        """Make the renames in `folder` durable; KeyboardInterrupt once closed, OSError."""
        with self._lock:
            self._refuse_if_closed()
            name, dir_fd = self._at(folder)
            with _named(folder):
                _fsync_dir(name, dir_fd)

    def close(self, timeout: float | None = None) -> list[tuple[Path, OSError]]:
        """Refuse every later temp file and remove those still here; waits up to `timeout` seconds (None: as long as
        it takes) for a call in progress (one that outlasts that is left to end by itself: a temp file made then is
        removed by its own thread, should the process still be there when the folder answers). Returns the files that
        could not be removed, with why. The held folder's descriptor is closed only when no call was in progress and
        nothing is left to remove (a later close() tries again)."""
        locked = self._lock.acquire(timeout=-1 if timeout is None else timeout)
        try:
            self._closed = True  # also without the lock: any later call sees it
            left = []
            for tmp in sorted(self._live):  # sorted() copies: safe while a thread blocked in a call holds the lock
                name, dir_fd = self._at(tmp)
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass  # already renamed into place, or removed by its own thread
                except OSError as e:
                    e.filename = str(tmp)
                    left.append((tmp, e))
            self._live = {tmp for tmp, _ in left}
            if locked and not left and self._fd >= 0:  # no call can be using it: each holds the lock
                os.close(self._fd)
                self._fd = -1
            return left
        finally:
            if locked:
                self._lock.release()


class Staging:
    """The outputs of one source, written as a set: each is complete and fsynced under its temp name, and none
    replaces its path until commit() (then all do), so a failure on the last leaves every earlier path as it
    was. discard() removes what is staged; a staging is used once. temps: where its temp files are made, renamed and
    removed, tracked while they exist (see TempFiles); None: a TempFiles of its own, by name.

    hashed: each file staged is read back once complete and fsynced, and its sha256 (hex) kept in `sha256` by its
    path (an output's fixity, for the state and the report): what goes into place is those very bytes, as the file
    holds them (one read each, from the page cache)."""

    def __init__(self, temps: TempFiles | None = None, hashed: bool = False) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temp, path)
        self.temps = temps if temps is not None else TempFiles()
        self.hashed = hashed
        self.sha256: dict[Path, str] = {}

    def add(self, tmp: Path, path: Path, sha256: str | None = None) -> None:
        self._pending.append((tmp, path))
        if sha256 is not None:
            self.sha256[path] = sha256

    def commit(self) -> None:
        """Rename every staged file into place (renames within a folder, which a full disk does not stop)."""
        temps = self.temps
        for _, path in self._pending:  # what would stop a rename halfway through the set: checked first
            if temps.is_dir(path):
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
        pending, self._pending = self._pending, []
        folders: dict[Path, None] = {}
        try:
            while pending:
                tmp, path = pending[0]
                temps.replace(tmp, path)
                folders[path.parent] = None
                pending.pop(0)
        finally:
            self._pending = pending  # what a failed rename left behind: discard() removes it
        for folder in folders:
            temps.fsync_dir(folder)  # make the renames durable

    def discard(self) -> None:
        pending, self._pending = self._pending, []
        for tmp, _ in pending:
            self.temps.remove(tmp)


@contextmanager
def atomic_output(path: str | Path, staging: Staging | None = None) -> Iterator[FdStream]:
    """Yield a stream for the new content of `path`; on normal exit it replaces `path` atomically, or, with a
    staging, is kept complete under its temp name until staging.commit() (and read back for its sha256 first when the
    staging is hashed).

    Raises OSError (cannot create, write, fsync or rename); the caller names the file in its error.
    """
    path = Path(path)
    temps = staging.temps if staging is not None else None
    if temps is not None:
        tmp, fd = temps.create(path)
    else:
        tmp = temp_name(path)
        fd = _open_new(tmp)
    done = False
    try:
        yield FdStream(fd)
        os.fsync(fd)
        # read back through the descriptor it was written by: the temp file itself, whatever its name meets meanwhile
        digest = sha256_of(fd) if staging is not None and staging.hashed else None
        os.close(fd)
        fd = -1
        if staging is not None:
            staging.add(tmp, path, digest)
            done = True
            return
        os.replace(tmp, path)
        done = True
        _fsync_dir(path.parent)  # make the rename itself durable
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:  # an error is on its way out: one removing the temp file must not hide it
            if temps is not None:
                try:
                    temps.remove(tmp)  # or already removed by its close(): the run has let go of the folder
                except OSError:
                    pass  # still listed: its close() tries again, and names it if it cannot
            else:
                tmp.unlink(missing_ok=True)


_HASH_CHUNK = 1 << 20


def sha256_of(fd: int) -> str:
    """Hex sha256 of the whole file open on `fd`, read from its first byte in 1 MiB chunks (pread: the descriptor's
    offset is not moved; a file of GBs is never held whole). OSError."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class PartialFiles(OSError):
    """A write failed (this error's errno, strerror and filename are those of `cause`, its error) and left temp files
    that could not be removed either: `left`, each with why (TempFiles.close), for the caller to name."""

    def __init__(self, cause: OSError, left: list[tuple[Path, OSError]]) -> None:
        super().__init__(*cause.args)
        self.filename, self.filename2 = cause.filename, cause.filename2
        self.left = left


@contextmanager
def closing_temps(temps: TempFiles) -> Iterator[TempFiles]:
    """`temps` for the writes of the body (one file of the run's own: its state, its report), closed on the way out.
    An OSError of the body that left a temp file close() cannot remove comes out as PartialFiles, naming it."""
    try:
        yield temps
    except BaseException as e:
        left = temps.close()
        if left and isinstance(e, OSError):
            raise PartialFiles(e, left) from e
        raise
    temps.close()  # nothing to remove after a write that went in: only to let go of its descriptor


def write_bytes(path: Path, data: bytes, temps: TempFiles | None = None) -> None:
    """Replace `path` by a file holding `data`, atomically; through `temps` when given (see TempFiles), else by name.
    Raises OSError, KeyboardInterrupt once temps is closed."""
    staging = Staging(temps)
    try:
        with atomic_output(path, staging) as f:
            f.write(data)
        staging.commit()
    finally:
        staging.discard()  # nothing left after a commit
