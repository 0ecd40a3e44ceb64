"""A fixity audit of an output folder (`oldphoto verify OUT`): every output its state file lists, read back and
compared with the sha256 recorded as it went into place (state.OutputRecord); with `sources`, every master with the
sha256 its record keeps. For archivists who check their derivatives now and then, e.g. from cron.

Reads only: nothing is written under OUT (no lock taken, no state rewrite, no temp file) nor anywhere else, so it
works on a read-only folder or mount; the outputs, the masters and the state file are opened with O_NOATIME where
the system allows it, so that reading them does not even move their access times. Files are read in chunks
(outputs can be GBs).

An output is looked up from a descriptor held on OUT, one folder of its path at a time, links never followed: an
output replaced by a symbolic link (or a folder on its path replaced by one) is not the file that was recorded,
wherever the link points, and is reported as changed without being read. A master is read by the path its record
keeps, links followed (the path the run read it by).

The audit refuses an output folder a live run holds (its outputs are being replaced) and, since a run may start while
it reads, looks again at the end: a run that held the folder meanwhile (its lock, or the state file it rewrites when
it opens and closes) voids the audit (CannotVerify), whose results might mix bytes of two runs.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from . import __version__
from .errors import OldPhotoError
from .io.atomic import TempFiles, closing_temps, sha256_of, write_bytes
from .lock import held_by
from .state import STATE_NAME, OutputRecord, Record, RunState, StateError, now_iso

OK, CHANGED, MISSING, UNREADABLE, UNVERIFIABLE = "ok", "changed", "missing", "unreadable", "unverifiable"
STATUSES = (OK, CHANGED, MISSING, UNREADABLE, UNVERIFIABLE)
PROBLEMS = (CHANGED, MISSING, UNREADABLE)  # what fails an audit; an unverifiable file does not

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
# O_NONBLOCK: a FIFO put in a file's place since its lstat must not block the open (it is refused after the fstat)
_FILE = os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)  # Linux; refused (EPERM) on files of another owner unless root


class CannotVerify(OldPhotoError):
    """The audit cannot be made, or was voided by a run meanwhile; message "OUT: reason", one line."""


@dataclass(frozen=True)
class Check:
    """One file checked: an output of a record, or (with sources) its master."""

    rel: str  # the record's key: the source's path relative to its input folder
    path: str  # an output's path relative to OUT (POSIX separators); a master's absolute path
    status: str  # one of STATUSES
    recorded_sha256: str | None  # None: none recorded (UNVERIFIABLE, unless the size alone shows a change)
    sha256: str | None  # of the bytes there now; None when not read (no regular file there, or no digest to compare)
    recorded_size: int
    size: int | None  # now; None when no regular file is there
    recorded_mtime_ns: int | None  # an output's, recorded beside its sha256 (None when not kept); a master's
    mtime_ns: int | None  # now; None when no regular file is there
    reason: str = ""  # why, where the digests alone do not say: "now a symbolic link", "Permission denied", ...

    @property
    def problem(self) -> bool:
        return self.status in PROBLEMS


@dataclass(frozen=True)
class Audit:
    """What verify found in OUT: `outputs` in the order of the records (sorted by rel) and of each record's outputs;
    `masters`, one per record in the same order, only when asked for (sources)."""

    out_dir: Path
    records: int
    outputs: tuple[Check, ...]
    masters: tuple[Check, ...]
    sources: bool  # masters were checked
    started: str  # ISO 8601, local time with offset
    finished: str
    torn_state: bool = False  # the state file's last line was torn (a run killed mid-append): its record is not used

    @property
    def failed(self) -> bool:
        """Some output (or master, when checked) is changed, missing or unreadable."""
        return any(c.problem for c in self.outputs + self.masters)

    def counts(self, checks: tuple[Check, ...]) -> dict[str, int]:
        """{status: how many of `checks` have it}, every status listed."""
        return {s: sum(c.status == s for c in checks) for s in STATUSES}

    def to_dict(self) -> dict:
        # out_dir absolute: the report is kept apart from OUT, read from anywhere, and its outputs' paths are under it
        return {"oldphoto_version": __version__, "out_dir": os.path.abspath(self.out_dir), "started": self.started,
                "finished": self.finished, "sources": self.sources, "records": self.records,
                "failed": self.failed, "torn_state": self.torn_state,
                "totals": {"outputs": self.counts(self.outputs),
                           "masters": self.counts(self.masters) if self.sources else None},
                "outputs": [asdict(c) for c in self.outputs],
                "masters": [asdict(c) for c in self.masters] if self.sources else None}

    def write(self, path: Path) -> None:
        """Write the audit as JSON to `path` atomically (a temp file beside it, fsync, os.replace), its folder made
        when missing. OSError; PartialFiles when its temp file could not be removed either."""
        path = Path(path)
        data = (json.dumps(self.to_dict(), indent=2) + "\n").encode()
        with closing_temps(TempFiles()) as temps:
            temps.makedirs(path.parent)
            write_bytes(path, data, temps)


OnCheck = Callable[[Check, int, int], None]  # (the file just checked, how many are done, how many in all)


def audit(out: Path, sources: bool = False, on_check: OnCheck | None = None) -> Audit:
    """Check every output the state file of `out` lists (and each record's master with `sources`); see the module's
    docstring. on_check: called after each file, from this thread. CannotVerify when `out` cannot be opened, holds no
    state file or one that cannot be read, a live run holds it (nothing is read then), or a run held it meanwhile;
    KeyboardInterrupt passes through (nothing is left open)."""
    out = Path(out)
    started = now_iso()
    try:
        root = os.open(out, _FOLDER)  # a link named as OUT is followed: that is the folder meant
    except OSError as e:
        raise CannotVerify(f"{out}: cannot open the output folder ({e.strerror or e})") from None
    try:
        _refuse_if_held(out, "output folder is in use by {}: its outputs are being replaced; verify once it is done")
        before = _state_id(out, root)
        try:
            state = _NoAtimeState.load(out, read_only=True, folder_fd=root)
        except StateError as e:
            raise CannotVerify(str(e)) from None
        outputs, masters = _check_all(root, state, sources, on_check)
        _refuse_if_held(out, "a run started while the audit read the folder (held by {}): verify again once it is "
                             "done")
        if _state_id(out, root) != before:
            raise CannotVerify(f"{out}: a restore run rewrote the state file while the audit read the folder; "
                               f"verify again")
    finally:
        os.close(root)
    return Audit(out, len(state.records), outputs, masters, sources, started, now_iso(), state.dropped_torn_line)


def _check_all(root: int, state: RunState, sources: bool, on_check: OnCheck | None,
               ) -> tuple[tuple[Check, ...], tuple[Check, ...]]:
    """(The checks of every output `state` lists, of each master with `sources`), in the order of the records (by
    rel) and of each record's outputs, `on_check` told after each file."""
    rels = sorted(state.records)
    total = sum(len(state.records[rel].outputs) for rel in rels) + (len(rels) if sources else 0)
    outputs: list[Check] = []
    masters: list[Check] = []
    for rel in rels:
        record = state.records[rel]
        for o in record.outputs:
            outputs.append(_check_output(root, rel, o))
            _tell(on_check, outputs[-1], len(outputs) + len(masters), total)
        if sources:
            masters.append(_check_master(rel, record))
            _tell(on_check, masters[-1], len(outputs) + len(masters), total)
    return tuple(outputs), tuple(masters)


class _NoAtimeState(RunState):
    """A RunState whose file is read through the folder's descriptor with O_NOATIME where granted (see _open): as
    the outputs are, so that an audit leaves even the state file's access time as it was."""

    def _read(self, folder_fd: int | None) -> str | None:
        try:
            fd = _open(STATE_NAME, folder_fd, os.O_RDONLY | _CLOEXEC)
        except FileNotFoundError:
            return None
        with open(fd, encoding="utf-8") as f:
            return f.read()


def _tell(on_check: OnCheck | None, check: Check, done: int, total: int) -> None:
    if on_check is not None:
        on_check(check, done, total)


def _refuse_if_held(out: Path, why: str) -> None:
    """CannotVerify(`why` with the holder) while a live run holds `out`'s lock, or when the lock cannot be read."""
    try:
        holder = held_by(out)
    except OSError as e:  # a folder in its place, unreadable: a run could not start either
        raise CannotVerify(f"{out}: cannot read the output folder's lock ({e.strerror or e})") from None
    if holder:
        raise CannotVerify(f"{out}: {why.format(holder)}")


def _state_id(out: Path, root: int) -> tuple[int, int, int]:
    """(inode, size, mtime_ns) of the state file: a run appends to it, and rewrites it (a new inode) as it opens and
    closes it. CannotVerify when there is none or it cannot be looked at."""
    try:
        st = os.stat(STATE_NAME, dir_fd=root)
    except FileNotFoundError:
        raise CannotVerify(f"{out}: holds no oldphoto state ({STATE_NAME}): not an output folder of oldphoto "
                           f"restore, or its state file was deleted") from None
    except OSError as e:
        raise CannotVerify(f"{out / STATE_NAME}: cannot read the state file ({e.strerror or e})") from None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class _Recorded:
    """One file as its record describes it (an output, or a master), and the checks of it."""

    rel: str
    path: str
    sha256: str | None
    size: int
    mtime_ns: int | None

    def found(self, status: str, st: os.stat_result | None = None, digest: str | None = None, reason: str = "",
              ) -> Check:
        """The Check: `status`, with `st` (the stat of the regular file there, if any) and its `digest`, if read."""
        return Check(self.rel, self.path, status, self.sha256, digest, self.size, None if st is None else st.st_size,
                     self.mtime_ns, None if st is None else st.st_mtime_ns, reason)

    def compare(self, st: os.stat_result, read: Callable[[], tuple[str | None, os.stat_result]]) -> Check:
        """The Check of what is there (`st`: its stat); read (_sha256) only when it is a regular file and a digest
        was recorded to compare with: else a size of its own says enough."""
        if not stat.S_ISREG(st.st_mode):
            return self.found(CHANGED, reason=f"now {_kind(st.st_mode)}")
        if self.sha256 is None:
            return self.found(CHANGED, st) if st.st_size != self.size else self.found(UNVERIFIABLE, st)
        try:
            digest, st = read()
        except OSError as e:
            return self.found(UNREADABLE, reason=e.strerror or str(e))
        if digest is None:  # replaced by something else since its stat
            return self.found(CHANGED, reason=f"now {_kind(st.st_mode)}")
        return self.found(OK if digest == self.sha256 else CHANGED, st, digest)


def _check_output(root: int, rel: str, o: OutputRecord) -> Check:
    """One output, looked up from `root` (OUT) a folder at a time, no link followed; read only when it has a digest."""
    file = _Recorded(rel, o.path, o.sha256, o.size, o.mtime_ns)
    parts = PurePosixPath(o.path).parts
    if not parts or o.path.startswith("/") or ".." in parts:  # (PurePosixPath leaves out a '.')
        return file.found(UNREADABLE, reason="the state file names a path outside the output folder")
    if not _nameable(o.path):
        return file.found(UNREADABLE, reason=_UNNAMEABLE)
    folders: list[int] = []
    try:
        fd = root
        for i, part in enumerate(parts):
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return file.found(MISSING)
            except OSError as e:
                return file.found(UNREADABLE, reason=e.strerror or str(e))
            if i < len(parts) - 1:
                if not stat.S_ISDIR(st.st_mode):
                    return file.found(CHANGED, reason=f"{'/'.join(parts[:i + 1])} is now {_kind(st.st_mode)}")
                try:
                    fd = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:  # replaced since its lstat, or not searchable
                    return file.found(UNREADABLE, reason=f"{'/'.join(parts[:i + 1])}: {e.strerror or e}")
                folders.append(fd)
        return file.compare(st, partial(_sha256, parts[-1], fd, follow=False))
    finally:
        for fd in folders:
            os.close(fd)


def _check_master(rel: str, record: Record) -> Check:
    """A record's master, by the path it keeps (links followed)."""
    file = _Recorded(rel, record.source, record.sha256, record.size, record.mtime_ns)
    if not _nameable(record.source):
        return file.found(UNREADABLE, reason=_UNNAMEABLE)
    try:
        st = os.stat(record.source)
    except (FileNotFoundError, NotADirectoryError):
        return file.found(MISSING)
    except OSError as e:
        return file.found(UNREADABLE, reason=e.strerror or str(e))
    return file.compare(st, partial(_sha256, record.source, None, follow=True))


_UNNAMEABLE = "the state file names a path that no file can have"


def _nameable(path: str) -> bool:
    """Whether `path` can name a file: no NUL, and encodable as the system's names are (surrogateescape: a byte of a
    name that is not UTF-8 reads back as \\udc80-\\udcff, but no other lone surrogate can be one); a damaged or
    hand-edited state file may hold either, which os calls would raise ValueError for."""
    try:
        return b"\0" not in os.fsencode(path)
    except UnicodeEncodeError:
        return False


def _sha256(name: str, dir_fd: int | None, follow: bool) -> tuple[str | None, os.stat_result]:
    """(hex sha256 of the regular file `name`, read in chunks (io.atomic.sha256_of), or None when it is not one; the
    fstat of what was opened). follow: a link as the last component is followed (else ELOOP: see _open). OSError."""
    fd = _open(name, dir_fd, _FILE if follow else _FILE | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, st
        os.set_blocking(fd, True)
        return sha256_of(fd), st
    finally:
        os.close(fd)


def _open(name: str, dir_fd: int | None, flags: int) -> int:
    """`name` opened with `flags`, and O_NOATIME where the system grants it (the file's owner, or root)."""
    if _NOATIME:
        try:
            return os.open(name, flags | _NOATIME, dir_fd=dir_fd)
        except PermissionError:
            pass  # EPERM: not ours to open so; an EACCES is raised again below
    return os.open(name, flags, dir_fd=dir_fd)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "a device"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a regular file"
