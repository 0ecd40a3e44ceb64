"""Samples and builders shared by the io tests (a unique module name: test folders have no __init__.py).

TIFF structures are assembled here by hand with struct, independently of oldphoto.io.tiff_ifd, so the
tests do not check that module against itself.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import ImageCms

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
       b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Lyon">'
       b'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Grandmother &amp; the bakery</rdf:li></rdf:Alt>'
       b'</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>')
# IPTC-IIM: record 2 version, caption "Family picnic", city "Lyon"
IPTC = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x78\x00\x0dFamily picnic" + b"\x1c\x02\x5a\x00\x04Lyon"

_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 10: 8, 16: 8}
_FMT = {1: "B", 3: "H", 4: "I", 16: "Q"}


def ascii_(tag, text):
    data = text.encode() + b"\0"
    return (tag, 2, len(data), data)


def short(tag, *values):
    return (tag, 3, len(values), values)


def long_(tag, *values):
    return (tag, 4, len(values), values)


def rational(tag, *pairs):
    return (tag, 5, len(pairs), pairs)


def undefined(tag, data):
    return (tag, 7, len(data), data)


def _value_bytes(order, typ, count, value):
    if typ in (2, 7, 1) and isinstance(value, bytes):
        return value
    if typ in (5, 10):
        flat = [v for pair in value for v in pair]
        return struct.pack(order + ("I" if typ == 5 else "i") * len(flat), *flat)
    return struct.pack(order + _FMT[typ] * count, *value)


def tiff_structure(order: str, ifd0: list, exif: list | None = None, gps: list | None = None,
                   prefix: bytes = b"", strip: bytes | None = None) -> bytes:
    """A classic TIFF structure: header, IFD0, optional Exif and GPS IFDs, optional image strip.

    With `strip`, tags 273/279 (StripOffsets/Counts) in ifd0 are filled in to point at it. The EXIF IFD
    pointer (34665) and GPS pointer (34853) are added automatically.
    """
    blob = bytearray((b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8))

    def layout(entries, base):
        entries = sorted(entries, key=lambda e: e[0])
        head = 2 + 12 * len(entries) + 4
        values = bytearray()
        packed = []
        for tag, typ, count, value in entries:
            data = _value_bytes(order, typ, count, value)
            if len(data) <= 4:
                field = data.ljust(4, b"\0")
            else:
                field = struct.pack(order + "I", base + head + len(values))
                values += data + (b"\0" if len(data) % 2 else b"")
            packed.append(struct.pack(order + "HHI", tag, typ, count) + field)
        return struct.pack(order + "H", len(entries)) + b"".join(packed) + struct.pack(order + "I", 0) + values

    # fixed point: compute IFD0 size with placeholder pointers, then place sub-IFDs after it
    extra = []
    if exif:
        extra.append(long_(34665, 0))
    if gps:
        extra.append(long_(34853, 0))
    if strip is not None:
        extra += [long_(273, 0), long_(279, len(strip))]
    size0 = len(layout(ifd0 + extra, 8))
    pos = 8 + size0
    exif_at = pos
    exif_blob = layout(exif, exif_at) if exif else b""
    pos += len(exif_blob) + len(exif_blob) % 2
    gps_at = pos
    gps_blob = layout(gps, gps_at) if gps else b""
    pos += len(gps_blob) + len(gps_blob) % 2
    strip_at = pos
    final = list(ifd0)
    if exif:
        final.append(long_(34665, exif_at))
    if gps:
        final.append(long_(34853, gps_at))
    if strip is not None:
        final += [long_(273, strip_at), long_(279, len(strip))]
    blob += layout(final, 8)
    for part in (exif_blob, gps_blob):
        blob += part + (b"\0" if len(part) % 2 else b"")
    if strip is not None:
        blob += strip
    return prefix + bytes(blob)


EXIF_IFD0 = [ascii_(271, "Epson"), ascii_(272, "Perfection V850"), ascii_(315, "Jane Doe"),
             ascii_(33432, "(c) City Museum"), ascii_(285, "Album 3, page 12"), short(274, 1),
             ascii_(305, "EPSON Scan"), ascii_(306, "2019:03:02 10:11:12")]
EXIF_SUB = [ascii_(36867, "1952:07:14 15:30:00"), ascii_(36868, "2019:03:02 10:11:12"),
            undefined(36864, b"0232"), long_(40962, 999), long_(40963, 777),
            undefined(42080, b"\x00\x01"),  # CompositeImage (EXIF 2.32), unknown to piexif
            ascii_(36880, "+01:00"), rational(33434, (1, 125))]
GPS_SUB = [(0, 1, 4, b"\x02\x03\x00\x00"), ascii_(1, "N"), rational(2, (45, 1), (45, 1), (1234, 100)),
           ascii_(3, "E"), rational(4, (4, 1), (50, 1), (5, 1))]


def rich_exif(order: str = "<", orientation: int = 1) -> bytes:
    ifd0 = [e for e in EXIF_IFD0 if e[0] != 274] + [short(274, orientation)]
    return tiff_structure(order, ifd0, EXIF_SUB, GPS_SUB)


def gradient(h: int, w: int, c: int, dtype, seed: int = 0) -> np.ndarray:
    """Smooth image plus noise: compresses like a photo, and every value matters for exactness checks."""
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [(np.sin(yy / 7 + k) + np.cos(xx / 11 - k) + 2) / 4 for k in range(c)]
    base = np.stack(chans, axis=2) * top
    noise = np.random.default_rng(seed).normal(0, top / 100, base.shape)
    return np.clip(base + noise, 0, top).round().astype(dtype)
