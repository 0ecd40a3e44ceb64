"""JPEG 2000 files for the tests: imagecodecs encodes a lossless codestream (JP2 or bare), and the box list is
rewritten here with struct, independently of oldphoto.io.jp2 (ISO/IEC 15444-1 Annex I)."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np

UUID_XMP = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")
UUID_EXIF = b"JpgTiffExif->JP2"
UUID_IPTC = bytes.fromhex("33C7A4D2B81D4723A0BAF1A3E097AD38")


def box(kind: bytes, contents: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(contents), kind) + contents


def top_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, contents) of the boxes in `data` (no XLBox in what imagecodecs writes for small images)."""
    out, pos = [], 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        length = length or len(data) - pos
        out.append((kind, data[pos + 8 : pos + length]))
        pos += length
    return out


def colr_icc(icc: bytes) -> bytes:
    return box(b"colr", b"\x02\x00\x00" + icc)


def res(dpi_x_n_d_e: tuple[int, int, int], dpi_y_n_d_e: tuple[int, int, int], kind: bytes = b"resc") -> bytes:
    """A res superbox holding one resc (capture) or resd (display) box: (N, D, E) per axis, N / D * 10**E grid
    points per metre."""
    (hn, hd, he), (vn, vd, ve) = dpi_x_n_d_e, dpi_y_n_d_e
    return box(b"res ", box(kind, struct.pack(">HHHHbb", vn, vd, hn, hd, ve, he)))


DPI_600 = (30000, 127, 2)  # 3000000 / 127 points per metre = 600 dpi exactly
DPI_300 = (15000, 127, 2)


def cdef(*entries: tuple[int, int, int]) -> bytes:
    """(channel, type: 0 colour / 1 opacity / 2 premultiplied opacity, association) entries."""
    return box(b"cdef", struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHH", *e) for e in entries))


def uuid(kind: bytes, body: bytes) -> bytes:
    return box(b"uuid", kind + body)


def jp2(pixels: np.ndarray, bits: int | None = None, *, codec: str = "jp2", colr: bytes | None = None,
        in_header: bytes = b"", before: bytes = b"", after: bytes = b"") -> bytes:
    """A lossless JPEG 2000 of `pixels` (H, W) or (H, W, C), `bits` per sample (default: the dtype's); a JP2 gets
    `colr` in place of the enumerated colour space, `in_header` boxes appended to jp2h, `before` / `after` boxes
    before / after the codestream box."""
    data = imagecodecs.jpeg2k_encode(np.ascontiguousarray(pixels), level=0, codecformat=codec,
                                     **({"bitspersample": bits} if bits else {}))
    if codec != "jp2":
        return data
    out = b""
    for kind, contents in top_boxes(data):
        if kind == b"jp2h":
            inner = [(k, c) for k, c in top_boxes(contents)]
            contents = b"".join(colr if k == b"colr" and colr is not None else box(k, c) for k, c in inner)
            contents += in_header
        if kind == b"jp2c":
            out += before + box(kind, contents) + after
        else:
            out += box(kind, contents)
    return out
