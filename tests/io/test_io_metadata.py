"""EXIF, ICC, XMP, IPTC, DPI, TIFF tags and PNG text survive read -> write -> read, within and across formats."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import piexif
import pytest
import tifffile
from PIL import Image, ImageOps, PngImagePlugin

from io_samples import (IPTC, SRGB_ICC, XMP, ascii_, gradient, long_, rational, rich_exif, short,
                        tiff_structure, undefined)
import oldphoto
from oldphoto import __version__
from oldphoto.io import Metadata, png, read, upright, write
from oldphoto.io import tiff_ifd as T
from oldphoto.io.metadata import aspect_from_tags

FORMATS = ["JPEG", "PNG", "TIFF", "WEBP"]
EXT = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp"}
SOFTWARE = f"oldphoto {__version__}"


def _roundtrip(tmp_path, meta, fmt, name="out", px=None):
    px = gradient(24, 36, 3, np.uint8) if px is None else px
    path = tmp_path / f"{name}.{EXT[fmt]}"
    notes = write(path, px, None, fmt, meta)
    return read(path, max_pixels=10_000), notes, path


def _check_exif(blob: bytes, width: int, height: int, sized: bool = True) -> None:
    # piexif parses independently of oldphoto; tags it does not know are checked raw. sized: the Exif directory gives
    # the image's size (PixelX/YDimension), which a TIFF's leaves to ImageWidth/Length (EXIF; ExifTool's -validate)
    d = piexif.load(b"Exif\0\0" + blob)
    assert d["0th"][piexif.ImageIFD.Orientation] == 1
    assert d["0th"][piexif.ImageIFD.Software] == SOFTWARE.encode()
    assert d["0th"][piexif.ImageIFD.Make] == b"Epson"
    assert d["0th"][piexif.ImageIFD.Artist] == b"Jane Doe"
    assert d["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"1952:07:14 15:30:00"
    assert d["Exif"][piexif.ExifIFD.ExposureTime] == (1, 125)
    assert d["Exif"][piexif.ExifIFD.OffsetTime] == b"+01:00"
    assert d["Exif"][piexif.ExifIFD.ExifVersion] == b"0232"
    size = (d["Exif"].get(piexif.ExifIFD.PixelXDimension), d["Exif"].get(piexif.ExifIFD.PixelYDimension))
    assert size == ((width, height) if sized else (None, None))
    assert d["GPS"][piexif.GPSIFD.GPSLatitude] == ((45, 1), (45, 1), (1234, 100))
    assert d["GPS"][piexif.GPSIFD.GPSLongitudeRef] == b"E"
    assert d["GPS"][piexif.GPSIFD.GPSVersionID] == (2, 3, 0, 0)
    ifd0, _, _ = T.parse_exif(blob)
    assert ifd0.children[T.EXIF_IFD].entries[42080].data == b"\x00\x01"  # CompositeImage: piexif drops it
    assert ifd0.entries[285].text() == "Album 3, page 12"  # PageName: piexif drops it too


@pytest.mark.parametrize("fmt", FORMATS)
def test_everything_survives_the_same_format(tmp_path, rich_meta, fmt):
    pic, notes, _ = _roundtrip(tmp_path, rich_meta, fmt)
    m = pic.meta
    assert m.icc == SRGB_ICC
    assert m.xmp == XMP
    assert m.dpi == pytest.approx((600.0, 600.0), abs=1e-6)
    _check_exif(m.exif, 36, 24, sized=fmt != "TIFF")
    assert m.tiff_tags[270] == "Grandmother at the bakery, 1952"
    assert m.tiff_tags[269] == "Box 4" and m.tiff_tags[316] == "scanner-pc"
    assert m.tiff_tags[33432] == "(c) City Museum" and m.tiff_tags[306] == "2019:03:02 10:11:12"
    assert m.tiff_tags[305] == SOFTWARE
    if fmt == "WEBP":
        assert m.iptc is None and any("IPTC" in n for n in notes)
    else:
        assert m.iptc == IPTC
        assert notes == []
    again, _, _ = _roundtrip(tmp_path, m, fmt, name="again")  # a second generation changes nothing
    assert (again.meta.exif, again.meta.icc, again.meta.xmp, again.meta.iptc, again.meta.tiff_tags) == \
        (m.exif, m.icc, m.xmp, m.iptc, m.tiff_tags)


@pytest.mark.parametrize("src", FORMATS)
@pytest.mark.parametrize("dst", FORMATS)
def test_metadata_is_carried_across_formats(tmp_path, rich_meta, src, dst):
    first, _, _ = _roundtrip(tmp_path, rich_meta, src, name="first")
    second, _, _ = _roundtrip(tmp_path, first.meta, dst, name="second")
    m = second.meta
    assert m.icc == SRGB_ICC and m.xmp == XMP
    assert m.iptc == (None if "WEBP" in (src, dst) else IPTC)
    _check_exif(m.exif, 36, 24, sized=dst == "JPEG" or "TIFF" not in (src, dst))  # a JPEG's are made again
    assert m.dpi == pytest.approx((600.0, 600.0), abs=1e-6)
    assert {t: m.tiff_tags[t] for t in (269, 270, 271, 315, 316)} == {
        269: "Box 4", 270: "Grandmother at the bakery, 1952", 271: "Epson", 315: "Jane Doe", 316: "scanner-pc"}


def test_tiff_output_has_real_exif_gps_and_tiff_tags(tmp_path, rich_meta):
    _, _, path = _roundtrip(tmp_path, rich_meta, "TIFF")
    with tifffile.TiffFile(path) as t:
        tags = t.pages[0].tags
        assert tags["ImageDescription"].value == "Grandmother at the bakery, 1952"
        assert tags["Software"].value == SOFTWARE
        assert tags["InterColorProfile"].value == SRGB_ICC
        assert bytes(tags["XMP"].value) == XMP
        assert tags["ExifTag"].value["DateTimeOriginal"] == "1952:07:14 15:30:00"
        assert tags["GPSTag"].value["GPSLatitudeRef"] == "N"
        assert tags["XResolution"].value == (600, 1) and int(tags["ResolutionUnit"].value) == 2
    exif = Image.open(path).getexif()  # Pillow reads the same sub-directories
    assert exif.get_ifd(0x8769)[36867] == "1952:07:14 15:30:00"


def _be_tiff(path, px: np.ndarray) -> None:
    """Big-endian 16-bit RGB TIFF with EXIF, GPS, ICC, XMP, IPTC stored as LONG, resolution in cm."""
    h, w, _ = px.shape
    iptc = IPTC + b"\0" * (-len(IPTC) % 4)
    ifd0 = [long_(256, w), long_(257, h), short(258, 16, 16, 16), short(259, 1), short(262, 2), short(277, 3),
            long_(278, h), short(284, 1), ascii_(270, "Portrait, Lyon"), ascii_(271, "Epson"),
            ascii_(315, "Jane Doe"), ascii_(285, "Album 3, page 12"), rational(282, (2362, 10)),
            rational(283, (2362, 10)), short(296, 3), undefined(34675, SRGB_ICC), (700, 1, len(XMP), XMP),
            (33723, 4, len(iptc) // 4, struct.unpack(f">{len(iptc) // 4}I", iptc)), short(274, 6)]
    exif = [ascii_(36867, "1952:07:14 15:30:00"), rational(33434, (1, 125)), undefined(42080, b"\x00\x01")]
    gps = [ascii_(1, "N"), rational(2, (45, 1), (45, 1), (1234, 100))]
    path.write_bytes(tiff_structure(">", ifd0, exif, gps, strip=px.astype(">u2").tobytes()))


def test_big_endian_tiff_input(tmp_path):
    px = gradient(10, 14, 3, np.uint16)
    _be_tiff(tmp_path / "be.tif", px)
    pic = read(tmp_path / "be.tif", 10_000)
    np.testing.assert_array_equal(pic.pixels, np.rot90(px, -1))  # orientation 6
    m = pic.meta
    assert m.icc == SRGB_ICC and m.xmp == XMP
    assert m.iptc == IPTC  # the records as stored, not scrambled by the LONG type, without the NULs padding them
    assert m.tiff_tags[282] == (2362, 10) and m.tiff_tags[296] == 3
    assert m.dpi == pytest.approx((236.2 * 2.54,) * 2)
    d = piexif.load(b"Exif\0\0" + m.exif)
    assert d["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"1952:07:14 15:30:00"
    assert d["GPS"][piexif.GPSIFD.GPSLatitude] == ((45, 1), (45, 1), (1234, 100))
    assert m.exif[:2] == b"MM"  # kept in the source's byte order
    write(tmp_path / "o.tif", pic.pixels, None, "TIFF", m)
    with tifffile.TiffFile(tmp_path / "o.tif") as t:  # resolution kept exactly, in its unit
        tags = t.pages[0].tags
        assert tags["XResolution"].value == (2362, 10) and int(tags["ResolutionUnit"].value) == 3
        assert "Orientation" not in tags or tags["Orientation"].value == 1
        assert tags["ExifTag"].value["DateTimeOriginal"] == "1952:07:14 15:30:00"
    back = read(tmp_path / "o.tif", 10_000)
    assert back.orientation == 1
    np.testing.assert_array_equal(back.pixels, pic.pixels)
    assert T.parse_exif(back.meta.exif)[0].children[T.EXIF_IFD].entries[42080].data == b"\x00\x01"


def test_jpeg_orientation_6_comes_back_upright_and_is_written_as_1(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :20] = (250, 10, 10)  # red block top-left as stored
    Image.fromarray(stored).save(tmp_path / "o6.jpg", quality=100, subsampling=0, exif=b"Exif\0\0" + rich_exif(
        orientation=6))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o6.jpg")))  # what viewers display
    pic = read(tmp_path / "o6.jpg", 10_000)
    assert pic.orientation == 6 and pic.pixels.shape == (60, 40, 3)
    np.testing.assert_array_equal(pic.pixels, shown)
    assert pic.pixels[:10, -10:, 0].min() > 200  # rotated clockwise: the block is now top-right
    write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta, jpeg_quality=100)
    assert piexif.load(str(tmp_path / "out.jpg"))["0th"][piexif.ImageIFD.Orientation] == 1
    out = Image.open(tmp_path / "out.jpg")
    redisplayed = np.asarray(ImageOps.exif_transpose(out))
    assert redisplayed.shape == shown.shape
    assert np.abs(redisplayed.astype(int) - shown.astype(int)).mean() < 2  # displays the same


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("entry", [(274, 3, 0, b""), ascii_(274, "6"), rational(274, (6, 1))],
                         ids=["no-value", "ascii", "rational"])
def test_damaged_orientation_tag_is_ignored_with_a_note(tmp_path, fmt, entry):
    # an Orientation with no value or of a non-integer type made the file unreadable ("tuple index out of range")
    px = gradient(6, 9, 3, np.uint8)
    path = tmp_path / f"o.{EXT[fmt]}"
    if fmt == "TIFF":
        strip_tags = [short(256, 9), short(257, 6), short(258, 8, 8, 8), short(259, 1), short(262, 2),
                      short(277, 3), short(278, 6)]
        path.write_bytes(tiff_structure("<", strip_tags + [entry], strip=px.tobytes()))
    else:
        exif = tiff_structure("<", [ascii_(271, "Epson"), entry], EXIF_SUB_DATE)
        Image.fromarray(px).save(path, fmt, exif=b"Exif\0\0" + exif, **({"quality": 100} if fmt == "JPEG" else {}))
    pic = read(path, 10_000)
    assert pic.orientation == 1 and pic.pixels.shape == (6, 9, 3)
    assert any(n.startswith("invalid orientation") for n in pic.notes)
    if fmt != "TIFF":
        assert pic.meta.tiff_tags[271] == "Epson"  # the rest of the EXIF block is kept
        write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta)
        assert piexif.load(str(tmp_path / "out.jpg"))["0th"][piexif.ImageIFD.Orientation] == 1


EXIF_SUB_DATE = [ascii_(36867, "1952:07:14 15:30:00")]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_matches_pillow_for_every_orientation(orientation):
    a = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[274] = orientation
    im.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(upright(a, orientation), want)


def test_exif_thumbnail_is_dropped_with_a_note(tmp_path):
    thumb = Image.new("RGB", (8, 8), "white")
    buf = io.BytesIO()
    thumb.save(buf, "JPEG")
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Epson"}, "1st": {piexif.ImageIFD.Compression: 6},
                        "thumbnail": buf.getvalue()})
    notes = write(tmp_path / "t.jpg", gradient(8, 8, 3, np.uint8), None, "JPEG", Metadata(exif=exif[6:]))
    assert any("thumbnail dropped" in n for n in notes)
    assert piexif.load(str(tmp_path / "t.jpg"))["thumbnail"] is None


def test_changed_dpi_replaces_the_source_resolution(tmp_path, rich_meta):
    rich_meta.tiff_tags.update({282: (600, 1), 283: (600, 1), 296: 2})
    rich_meta.dpi = (1200.0, 1200.0)  # e.g. after a 2x upscale of the same print
    for fmt in FORMATS:
        pic, _, _ = _roundtrip(tmp_path, rich_meta, fmt)
        assert pic.meta.dpi == pytest.approx((1200.0, 1200.0))
        assert pic.meta.tiff_tags[282] == (1200, 1)


def _resolution(meta):
    return {t: v for t, v in meta.tiff_tags.items() if t in (282, 283, 296)}


def _jfif(path) -> tuple[int, int, int]:
    """(unit, x density, y density) of a JPEG's JFIF header."""
    data = path.read_bytes()
    i = data.index(b"JFIF\0")
    return struct.unpack(">BHH", data[i + 7 : i + 12])


def test_jpeg_without_resolution_gets_none(tmp_path):
    # Pillow's info["dpi"] says 72 for EXIF without resolution tags and for malformed EXIF
    for name, exif in (("tags", piexif.dump({"0th": {piexif.ImageIFD.Artist: b"A"}})), ("bad", b"Exif\0\0MM\0*xx")):
        Image.fromarray(gradient(8, 8, 3, np.uint8)).save(tmp_path / f"{name}.jpg", exif=exif)
        pic = read(tmp_path / f"{name}.jpg", 100)
        assert pic.meta.dpi is None
        write(tmp_path / f"{name}_out.jpg", pic.pixels, None, "JPEG", pic.meta)
        out = read(tmp_path / f"{name}_out.jpg", 100)
        assert out.meta.dpi is None and _resolution(out.meta) == {}
        assert _jfif(tmp_path / f"{name}_out.jpg")[0] == 0  # no unit: aspect ratio only


@pytest.mark.parametrize("fmt", FORMATS)
def test_anisotropic_exif_resolution_survives(tmp_path, fmt):
    tags = {282: (300, 1), 283: (150, 1), 296: 2}
    exif = piexif.dump({"0th": {piexif.ImageIFD.XResolution: (300, 1), piexif.ImageIFD.YResolution: (150, 1),
                                piexif.ImageIFD.ResolutionUnit: 2}})
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(tmp_path / f"src.{EXT[fmt]}", exif=exif)
    pic = read(tmp_path / f"src.{EXT[fmt]}", 100)
    assert pic.meta.dpi == (300.0, 150.0) and _resolution(pic.meta) == tags
    out, _, path = _roundtrip(tmp_path, pic.meta, fmt)
    assert out.meta.dpi == pytest.approx((300.0, 150.0)) and _resolution(out.meta) == tags
    if fmt == "JPEG":
        assert _jfif(path) == (1, 300, 150)


def test_jfif_density_with_a_unit_is_used(tmp_path):
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(tmp_path / "cm.jpg", dpi=(118, 59))
    data = bytearray((tmp_path / "cm.jpg").read_bytes())
    data[data.index(b"JFIF\0") + 7] = 2  # dots per cm
    (tmp_path / "cm.jpg").write_bytes(bytes(data))
    assert read(tmp_path / "cm.jpg", 100).meta.dpi == pytest.approx((118 * 2.54, 59 * 2.54))
    # EXIF agreeing with JFIF gives its exact value; disagreeing EXIF (stale after an edit) loses to JFIF
    for x, want in (((3001, 10), (300.1, 300.1)), ((72, 1), (300.0, 300.0))):
        exif = piexif.dump({"0th": {piexif.ImageIFD.XResolution: x, piexif.ImageIFD.YResolution: x}})
        Image.fromarray(gradient(8, 8, 3, np.uint8)).save(tmp_path / "e.jpg", dpi=(300, 300), exif=exif)
        assert read(tmp_path / "e.jpg", 100).meta.dpi == pytest.approx(want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_resolution_without_a_unit_keeps_the_aspect_ratio(tmp_path, fmt):
    # ResolutionUnit 1: X/YResolution only give the pixel aspect ratio, so there is no dpi, but they are kept
    tifffile.imwrite(tmp_path / "src.tif", gradient(8, 8, 3, np.uint8), resolution=((4, 1), (3, 1)),
                     resolutionunit=1)
    pic = read(tmp_path / "src.tif", 100)
    assert pic.meta.dpi is None and _resolution(pic.meta) == {282: (4, 1), 283: (3, 1), 296: 1}
    assert pic.meta.aspect == (4, 3)
    out, notes, path = _roundtrip(tmp_path, pic.meta, fmt)
    assert out.meta.dpi is None and _resolution(out.meta) == {282: (4, 1), 283: (3, 1), 296: 1}
    assert out.meta.aspect == (4, 3) and notes == []
    _check_aspect_field(path, fmt, (4, 3))


def _phys(path) -> tuple[int, int, int]:
    return struct.unpack(">IIB", path.read_bytes().split(b"pHYs", 1)[1][:9])


def _check_aspect_field(path, fmt: str, aspect: tuple[int, int]) -> None:
    """The format's own field says the aspect ratio without a unit (TIFF and WebP: the tags checked apart)."""
    if fmt == "PNG":
        assert _phys(path) == (*aspect, 0)
    elif fmt == "JPEG":
        assert _jfif(path) == (0, *aspect)


@pytest.mark.parametrize("fmt", FORMATS)
def test_png_phys_without_a_unit_is_carried(tmp_path, fmt):
    # pHYs unit 0 gives the pixel aspect ratio only; it was dropped silently
    px = gradient(8, 8, 3, np.uint8)
    buf = io.BytesIO()
    png.write_png(buf, px, None, [png.chunk(b"pHYs", struct.pack(">IIB", 3, 2, 0))])
    (tmp_path / "src.png").write_bytes(buf.getvalue())
    pic = read(tmp_path / "src.png", 100)
    assert pic.meta.dpi is None and pic.meta.aspect == (3, 2)
    out, notes, path = _roundtrip(tmp_path, pic.meta, fmt, px=px)
    assert notes == [] and out.meta.dpi is None and out.meta.aspect == (3, 2)
    assert _resolution(out.meta) == {282: (3, 1), 283: (2, 1), 296: 1}  # EXIF (TIFF: IFD0) says it too
    _check_aspect_field(path, fmt, (3, 2))


@pytest.mark.parametrize("fmt", FORMATS)
def test_jfif_density_without_a_unit_is_carried(tmp_path, fmt):
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(tmp_path / "src.jpg", dpi=(5, 4))
    data = bytearray((tmp_path / "src.jpg").read_bytes())
    data[data.index(b"JFIF\0") + 7] = 0  # units 0: aspect ratio only
    (tmp_path / "src.jpg").write_bytes(bytes(data))
    pic = read(tmp_path / "src.jpg", 100)
    assert pic.meta.dpi is None and pic.meta.aspect == (5, 4)
    out, notes, path = _roundtrip(tmp_path, pic.meta, fmt)
    assert notes == [] and out.meta.aspect == (5, 4)
    _check_aspect_field(path, fmt, (5, 4))
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(tmp_path / "plain.jpg")  # 0, 1:1 as every encoder writes
    assert _jfif(tmp_path / "plain.jpg") == (0, 1, 1) and read(tmp_path / "plain.jpg", 100).meta.aspect is None


def test_aspect_from_tags_keeps_whole_values_else_their_ratio():
    assert aspect_from_tags({282: (72, 1), 283: (72, 1), 296: 1}) == (72, 72)
    assert aspect_from_tags({282: (145, 2), 283: (72, 1), 296: 1}) == (145, 144)
    for tags in ({282: (4, 1), 283: (3, 1), 296: 2}, {282: (4, 1), 283: (3, 1)}, {282: (0, 1), 283: (3, 1), 296: 1}):
        assert aspect_from_tags(tags) is None  # a unit (inch by default): dpi; a zero: nothing


def test_aspect_ratio_beyond_jfif_is_reduced_or_noted(tmp_path):
    _, notes, path = _roundtrip(tmp_path, Metadata(aspect=(140000, 70000)), "JPEG", name="even")
    assert notes == [] and _jfif(path) == (0, 2, 1)  # the same ratio in 16 bits
    out, notes, path = _roundtrip(tmp_path, Metadata(aspect=(70001, 3)), "JPEG", name="odd")
    assert notes == ["pixel aspect ratio 70001:3 not written to JFIF: more than 65535 (EXIF keeps it)"]
    assert _jfif(path) == (0, 1, 1) and out.meta.aspect == (70001, 3)
    _, notes, path = _roundtrip(tmp_path, Metadata(aspect=(2**33, 3)), "PNG", name="huge")
    assert "pixel aspect ratio 8589934592:3 not written to pHYs: more than 4294967295" in notes
    assert b"pHYs" not in path.read_bytes()


def test_resolution_beyond_png_phys_is_noted_and_kept_in_exif(tmp_path):
    # a TIFF at 4294967295 dpi (damaged or synthetic) made the PNG writer fail in struct.pack (a traceback)
    tifffile.imwrite(tmp_path / "s.tif", gradient(5, 7, 1, np.uint8), resolution=((2**32 - 1, 1), (2**32 - 1, 1)),
                     resolutionunit=2)
    src = read(tmp_path / "s.tif", 10_000)
    pic, notes, path = _roundtrip(tmp_path, src.meta, "PNG", px=src.pixels)
    assert notes == ["resolution 4.29497e+09 x 4.29497e+09 dpi not written to pHYs: more than 4294967295 pixels "
                     "per metre (EXIF keeps it)"]
    assert b"pHYs" not in path.read_bytes()
    assert pic.meta.dpi == (2**32 - 1, 2**32 - 1)  # from EXIF X/YResolution
    _, notes, _ = _roundtrip(tmp_path, Metadata(dpi=(1200.0, 1200.0)), "PNG", name="fits")
    assert notes == []


def test_a_png_whose_exif_resolution_is_beyond_phys_is_read_at_its_phys_resolution(tmp_path):
    # a PNG with pHYs and an EXIF resolution pHYs cannot hold (damaged, or another tool's): comparing the two
    # packed the EXIF one into a pHYs chunk, whose ValueError failed the read of a photo whose pixels are fine
    exif = tiff_structure("<", [rational(282, (2**32 - 1, 1)), rational(283, (300, 1)), short(296, 2)])
    buf = io.BytesIO()
    png.write_png(buf, gradient(5, 7, 3, np.uint8), None, [png.phys_chunk((300.0, 300.0)), png.chunk(b"eXIf", exif)])
    (tmp_path / "s.png").write_bytes(buf.getvalue())
    pic = read(tmp_path / "s.png", 10_000)
    assert pic.meta.dpi == pytest.approx((300.0, 300.0), abs=0.01)


def _png_chunk_names(path) -> list[str]:
    data, pos, names = Path(path).read_bytes(), 8, []
    while pos < len(data):
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        names.append(data[pos + 4:pos + 8].decode("latin-1"))
        pos += 12 + size
    return names


def test_png_gama_chrm_kept_beside_iccp_srgb_not(tmp_path):
    # PNG 11.3.3.4: gAMA and cHRM beside an iCCP are the fallback of readers without colour management (encoders
    # are encouraged to write them); only sRGB and iCCP must not both be present
    gama, chrm = struct.pack(">I", 45455), struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    meta = Metadata(icc=SRGB_ICC, png_chunks={"gAMA": gama, "cHRM": chrm})
    pic, notes, path = _roundtrip(tmp_path, meta, "PNG", px=gradient(24, 36, 3, np.uint16))
    names = _png_chunk_names(path)
    assert {"iCCP", "gAMA", "cHRM"} <= set(names) and "sRGB" not in names, names
    assert max(names.index(n) for n in ("iCCP", "gAMA", "cHRM")) < names.index("IDAT")
    assert pic.meta.icc == SRGB_ICC and pic.meta.png_chunks == {"gAMA": gama, "cHRM": chrm} and notes == []
    both = Metadata(icc=SRGB_ICC, png_chunks={"sRGB": b"\0", "gAMA": gama})  # a master with both (invalid)
    pic, notes, path = _roundtrip(tmp_path, both, "PNG", name="both")
    assert "sRGB" not in _png_chunk_names(path) and pic.meta.png_chunks == {"gAMA": gama}
    assert any(n.startswith("PNG sRGB chunk not written") for n in notes), notes


def test_png_text_and_colour_chunks(tmp_path):
    meta = Metadata(text={"Title": "Picnic", "Author": "Jane Doe", "Comment": "Ünïcode ok"},
                    png_chunks={"gAMA": struct.pack(">I", 45455)})
    pic, notes, path = _roundtrip(tmp_path, meta, "PNG")
    assert notes == [] and pic.meta.text == meta.text and pic.meta.png_chunks == meta.png_chunks
    assert Image.open(path).info["Title"] == "Picnic"  # standard chunks other readers see
    tif, notes, _ = _roundtrip(tmp_path, pic.meta, "TIFF")
    assert tif.meta.tiff_tags[315] == "Jane Doe"  # Author has a TIFF home: Artist
    assert any("Comment, Title" in n for n in notes) and any("gAMA" in n for n in notes)
    jpg, notes, _ = _roundtrip(tmp_path, pic.meta, "JPEG")
    assert jpg.meta.text == {"Comment": "Ünïcode ok"}  # COM marker
    assert jpg.meta.tiff_tags[315] == "Jane Doe"  # Author in EXIF, so not listed as left out
    assert any(n.endswith("text field(s) Title not written: JPEG has no place for them") for n in notes), notes


def test_png_text_with_a_keyword_png_cannot_hold_is_noted_not_fatal(tmp_path):
    # readers accept a tEXt keyword of any length; writing it back raised ValueError (a traceback, no note)
    buf = io.BytesIO()
    Image.fromarray(gradient(5, 7, 3, np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    body = b"K" * 90 + b"\0too long"
    text = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    (tmp_path / "src.png").write_bytes(data[:33] + text + data[33:])
    pic = read(tmp_path / "src.png", 10_000)
    assert pic.meta.text == {"K" * 90: "too long"}
    pic.meta.text["Title"] = "Picnic"
    notes = write(tmp_path / "out.png", pic.pixels, None, "PNG", pic.meta)
    assert notes == [f"text field(s) {'K' * 90!r} not written: a PNG keyword is 1-79 Latin-1 characters"]
    assert Image.open(tmp_path / "out.png").info["Title"] == "Picnic"  # the other fields are written


def test_png_comment_too_long_for_a_jpeg_segment_is_noted_not_fatal(tmp_path):
    # a PNG "Comment" of 70 kB made Pillow raise ValueError("Comment is too long") while writing the JPEG
    meta = Metadata(text={"Comment": "c" * 70_000}, tiff_tags={270: "Picnic"})
    png_pic, _, _ = _roundtrip(tmp_path, meta, "PNG")
    jpg, notes, _ = _roundtrip(tmp_path, png_pic.meta, "JPEG")
    assert notes == ["comment of 70000 bytes not written: larger than one JPEG segment"]
    assert jpg.meta.text == {} and jpg.meta.tiff_tags[270] == "Picnic"
    _, notes, _ = _roundtrip(tmp_path, Metadata(text={"Comment": "c" * 65_533}), "JPEG", name="fits")
    assert notes == []


def _with_segments(data: bytes, segments: bytes, after: bytes = b"") -> bytes:
    """A JPEG `data` with marker segments put right after SOI, and bytes after its end."""
    return data[:2] + segments + data[2:] + after


def _segment(code: int, payload: bytes) -> bytes:
    return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload


def test_every_jpeg_comment_is_kept(tmp_path):
    # Pillow's info["comment"] is the last COM segment: the one before it was lost without a word
    buf = io.BytesIO()
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(buf, "JPEG")
    src = tmp_path / "scan.jpg"
    src.write_bytes(_with_segments(buf.getvalue(), _segment(0xFE, "Scanned by Ørsted".encode("latin-1"))
                                   + _segment(0xFE, b"Box 4, album 2")))
    pic = read(src, 10_000)
    assert pic.meta.text == {"Comment": "Scanned by Ørsted\nBox 4, album 2"}
    assert pic.notes == ["2 JPEG comments joined into one, a line break between them"]


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def test_repeated_png_text_keywords_are_joined_and_a_second_xmp_packet_noted(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(gradient(5, 7, 3, np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    extra = (_png_chunk(b"tEXt", b"Comment\0first") + _png_chunk(b"iTXt", "Comment\0\0\0\0\0zweite Öse".encode())
             + _png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + XMP)
             + _png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x/>"))
    (tmp_path / "src.png").write_bytes(data[:33] + extra + data[33:])
    pic = read(tmp_path / "src.png", 10_000)
    assert pic.meta.text == {"Comment": "first\nzweite Öse"} and pic.meta.xmp == XMP
    assert sorted(pic.notes) == ["2 PNG text chunks 'Comment' joined into one, a line break between them",
                                 "2 PNG text chunks 'XML:com.adobe.xmp': only the first is kept"]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def test_png_text_compressed_in_the_source_stays_compressed(tmp_path):
    # a 50 MB zTXt in a small PNG was written back as tEXt, making a 50 MB derivative: each text keeps the compression
    # its chunk had (zTXt, or iTXt with the compression flag), an uncompressed one stays uncompressed
    buf = io.BytesIO()
    Image.fromarray(gradient(5, 7, 3, np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    long_text = "scan log line\n" * 4_000_000  # 56 MB
    extra = (_png_chunk(b"zTXt", b"Log\0\0" + zlib.compress(long_text.encode()))
             + _png_chunk(b"iTXt", b"Title\0\1\0\0\0" + zlib.compress("Öl auf Leinwand ✓".encode()))
             + _png_chunk(b"tEXt", b"Notes\0" + b"A" * 2_000_000))  # plain: Pillow reads it; compressed it could not
    (tmp_path / "src.png").write_bytes(data[:33] + extra + data[33:])
    pic = read(tmp_path / "src.png", 10_000)
    assert pic.meta.text["Log"] == long_text and pic.meta.compressed_text == {"Log": len(long_text),
                                                                             "Title": len("Öl auf Leinwand ✓".encode())}
    out = tmp_path / "out.png"
    assert write(out, pic.pixels, None, "PNG", pic.meta) == []
    assert out.stat().st_size < 1_000_000 + 2_000_000  # not 56 MB: the 2 MB tEXt stays plain
    kinds = {body.split(b"\0", 1)[0]: (ctype, body) for ctype, body in _png_chunks(out.read_bytes())
             if ctype in (b"tEXt", b"zTXt", b"iTXt")}
    assert kinds[b"Log"][0] == b"zTXt" and kinds[b"Notes"][0] == b"tEXt"
    assert kinds[b"Title"][0] == b"iTXt" and kinds[b"Title"][1][len(b"Title\0") :].startswith(b"\1\0")
    back = read(out, 10_000)
    assert back.meta.text == pic.meta.text and back.meta.compressed_text == pic.meta.compressed_text
    for path in (tmp_path / "src.png", out):  # Pillow's 1 MiB per compressed text: the copy is read as the source is
        with pytest.raises(ValueError, match="MAX_TEXT_CHUNK"):
            Image.open(path)
    small = Metadata(text={"Log": "short"}, compressed_text={"Log": 5})
    write(out, pic.pixels, None, "PNG", small)
    with Image.open(out) as im:
        assert im.text["Log"] == "short"


def test_png_texts_joined_past_pillows_limit_are_written_uncompressed(tmp_path):
    # two zTXt of one keyword, each under Pillow's 1 MiB, joined: compressed, the one text would make Pillow refuse the
    # derivative of a source it reads, so it is written plain
    meta = Metadata(text={"Comment": "x" * 700_000 + "\n" + "y" * 700_000}, compressed_text={"Comment": 700_000})
    path = tmp_path / "joined.png"
    write(path, gradient(5, 7, 3, np.uint8), None, "PNG", meta)
    assert [c for c, _ in _png_chunks(path.read_bytes()) if c in (b"tEXt", b"zTXt", b"iTXt")] == [b"tEXt"]
    with Image.open(path) as im:
        assert len(im.text["Comment"]) == 1_400_001


def test_a_text_compressed_past_pillows_limit_stays_compressed_when_joined(tmp_path):
    # a 2 MB zTXt and a short tEXt of one keyword, joined: the source's compressed chunk was past Pillow's 1 MiB
    # already (Pillow refused the source), so the joined text is written compressed, not as a 2 MB tEXt
    meta = Metadata(text={"Log": "x" * 2_000_000 + "\nlast line"}, compressed_text={"Log": 2_000_000})
    path = tmp_path / "joined.png"
    write(path, gradient(5, 7, 3, np.uint8), None, "PNG", meta)
    assert [c for c, _ in _png_chunks(path.read_bytes()) if c in (b"tEXt", b"zTXt", b"iTXt")] == [b"zTXt"]
    assert path.stat().st_size < 100_000 and read(path, 10_000).meta.text == meta.text


def test_further_pictures_of_an_mpf_jpeg_are_noted(tmp_path):
    # a camera or a scanner's software may append previews (Multi-Picture Format, APP2 "MPF"): only the first
    # image, the photo, is read
    first, second = io.BytesIO(), io.BytesIO()
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(first, "JPEG")
    Image.new("RGB", (4, 4)).save(second, "JPEG")
    index = (b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0xB001, 4, 1, 2) + struct.pack("<I", 0))
    src = tmp_path / "mpf.jpg"
    src.write_bytes(_with_segments(first.getvalue(), _segment(0xE2, b"MPF\0" + index), second.getvalue()))
    pic = read(src, 10_000)
    assert pic.notes == ["1 more image(s) of this multi-picture (MPF) JPEG not carried: only the first, the photo, "
                         "is read"]


def test_damaged_jpeg_exif_prints_nothing(tmp_path):
    # a fresh interpreter, where Python would print Pillow's "Corrupt EXIF data" warning to stderr (past --quiet)
    path = tmp_path / "x.jpg"
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(path, exif=b"Exif\0\0II*\0\xff\xff\xff\x7f" + bytes(20))
    code = f"from oldphoto.io import read; print(read({str(path)!r}, 100).notes)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(oldphoto.__file__).parents[1], capture_output=True,
                          text=True, timeout=60, check=True)
    assert "EXIF block is malformed" in done.stdout and done.stderr == ""


def test_malformed_exif_is_reported_not_fatal(tmp_path):
    path = tmp_path / "x.png"
    write(path, gradient(8, 8, 3, np.uint8), None, "PNG", None)
    data = path.read_bytes()
    bad = b"XX*\0garbage"
    chunk = struct.pack(">I", len(bad)) + b"eXIf" + bad + struct.pack(">I", zlib.crc32(b"eXIf" + bad))
    pos = data.index(b"eXIf") - 4
    (length,) = struct.unpack(">I", data[pos : pos + 4])
    path.write_bytes(data[:pos] + chunk + data[pos + 12 + length :])
    pic = read(path, 10_000)
    assert pic.meta.exif is None
    assert any("EXIF block is malformed" in n for n in pic.notes)


def test_icc_profile_must_match_the_pixels(tmp_path):
    gray_icc = b"\0" * 16 + b"GRAY" + b"\0" * 108  # header is all the writer looks at
    notes = write(tmp_path / "rgb.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(icc=gray_icc))
    assert any("ICC profile (GRAY) dropped" in n for n in notes)
    assert read(tmp_path / "rgb.png", 100).meta.icc is None
    for fmt in ("PNG", "TIFF", "JPEG"):
        assert write(tmp_path / f"g.{EXT[fmt]}", gradient(8, 8, 1, np.uint8), None, fmt, Metadata(icc=gray_icc)) == []
        assert read(tmp_path / f"g.{EXT[fmt]}", 100).meta.icc == gray_icc
    notes = write(tmp_path / "g.webp", gradient(8, 8, 1, np.uint8), None, "WEBP", Metadata(icc=gray_icc))
    assert any("dropped" in n for n in notes)  # WebP stores gray as RGB


def test_tifffile_shape_description_is_not_carried_but_a_real_one_is(tmp_path):
    import warnings

    src, described = tmp_path / "shaped.tif", tmp_path / "described.tif"
    tifffile.imwrite(src, gradient(20, 30, 3, np.uint16), photometric="rgb")  # ImageDescription {"shape": [...]}
    with tifffile.TiffFile(src) as tf:
        assert '"shape"' in tf.pages[0].description
    tifffile.imwrite(described, gradient(20, 30, 3, np.uint16), photometric="rgb", description="Box 4, 1931",
                     metadata=None)
    assert 270 not in read(src, 10**6).meta.tiff_tags
    assert read(described, 10**6).meta.tiff_tags[270] == "Box 4, 1931"
    # a derivative of another size no longer claims the source's shape (tifffile would warn on reading it)
    pic = read(src, 10**6)
    out = tmp_path / "bigger.tif"
    write(out, np.repeat(np.repeat(pic.pixels, 2, 0), 2, 1), None, "TIFF", pic.meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tifffile.TiffFile(out) as tf:
            assert tf.asarray().shape == (40, 60, 3)


def test_a_description_that_is_deeply_nested_json_like_text_is_kept(tmp_path):
    src = tmp_path / "deep.tif"
    text = '{"shape": ' + "[" * 30000
    tifffile.imwrite(src, gradient(20, 30, 3, np.uint8), photometric="rgb", description=text, metadata=None)
    assert read(src, 10**6).meta.tiff_tags[270] == text


def _png_with_text(path, pairs) -> None:
    info = PngImagePlugin.PngInfo()
    for key, value in pairs:
        info.add_text(key, value, zip=True)
    Image.fromarray(gradient(6, 8, 3, np.uint8)).save(path, pnginfo=info)


def _raw(kind: str, data: bytes) -> str:
    # ImageMagick's layout: a line with the kind, one with the length, then hex in lines of 72 digits
    hexed = data.hex()
    return f"\n{kind}\n{len(data):8d}\n" + "\n".join(hexed[i : i + 72] for i in range(0, len(hexed), 72)) + "\n"


def test_a_damaged_raw_iptc_profile_in_a_png_is_noted_not_fatal(tmp_path):
    # the whole scan failed ("cannot read PNG: raw profile says 20 bytes but holds 3")
    damaged = "\niptc\n      20\n1c0200\n"
    _png_with_text(tmp_path / "scan.png", [("Raw profile type iptc", damaged), ("Title", "Picnic")])
    pic = read(tmp_path / "scan.png", 10_000)
    assert pic.meta.iptc is None and pic.meta.text == {"Title": "Picnic"}
    assert pic.notes == ["PNG text 'Raw profile type iptc' is damaged (raw profile says 20 bytes but holds 3) and "
                         "was not kept"]


def test_imagemagick_raw_exif_and_xmp_profiles_in_a_png_are_read_as_exif_and_xmp(tmp_path):
    # ImageMagick 6 keeps EXIF and XMP of a converted file as hex text: left as text they were carried as text, an
    # EXIF with the unrestored file's orientation and size among them, and XMP got no provenance
    exif = b"Exif\0\0" + rich_exif(orientation=6)
    _png_with_text(tmp_path / "scan.png", [("Raw profile type exif", _raw("exif", exif)),
                                           ("Raw profile type xmp", _raw("xmp", XMP))])
    pic = read(tmp_path / "scan.png", 10_000)
    assert pic.meta.text == {} and pic.meta.xmp == XMP and pic.meta.exif == exif[6:]
    assert pic.pixels.shape == (6, 8, 3)  # shown as stored: PNG readers do not see that text
    assert pic.notes == ["orientation 6 of the EXIF in a PNG raw profile text not applied: PNG readers do not see "
                         "that text"]
    write(tmp_path / "out.png", pic.pixels, None, "PNG", pic.meta)
    data = (tmp_path / "out.png").read_bytes()
    assert b"Raw profile type" not in data
    again = read(tmp_path / "out.png", 10_000).meta
    ifd0, _, _ = T.parse_exif(again.exif)
    assert ifd0.entries[274].ints() == (1,) and ifd0.children[T.EXIF_IFD].entries[40962].ints() == (8,)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("ctype, body", [(b"zTXt", b"Description\0\0not deflate"), (b"iCCP", b"ICC\0\0not deflate"),
                                         (b"iTXt", b"Title\0\x01\0\0\0not deflate")])
def test_a_compressed_chunk_that_does_not_inflate_is_noted_not_fatal(tmp_path, dtype, ctype, body):
    # its CRC holds (the writer stored it so): the scan failed with "cannot read PNG: Error -3 while decompressing"
    path = tmp_path / "scan.png"
    write(path, gradient(6, 8, 1, dtype), None, "PNG", Metadata(text={"Author": "Jane Doe"}))
    data = path.read_bytes()
    chunk = struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))
    path.write_bytes(data[:33] + chunk + data[33:])
    pic = read(path, 10_000)
    assert pic.meta.text == {"Author": "Jane Doe"} and pic.meta.icc is None
    (note,) = pic.notes
    assert note.startswith(f"PNG {ctype.decode()} chunk is damaged (Error -3") and note.endswith("was not kept")


def test_png_chunks_not_carried_are_named(tmp_path):
    # GIMP and scanner software add background colour, significant bits, modification time, physical scale: these
    # were dropped without a word
    path = tmp_path / "scan.png"
    write(path, gradient(6, 8, 1, np.uint16), None, "PNG", Metadata(dpi=(1200.0, 1200.0)))
    data = path.read_bytes()
    extra = (_png_chunk(b"sBIT", b"\x0c") + _png_chunk(b"bKGD", b"\xff\xff") + _png_chunk(b"tIME", bytes(7))
             + _png_chunk(b"sCAL", b"\x022.1\x003.2") + _png_chunk(b"bKGD", b"\0\0"))
    path.write_bytes(data[:33] + extra + data[33:])
    pic = read(path, 10_000)
    assert pic.notes == ["PNG chunk(s) sBIT, bKGD, tIME, sCAL not carried"]
    assert pic.meta.dpi == (1200.0, 1200.0)  # what oldphoto reads is not among them


def test_jpeg_segments_not_carried_are_named(tmp_path):
    # Photoshop's Save for Web (Ducky, with its own copyright text), C2PA content credentials of the unrestored file
    # (JUMBF in APP11), a camera's FlashPix data: dropped without a word; what oldphoto reads is not named
    buf = io.BytesIO()
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(buf, "JPEG", exif=b"Exif\0\0" + rich_exif(), icc_profile=SRGB_ICC)
    segments = (_segment(0xEC, b"Ducky\0\x01\0\x04\0\0\0\x50") + _segment(0xEB, b"JP\0\x01\0\0\0\x01jumb")
                + _segment(0xE2, b"FPXR\0\0\x01") + _segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"))
    src = tmp_path / "web.jpg"
    src.write_bytes(_with_segments(buf.getvalue(), segments))
    pic = read(src, 10_000)
    assert pic.notes == ["JPEG segment(s) APP12 (Ducky), APP11 (JP), APP2 (FPXR) not carried"]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF", "PNG"])
def test_a_turned_scan_keeps_its_resolution_on_the_right_axes(tmp_path, fmt):
    # stored 24 rows x 36 columns at 1200 dpi across and 2400 dpi down, then turned by Orientation 6 (as Bridge or
    # Lightroom turn a file, by its metadata): upright, across is what was down
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6, piexif.ImageIFD.XResolution: (1200, 1),
                                piexif.ImageIFD.YResolution: (2400, 1), piexif.ImageIFD.ResolutionUnit: 2}})
    src = tmp_path / "scan.jpg"
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, "JPEG", exif=exif, dpi=(1200, 2400))
    pic = read(src, 10_000)
    assert pic.pixels.shape[:2] == (36, 24)
    assert pic.meta.dpi == (2400.0, 1200.0)
    out = tmp_path / f"out.{EXT[fmt]}"
    write(out, pic.pixels, None, fmt, pic.meta)
    again = read(out, 10_000).meta
    assert again.dpi == pytest.approx((2400.0, 1200.0))
    assert (again.tiff_tags[282], again.tiff_tags[283]) == ((2400, 1), (1200, 1))


def _gray_tiff(path: Path, *resolution) -> None:
    tags = [long_(256, 7), long_(257, 5), short(258, 8), short(259, 1), short(262, 1), short(277, 1), long_(278, 5),
            *resolution]
    path.write_bytes(tiff_structure("<", tags, strip=bytes(35)))


@pytest.mark.parametrize("resolution, note", [
    ([rational(282, (0, 1)), rational(283, (0, 1)), short(296, 2)],
     "TIFF resolution 0/1 x 0/1 dropped: a resolution of 0 means nothing"),
    ([rational(282, (300, 0)), rational(283, (300, 1)), short(296, 2)],
     "TIFF resolution 300/0 x 300/1 dropped: a zero denominator means nothing"),
    ([rational(282, (300, 1)), rational(283, (300, 1)), short(296, 7)],
     "TIFF resolution 300/1 x 300/1 dropped: unknown ResolutionUnit 7 means nothing"),
    ([rational(282, (0, 1)), rational(283, (4, 1)), short(296, 1)],  # an aspect ratio without unit
     "TIFF resolution 0/1 x 4/1 dropped: a resolution of 0 means nothing"),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_meaningless_tiff_resolution_is_dropped_with_a_note(tmp_path, resolution, note, fmt):
    # XResolution 0/1 was carried as 0 dpi; a zero denominator or an unknown unit was dropped without a word
    _gray_tiff(tmp_path / "s.tif", *resolution)
    src = read(tmp_path / "s.tif", 10_000)
    assert (src.meta.dpi, src.meta.aspect) == (None, None) and note in src.notes
    out, _, path = _roundtrip(tmp_path, src.meta, fmt, px=src.pixels)
    assert (out.meta.dpi, out.meta.aspect) == (None, None)
    assert not any(t in out.meta.tiff_tags for t in (282, 283, 296)), out.meta.tiff_tags
    assert not any("resolution" in n for n in out.notes), out.notes  # nothing of it was written
    if fmt == "PNG":
        assert b"pHYs" not in path.read_bytes()


@pytest.mark.parametrize("phys, note", [
    ((0, 0, 1), "PNG pHYs resolution 0 x 0 per metre dropped: a resolution of 0 means nothing"),
    ((11811, 0, 1), "PNG pHYs resolution 11811 x 0 per metre dropped: a resolution of 0 means nothing"),
    ((0, 3, 0), "PNG pHYs resolution 0 x 3 (aspect ratio, no unit) dropped: a resolution of 0 means nothing"),
])
@pytest.mark.parametrize("depth", [8, 16])
def test_a_png_phys_of_0_is_dropped_with_a_note(tmp_path, phys, note, depth):
    buf = io.BytesIO()
    px = gradient(5, 7, 3, np.uint8 if depth == 8 else np.uint16)
    png.write_png(buf, px, None, [png.chunk(b"pHYs", struct.pack(">IIB", *phys))])
    (tmp_path / "s.png").write_bytes(buf.getvalue())
    src = read(tmp_path / "s.png", 10_000)
    assert (src.meta.dpi, src.meta.aspect) == (None, None) and note in src.notes
    _, _, path = _roundtrip(tmp_path, src.meta, "PNG", px=src.pixels)
    assert b"pHYs" not in path.read_bytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_exif_resolution_of_0_is_dropped_with_a_note(tmp_path, fmt):
    exif = tiff_structure("<", [rational(282, (0, 1)), rational(283, (0, 1)), short(296, 2)])
    path = tmp_path / f"s.{EXT[fmt]}"
    Image.fromarray(gradient(5, 7, 3, np.uint8)).save(path, exif=b"Exif\0\0" + exif)
    src = read(path, 10_000)
    assert src.meta.dpi is None and "EXIF resolution 0/1 x 0/1 dropped: a resolution of 0 means nothing" in src.notes
    out, _, _ = _roundtrip(tmp_path, src.meta, fmt, name="out", px=src.pixels)
    assert out.meta.dpi is None and not any(t in out.meta.tiff_tags for t in (282, 283))


@pytest.mark.parametrize("unit, density, note", [
    (1, (0, 0), "JFIF density 0 x 0 ignored: a resolution of 0 means nothing"),
    (2, (118, 0), "JFIF density 118 x 0 ignored: a resolution of 0 means nothing"),
    (3, (300, 300), "JFIF density 300 x 300 ignored: unknown unit 3 means nothing"),
])
def test_a_meaningless_jfif_density_is_ignored_with_a_note(tmp_path, unit, density, note):
    buf = io.BytesIO()
    Image.fromarray(gradient(8, 8, 3, np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    assert data[6:11] == b"JFIF\0"
    data[13] = unit
    data[14:18] = struct.pack(">HH", *density)
    (tmp_path / "s.jpg").write_bytes(bytes(data))
    src = read(tmp_path / "s.jpg", 10_000)
    assert src.meta.dpi is None and note in src.notes
    _, notes, path = _roundtrip(tmp_path, src.meta, "JPEG", px=src.pixels)
    assert _jfif(path)[0] == 0  # no unit written
