"""Exceptions with one-line messages that name the file and the reason."""

from __future__ import annotations

from pathlib import Path


class OldPhotoError(Exception):
    """Base class for every error oldphoto raises on purpose."""


class ImageError(OldPhotoError):
    """A single input or output file cannot be processed; the batch goes on."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


class NoMemory(ImageError):
    """A file's decoder would hold more RAM than the machine can give now: refused before decoding (it fails alone,
    and the next run tries it again)."""


class XmpError(ImageError):
    """A source's XMP packet cannot be parsed (not well-formed, a DTD, another root): its derivatives carry it
    unchanged instead of a packet with their provenance added."""


class WeightsError(OldPhotoError):
    """A model file is missing, corrupt or does not match its manifest."""


class SettingsError(OldPhotoError, ValueError):
    """A setting, run folder, corpus or weights name cannot be used as given; the message names it and why."""


class BadArgument(OldPhotoError):
    """An argument of a restore run (its device, its output folder, its report path) cannot be used as given; nothing
    was done. The CLI shows it as a usage error."""


class CannotRun(OldPhotoError):
    """A restore run cannot start (weights missing, a live run holding the output folder, a state file that cannot be
    read or written) or finish (its report cannot be written); one line."""


class TempFolderError(OldPhotoError):
    """No temp folder can hold a large pixel buffer as a memory-mapped file (io.buffers.allocate); the message names
    each folder tried and why. The file being worked on fails with it as its ImageError (io.buffers.file_buffers)."""


def reason_of(e: BaseException) -> str:
    """The one-line reason a file failed with `e`, as the report keeps it."""
    if isinstance(e, ImageError):
        return e.reason
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}"
    return " ".join(f"{type(e).__name__}: {e}".split())
