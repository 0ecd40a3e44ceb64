"""What earlier runs produced in an output folder, so a rerun (e.g. from cron) only does new work.

The state is a JSON-lines file at the output root: a header line, then one record per finished file keyed
by its relative path; a later line for the same path replaces an earlier one. Records are appended (and
fsynced) as files finish, so a crash loses at most the file being written; the file is rewritten compactly
(temp file + os.replace) when a run opens and closes it. A torn last line (crash mid-append) is dropped.

A file is skipped when its source is unchanged (size + mtime_ns; sha256 when the mtime alone moved, or when the
record names another source path: a same-named file from another folder must prove its content), its settings
fingerprint (output settings + model sha256s) is the same, its XMP sidecar (io.sidecar) is the one the outputs were
made with (the same name, and size + mtime, sha256 when the mtime alone moved; or none then and now: a record made
before sidecars were carried has none, so a source without one is not redone for it), its curated mask (--masks:
io.mask_file.MaskId, compared the same way; "mask added", "mask changed", "mask removed" otherwise) is the one the
outputs were made with, and every recorded output still exists. When all holds but the sidecar (the source's, or
its output missing beside the restoration), the decision is "sidecar": only that sidecar is rewritten or removed
(planning, pipeline.update_sidecar). An output missing is made again; one changed since oldphoto wrote it (another
size than recorded; or, looked at only when the file is to be redone or its sidecar rewritten, another mtime and
another sha256) is human work (a corrected mask, a retouched photo, captions a cataloguing tool wrote) and is never
replaced: a file otherwise up to date is skipped with it kept (planning notes it), one to be redone fails instead
("conflict"), and only --overwrite replaces it. A record
also remembers, in `former`, the outputs that earlier settings made from the same source and that still exist, so a
later run with those settings again recognises them as its own (they are never deleted: a curator may want them).

Each output is listed with the sha256 of its bytes as they went into place (fixity, for the report: OutputRecord),
which no skip reads: an output counts as there as made by its size alone, so a rerun stays a stat per file. The
mtime of that stat is recorded beside the sha256: an output found at another one keeps its skip, but its digest is
not given (the bytes may have been replaced since: an edit in place, a run killed before it could record them); the
record keeps it, so that a file about to be redone (or its sidecar rewritten) has such an output read, to tell an
edit from a touch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Callable, Iterable, Mapping, TypeVar

from .errors import ImageError, OldPhotoError, reason_of
from .io import Provenance, read_provenance, read_source_sha256
from .io.atomic import TempFiles, closing_temps, write_bytes
from .io.provenance import SourceStamp
from .io.mask_file import MaskId
from .io.sidecar import SIDECAR_NOTE, SidecarId, SidecarLeftOut, UnreadableSidecar, is_sidecar_name, read_sidecar

STATE_NAME = ".oldphoto-state.jsonl"
STATE_FORMAT = 1
# the errors of a stat that Path.is_file takes for "no file there" (nothing at the path, a broken or looping link)
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)
_Id = TypeVar("_Id", SidecarId, MaskId)


class StateError(OldPhotoError):
    """The state file exists but cannot be understood."""


def fingerprint(settings: dict, models: dict) -> str:
    """sha256 of the settings that change output pixels and the models (names + weight sha256s) used."""
    blob = json.dumps({"settings": settings, "models": models}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class SourceId:
    size: int
    mtime_ns: int
    sha256: str | None = None  # filled when the file has been read in full anyway
    # the stat the size and mtime come from, taken before the sha256 was read: the run puts outputs decoded from the
    # file in place only while it still stats so (or holds the same bytes: pipeline); not part of a record
    stamp: SourceStamp | None = field(default=None, compare=False)

    @classmethod
    def of(cls, path: Path, with_hash: bool = False) -> "SourceId":
        st = os.stat(path)  # before the read: the stamp then covers the bytes hashed
        return cls(st.st_size, st.st_mtime_ns, read_source_sha256(path) if with_hash else None,
                   SourceStamp.from_stat(st))


@dataclass(frozen=True)
class OutputRecord:
    path: str  # relative to the output folder, POSIX separators
    size: int
    # hex sha256 of its bytes as they went into place (fixity: never read again to decide a skip); None when not
    # known: recorded by an earlier version, or an image recognised from its XMP after a lost state file (recognise).
    # Kept inside the output's entry, absent when None: an older oldphoto reads only path and size there.
    sha256: str | None = None
    # its st_mtime_ns when recorded, only beside a sha256 (absent too when None: recorded before it was kept): a skip
    # that stats the output at another mtime no longer vouches for the digest (RunState.decide), without reading it
    mtime_ns: int | None = None

    def unvouched(self) -> "OutputRecord":
        """This output without its sha256 (and the mtime that vouched for it): its bytes may be others now."""
        return replace(self, sha256=None, mtime_ns=None)


@dataclass(frozen=True)
class Record:
    source: str  # absolute path of the source when it was processed
    size: int
    mtime_ns: int
    sha256: str | None
    fingerprint: str
    outputs: tuple[OutputRecord, ...]
    width: int = 0
    height: int = 0
    megapixels: float = 0.0
    mask_coverage: float | None = None  # percent
    finished: str = ""  # ISO 8601, local time with offset
    former: tuple[str, ...] = ()  # outputs of earlier settings, still on disk (paths as in OutputRecord.path)
    # the notes of the run that made the outputs (what they lack, how the scan was read), so a skip reports them too
    notes: tuple[str, ...] = ()
    sidecar: SidecarId | None = None  # the source's XMP sidecar the outputs were made with (also one left out,
    # an unreadable one included: not tried again until it changes)
    # the curated mask (--masks) the restoration was made with; None: the detector's (no mask file for it, or --masks
    # not in use), and in records made before the option existed
    mask: MaskId | None = None

    def to_json(self, rel: str) -> str:
        d = asdict(self)
        d["outputs"] = [{k: v for k, v in asdict(o).items() if k in ("path", "size") or v is not None}
                        for o in self.outputs]
        for key in ("notes", "sidecar", "mask"):
            if not d[key]:
                del d[key]  # most files have none: their lines stay as short as before
        if d.get("sidecar") and not d["sidecar"]["unreadable"]:
            del d["sidecar"]["ctime_ns"], d["sidecar"]["unreadable"]  # kept for an unreadable one only
        return json.dumps({"rel": rel, **d}, sort_keys=True)

    @classmethod
    def from_dict(cls, d) -> "Record":
        """A record as to_json wrote it (`rel` besides); TypeError or ValueError, naming the field, for one of
        another shape or type (a damaged file): never a value of a wrong type kept for later code to trip over."""
        d = dict(_object(d, "the record"))
        d.pop("rel", None)
        d["source"], d["fingerprint"] = _text(d["source"], "source"), _text(d["fingerprint"], "fingerprint")
        d["size"], d["mtime_ns"] = _count(d["size"], "size"), _integer(d["mtime_ns"], "mtime_ns")
        d["sha256"] = _hex_digest(d["sha256"])
        for key in ("width", "height"):
            d[key] = _count(d.get(key, 0), key)
        if "megapixels" in d:
            d["megapixels"] = _number(d["megapixels"], "megapixels")
        if d.get("mask_coverage") is not None:  # None: no mask
            d["mask_coverage"] = _number(d["mask_coverage"], "mask_coverage")
        d["finished"] = _text(d.get("finished", ""), "finished")
        d["outputs"] = tuple(_output(o) for o in _list(d["outputs"], "outputs"))
        # absent in state files written before they existed, and (notes) when none
        d["former"] = tuple(_text(p, "former") for p in _list(d.get("former", []), "former"))
        d["notes"] = tuple(_text(n, "notes") for n in _list(d.get("notes", []), "notes"))
        # absent when none, and before sidecars were carried (or --masks existed)
        d["sidecar"] = None if d.get("sidecar") is None else _sidecar_id(d["sidecar"])
        d["mask"] = None if d.get("mask") is None else _mask_id(d["mask"])
        return cls(**d)


def _output(o) -> OutputRecord:
    """An entry of a record's `outputs`; no sha256 (nor mtime_ns) in records of earlier versions."""
    o = _object(o, "an output")
    mtime = o.get("mtime_ns")
    return OutputRecord(_text(o["path"], "output path"), _count(o["size"], "output size"),
                        _hex_digest(o.get("sha256")), None if mtime is None else _integer(mtime, "output mtime_ns"))


def _sidecar_id(s) -> SidecarId:
    """A record's `sidecar`; its ctime_ns and unreadable are there for an unreadable one only (Record.to_json)."""
    s = _object(s, "sidecar")
    ctime = s.get("ctime_ns")
    unreadable = s.get("unreadable", False)
    if not isinstance(unreadable, bool):
        raise TypeError(f"sidecar unreadable is {unreadable!r}, not true or false")
    return SidecarId(_text(s["name"], "sidecar name"), _count(s["size"], "sidecar size"),
                     _integer(s["mtime_ns"], "sidecar mtime_ns"), _maybe_text(s.get("sha256"), "sidecar sha256"),
                     None if ctime is None else _integer(ctime, "sidecar ctime_ns"), unreadable)


def _mask_id(m) -> MaskId:
    """A record's `mask` (the curated mask the restoration was made with)."""
    m = _object(m, "mask")
    return MaskId(_text(m["name"], "mask name"), _count(m["size"], "mask size"),
                  _integer(m["mtime_ns"], "mask mtime_ns"), _hex_digest(m.get("sha256")))


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is {_short(value)}, not an object")
    return value


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{what} is {_short(value)}, not a list")
    return value


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is {_short(value)}, not a string")
    return value


def _maybe_text(value, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _integer(value, what: str) -> int:
    """A whole number a 64-bit signed integer holds, as the fields of a stat are (a float, 1.5 or 1e999, is not)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} is {_short(value)}, not a whole number")
    if not -2**63 <= value < 2**63:
        raise ValueError(f"{what} is {_short(value)}, out of range")
    return value


def _count(value, what: str) -> int:
    """A size: a whole number, 0 or more."""
    if _integer(value, what) < 0:
        raise ValueError(f"{what} is {value}, less than 0")
    return value


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{what} is {_short(value)}, not a finite number")
    return float(value)


def _short(value) -> str:
    """`value` as a message shows it: at most 40 characters of its repr."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _hex_digest(value) -> str | None:
    """A recorded sha256 (64 lower-case hex digits) or None; ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError(f"not a sha256: {value!r}")
    return value


@dataclass(frozen=True)
class EditedOutput:
    """A recorded output changed since oldphoto wrote it (RunState.decide): never replaced without --overwrite."""

    path: str  # as OutputRecord.path
    size: int  # bytes now
    recorded: int  # bytes as written


@dataclass(frozen=True)
class Decision:
    action: str  # "skip" | "run" | "conflict" | "sidecar" (only the XMP sidecar beside the restoration is rewritten)
    # e.g. "up to date", "new", "settings changed", "source changed", "output missing: a.png"; for a conflict, the
    # one line the file fails with
    reason: str
    # for a skip (or "sidecar"): the record to go on from, when it changed: the source's new mtime or path after a
    # hash check, the sidecar's or mask's new mtime, (for "sidecar") outputs read at a new mtime with their digest
    refreshed: Record | None = None
    source: SourceId | None = None  # the source as read for that check (with its sha256), so it is not read twice
    # the outputs changed since oldphoto wrote them: kept by a skip (their record as it was, their digests not
    # given), the reason of a conflict otherwise
    kept: tuple[EditedOutput, ...] = ()
    # for a skip: the outputs (OutputRecord.path) found at another mtime than recorded, at their size: not read, so
    # their recorded digests are not given, though their record keeps them (a redo reads them to tell an edit)
    unvouched: tuple[str, ...] = ()
    # for a conflict over outputs changed since: the decision ("run" or "sidecar", its reason) were they not, for
    # planning to go on with when their XMP shows oldphoto made them after all (a run killed before its record)
    then: Decision | None = None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class RunState:
    """Records of one output folder. Use `open` to load it for a run and `close` to compact it."""

    out_dir: Path
    records: dict[str, Record] = field(default_factory=dict)
    dropped_torn_line: bool = False  # the previous run died while appending
    read_only: bool = False  # record() keeps records in memory only, and close() writes nothing
    _journal: IO[bytes] | None = field(default=None, repr=False)  # unbuffered: see _append
    _owners: dict[str, str] | None = field(default=None, repr=False)  # output path -> rel, built on demand
    _folder_fd: int | None = field(default=None, repr=False)  # see open()

    @property
    def path(self) -> Path:
        return self.out_dir / STATE_NAME

    @classmethod
    def load(cls, out_dir: Path, read_only: bool = False, folder_fd: int | None = None) -> "RunState":
        """The records as the file holds them. read_only: `record` then only updates them in memory (a dry run).
        folder_fd: a descriptor open on out_dir, through which the file is read (see open)."""
        state = cls(Path(out_dir), read_only=read_only)
        try:
            text = state._read(folder_fd)
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise StateError(f"{state.path}: cannot read the state file ({reason})") from None
        if text is None:
            return state
        lines = text.split("\n")
        if lines and lines[-1] != "":
            state.dropped_torn_line = True  # no newline: the append never completed
        body = lines[:-1]
        for n, line in enumerate(body, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except (ValueError, RecursionError) as e:  # JSONDecodeError; an integer of over 4300 digits; deep nesting
                reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e).split(":")[0]
                raise StateError(f"{state.path}: line {n} is not valid JSON ({reason}); delete the file and "
                                 f"rerun with --overwrite to rebuild it") from None
            if n == 1:
                if not isinstance(d, dict) or d.get("oldphoto_state") != STATE_FORMAT:
                    found = d.get("oldphoto_state") if isinstance(d, dict) else d
                    raise StateError(f"{state.path}: unknown state format {_short(found)} "
                                     f"(expected {STATE_FORMAT})")
                continue
            try:
                state.records[_text(_object(d, "the record")["rel"], "rel")] = Record.from_dict(d)
            except (KeyError, TypeError, ValueError) as e:
                raise StateError(f"{state.path}: line {n} is not a valid record ({e})") from None
        return state

    def _read(self, folder_fd: int | None) -> str | None:
        """The file's text, None when there is none: through folder_fd when given, else by name."""
        if folder_fd is None:
            return self.path.read_text(encoding="utf-8") if self.path.exists() else None
        try:
            with open(STATE_NAME, encoding="utf-8",
                      opener=lambda name, flags: os.open(name, flags, dir_fd=folder_fd)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    @classmethod
    def open(cls, out_dir: Path, folder_fd: int | None = None) -> "RunState":
        """Load, rewrite compactly, and keep the file open for appending records during the run. folder_fd: a
        descriptor open on out_dir while the state is (the run's lock holds one), through which the file is read,
        rewritten and opened and the outputs a record lists are looked at: a record then describes the folder its
        state file is in, wherever that folder has gone since, never what is under the name now."""
        state = cls.load(out_dir, folder_fd=folder_fd)  # the records of the folder locked, not of what has its name
        state._folder_fd = folder_fd
        state.compact()
        if folder_fd is None:
            state._journal = open(state.path, "ab", buffering=0)
        else:
            state._journal = open(STATE_NAME, "ab", buffering=0,
                                  opener=lambda name, flags: os.open(name, flags, 0o666, dir_fd=folder_fd))
        return state

    def compact(self) -> None:
        """Rewrite the file with one line per record, atomically (through the folder's descriptor, if open() was
        given one). OSError; PartialFiles when its temp copy could not be removed either."""
        lines = [json.dumps({"oldphoto_state": STATE_FORMAT})]
        lines += [self.records[rel].to_json(rel) for rel in sorted(self.records)]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        temps = TempFiles() if self._folder_fd is None else TempFiles(self.out_dir, self._folder_fd)
        with closing_temps(temps):
            write_bytes(self.path, data, temps)

    def close(self, compact: bool = True) -> None:
        """End the run's appends and rewrite the file compactly; compact=False writes nothing more (the folder is
        no longer the run's: its records stay as appended, in the file the run opened)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            if compact and not self.read_only:
                self.compact()
        finally:
            self._folder_fd = None  # the caller's, valid only while the state is open

    def record(self, rel: str, record: Record) -> None:
        """Remember a finished file; durable once this returns (on OSError, e.g. a full disk, neither kept nor in the
        file). The outputs of the record it replaces that still exist are carried over into `former` (see
        `owner_of`)."""
        if self._journal is None and not self.read_only:
            raise RuntimeError("RunState.record called on a state that was not opened for a run")
        record = self._carry_former(rel, record)
        if not self.read_only:
            self._append(record.to_json(rel) + "\n")
        self.records[rel] = record
        self._owners = None

    def unvouch(self, rel: str) -> None:
        """The record of `rel` (if any) without its outputs' sha256, in memory (the file gets it so when compacted):
        its outputs were replaced but their new record could not be written, so the digests it holds may be of bytes
        no longer there. A rerun that skips the file then gives null for them rather than those (see the runner)."""
        rec = self.records.get(rel)
        if rec is not None and any(o.sha256 is not None for o in rec.outputs):
            self.records[rel] = replace(rec, outputs=tuple(o.unvouched() for o in rec.outputs))

    def _append(self, line: str) -> None:
        """Append `line` and fsync, or leave the file as it was: what a failed write (a full disk) put there is cut
        off again, so the next record never follows a partial line. Raises OSError naming the state file."""
        fd = self._journal.fileno()
        end = os.lseek(fd, 0, os.SEEK_END)
        data = memoryview(line.encode("utf-8"))
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, end)
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        except BaseException:  # e.g. Ctrl-C between two writes
            os.ftruncate(fd, end)
            raise

    def _carry_former(self, rel: str, record: Record) -> Record:
        """`record` with `former` holding the earlier outputs of `rel` (outputs and former of the record it
        replaces) that are still on disk and are not outputs of `record` itself."""
        old = self.records.get(rel)
        if old is None:
            return record
        current = {o.path for o in record.outputs}
        earlier = [o.path for o in old.outputs] + list(old.former) + list(record.former)
        kept = [p for p in dict.fromkeys(earlier) if p not in current and self._is_file(p)]
        return replace(record, former=tuple(kept))

    def owner_of(self, output: Path) -> str | None:
        """Relative source path whose record lists this output, if any: as a current output, else as one that
        earlier settings made from the same source (`former`)."""
        if self._owners is None:
            owners = {p: rel for rel, rec in self.records.items() for p in rec.former}
            owners.update({o.path: rel for rel, rec in self.records.items() for o in rec.outputs})
            self._owners = owners
        return self._owners.get(self._rel_out(output))

    def _rel_out(self, output: Path) -> str:
        return Path(os.path.relpath(os.path.abspath(output), os.path.abspath(self.out_dir))).as_posix()

    def _stat(self, rel: str) -> os.stat_result:
        """The output at `rel` (relative to the folder: see open's folder_fd)."""
        if self._folder_fd is None:
            return os.stat(self.out_dir / rel)
        try:
            return os.stat(rel, dir_fd=self._folder_fd)
        except OSError as e:
            e.filename = str(self.out_dir / rel)
            raise

    def _is_file(self, rel: str) -> bool:
        """As Path.is_file, through _stat."""
        try:
            return stat.S_ISREG(self._stat(rel).st_mode)
        except OSError as e:
            if e.errno in _NOT_THERE:
                return False
            raise

    def outputs_record(self, outputs: Iterable[Path], sha256: Mapping[Path, str | None] | None = None,
                       ) -> tuple[OutputRecord, ...]:
        """The outputs as a record lists them: path relative to the folder, size, and the sha256 `sha256` gives for
        the path (None when it gives none) with the mtime (ns) of the same stat beside it; OSError (e.g. one is not
        there)."""
        digests = sha256 or {}
        records = []
        for p in outputs:
            rel = self._rel_out(p)
            st, digest = self._stat(rel), digests.get(p)
            records.append(OutputRecord(rel, st.st_size, digest, None if digest is None else st.st_mtime_ns))
        return tuple(records)

    def recognise(self, src: Path, outputs: list[Path], fp: str, size: tuple[int, int] = (0, 0),
                  rel: str | None = None, source: SourceId | None = None, also: tuple[str, ...] = (),
                  made: dict[Path, Provenance] | None = None, sidecar: SidecarId | None = None,
                  mask: MaskId | None = None) -> Record | None:
        """A record for outputs of `src` (known here as `rel`) this state has no record of (the state file was
        deleted, or the outputs were copied without it): all of them exist, belong to no other source here, and
        say in their XMP that oldphoto made them, as the last change, from a file with `src`'s sha256 under the
        settings and models of fingerprint `fp`; None when any of that does not hold. size: the source's
        (width, height), for the report. source: `src` as the caller read it (size, mtime, and its sha256 when read),
        else read here as needed. also: other fingerprints of the same outputs (see decide); the record gets `fp`.
        made: made_from's answer for some of `outputs`, whose XMP is not read again. sidecar: the source's XMP
        sidecar now, with its sha256 (None: it has none), for the record: a sidecar among `outputs` (an .xmp name)
        must say it carries that one, and describe the first output (the same xmpMM:InstanceID). The images' own
        oldphoto:SidecarSHA256 is not looked at: it says which sidecar went with them when they were made, and a
        sidecar rewritten alone since (pipeline.update_sidecar) leaves it behind; whether one should be beside them is
        the caller's to judge (planning). The record's notes are those the outputs' XMP keeps (oldphoto:Notes; none in
        outputs made before they were kept): see _kept_notes. Its outputs' sha256: a sidecar's (read whole for its
        XMP anyway, it is read once more), None for the images (their XMP is found without reading their pixels).
        mask: the source's curated mask now, with its sha256 (None: none, or --masks not in use): every output must
        say it was made with that one (oldphoto:MaskSHA256; none: the detector's), and the record keeps it."""
        found, sha = self._provenances(src, outputs, (fp, *also), rel, None if source is None else source.sha256,
                                       made or {}, None if sidecar is None else sidecar.sha256,
                                       None if mask is None else mask.sha256)
        if not outputs or len(found) != len(outputs):
            return None
        if any(is_sidecar_name(p.name) and found[p].instance_id != found[outputs[0]].instance_id for p in outputs):
            return None  # a sidecar of another restoration
        now = source if source is not None else SourceId.of(src)
        width, height = size
        # the outputs of one source are written together with one coverage (none in those made before it was kept)
        coverage = next((prov.mask_coverage for prov in found.values() if prov.mask_coverage is not None), None)
        # a sidecar's digest costs one more read of a file read whole for its provenance just now; an image's would
        # read all its pixels (only its XMP was read): left unknown
        digests = {p: read_source_sha256(p) for p in outputs if is_sidecar_name(p.name)}
        # an image as its record here has it (same size and mtime: a file whose other outputs a killed run replaced)
        # keeps the digest recorded, as a skip would give it
        recorded = {o.path: o for o in self.records[rel].outputs} if rel in self.records else {}
        for p in outputs:
            o, st = recorded.get(self._rel_out(p)), _file_stat(p)
            if (p not in digests and o is not None and o.sha256 is not None and st is not None
                    and (st.st_size, st.st_mtime_ns) == (o.size, o.mtime_ns)):
                digests[p] = o.sha256
        return Record(source=os.path.abspath(src), size=now.size, mtime_ns=now.mtime_ns, sha256=sha, fingerprint=fp,
                      outputs=self.outputs_record(outputs, digests), width=width, height=height,
                      megapixels=width * height / 1e6, mask_coverage=coverage, finished=now_iso(), sidecar=sidecar,
                      notes=_kept_notes(found, outputs, sidecar), mask=mask)

    def made_from(self, src: Path, outputs: list[Path], rel: str | None = None, sha256: str | None = None,
                  read: dict[Path, Provenance] | None = None) -> tuple[dict[Path, Provenance], str | None]:
        """({output: its provenance} for those of `outputs` that exist, belong to no other source than `rel` here, and
        say in their XMP that oldphoto made them, as the last change, from a file with `src`'s sha256, under any
        settings: derivatives of `src` itself, which a run may replace as it would with their record; `src`'s sha256
        when it was given or had to be read, else None). sha256: `src`'s, when the caller has read it. read:
        provenances the caller has read from some of `outputs`, not read again."""
        return self._provenances(src, outputs, None, rel, sha256, read)

    def _provenances(self, src: Path, outputs: list[Path], fps: tuple[str, ...] | None, rel: str | None,
                     sha256: str | None, read: dict[Path, Provenance] | None = None, sidecar: str | None = None,
                     mask: str | None = None) -> tuple[dict[Path, Provenance], str | None]:
        """made_from, kept to the outputs made under one of the fingerprints `fps` (None: any) and, with `fps`, the
        sidecars among them (.xmp names) to those carrying the one whose sha256 is `sidecar` (None: none), and all of
        them to those made with the curated mask whose sha256 is `mask` (None: the detector's). read: provenances
        already read from some of `outputs`, taken as they are instead of reading their XMP again."""
        made: dict[Path, Provenance] = {}
        sha = sha256
        for p in outputs:
            if not p.is_file() or self.owner_of(p) not in (None, rel):
                continue
            prov = read[p] if read and p in read else read_provenance(p)
            if prov is None or set(prov.parameters) != {"settings", "models"}:
                continue
            if fps is not None and ((is_sidecar_name(p.name) and prov.sidecar_sha256 != sidecar)
                                    or prov.mask_sha256 != mask
                                    or fingerprint(prov.parameters["settings"], prov.parameters["models"]) not in fps):
                continue
            sha = sha or read_source_sha256(src)
            if prov.source_sha256 == sha:
                made[p] = prov
        return made, sha

    def decide(self, rel: str, src: Path, fp: str, also: tuple[str, ...] = (), sidecar: Path | None = None,
               mask: tuple[Path, str] | None = None, masks: bool = False,
               touches: frozenset[str] | None = None) -> Decision:
        """Whether `src` (known here as `rel`) needs processing with the settings fingerprint `fp` (or one of `also`,
        the same outputs as recorded before: pipeline.former_settings), its XMP sidecar `sidecar` (None: none
        carried) and its curated mask `mask` (its path, its name as recorded: io.mask_file.MaskId; None: none, or
        --masks not in use: `masks` says which). Outputs changed since oldphoto wrote them are never replaced (see the
        module's docstring): a skip names them (`kept`), and a file to be redone or to have its sidecar rewritten is a
        "conflict" instead, its reason the one line it fails with. touches: the outputs (as OutputRecord.path) a redo
        would write or remove (None: all those recorded); one of another name (a --format changed) stays where it is,
        so its edit does not stop a redo. ImageError: an output to be read for that cannot be."""
        rec = self.records.get(rel)
        if rec is None:
            return Decision("run", "new")
        now = SourceId.of(src)
        same_path = os.path.abspath(src) == rec.source
        refreshed = None
        redo: str | None = None  # why the outputs are to be made again, before they are looked at
        if (now.size, now.mtime_ns) != (rec.size, rec.mtime_ns) or not same_path:
            # Size equal but mtime moved (a copy, a touch), or another file under the same relative path (which may
            # well have the same size and mtime, e.g. a copy made with `cp -p`): the content decides, read once.
            if now.size == rec.size and rec.sha256 is not None:
                now = replace(now, sha256=read_source_sha256(src))
            if now.sha256 is None or now.sha256 != rec.sha256:
                if not same_path:
                    return Decision("conflict", f"the existing outputs were made from another file, {rec.source}; "
                                                f"use --overwrite to replace them")
                redo = "source changed"
            else:
                refreshed = replace(rec, source=os.path.abspath(src), mtime_ns=now.mtime_ns)
        if redo is None and rec.fingerprint != fp and rec.fingerprint not in also:
            redo = "settings changed"
        if redo is None:
            # before the outputs: a sidecar missing beside them must not make it a sidecar-only job
            redo, touched = _mask_change(rec.mask, mask, masks)
            if touched is not None:
                refreshed = replace(refreshed or rec, mask=touched)
        action, redo, edited, moved = self._outputs_now(rec, redo)
        if action is None:
            why, touched = _sidecar_change(rec.sidecar, sidecar)
            if why:
                # the scan, settings and models are those of the outputs, which are there as made: only the sidecar
                # beside the restoration is to be written or removed (planning checks the restoration can be described)
                action, redo = "sidecar", why
            elif touched is not None:
                refreshed = replace(refreshed or rec, sidecar=touched)
        if action is None:  # up to date: an edited output stays as it is, its record as oldphoto wrote it (noted)
            return Decision("skip", "up to date", refreshed, kept=tuple(edited),
                            unvouched=tuple(o.path for o, _ in moved))
        if action == "run" and touches is not None:  # those left where they are (the record's `former` then)
            edited = [e for e in edited if e.path in touches]
            moved = [(o, st) for o, st in moved if o.path in touches]
        return self._replacing(rec, src, now, action, redo, refreshed, edited, moved)

    def _outputs_now(self, rec: Record, redo: str | None,
                     ) -> tuple[str | None, str | None, list[EditedOutput], list[tuple[OutputRecord, os.stat_result]]]:
        """(the action, "run" or "sidecar", and its reason, None: the outputs are there as recorded, `redo` None; the
        outputs changed since oldphoto wrote them (another size); those at their size but another mtime, with a digest
        to tell an edit by, and their stat) for the record `rec` of a file to be redone for `redo` (None: not so far).
        One stat per output, nothing read."""
        # the restoration and its mask first: the sidecar alone is rewritten only beside them as they were made
        images = [o for o in rec.outputs if not is_sidecar_name(o.path)]
        edited: list[EditedOutput] = []  # outputs another hand changed since they were written: kept
        moved: list[tuple[OutputRecord, os.stat_result]] = []  # same size, another mtime, a digest to tell by
        action = None if redo is None else "run"
        for o in images + [o for o in rec.outputs if is_sidecar_name(o.path)]:
            st = _file_stat(self.out_dir / o.path)
            if st is None:  # nothing to lose: made again (the sidecar beside the restoration alone, if only it)
                if action is None:  # the images come first: one missing redoes the file, whatever follows
                    action, redo = "sidecar" if is_sidecar_name(o.path) else "run", f"output missing: {o.path}"
            elif st.st_size != o.size:
                edited.append(EditedOutput(o.path, st.st_size, o.size))
            elif o.sha256 is not None and o.mtime_ns not in (None, st.st_mtime_ns):
                # Same size, another mtime: its recorded sha256 may be of bytes no longer there (edited in place, or a
                # run killed before recording their replacement). A skip reads nothing: the digest is not given, but
                # stays recorded, as written, for a redo to tell an edit from a touch by
                moved.append((o, st))
        return action, redo, edited, moved

    def _replacing(self, rec: Record, src: Path, now: SourceId, action: str, redo: str, refreshed: Record | None,
                   edited: list[EditedOutput], moved: list[tuple[OutputRecord, os.stat_result]]) -> Decision:
        """The decision for the file `src` (its record `rec`, `refreshed` so far) whose outputs are to be replaced
        (`action` "run") or described anew by the sidecar beside them ("sidecar") for the reason `redo`, those
        `edited` changed since oldphoto wrote them and those `moved` at another mtime (_outputs_now, kept to those
        it touches): a "conflict" when any of them is an edit. ImageError: one of `moved` cannot be read."""
        if action == "run" and not edited and not moved:
            return Decision("run", redo, source=now)
        # About to be replaced (or described anew): an output at another mtime is read, only now, to tell a touch
        # (redone as ever) from an edit at the same size (kept: the file fails)
        edited = list(edited)
        vouched: dict[str, OutputRecord] = {}  # path -> the output read at a new mtime, its digest still true
        for o, st in moved:
            if self._sha256_of(src, o) != o.sha256:
                edited.append(EditedOutput(o.path, st.st_size, o.size))
            else:  # the very bytes recorded: the digest holds at the mtime it has now
                vouched[o.path] = replace(o, mtime_ns=st.st_mtime_ns)
        if edited:
            return Decision("conflict", self.edited_reason(edited, action, redo), source=now, kept=tuple(edited),
                            then=Decision(action, redo, source=now))
        if action == "run":
            return Decision("run", redo, source=now)
        return Decision("sidecar", redo, _vouched_for(refreshed, rec, vouched), now)

    def _sha256_of(self, src: Path, output: OutputRecord) -> str:
        """The sha256 of the recorded output `output` now; ImageError naming it, for the source `src`, when it cannot
        be read."""
        path = self.out_dir / output.path
        try:
            return read_source_sha256(path)
        except (OSError, ImageError) as e:
            raise ImageError(src, f"{path}: cannot be read to tell whether it was changed since oldphoto wrote it "
                                  f"({reason_of(e)})") from None

    def edited_reason(self, edited: list[EditedOutput], action: str, why: str) -> str:
        """The one line a file fails with whose outputs `edited` would be replaced, or described anew by the sidecar
        beside them (`action` "sidecar"), for the reason `why`."""
        names = [str(self.out_dir / e.path) for e in edited]
        shown = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        it, was = ("it", "was") if len(names) == 1 else ("them", "were")
        if action == "run" or any(is_sidecar_name(e.path) for e in edited):
            fate = "would be replaced"
        else:  # images that stay as they are, but that a sidecar written now would describe as oldphoto's own
            fate = f"would be described anew by the sidecar beside {it}"
        return f"{shown} {was} changed since oldphoto wrote {it} and {fate} ({why}): move {it} away, or use --overwrite"


def _file_stat(path: Path) -> os.stat_result | None:
    """`path`'s stat (links followed) when Path.is_file would say it is a regular file, else None: one stat where
    is_file and then stat take two (decide stats every recorded output of every source on each rerun)."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno in _NOT_THERE:
            return None
        raise
    except ValueError:  # a name no file can have (a NUL in it): is_file says False too
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _vouched_for(refreshed: Record | None, rec: Record, vouched: dict[str, OutputRecord]) -> Record | None:
    """`refreshed` (None: not refreshed so far) with the outputs `vouched` gives for their paths (read at a new mtime:
    the same bytes), when there are some (else `refreshed` as it was): the record a sidecar-only job goes on from."""
    outputs = tuple(vouched.get(o.path, o) for o in rec.outputs)
    if outputs == rec.outputs:
        return refreshed
    return replace(refreshed or rec, outputs=outputs)


def _sidecar_change(recorded: SidecarId | None, sidecar: Path | None) -> tuple[str | None, SidecarId | None]:
    """(why a source is redone for its XMP sidecar, or None; the sidecar to record instead of `recorded` when only its
    mtime moved, or None). recorded: as its record has it; sidecar: the one it has now. One recorded as unreadable is
    tried again only once its identity (with its ctime: a chmod) moved; one to be tried now that cannot be read says
    so, as the run will."""
    if sidecar is None:
        return (None if recorded is None else f"sidecar removed: {recorded.name}"), None
    try:
        if recorded is not None and recorded.unreadable:
            if recorded.same_unreadable(sidecar):
                return None, None  # still as it was when its read failed: nothing would come of trying again
            if sidecar.name != recorded.name:
                return _unreadable(sidecar) or f"sidecar changed: {sidecar.name} (was {recorded.name})", None
            try:
                read_sidecar(sidecar)
            except SidecarLeftOut as e:  # still unreadable, or now too large to be a sidecar (not read): as the run
                return (f"sidecar unreadable: {sidecar.name} ({e.reason})" if isinstance(e, UnreadableSidecar)
                        else f"sidecar changed: {sidecar.name}"), None
            return f"sidecar readable again: {sidecar.name}", None
        now = SidecarId.of(sidecar)
        if recorded is None:
            return _unreadable(sidecar) or f"sidecar added: {now.name}", None
        if now.name != recorded.name:
            return _unreadable(sidecar) or f"sidecar changed: {now.name} (was {recorded.name})", None
        same, touched = _same_bytes(recorded, now, lambda: SidecarId.of(sidecar, with_hash=True))
        if same:
            return None, touched
    except (OSError, ImageError) as e:  # gone or unreadable since the walk: the run says why (not carried)
        return f"sidecar unreadable: {sidecar.name} ({reason_of(e)})", None
    return _unreadable(sidecar) or f"sidecar changed: {now.name}", None


def _same_bytes(recorded, now, hashed: Callable[[], _Id]) -> tuple[bool, _Id | None]:
    """(whether the file `now` (a SidecarId or MaskId without its sha256) holds the bytes `recorded` was made from, the
    id to record instead of `recorded` when only its mtime moved, else None): the same size and mtime, or the same size
    and sha256 (`hashed()`: `now` with it, read only then) where `recorded` has one. OSError, ImageError from hashed."""
    if (now.size, now.mtime_ns) == (recorded.size, recorded.mtime_ns):
        return True, None
    if now.size == recorded.size and recorded.sha256 is not None:
        now = hashed()
        if now.sha256 == recorded.sha256:
            return True, now
    return False, None


def _mask_change(recorded: MaskId | None, mask: tuple[Path, str] | None, masks: bool = True,
                 ) -> tuple[str | None, MaskId | None]:
    """(why a source is redone for its curated mask, or None; the mask to record instead of `recorded` when only its
    mtime moved, or None), as _sidecar_change: the same name, and the same bytes (_same_bytes).
    recorded: as its record has it; mask: (its path, its name) now; masks: whether --masks is in use."""
    if mask is None:
        if recorded is None:
            return None, None
        return (f"mask removed: {recorded.name}" if masks
                else f"curated mask not in use (no --masks): {recorded.name}"), None
    path, name = mask
    if recorded is None:
        return f"mask added: {name}", None
    if name != recorded.name:
        return f"mask changed: {name} (was {recorded.name})", None
    try:
        same, touched = _same_bytes(recorded, MaskId.of(path, name), lambda: MaskId.of(path, name, with_hash=True))
        if same:
            return None, touched
    except (OSError, ImageError) as e:  # gone or unreadable since it was found: the run says why the scan fails
        return f"mask unreadable: {name} ({reason_of(e)})", None
    return f"mask changed: {name}", None


def _unreadable(sidecar: Path) -> str | None:
    """The reason to give for a sidecar about to be tried that cannot be read ("sidecar unreadable: NAME (why)"), so a
    dry run says what the run will find; None when it can be read (or is too large to be one: not read). It is read
    whole (a sidecar is small), only for a file whose sidecar is to be written anyway."""
    try:
        read_sidecar(sidecar)
    except UnreadableSidecar as e:
        return f"sidecar unreadable: {sidecar.name} ({e.reason})"
    except ImageError:  # too large to be a sidecar, or gone: the usual reason says enough
        return None
    return None


def _kept_notes(found: dict[Path, Provenance], outputs: list[Path], sidecar: SidecarId | None) -> tuple[str, ...]:
    """A file's notes from the oldphoto:Notes of its outputs (`found`: their provenance), as its record would keep
    them: the first output's (the restoration's, or the --only-mask mask's: the file's notes), then what each later
    image output says of its own file alone (a --save-mask mask, an --only-mask overlay; older ones repeat the
    first's, those on the sidecar then among them: never taken from them). The notes about the source's sidecar
    (SIDECAR_NOTE) are those of the sidecar beside them, which carries the restoration's notes with those on the
    sidecar it was made from: one rewritten alone since (pipeline.update_sidecar) says the current sidecar's, where
    the restoration, left as it was, keeps those of the one it was made with. Without a sidecar now (`sidecar` None),
    none is said."""
    images = [p for p in outputs if not is_sidecar_name(p.name)]
    beside = [found[p].notes for p in outputs if is_sidecar_name(p.name)]
    notes = list(found[images[0]].notes) if images else []
    if beside or sidecar is None:
        notes = [n for n in notes if not n.startswith(SIDECAR_NOTE)]
    if beside:
        if [n for n in beside[0] if not n.startswith(SIDECAR_NOTE)] == notes:
            notes = list(beside[0])  # the restoration's, in their order, with the sidecar's current ones
        else:  # one that does not carry the restoration's (made before notes were kept): its own on the sidecar
            notes += [n for n in beside[0] if n.startswith(SIDECAR_NOTE)]
    for p in images[1:]:  # a later output's own notes are never about the sidecar: one made before they were kept
        # alone repeats the first's, those on the sidecar as it then was among them (true of no sidecar now)
        notes += [n for n in found[p].notes if n not in notes and not n.startswith(SIDECAR_NOTE)]
    return tuple(notes)
