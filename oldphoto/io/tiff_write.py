"""Streaming TIFF encoder: Deflate (zlib) + horizontal predictor, strips written one band at a time, so a
np.memmap input is never copied whole. The directory (with metadata and EXIF/GPS sub-directories) goes
last; BigTIFF is used when the file could pass 4 GiB.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from . import tiff_ifd as T

_STRIP_BYTES = 1 << 19  # raw bytes per strip: big enough for good compression, small enough to stream
_CLASSIC_LIMIT = 2**32 - (64 << 20)  # leave room for metadata after the pixel data


def _strip(pixels: np.ndarray, alpha: np.ndarray | None, rows: slice) -> np.ndarray:
    """(rows, W, spp) little-endian, horizontally differenced (TIFF predictor 2)."""
    parts = [pixels[rows]] + ([alpha[rows, :, None]] if alpha is not None else [])
    band = np.concatenate(parts, axis=2) if len(parts) > 1 else pixels[rows]
    band = band.astype(band.dtype.newbyteorder("<"), copy=False)
    diff = np.empty(band.shape, band.dtype)
    diff[:, :1] = band[:, :1]
    np.subtract(band[:, 1:], band[:, :-1], out=diff[:, 1:])  # unsigned: wraps modulo 2**bits as TIFF wants
    return diff


def write_tiff(out, pixels: np.ndarray, alpha: np.ndarray | None, meta_ifd: T.Ifd, level: int = 6) -> None:
    """Encode pixels (H, W, 1|3) uint8|uint16 + optional alpha (H, W) into the seekable binary stream `out`.

    meta_ifd: metadata entries and EXIF/GPS sub-directories for IFD0 (layout tags are set here).
    """
    h, w, c = pixels.shape
    spp = c + (alpha is not None)
    size = pixels.dtype.itemsize
    row_bytes = w * spp * size
    rows_per_strip = max(1, _STRIP_BYTES // row_bytes)
    bigtiff = h * row_bytes * 1.01 > _CLASSIC_LIMIT  # deflate can expand incompressible data slightly
    out.write(b"II+\0" + struct.pack("<HHQ", 8, 0, 0) if bigtiff else b"II*\0" + struct.pack("<I", 0))
    offsets, counts = [], []
    for y0 in range(0, h, rows_per_strip):
        data = zlib.compress(_strip(pixels, alpha, slice(y0, min(h, y0 + rows_per_strip))), level)
        offsets.append(out.tell())
        counts.append(len(data))
        out.write(data + (b"\0" if len(data) % 2 else b""))
    off_type, off_fmt = (T.LONG8, "<u8") if bigtiff else (T.LONG, "<u4")

    def array(tag: int, typ: int, values, fmt: str) -> T.Entry:
        data = np.asarray(values, dtype=fmt).tobytes()
        return T.Entry(tag, typ, len(values), data)

    layout = [
        T.long_entry(256, w), T.long_entry(257, h),
        array(258, T.SHORT, [8 * size] * spp, "<u2"),
        T.short_entry(259, 8),  # Adobe Deflate
        T.short_entry(262, 1 if c == 1 else 2),  # MinIsBlack or RGB
        array(273, off_type, offsets, off_fmt),
        T.short_entry(277, spp),
        T.long_entry(278, rows_per_strip),
        array(279, off_type, counts, off_fmt),
        T.short_entry(284, 1),  # interleaved samples
        T.short_entry(317, 2),  # horizontal differencing
    ]
    if alpha is not None:
        layout.append(T.short_entry(338, 2))  # unassociated (straight) alpha
    ifd = meta_ifd.copy()
    ifd.entries.update({e.tag: e for e in layout})
    where = out.tell()
    out.write(T.serialize(ifd, "<", bigtiff, where))
    out.seek(8 if bigtiff else 4)
    out.write(struct.pack("<Q" if bigtiff else "<I", where))
