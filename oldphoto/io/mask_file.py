"""Curated defect masks (`restore --masks DIR`): a curator's corrected NAME.mask.png (or .tif), read in place of the
detector's mask.

A mask file is read once: copied to a private temp file and hashed as it is copied, then that copy decoded
(reader.read(source=): the same header check against --max-pixels, decoder memory reservation and one-line errors as
a scan's), so an editor saving over it meanwhile cannot pair one version's digest with another's pixels. Gray 8- or
16-bit, 1-bit, palette, or RGB whose colour channels are equal (what editors often save), with or without alpha: a
value with alpha is taken over black (a stroke erased to transparency is erased, whatever colour the editor keeps
under it). A pixel is a defect when its value is at least half of full scale (128 of 255, 32768 of 65535).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ImageError
from . import reader
from .buffers import allocate, bands
from .provenance import read_source_sha256

# the names a curated mask may have beside OUT-style base names, in the order they are looked for: the one
# `--only-mask` writes, then TIFF (an editor's other lossless choice)
MASK_SUFFIXES = (".mask.png", ".mask.tif", ".mask.tiff")
_COPY_BYTES = 1 << 20  # bytes read at a time as the mask file is hashed and copied
_SLACK = 16 << 20  # bytes a mask file may hold beyond 8 a pixel (16-bit RGBA, uncompressed): headers, metadata


@dataclass(frozen=True)
class MaskId:
    """A curated mask as a state record keeps it (as io.sidecar.SidecarId a sidecar): its name relative to the mask
    folder (POSIX separators), size, mtime and sha256 (of the bytes decoded)."""

    name: str
    size: int
    mtime_ns: int
    sha256: str | None = None

    @classmethod
    def of(cls, path: Path, name: str, with_hash: bool = False) -> "MaskId":
        """`path`'s identity now, recorded as `name`; OSError (or ImageError reading it) when it cannot be had."""
        st = os.stat(path)
        return cls(name, st.st_size, st.st_mtime_ns, read_source_sha256(path) if with_hash else None)


class MaskError(ImageError):
    """A curated mask that cannot be used; its reason is the whole line, naming the mask file ("mask PATH is 300 x
    200, the scan is 200 x 300"), for the scan's failure (pipeline)."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(path, f"mask {path} {what}")


def find_mask(base: Path) -> Path | None:
    """The curated mask of the scan whose output base is `base` (DIR / its path without suffix, as walk.out_base
    gives it for the mask folder): BASE.mask.png, .mask.tif or .mask.tiff, whichever is a file; None when none is.
    ImageError (naming the first) when more than one is: which the curator meant is not for oldphoto to guess."""
    there = [Path(str(base) + s) for s in MASK_SUFFIXES if Path(str(base) + s).is_file()]
    if len(there) > 1:
        raise MaskError(there[0], f"and {' and '.join(map(str, there[1:]))} are both there, for one scan: keep one")
    return there[0] if there else None


def read_mask(path: Path, name: str, size: tuple[int, int], max_pixels: int) -> tuple[np.ndarray, MaskId]:
    """(the defects (H, W) bool, from io.allocate: True where the value, over black where the mask has alpha, is at
    least half of full scale; the file's identity, recorded as `name`) of the mask file at `path`, which must be
    `size` = (width, height) upright (the scan's). Raises MaskError."""
    # a named temp file: tifffile takes the name of the file it is handed
    with tempfile.NamedTemporaryFile(prefix="oldphoto-mask-") as copy:
        identity = _copied(path, name, copy, 8 * size[0] * size[1] + _SLACK)
        check_header(path, size, max_pixels, source=copy)
        try:
            pic = reader.read(path, max_pixels, source=copy)  # its notes are on the mask, not the scan: not kept
        except ImageError as e:  # damaged, unsupported, over --max-pixels, too large for the memory available
            raise MaskError(path, f"cannot be used: {e.reason}") from e
    return _defects(path, pic.pixels, pic.alpha), identity


def _copied(path: Path, name: str, copy, limit: int) -> MaskId:
    """The mask file at `path` copied into the open file `copy`, hashed as it is copied: its identity (as `name`).
    A file of more than `limit` bytes (more than any mask of the scan's size) is refused before it is read whole.
    Raises MaskError."""
    digest, n = hashlib.sha256(), 0
    try:
        with reader.open_source(path) as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > limit:
                raise MaskError(path, f"holds {st.st_size} bytes, more than any mask of the scan's size")
            while chunk := fh.read(_COPY_BYTES):
                n += len(chunk)
                if n > limit:
                    raise MaskError(path, f"grew past {limit} bytes as it was read")
                digest.update(chunk)
                copy.write(chunk)
        copy.flush()
    except MaskError:
        raise
    except ImageError as e:
        raise MaskError(path, f"cannot be read: {e.reason}") from e
    except OSError as e:  # the mask, or its temp copy (a full disk)
        raise MaskError(path, f"cannot be read: {e.strerror or e}") from e
    return MaskId(name, n, st.st_mtime_ns, digest.hexdigest())


def check_header(path: Path, size: tuple[int, int], max_pixels: int, source: BinaryIO | None = None) -> None:
    """MaskError when the mask file at `path` would be refused from its header alone (not a PNG or TIFF, damaged,
    not `size` = (width, height) upright): what a dry run tells without decoding it, and read_mask before it decodes
    its copy (`source`, as reader.probe's)."""
    try:
        info = reader.probe(path, max_pixels, source=source)
    except ImageError as e:
        raise MaskError(path, f"cannot be used: {e.reason}") from e
    _check_format(path, info.format)
    _check_size(path, (info.width, info.height), size)


def _check_format(path: Path, fmt: str | None) -> None:
    if fmt not in ("PNG", "TIFF"):
        what = f"a {fmt}" if fmt else "not an image"
        raise MaskError(path, f"is {what}: a mask is a PNG or TIFF (lossless), as --only-mask writes it")


def _check_size(path: Path, found: tuple[int, int], size: tuple[int, int]) -> None:
    if tuple(found) != tuple(size):
        raise MaskError(path, f"is {found[0]} x {found[1]}, the scan is {size[0]} x {size[1]}")


def _defects(path: Path, pixels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """pixels (H, W, 1 or 3) uint8/uint16, alpha (H, W) or None -> (H, W) bool, band by band: each value taken over
    black where there is alpha (value x alpha / full scale: a stroke erased to transparency in an editor that keeps
    the colour under it is erased), then at least half of full scale. MaskError when a pixel's channels differ."""
    h, w, c = pixels.shape
    top = int(np.iinfo(pixels.dtype).max)
    out = allocate((h, w), np.bool_)
    for rows in bands(h, w * c * 8):  # uint64 scratch
        band = pixels[rows].astype(np.uint64)
        full = top
        if alpha is not None:  # over black, scaled by full scale once more: v x alpha against top x top
            band *= alpha[rows, :, None]
            full = top * top
        if c > 1:
            odd = (band != band[..., :1]).any(axis=2)
            if odd.any():
                y, x = (int(v) for v in np.argwhere(odd)[0])
                y += rows.start
                value = tuple(int(v) for v in pixels[y, x])
                if alpha is not None:
                    value += (int(alpha[y, x]),)
                raise MaskError(path, f"is not gray: pixel ({x}, {y}) is {value}; a mask is black (intact) and "
                                       f"white (defect), saved as gray or with equal colour channels")
        # at least half of full scale: 2 v >= top (128 of 255, 32768 of 65535)
        out[rows] = band[..., 0] * 2 >= full
    return out
