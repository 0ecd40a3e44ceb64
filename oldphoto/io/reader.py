"""Read photos: probe(path) for the header only, read(path, max_pixels) for upright pixels + metadata.

Every failure caused by the file raises ImageError(path, reason); the image size is checked against
max_pixels before any pixel buffer is allocated, and the RAM a decoder holds itself (JPEG 2000, Pillow's formats)
against the memory available, before decoding.
"""

from __future__ import annotations

import os
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from ..errors import ImageError, NoMemory
from . import buffers, jp2, raster_read, tiff_read
from .buffers import allocate
from .metadata import X_RESOLUTION, Y_RESOLUTION, Metadata
from .pixel_tags import PixelFrame
from .tiff_ifd import IfdError

FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "JPEG2000")
_LEASE_WAIT_S = 60.0  # longer than the kernel takes to break a lease by default (45 s)


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "JPEG" | "PNG" | "TIFF" | "WEBP" | "JPEG2000"
    width: int  # upright (after EXIF/TIFF orientation)
    height: int
    channels: int  # colour channels read() returns: 1 (gray) or 3 (RGB)
    dtype: np.dtype  # uint8 or uint16
    pages: int  # images in the file (TIFF previews included)
    alpha: bool = False
    orientation: int = 1  # EXIF/TIFF orientation stored in the file (1-8)
    source_mode: str = ""  # e.g. "RGB", "I;16", "P", "CMYK", "RGBA;16"


@dataclass
class Picture:
    pixels: np.ndarray  # (H, W, C) uint8|uint16, C in {1, 3}, upright; may be a np.memmap
    alpha: np.ndarray | None  # (H, W), same dtype as pixels; straight (not premultiplied)
    format: str  # "JPEG" | "PNG" | "TIFF" | "WEBP" | "JPEG2000" (a JP2 file or a bare codestream)
    meta: Metadata
    source_mode: str  # e.g. "RGB", "L", "I;16", "P", "CMYK", "RGBA" (informational)
    orientation: int = 1  # orientation found in the file, already applied to pixels
    notes: list[str] = field(default_factory=list)  # conversions made on read, e.g. "CMYK converted to RGB"


# the signatures a file starts with (a WebP's is split: RIFF, its size, WEBP), for sniff and _cut_short
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"),
               (b"II+\0", "TIFF"), (b"MM\0+", "TIFF"), (jp2.JP2_SIGNATURE, "JPEG2000"),
               (jp2.J2K_SIGNATURE, "JPEG2000"))


def sniff(head: bytes) -> str | None:
    """Format from the first 12 bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((f for sig, f in _SIGNATURES if head.startswith(sig)), None)


def _cut_short(head: bytes) -> str | None:
    """The format whose signature a file too short to hold one begins with (all of it: fewer than 16 bytes), or
    None: such a file is a scan cut short, not some other kind of file."""
    if len(head) >= 16:
        return None
    if head[:4] == b"RIFF"[: len(head)] and b"WEBP".startswith(head[8:12]) and len(head) < 12:
        return "WebP"
    return next((f for sig, f in _SIGNATURES if len(head) < len(sig) and sig.startswith(head)), None)


# What decoders raise on damaged or unsupported files (imagecodecs errors are RuntimeErrors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error,
                  RuntimeError, tifffile.TiffFileError, Image.DecompressionBombError, IfdError)


@contextmanager
def _decoding(path: Path, fmt: str) -> Iterator[None]:
    try:
        yield
    except MemoryError as e:
        raise ImageError(path, f"not enough memory to decode this {fmt}") from e
    except _DECODE_ERRORS as e:
        reason = str(e) or type(e).__name__
        raise ImageError(path, f"cannot read {fmt}: {reason}") from e


def open_source(path: str | Path, buffering: int = -1):
    """`path` opened for binary reading without waiting: a FIFO, socket or device found where a scan was (put there
    after the walk) is refused instead of blocking the run for good. A regular file under a lease (an SMB oplock, an
    NFS delegation: the open without waiting fails, but asks its holder to give it up) is opened once the lease is
    given up, or broken by the kernel (lease-break-time, 45 s by default), as a plain open waits. buffering: open()'s
    (by default the file system's block size, 1 MiB on some network shares: a few header bytes want a small one).
    Raises ImageError."""
    deadline = time.monotonic() + _LEASE_WAIT_S
    while True:
        try:
            fh = open(path, "rb", buffering,
                      opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NONBLOCK", 0)))
            break
        except BlockingIOError as e:  # a lease being broken, or a device that would block
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError as e2:
                raise ImageError(path, f"cannot open: {e2.strerror or e2}") from e2
            if not regular or time.monotonic() > deadline:
                raise ImageError(path, f"cannot open: {e.strerror or e}") from e
            time.sleep(0.05)
        except OSError as e:
            raise ImageError(path, f"cannot open: {e.strerror or e}") from e
    try:
        regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
        if regular:
            # blocking again for the reads: on a network or FUSE filesystem a non-blocking read may come back
            # short (None), which a read loop would take for the end of the file
            os.set_blocking(fh.fileno(), True)
    except OSError as e:
        fh.close()
        raise ImageError(path, f"cannot open: {e.strerror or e}") from e
    if not regular:
        fh.close()
        raise ImageError(path, "cannot open: not a regular file (a FIFO, socket or device)")
    return fh


@contextmanager
def _opened(path: Path, buffering: int = -1, source: BinaryIO | None = None,
            ) -> Iterator[tuple[BinaryIO, str]]:
    """(`path` opened, its format); with `source`, that file (from its start, left open) instead, named `path`."""
    if source is not None:
        source.seek(0)
        yield source, _format_of(path, source)
        return
    with open_source(path, buffering) as fh:
        yield fh, _format_of(path, fh)


def _format_of(path: Path, fh: BinaryIO) -> str:
    """The format of the file `fh` (at its start) from its first bytes; ImageError when it is none read() knows."""
    try:
        head = fh.read(16)
    except OSError as e:  # e.g. a folder opened on some systems, or an I/O error
        raise ImageError(path, f"cannot read: {e.strerror or e}") from e
    if not head:
        raise ImageError(path, "empty file (0 bytes)")
    fmt = sniff(head)
    cut = _cut_short(head)
    if fmt is None and cut is not None:
        raise ImageError(path, f"cut short: the file has only {len(head)} byte(s), the start of a {cut} header")
    if fmt is None:
        raise ImageError(path, f"not a JPEG, PNG, TIFF, WebP or JPEG 2000 image (file starts with {head[:8]!r})")
    return fmt


def _plan(fh, fmt: str, path: Path, max_pixels: int | None, header_only: bool = False, pixels: bool = True):
    def check_size(w: int, h: int) -> None:
        if max_pixels is not None and w * h > max_pixels:
            # a limit that is no whole tenth of a megapixel (--max-pixels 100) is shown as given, not as "0.0 MP"
            limit = f"{max_pixels / 1e6:.1f}" if max_pixels % 100_000 == 0 else f"{max_pixels / 1e6:g}"
            raise ImageError(path, f"{w} x {h} pixels ({w * h / 1e6:.1f} MP) exceeds the limit of {limit} MP")

    with _decoding(path, fmt):
        try:
            if fmt == "TIFF":
                return tiff_read.plan(fh, check_size)
            if fmt == "JPEG2000":
                return jp2.plan(fh, check_size)
            return raster_read.plan(fh, fmt, check_size, header_only, pixels)
        except (tiff_read.UnsupportedTiff, jp2.Unsupported) as e:  # the reason alone, not "cannot read ...: "
            raise ImageError(path, str(e)) from e


def _upright_shape(w: int, h: int, orientation: int) -> tuple[int, int]:
    return (h, w) if orientation >= 5 else (w, h)


def _info(fmt: str, pl) -> ImageInfo:
    """What probe() says of the planned read `pl`: its size upright."""
    w, h = _upright_shape(pl.width, pl.height, pl.orientation)
    return ImageInfo(fmt, w, h, pl.channels, pl.dtype, pl.pages, pl.alpha, pl.orientation, pl.source_mode)


def probe(path: str | Path, max_pixels: int | None = None, *, source: BinaryIO | None = None) -> ImageInfo:
    """Format, upright size, channels, dtype and pages from the header; no pixel data is decoded.
    max_pixels: refuse (ImageError, as read does) an image with more pixels. source: as read()'s."""
    path = Path(path)
    with _opened(path, source=source) as (fh, fmt), tiff_read.log_notes():  # not printed; probe reports no notes
        pl = _plan(fh, fmt, path, max_pixels, header_only=True)
        return _info(fmt, pl)


_HEADER_BUFFER = 64  # bytes read at a time by lossless_webp: the RIFF header and the first chunk's header fit
# bytes read at a time by read_metadata: it seeks from chunk header to chunk header past a PNG's pixel data (8 KiB IDAT
# chunks from libpng and most writers), which a buffer of the block size (4 KiB, 1 MiB on some shares) read anyway
_METADATA_BUFFER = 64


def lossless_webp(path: str | Path) -> bool:
    """Is the file at `path` a lossless WebP (VP8L: raster_read.webp_lossless, as read() sets Metadata.webp_lossless),
    whose --format keep output is lossless too, whatever --jpeg-quality: known from its chunk headers alone, before
    it is read (planning's settings fingerprints). False for any other file, and for one that cannot be read.
    Planning asks it of every WebP master, each run: a buffer of _HEADER_BUFFER bytes, so that a share whose block
    size is 1 MiB (CIFS, NFS) sends that much of each file, not 1 MiB (a VP8X container: that again per chunk before
    the image's)."""
    try:
        with open_source(path, _HEADER_BUFFER) as fh:
            return fh.read(4) == b"RIFF" and raster_read.webp_lossless(fh) is True
    except (ImageError, OSError, struct.error):
        return False


def read_metadata(path: str | Path, max_pixels: int | None = None) -> tuple[ImageInfo, Metadata]:
    """(probe's answer, the Metadata read() would give) without decoding a pixel: its frame has the orientation read()
    applies, and a resolution turned with it (orientation 5-8). For what is derived from the metadata alone (an XMP
    sidecar rewritten beside an unchanged restoration: pipeline.update_sidecar). A CMYK scan's ICC profile is the
    file's, not the sRGB one read() converts to. Raises ImageError as read() does."""
    path = Path(path)
    with _opened(path, _METADATA_BUFFER) as (fh, fmt), tiff_read.log_notes():  # not printed: read() gave the notes
        pl = _plan(fh, fmt, path, max_pixels, pixels=False)  # a PNG's pixel data not read for its CRC either
        with _decoding(path, fmt):
            meta = pl.metadata()
        info = _info(fmt, pl)
    _turn_metadata(meta, pl.orientation)
    return info, meta


def read(path: str | Path, max_pixels: int, *, tmp_dir: str | Path | None = None,
         source: BinaryIO | None = None) -> Picture:
    """Decode `path` into upright pixels (H, W, 1|3) uint8/uint16, alpha (H, W) or None, and metadata.

    max_pixels: refuse images with more pixels (checked on the header, before decoding); an image whose decoder
    would hold more RAM than the machine has available now is refused too, and one that would fit only once the files
    being decoded in other threads are done waits for them (_reserved).
    tmp_dir: where buffers over 256 MiB are memory-mapped (see buffers.allocate: where its file system cannot map
    files, a system temp folder, with a note).
    source: a binary file open for reading (seekable, on disk: the decoders take its descriptor) decoded instead of
    opening `path`, from its start, and left open; `path` names it in errors and notes. For a private copy whose
    bytes were hashed as they were copied, so that the pixels are those of the digest whatever happens to `path`
    meanwhile (io.mask_file).
    Raises ImageError naming the file and the reason.
    """
    path = Path(path)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    with buffers.file_buffers(path) as placed:
        with _opened(path, source=source) as (fh, fmt), tiff_read.log_notes() as logged:
            pl = _plan(fh, fmt, path, max_pixels)
            with _reserved(path, pl.decoder_memory()), _decoding(path, fmt):
                pixels, alpha, meta, notes = pl.decode(tmp_dir)
        notes += logged
        if pl.orientation != 1:
            pixels = upright(pixels, pl.orientation, tmp_dir)
            alpha = upright(alpha, pl.orientation, tmp_dir) if alpha is not None else None
            notes.append(f"orientation {pl.orientation} applied: pixels are stored upright")
            _turn_metadata(meta, pl.orientation)
    notes += placed
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        raise ImageError(path, f"alpha {alpha.shape} does not match pixels {pixels.shape}")
    return Picture(pixels, alpha, fmt, meta, pl.source_mode, pl.orientation, notes)


@contextmanager
def _reserved(path: Path, need: tuple[int, str] | None) -> Iterator[None]:
    """Around a decode: the decoder's own RAM (need: (bytes, why), or None where it needs none beyond allocate()'s
    buffers) reserved in buffers.DECODERS until the decode returns or raises, checked against what the machine can
    give now (buffers.available_memory, read afresh for each file) less what the decodes in other threads hold: such
    a need waits for them, and one more than the machine can give even so is NoMemory (an ImageError), refused before
    decoding, as the OOM killer would otherwise end the whole run. Nothing is checked where that is unknown."""
    if need is None:
        yield
        return
    try:
        with buffers.DECODERS.reserve(need[0]):
            yield
    except buffers.MemoryShort as e:  # raised by the reservation alone, never from the decode
        raise NoMemory(path, f"needs about {_bytes(need[0])} of memory to decode ({need[1]}); {_bytes(e.available)} "
                             "available now: not read") from None


def _bytes(n: int) -> str:
    """`n` bytes for a message: in GiB, MiB or KiB with one decimal, or in bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _turn_metadata(meta: Metadata, orientation: int) -> None:
    """`meta` for pixels that orientation `orientation` has turned upright (read, read_metadata)."""
    if orientation != 1:
        meta.frame = PixelFrame(orientation)  # the writer maps EXIF values given in the stored pixels
        if orientation >= 5:
            _transpose_resolution(meta)


def _transpose_resolution(meta: Metadata) -> None:
    """A file's resolution is given for its stored rows and columns: once orientation 5-8 has turned them, the
    horizontal resolution is what was the vertical one (a scan at 1200 x 2400 dpi, turned, is 2400 x 1200)."""
    if meta.dpi is not None:
        meta.dpi = (meta.dpi[1], meta.dpi[0])
    if meta.aspect is not None:
        meta.aspect = (meta.aspect[1], meta.aspect[0])
    x, y = meta.tiff_tags.get(X_RESOLUTION), meta.tiff_tags.get(Y_RESOLUTION)
    if x is not None and y is not None:
        meta.tiff_tags[X_RESOLUTION], meta.tiff_tags[Y_RESOLUTION] = y, x


def upright(a: np.ndarray, orientation: int, tmp_dir=None) -> np.ndarray:
    """Apply EXIF orientation 1-8 to a (H, W, ...) array: the result displays as the file was meant to."""
    views = {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],  # mirrored left-right
        3: lambda x: x[::-1, ::-1],  # rotated 180
        4: lambda x: x[::-1],  # mirrored top-bottom
        5: lambda x: x.swapaxes(0, 1),  # transposed
        6: lambda x: x.swapaxes(0, 1)[:, ::-1],  # stored rotated 90 counter-clockwise
        7: lambda x: x.swapaxes(0, 1)[::-1, ::-1],  # transversed
        8: lambda x: x.swapaxes(0, 1)[::-1],  # stored rotated 90 clockwise
    }
    if orientation not in views:
        raise ValueError(f"orientation must be 1-8, got {orientation}")
    view = views[orientation](a)
    if orientation == 1:
        return a
    out = allocate(view.shape, a.dtype, tmp_dir)
    out[...] = view
    return out
