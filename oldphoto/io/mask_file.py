"""Curated defect masks (`restore --masks DIR`): a curator's corrected NAME.mask.png (or .tif), read in place of the
detector's mask.

A mask file is read once: its bytes into memory, their sha256, then decoded from those very bytes (through a
private temp copy, removed once decoded: the PNG and TIFF decoders want a file), so an editor saving over it meanwhile
cannot pair one version's digest with another's pixels. Gray 8- or 16-bit, 1-bit, palette, or RGB / RGBA whose
colour channels are equal (what editors often save); alpha is ignored. A pixel is a defect when its value is at least
half of full scale (128 of 255, 32768 of 65535).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError
from . import reader, tiff_read
from .buffers import allocate
from .provenance import read_source_sha256

# the names a curated mask may have beside OUT-style base names, in the order they are looked for: the one
# `--only-mask` writes, then TIFF (an editor's other lossless choice)
MASK_SUFFIXES = (".mask.png", ".mask.tif", ".mask.tiff")
_BAND_PIXELS = 1 << 20  # pixels per band when the decoded mask is checked and thresholded
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
    """(the defects (H, W) bool, from io.allocate: True where the value is at least half of full scale; the file's
    identity, recorded as `name`) of the mask file at `path`, which must be `size` = (width, height) upright (the
    scan's). Raises MaskError."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise MaskError(path, f"cannot be read: {e.strerror or e}") from e
    width, height = size
    limit = 8 * width * height + _SLACK
    if st.st_size > limit:  # never read into memory: no mask of this scan's size is that large
        raise MaskError(path, f"holds {st.st_size} bytes, more than any mask of {width} x {height} pixels")
    try:
        with reader.open_source(path) as fh:
            data = fh.read(limit + 1)
    except ImageError as e:
        raise MaskError(path, f"cannot be read: {e.reason}") from e
    except OSError as e:
        raise MaskError(path, f"cannot be read: {e.strerror or e}") from e
    if len(data) > limit:
        raise MaskError(path, f"grew past {limit} bytes as it was read")
    identity = MaskId(name, len(data), st.st_mtime_ns, hashlib.sha256(data).hexdigest())
    return _decoded(path, data, size, max_pixels), identity


def check_header(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """MaskError when the mask file at `path` would be refused from its header alone (not a PNG or TIFF, damaged,
    not `size` = (width, height) upright): what a dry run tells without decoding it."""
    try:
        info = reader.probe(path, max_pixels)
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


def _decoded(path: Path, data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """The defects of the mask file whose content is `data` (see read_mask)."""
    fmt = reader.sniff(data[:16])
    _check_format(path, fmt)
    # a named temp file: tifffile wants a name; the decoders' logged notes are not the scan's
    with tempfile.NamedTemporaryFile(prefix="oldphoto-mask-") as fh, tiff_read.log_notes():
        fh.write(data)
        fh.flush()
        fh.seek(0)
        try:
            plan = reader._plan(fh, fmt, path, max_pixels)
            info = reader._info(fmt, plan)
            _check_size(path, (info.width, info.height), size)
            reader._check_memory(path, plan.decoder_memory())
            with reader._decoding(path, fmt):
                pixels, _, _, _ = plan.decode(None)
        except MaskError:
            raise
        except ImageError as e:  # damaged, unsupported, over --max-pixels, too large for the memory available
            raise MaskError(path, f"cannot be used: {e.reason}") from e
    if plan.orientation != 1:
        pixels = reader.upright(pixels, plan.orientation)
    return _defects(path, pixels)


def _defects(path: Path, pixels: np.ndarray) -> np.ndarray:
    """pixels (H, W, 1 or 3) uint8/uint16 -> (H, W) bool, band by band; ImageError when a pixel's channels differ."""
    h, w, c = pixels.shape
    top = int(np.iinfo(pixels.dtype).max)
    out = allocate((h, w), np.bool_)
    rows = max(1, _BAND_PIXELS // w)
    for a in range(0, h, rows):
        band = pixels[a: a + rows]
        if c > 1:
            odd = (band != band[..., :1]).any(axis=2)
            if odd.any():
                y, x = (int(v) for v in np.argwhere(odd)[0])
                value = tuple(int(v) for v in band[y, x])
                raise MaskError(path, f"is not gray: pixel ({x}, {a + y}) is {value}; a mask is black (intact) and "
                                       f"white (defect), saved as gray or with equal colour channels")
        # at least half of full scale: 2 v >= top (128 of 255, 32768 of 65535)
        out[a: a + band.shape[0]] = band[..., 0].astype(np.uint32) * 2 >= top
    return out
