"""Streaming TIFF encoder: strips written one band at a time, so a np.memmap input is never copied whole, in the
compression of a TIFF master where every TIFF reader knows it (none, LZW, PackBits) or it is Adobe Deflate, else in
LZW with the horizontal predictor (output_compression). The directory (with metadata and EXIF/GPS sub-directories)
goes last; BigTIFF is used when the file could pass 4 GiB.
"""

from __future__ import annotations

import struct
import zlib

import imagecodecs
import numpy as np

from . import tiff_ifd as T

_STRIP_BYTES = 1 << 19  # raw bytes per strip: big enough for good compression, small enough to stream
_CLASSIC_LIMIT = 2**32 - (64 << 20)  # leave room for metadata after the pixel data
NONE, LZW, DEFLATE, PACKBITS, OLD_DEFLATE = 1, 5, 8, 32773, 32946
# Compression values a TIFF output keeps from its master: TIFF 6.0's (none, LZW, PackBits) and Adobe Deflate
KEPT = frozenset({NONE, LZW, DEFLATE, PACKBITS})
# what a TIFF output gets from a master that was no TIFF, or whose compression is not kept: lossless, TIFF 6.0, read
# by every TIFF reader (FADGI and the Library of Congress recommend uncompressed or LZW TIFF masters). On a 12 MP
# 16-bit RGB photo with grain, 21 % larger than Deflate (level 6, predictor) and written 3.7 times as fast (README)
DEFAULT = (LZW, 2)
_NAMES = {2: "CCITT RLE", 3: "CCITT Group 3", 4: "CCITT Group 4", 6: "old-style JPEG", 7: "JPEG", 9: "JBIG",
          10: "JBIG", 32771: "CCITT RLE", 32809: "ThunderScan", 32946: "Deflate", 33003: "JPEG 2000",
          33004: "JPEG 2000", 33005: "JPEG 2000", 34661: "JBIG", 34712: "JPEG 2000", 34887: "LERC",
          34892: "lossy JPEG", 34925: "LZMA", 34926: "ZSTD", 34927: "WebP", 34933: "PNG", 34934: "JPEG XR",
          50000: "ZSTD", 50001: "WebP", 50002: "JPEG XL", 52546: "JPEG XL"}
# most the encoded strips can take over the raw pixels, for the BigTIFF decision: LZW writes at most one 12-bit code
# per byte; Deflate's stored blocks and PackBits' literal runs add under 1 %
_GROWTH = {NONE: 1.0, LZW: 1.5, DEFLATE: 1.01, PACKBITS: 1.01}


def output_compression(master: tuple[int, int] | None) -> tuple[int, int, str | None]:
    """(Compression, Predictor, note or None) of a TIFF output whose master stored its pixels with `master`
    (Compression, Predictor); None: the master was no TIFF.

    A compression in KEPT is kept (old Deflate, 32946, is written as Adobe Deflate, 8, the value registered for it),
    with the horizontal predictor (2: on integer samples) where the master used one and the codec takes one (LZW,
    Deflate; none and PackBits have none); any other (JPEG, JPEG 2000, CCITT, ZSTD, LZMA, WebP ...) becomes
    DEFAULT, with a note.
    """
    if master is None:
        return (*DEFAULT, None)
    compression, predictor = master
    compression = DEFLATE if compression == OLD_DEFLATE else compression
    if compression in KEPT:
        return compression, 2 if compression in (LZW, DEFLATE) and predictor != 1 else 1, None
    name = f" ({_NAMES[compression]})" if compression in _NAMES else ""
    return (*DEFAULT, f"TIFF compression {compression}{name} of the scan not kept: written as LZW (lossless) with the "
                      "horizontal predictor")


def _strip(pixels: np.ndarray, alpha: np.ndarray | None, rows: slice, predictor: int) -> np.ndarray:
    """(rows, W, spp) little-endian, C-contiguous; horizontally differenced with predictor 2."""
    parts = [pixels[rows]] + ([alpha[rows, :, None]] if alpha is not None else [])
    band = np.concatenate(parts, axis=2) if len(parts) > 1 else pixels[rows]
    band = band.astype(band.dtype.newbyteorder("<"), copy=False)
    if predictor != 2:
        return np.ascontiguousarray(band)
    diff = np.empty(band.shape, band.dtype)
    diff[:, :1] = band[:, :1]
    np.subtract(band[:, 1:], band[:, :-1], out=diff[:, 1:])  # unsigned: wraps modulo 2**bits as TIFF wants
    return diff


def _encode(band: np.ndarray, compression: int, level: int) -> bytes:
    if compression == DEFLATE:
        return zlib.compress(band, level)
    if compression == LZW:
        return imagecodecs.lzw_encode(band)  # what tifffile writes LZW with: codes restart with each strip
    if compression == PACKBITS:  # TIFF packs each row on its own (TIFF 6.0, section 9)
        return imagecodecs.packbits_encode(band.reshape(band.shape[0], -1).view(np.uint8), axis=-1)
    return band.tobytes()


def write_tiff(out, pixels: np.ndarray, alpha: np.ndarray | None, meta_ifd: T.Ifd, level: int = 6,
               compression: int = DEFAULT[0], predictor: int = DEFAULT[1]) -> None:
    """Encode pixels (H, W, 1|3) uint8|uint16 + optional alpha (H, W) into the seekable binary stream `out`.

    meta_ifd: metadata entries and EXIF/GPS sub-directories for IFD0 (layout tags are set here).
    compression: one of KEPT (output_compression); predictor: 1 (none) or 2 (horizontal, LZW and Deflate only);
    level: zlib level for Deflate.
    """
    if compression not in KEPT:
        raise ValueError(f"compression must be one of {sorted(KEPT)}, got {compression}")
    if predictor not in (1, 2) or predictor == 2 and compression not in (LZW, DEFLATE):
        raise ValueError(f"predictor {predictor} does not go with compression {compression}")
    h, w, c = pixels.shape
    spp = c + (alpha is not None)
    size = pixels.dtype.itemsize
    row_bytes = w * spp * size
    rows_per_strip = max(1, _STRIP_BYTES // row_bytes)
    bigtiff = h * row_bytes * _GROWTH[compression] + h > _CLASSIC_LIMIT  # + h: a PackBits header byte per row
    out.write(b"II+\0" + struct.pack("<HHQ", 8, 0, 0) if bigtiff else b"II*\0" + struct.pack("<I", 0))
    offsets, counts = [], []
    for y0 in range(0, h, rows_per_strip):
        data = _encode(_strip(pixels, alpha, slice(y0, min(h, y0 + rows_per_strip)), predictor), compression, level)
        offsets.append(out.tell())
        counts.append(len(data))
        out.write(data)
        if len(data) % 2:
            out.write(b"\0")
    off_type, off_fmt = (T.LONG8, "<u8") if bigtiff else (T.LONG, "<u4")

    def array(tag: int, typ: int, values, fmt: str) -> T.Entry:
        data = np.asarray(values, dtype=fmt).tobytes()
        return T.Entry(tag, typ, len(values), data)

    layout = [
        T.long_entry(256, w), T.long_entry(257, h),
        array(258, T.SHORT, [8 * size] * spp, "<u2"),
        T.short_entry(259, compression),
        T.short_entry(262, 1 if c == 1 else 2),  # MinIsBlack or RGB
        array(273, off_type, offsets, off_fmt),
        T.short_entry(277, spp),
        T.long_entry(278, rows_per_strip),
        array(279, off_type, counts, off_fmt),
        T.short_entry(284, 1),  # interleaved samples
    ]
    if predictor == 2:
        layout.append(T.short_entry(317, 2))  # horizontal differencing
    if alpha is not None:
        layout.append(T.short_entry(338, 2))  # unassociated (straight) alpha
    ifd = meta_ifd.copy()
    ifd.entries.update({e.tag: e for e in layout})
    where = out.tell()
    out.write(T.serialize(ifd, "<", bigtiff, where))
    out.seek(8 if bigtiff else 4)
    out.write(struct.pack("<Q" if bigtiff else "<I", where))
