"""A JPEG whose EXIF gives X/YResolution and ResolutionUnit in an integer type (gThumb writes SLONG) beside JFIF's
1:1 without unit: its 72 dpi are read, as ExifTool and exiv2 read them, and written back as RATIONAL."""

import io
import struct

import numpy as np
from PIL import Image

import oldphoto.io as oio
from oldphoto.io import tiff_ifd as T


def _slong_exif() -> bytes:
    entries = [(0x011A, 9, 72), (0x011B, 9, 72), (0x0128, 9, 2)]  # XResolution, YResolution, ResolutionUnit: SLONG
    body = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        body += struct.pack("<HHIi", tag, typ, 1, value)
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0)


def _jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, "JPEG", exif=b"Exif\x00\x00" + _slong_exif())
    path = tmp_path / "slong.jpg"
    path.write_bytes(buf.getvalue())
    return path


def test_integer_typed_exif_resolution_is_read(tmp_path):
    _, meta = oio.read_metadata(_jpeg(tmp_path))
    assert meta.dpi == (72.0, 72.0)


def test_integer_typed_exif_resolution_written_as_rational(tmp_path):
    pic = oio.read(_jpeg(tmp_path), 10**6)
    out = tmp_path / "out.tif"
    oio.write(out, pic.pixels, None, "TIFF", pic.meta)
    with Image.open(out) as im:
        ifd = im.tag_v2
        assert ifd[0x011A] == 72 and ifd[0x011B] == 72 and ifd[0x0128] == 2
        assert im.tag_v2.tagtype[0x011A] == T.RATIONAL
