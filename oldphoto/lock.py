"""One writer per output folder: a lock file created with O_CREAT|O_EXCL that names its owner.

The lock holds JSON {"pid", "host", "started"}. A lock left by a process that is gone (same host, pid not
alive, or the pid now belongs to a process started after the lock was written) is stale and taken over.
A lock from another host cannot be checked and is respected; the error says which host holds it.
The folder's identity (st_dev, st_ino) is kept when the lock is taken, so that a run can tell that the folder it
locked was deleted, moved away or replaced under the same name while it ran (check_folder); the folder is kept open
meanwhile, so that its inode number cannot go to a folder made in its place, and so that the run's writes there
(folder_fd) and the lock's removal reach that folder wherever it has gone, never another under its name.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import OldPhotoError

LOCK_NAME = ".oldphoto.lock"


class LockHeld(OldPhotoError):
    """Another live run owns the output folder."""


class FolderLost(OldPhotoError):
    """The output folder a run locked is no longer there under its name (deleted, moved, replaced) or cannot be
    checked; message "FOLDER: reason", one line."""

    def __init__(self, folder: Path, reason: str):
        self.folder = Path(folder)
        self.reason = reason
        super().__init__(f"{self.folder}: {reason}")


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started: float  # seconds since the epoch

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 probes without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def process_start_time(pid: int) -> float | None:
    """Start time (epoch seconds) of a live process from /proc, or None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    # fields[0] is the state (field 3 of the stat line); starttime is field 22, in clock ticks after boot.
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _read_lock(path: Path | str, dir_fd: int | None = None) -> tuple[LockOwner | None, float] | None:
    """(the lock's owner, its mtime), from one opening of the file (`path` relative to dir_fd when given); None when
    there is no lock file. The owner is None when the file is empty or not the JSON of one (a crash between create and
    write)."""
    try:
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags, dir_fd=dir_fd)) as f:
            mtime = os.fstat(f.fileno()).st_mtime
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text or "null")
    except json.JSONDecodeError:
        return None, mtime
    if not isinstance(data, dict):
        return None, mtime
    try:
        return LockOwner(int(data["pid"]), str(data["host"]), float(data["started"])), mtime
    except (KeyError, TypeError, ValueError):
        return None, mtime


def is_stale(owner: LockOwner | None, lock_mtime: float, host: str | None = None) -> bool:
    """A lock is stale when its owner is on this host and no longer running.

    An unreadable lock is stale once it is older than a minute (a fresh one may still be being written).
    """
    host = host or socket.gethostname()
    if owner is None:
        return time.time() - lock_mtime > 60
    if owner.host != host:
        return False
    if not pid_alive(owner.pid):
        return True
    started = process_start_time(owner.pid)
    # pid reuse: the process now holding the pid began after the lock was written (2 s clock slack).
    return started is not None and started > owner.started + 2


def held_by(out_dir: Path) -> str | None:
    """Who holds the lock of `out_dir` (e.g. "pid 12 on host, started ..."), when a live run does; None when there is
    no lock or a stale one that a run would take over. Reads only (for a dry run)."""
    found = _read_lock(Path(out_dir) / LOCK_NAME)
    if found is None or is_stale(*found):
        return None
    return _holder(found[0])


def _holder(owner: LockOwner | None) -> str:
    """Who holds a lock that is not stale, in words."""
    return owner.describe() if owner else "a run that is still starting"


class OutputLock:
    """Exclusive lock on an output folder; use as a context manager. Raises LockHeld when a live run has it."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_NAME
        self.owner = LockOwner(os.getpid(), socket.gethostname(), time.time())
        self.took_over: LockOwner | None = None  # the stale owner replaced, for the log
        self.folder_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder once the lock is in it
        # The folder, open while the lock is held: a deleted folder's inode number is free again at once (ext4 gives
        # it to the next folder made, as in `rm -rf out; mkdir out`), unless something still holds the folder.
        self._folder_fd = -1
        self._held = False

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        folder_fd = -1
        try:
            try:
                os.write(fd, json.dumps(self.owner.__dict__).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            # the folder now holding the lock (O_PATH, on Linux, needs no read permission, as the lock did not)
            folder_fd = os.open(self.path.parent, getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(folder_fd)
        except BaseException:  # e.g. a full disk: an empty lock would hold the folder for a minute
            if folder_fd >= 0:
                os.close(folder_fd)
            self.path.unlink(missing_ok=True)
            raise
        self._folder_fd = folder_fd
        self.folder_id = (st.st_dev, st.st_ino)
        return True

    def acquire(self) -> None:
        if self._try_create():
            self._held = True
            return
        # Takeovers are serialised by an flock on the folder itself, so two runs that both find the same
        # stale lock cannot both delete it and each believe they hold the new one.
        guard = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            # Re-read under the guard: another run may have replaced the stale lock meanwhile.
            found = _read_lock(self.path)
            if found is None:  # released between our create attempt and now
                if self._try_create():
                    self._held = True
                    return
                raise LockHeld(f"{self.path.parent}: another run took the lock at the same moment")
            owner, mtime = found
            if not is_stale(owner, mtime, self.owner.host):
                raise LockHeld(f"{self.path.parent}: output folder is in use by {_holder(owner)} "
                               f"(lock file {self.path}; delete it only if that run is gone)")
            self.path.unlink()
            if not self._try_create():
                raise LockHeld(f"{self.path.parent}: another run took the lock at the same moment")
            self._held = True
            self.took_over = owner
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
            os.close(guard)

    @property
    def folder_fd(self) -> int:
        """A descriptor open on the locked folder (O_PATH where there is one), for calls relative to it
        (io.TempFiles): it stays the folder the run locked, wherever that goes. Valid until release()."""
        if self._folder_fd < 0:
            raise RuntimeError(f"{self.path}: folder_fd asked for while the lock is not held")
        return self._folder_fd

    def check_folder(self) -> None:
        """FolderLost unless the folder is still the one this lock was taken in: by its identity, so a folder made
        again under the same name (by hand, by a copy, by another run) is told apart. One stat: cheap enough to
        check before every file's outputs go in."""
        if self.folder_id is None:
            raise RuntimeError(f"{self.path}: check_folder called before the lock was taken")
        folder = self.path.parent
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            raise FolderLost(folder, "the output folder was deleted or moved away during the run") from None
        except OSError as e:  # e.g. a folder above it made unreadable: its outputs could not be checked either
            raise FolderLost(folder, f"the output folder cannot be checked ({e.strerror or e})") from None
        if (st.st_dev, st.st_ino) != self.folder_id:
            raise FolderLost(folder, "the output folder was replaced during the run (deleted or moved, and another "
                                     "made in its place)")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            # Through the folder held, wherever it has gone (a folder moved away keeps no lock of a finished run, which
            # a run from another host would have to respect), never what is under the name now (a copy of our lock
            # in a folder made in its place included). Only our own lock (never one a later run created after
            # declaring ours stale).
            found = _read_lock(LOCK_NAME, self._folder_fd)
            if found is not None and found[0] == self.owner:
                try:
                    os.unlink(LOCK_NAME, dir_fd=self._folder_fd)
                except FileNotFoundError:
                    pass  # removed by hand while we ran: the goal (no lock) holds
                except OSError as e:
                    e.filename = str(self.path)
                    raise
        finally:
            os.close(self._folder_fd)  # only now may another folder get the folder's inode number
            self._folder_fd = -1

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
