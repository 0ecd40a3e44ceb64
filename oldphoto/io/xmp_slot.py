"""A file's own XMP packet, read from the place its container keeps it (the XMP specification, part 3): JPEG APP1
with the `http://ns.adobe.com/xap/1.0/` header, PNG text chunk `XML:com.adobe.xmp`, TIFF tag 700 of the first
directory, WebP chunk `XMP `. Only the container's structure is walked; the image is never decoded.

Why not search the bytes for `<?xpacket begin=`: other parts of a file may hold packets too (an EXIF tag, a
Photoshop resource, a comment, a thumbnail), carried byte for byte from the scan, and the first packet in the file
is then not the file's own.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from . import png
from . import tiff_ifd as T
from .reader import sniff
from .xmp_tree import JPEG_EXTENSION_HEADER, JPEG_XMP_HEADER

_XMP_KEYWORD = png.XMP_KEY.encode("latin-1") + b"\0"
_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length
_XMP_TAG = 700


class SlotError(ValueError):
    """The container cannot be walked (damaged, truncated), or it has more than one XMP slot."""


def read_xmp_slot(fh: BinaryIO) -> bytes | None:
    """The packet in the XMP slot of the open file `fh` (JPEG, PNG, TIFF or WebP, told by its first bytes), as
    stored; None when the file has no slot or is none of those formats. Raises SlotError when its structure cannot
    be walked or it has two slots (which one a reader takes differs from reader to reader), OSError when it cannot
    be read."""
    fh.seek(0)
    fmt = sniff(fh.read(12))
    try:
        if fmt == "JPEG":
            return _one(_jpeg(fh, JPEG_XMP_HEADER))
        if fmt == "PNG":
            return _one(_png(fh))
        if fmt == "TIFF":
            return _tiff(fh)
        if fmt == "WEBP":
            return _one(_webp(fh))
    except (T.IfdError, png.Truncated, struct.error, zlib.error) as e:
        raise SlotError(str(e)) from e
    return None


def read_jpeg_extension(fh: BinaryIO) -> list[bytes]:
    """The payloads (after their header: GUID, full length, offset, data) of the Extended XMP segments of the open
    JPEG `fh`, in file order; [] for another format. Raises SlotError and OSError as read_xmp_slot does."""
    fh.seek(0)
    if sniff(fh.read(12)) != "JPEG":
        return []
    try:
        return _jpeg(fh, JPEG_EXTENSION_HEADER)
    except struct.error as e:
        raise SlotError(str(e)) from e


def _one(found: list[bytes]) -> bytes | None:
    if len(found) > 1:
        raise SlotError(f"{len(found)} XMP packets where the format has room for one")
    return found[0] if found else None


def _exact(fh: BinaryIO, size: int) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise SlotError(f"file ends inside a {size}-byte block (truncated)")
    return data


def _jpeg(fh: BinaryIO, header: bytes) -> list[bytes]:
    """The payloads after `header` of the APP1 segments before the first scan that start with it: what JPEG
    readers (Pillow included) take as the file's metadata; what follows SOS is image data."""
    fh.seek(2)
    found = []
    while True:
        if _exact(fh, 1) != b"\xff":
            raise SlotError(f"no JPEG marker at byte {fh.tell() - 1}")
        code = _exact(fh, 1)[0]
        while code == 0xFF:  # fill bytes before a marker
            code = _exact(fh, 1)[0]
        if code in (_SOS, _EOI):
            return found
        if code in _STANDALONE:
            continue
        (length,) = struct.unpack(">H", _exact(fh, 2))
        if length < 2:
            raise SlotError(f"JPEG segment at byte {fh.tell() - 4} gives a length of {length}")
        body = length - 2
        if code == _APP1 and body >= len(header):
            head = _exact(fh, len(header))
            if head == header:
                found.append(_exact(fh, body - len(head)))
                continue
            body -= len(head)
        fh.seek(body, 1)


def _png(fh: BinaryIO) -> list[bytes]:
    """Text chunks keyed XML:com.adobe.xmp up to IEND (iTXt, as the XMP specification asks; tEXt and zTXt too, which
    oldphoto's reader also takes for the packet). Only those chunks are read, and their CRC checked (a bad one is a
    SlotError: the packet is not trusted, as png.read_chunks drops it): damage in another chunk is no concern of the
    slot's."""
    found = []
    for _, ctype, length in png.walk_chunks(fh):
        if ctype in (b"iTXt", b"tEXt", b"zTXt") and length >= len(_XMP_KEYWORD):
            data = _exact(fh, length)
            (crc,) = struct.unpack(">I", _exact(fh, 4))
            if data.startswith(_XMP_KEYWORD):
                if zlib.crc32(data, zlib.crc32(ctype)) != crc:
                    raise SlotError(f"corrupt {ctype.decode()} chunk {png.XMP_KEY} (CRC mismatch)")
                try:
                    found.append(png.parse_text(ctype, data)[1])
                except (ValueError, IndexError) as e:  # inflates too far; an iTXt cut short after its keyword
                    raise SlotError(f"unreadable {ctype.decode()} chunk {png.XMP_KEY} ({e or 'too short'})") from e
    return found


def _tiff(fh: BinaryIO) -> bytes | None:
    fh.seek(0)
    head = fh.read(16)
    order = "<" if head[:2] == b"II" else ">"
    bigtiff = struct.unpack(order + "H", head[2:4])[0] == 43
    if len(head) < (16 if bigtiff else 8):
        raise SlotError("file ends inside the TIFF header")
    (first,) = struct.unpack(order + "Q", head[8:16]) if bigtiff else struct.unpack(order + "I", head[4:8])
    ifd, _ = T.read_ifd(T.file_reader(fh), first, order, bigtiff, wanted={_XMP_TAG}, follow=())
    entry = ifd.entries.get(_XMP_TAG)
    if entry is None:
        return None
    # the bytes as stored, whatever type the writer gave the tag (see tiff_read._raw)
    return entry.data if order == "<" else T.swap_order(entry.type, entry.data)


def _webp(fh: BinaryIO) -> list[bytes]:
    """`XMP ` chunks of the RIFF container, within the size its header gives."""
    fh.seek(4)
    (riff_size,) = struct.unpack("<I", _exact(fh, 4))
    end, pos = 8 + riff_size, 12
    fh.seek(pos)
    found = []
    while pos + 8 <= end:
        fourcc, size = struct.unpack("<4sI", _exact(fh, 8))
        if fourcc == b"XMP ":
            found.append(_exact(fh, size))
            fh.seek(size % 2, 1)
        else:
            fh.seek(size + size % 2, 1)
        pos += 8 + size + size % 2
    return found
